"""The random masks of recurrent dropout and zoneout, drawn once per forward call.

The layer draws them before it runs, so the engine (:mod:`rnnkit.engine.options`)
and the reference loop (:mod:`rnnkit.functional_options`) read the same masks,
and a test can hand both the masks it chose.

Shape symbols: ``D`` directions, ``N`` batch, ``R`` packed rows, ``L`` steps,
``H_out`` hidden features, ``H_cell`` the LSTM's cell features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence


class LayerMasks(NamedTuple):
    """One layer's masks, every direction stacked; None where the option is off.

    ``recurrent``: recurrent dropout (Gal & Ghahramani 2016), the factor each unit of
    ``h_{t-1}`` is multiplied by before the recurrent product: 0 or ``1 / (1 - p)``,
    one draw per sequence, the same at every step. ``hidden`` and ``cell``: zoneout
    (Krueger et al. 2017), the weight of the previous value in each unit's new state,
    ``h_t = lerp(h_new, h_{t-1}, mask)``: 1 (the unit keeps its value, probability
    ``p``) or 0, drawn per step, in training; ``p`` everywhere (the expectation) in
    evaluation. ``cell`` is the LSTM cell state's.

    Shape:
        recurrent ``(D, N, H_out)``; hidden ``(D, R, H_out)`` (packed rows, or
        ``(D, L, N, H_out)`` padded for the reference loop); cell as hidden with ``H_cell``.
    """

    recurrent: Tensor | None = None
    hidden: Tensor | None = None
    cell: Tensor | None = None


def draw_masks(
    num_layers: int,
    num_directions: int,
    batch_sizes: Sequence[int],
    sizes: Sequence[int],
    recurrent_dropout: float,
    zoneout: float,
    training: bool,
    like: Tensor,
) -> list[LayerMasks]:
    """Every layer's masks for one forward call.

    Args:
        num_layers, num_directions: the stack's shape.
        batch_sizes: rows per step (``batch_sizes[0]`` sequences).
        sizes: features of each state: ``(H_out,)``, or ``(H_out, H_cell)`` for the LSTM.
        recurrent_dropout, zoneout: the probabilities (0 for off).
        training: masks are random only in training; recurrent dropout is off in
            evaluation, zoneout takes its expectation.
        like: the masks get its dtype and device.

    Returns:
        One :class:`LayerMasks` per layer.
    """
    batch, rows = batch_sizes[0], sum(batch_sizes)
    masks = []
    for _ in range(num_layers):
        recurrent = None
        if recurrent_dropout and training:
            keep = 1 - recurrent_dropout
            shape = (num_directions, batch, sizes[0])  # (D, N, H_out)
            recurrent = like.new_empty(shape).bernoulli_(keep).div_(keep)
        zoned = [None, None]
        if zoneout:
            for i, size in enumerate(sizes):
                shape = (num_directions, rows, size)  # (D, R, H)
                if training:
                    zoned[i] = like.new_empty(shape).bernoulli_(zoneout)
                else:  # the expectation; a view, nothing allocated per row
                    zoned[i] = like.new_full((), zoneout).expand(shape)
        masks.append(LayerMasks(recurrent, *zoned))
    return masks


def padded_masks(masks: Sequence[LayerMasks], batch_sizes: Sequence[int]) -> list[LayerMasks]:
    """The masks with per-step rows laid out as the reference loop's padded steps.

    Shape:
        hidden and cell ``(D, R, H)`` -> ``(D, L, N, H)``; recurrent unchanged.
    """
    steps, batch = len(batch_sizes), batch_sizes[0]

    def pad(rows: Tensor | None) -> Tensor | None:
        if rows is None:
            return None
        if batch_sizes[-1] == batch:  # equal lengths: rows are already step-major
            return rows.reshape(rows.size(0), steps, batch, rows.size(2))
        sizes = torch.tensor(batch_sizes)
        return torch.stack([pad_packed_sequence(PackedSequence(r, sizes))[0] for r in rows])

    return [LayerMasks(m.recurrent, pad(m.hidden), pad(m.cell)) for m in masks]
