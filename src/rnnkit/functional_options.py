r"""rnnkit's per-step options as a plain loop: the documentation of their math.

Three options change a step of any cell (Elman, LSTM, GRU), in three places:

.. math::
    \begin{array}{ll}
    \tilde h_{t-1} = m \odot h_{t-1} & \text{recurrent dropout} \\
    a_t = \mathrm{LN}_{gate}(W_{hh} \tilde h_{t-1}) + b_{hh} & \text{layer norm} \\
    s'_t = \mathrm{cell}(W_{ih} x_t + b_{ih},\ a_t,\ s_{t-1}) & \text{the cell's own update} \\
    s_t = s'_t + u_t \odot (s_{t-1} - s'_t) & \text{zoneout}
    \end{array}

- **Recurrent dropout** (variational, Gal & Ghahramani 2016): ``m`` holds 0 or
  ``1 / (1 - p)`` per sequence and unit, drawn once per forward call and used at
  every step, in training only. It drops the state the recurrent product reads;
  the state itself (the output) is not dropped.
- **Layer normalisation** (Ba et al. 2016) of the recurrent product, per gate:
  each gate's ``H`` products are normalised to mean 0 and variance 1 (biased
  variance, ``eps = 1e-5``, as ``torch.nn.functional.layer_norm``), then scaled
  and shifted by a learned gain (ones at first) and bias (zeros). This is the
  recurrent half of Ba et al.'s layer-normalised LSTM; the input projection and
  torch's biases keep their meaning, so the LSTM forget-gate bias still works.
- **Zoneout** (Krueger et al. 2017): ``u_t`` is 1 where a unit keeps its previous
  value (probability ``p``, a new draw every step) and 0 where it takes the new
  one, in training; ``p`` everywhere in evaluation (the expectation). It applies
  to the hidden state and, for the LSTM, to the cell state with its own draws.

``cell`` is the cell's update with its recurrent product replaced by ``a_t``:
Elman ``h = act(W_ih x + b_ih + a)``, LSTM :func:`rnnkit.functional_gated.lstm_update`
of ``W_ih x + b_ih + a``, GRU :func:`rnnkit.functional_gated.gru_update` (where the
reset gate scales ``a``'s ``n`` part). With every option off this is the cell
itself. The layers, directions, dropout between layers and padding are
:func:`rnnkit.functional.stack_reference`'s.

This module is the oracle the options engine (:mod:`rnnkit.engine.options`) is
tested against.

Shape symbols: ``L`` steps, ``N`` batch, ``D`` directions, ``G`` gates (Elman 1,
GRU 3, LSTM 4), ``H_in`` input features, ``H`` hidden features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.functional import ACTIVATIONS, stack_reference
from rnnkit.functional_gated import gru_update, lstm_update
from rnnkit.masks import LayerMasks

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
LAYER_NORM_EPS = 1e-5


def recurrent_product(
    h_in: Tensor, w_hh: Tensor, b_hh: Tensor | None, gates: int, norm: Sequence[Tensor] | None
) -> Tensor:
    """``a = LN_gate(h_in W_hh^T) + b_hh``; without ``norm``, ``h_in W_hh^T + b_hh``.

    Args:
        h_in: the previous state (after recurrent dropout).
        w_hh, b_hh: the recurrent weight and bias (None if absent).
        gates: gates stacked in ``w_hh``'s rows, each normalised on its own.
        norm: ``(gain, bias)`` of the layer norm, or None.

    Shape:
        h_in ``(N, H)``, w_hh ``(G * H, H)``, gain and bias ``(G * H,)``; returns ``(N, G * H)``.
    """
    product = F.linear(h_in, w_hh)  # (N, G * H)
    if norm is not None:
        per_gate = product.unflatten(1, (gates, -1))  # (N, G, H)
        normed = F.layer_norm(per_gate, per_gate.shape[-1:], eps=LAYER_NORM_EPS)
        product = normed.flatten(1) * norm[0] + norm[1]
    return product if b_hh is None else product + b_hh


def step_with_options(
    cell: str,
    nonlinearity: str,
    x_t: Tensor,
    state: tuple[Tensor, ...],
    weights: Sequence[Tensor | None],
    masks: LayerMasks,
) -> tuple[Tensor, ...]:
    """One step of a cell with the options (see the module doc).

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        nonlinearity: the Elman cell's ``"tanh"`` or ``"relu"``.
        x_t: the step's input.
        state: ``(h_{t-1},)``, or ``(h_{t-1}, c_{t-1})`` for the LSTM.
        weights: ``(w_ih, w_hh, b_ih, b_hh, norm)``; biases None if absent, ``norm``
            ``(gain, bias)`` or None.
        masks: this step's masks (None where an option is off): recurrent ``(N, H)``,
            hidden and cell ``(N, H)``.

    Returns:
        The next state, as ``state``.
    """
    w_ih, w_hh, b_ih, b_hh, norm = weights
    h_prev = state[0]
    h_in = h_prev if masks.recurrent is None else h_prev * masks.recurrent
    recurrent = recurrent_product(h_in, w_hh, b_hh, GATES[cell], norm)  # (N, G * H)
    projected = F.linear(x_t, w_ih, b_ih)  # (N, G * H)
    if cell == "rnn":
        new = (ACTIVATIONS[nonlinearity](projected + recurrent),)
    elif cell == "lstm":
        new = lstm_update(projected + recurrent, state[1])
    else:
        new = (gru_update(projected, recurrent, h_prev),)
    keeps = (masks.hidden, masks.cell)
    return tuple(
        n if keep is None else torch.lerp(n, old, keep)
        for n, old, keep in zip(new, state, keeps, strict=False)
    )


def options_reference(
    cell: str,
    input: Tensor,
    states: Sequence[Tensor],
    all_weights: Sequence[Sequence[Tensor]],
    masks: Sequence[LayerMasks],
    layer_norm: bool,
    nonlinearity: str = "tanh",
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A multi-layer, optionally bidirectional layer with the options, as a loop over time.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        input: time-major input sequence.
        states: ``(h_0,)``, or ``(h_0, c_0)`` for the LSTM.
        all_weights: per (layer, direction), torch's ``[w_ih, w_hh[, b_ih, b_hh]]``
            followed by the layer norm's ``[gain, bias]`` when ``layer_norm``.
        masks: per layer, its masks padded (see :func:`rnnkit.masks.padded_masks`).
        layer_norm: whether ``all_weights`` ends with the layer norm's parameters.
        nonlinearity, bidirectional, dropout, training, lengths: as in
            :func:`rnnkit.functional.rnn_reference`.

    Returns:
        ``(output, final_states)``, final_states as ``states``.

    Shape:
        input ``(L, N, H_in)``, states ``(D * num_layers, N, H)``; masks' recurrent
        ``(D, N, H)``, hidden and cell ``(D, L, N, H)``; output ``(L, N, D * H)``.
    """
    num_directions = 2 if bidirectional else 1
    entries = []
    for index, weights in enumerate(all_weights):
        norm = tuple(weights[-2:]) if layer_norm else None
        torch_weights = weights[:-2] if layer_norm else weights
        w_ih, w_hh, b_ih, b_hh = (*torch_weights, None, None)[:4]
        layer, direction = divmod(index, num_directions)
        own = [None if m is None else m[direction] for m in masks[layer]]
        entries.append(((w_ih, w_hh, b_ih, b_hh, norm), LayerMasks(*own)))

    def step(x_t, state, entry, t):
        weights, own = entry
        at_t = LayerMasks(own.recurrent, *(None if m is None else m[t] for m in own[1:]))
        return step_with_options(cell, nonlinearity, x_t, state, weights, at_t)

    return stack_reference(input, states, entries, step, bidirectional, dropout, training, lengths)
