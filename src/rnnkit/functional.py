r"""The Elman recurrence, written as a plain loop: the documentation of the math.

For each layer and direction, every time step computes

.. math::
    h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

(or ``relu`` in place of ``tanh``), with the same weights at every step and
:math:`h_0` given or zero. Layer ``k > 0`` reads the outputs of layer ``k - 1``
at all steps; a bidirectional layer runs a second pass from the last step to
the first and concatenates the two outputs feature-wise.

This module is short on purpose: it is what ``rnnkit.RNN`` computes, and one of
the oracles its fast engine (``rnnkit.engine``) is tested against.

Shape symbols: ``L`` sequence length, ``N`` batch, ``D`` directions (2 if
bidirectional else 1), ``H_in`` input features, ``H_out`` hidden features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_cell_reference(
    input: Tensor,
    hx: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One step of the recurrence.

    Args:
        input: the step's input ``x_t``.
        hx: the previous hidden state ``h_{t-1}``.
        w_ih, w_hh: input-hidden and hidden-hidden weights.
        b_ih, b_hh: optional biases.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Returns:
        The next hidden state ``h_t``.

    Shape:
        input ``(N, H_in)``, hx ``(N, H_out)``, w_ih ``(H_out, H_in)``,
        w_hh ``(H_out, H_out)``, biases ``(H_out,)``; returns ``(N, H_out)``.
    """
    pre = F.linear(input, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)
    return ACTIVATIONS[nonlinearity](pre)


def rnn_reference(
    input: Tensor,
    hx: Tensor,
    all_weights: Sequence[Sequence[Tensor]],
    nonlinearity: str = "tanh",
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A multi-layer, optionally bidirectional Elman RNN as a loop over time.

    Args:
        input: time-major input sequence.
        hx: initial hidden state of every layer and direction.
        all_weights: per (layer, direction), ``[w_ih, w_hh, b_ih, b_hh]`` or
            ``[w_ih, w_hh]``, in the order of ``torch.nn.RNN.all_weights``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bidirectional: whether every second entry of ``all_weights`` is a
            reverse direction.
        dropout: dropout probability on the outputs of all layers but the last.
        training: dropout applies only when True.
        lengths: valid length of each sequence; steps past it are padding, which
            is skipped (the state is carried unchanged) and gives zero output.

    Returns:
        ``(output, h_n)``: the last layer's states at every step, and every
        layer's and direction's state after its last valid step.

    Shape:
        input ``(L, N, H_in)``, hx ``(D * num_layers, N, H_out)``;
        output ``(L, N, D * H_out)``, h_n ``(D * num_layers, N, H_out)``.
    """
    num_directions = 2 if bidirectional else 1
    seq_len, batch = input.shape[:2]
    if lengths is None:
        lengths = [seq_len] * batch
    # (L, N, 1): True where step t is inside sequence n
    valid = (torch.arange(seq_len)[:, None] < torch.as_tensor(lengths)[None, :])[..., None]
    valid = valid.to(input.device)

    layer_input, h_n = input, []
    for layer in range(len(all_weights) // num_directions):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            w_ih, w_hh, b_ih, b_hh = (*all_weights[index], None, None)[:4]  # no biases: None
            h = hx[index]  # (N, H_out)
            out = [None] * seq_len
            steps = range(seq_len - 1, -1, -1) if direction == 1 else range(seq_len)
            for t in steps:
                h_new = rnn_cell_reference(layer_input[t], h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
                h = torch.where(valid[t], h_new, h)  # padding carries the state unchanged
                out[t] = torch.where(valid[t], h, torch.zeros_like(h))
            outputs.append(torch.stack(out))  # (L, N, H_out)
            h_n.append(h)
        layer_input = torch.cat(outputs, dim=2)  # (L, N, D * H_out)
        if layer < len(all_weights) // num_directions - 1:
            layer_input = F.dropout(layer_input, dropout, training)
    return layer_input, torch.stack(h_n)
