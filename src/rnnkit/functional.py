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

from collections.abc import Callable, Sequence

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


# A step of one layer and direction: (x_t, state, weights, t) -> next state, where the
# state is a tuple of tensors whose first one is the step's output, and t the step's
# index in time (for what changes per step, as zoneout's masks).
Step = Callable[[Tensor, tuple[Tensor, ...], Sequence[Tensor], int], tuple[Tensor, ...]]


def stack_reference(
    input: Tensor,
    states: Sequence[Tensor],
    all_weights: Sequence[Sequence[Tensor]],
    step: Step,
    bidirectional: bool,
    dropout: float,
    training: bool,
    lengths: Sequence[int] | Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run `step` over time, directions and layers: the loop every reference shares
    (Elman here, LSTM and GRU in :mod:`rnnkit.functional_gated`).

    Args:
        input: time-major input sequence.
        states: the initial states, each stacked over (layer, direction); the
            first is the one a step outputs.
        all_weights: per (layer, direction), the weights handed to `step`.
        step: ``(x_t, state, weights, t) -> state``.
        bidirectional, dropout, training, lengths: as in :func:`rnn_reference`.

    Returns:
        ``(output, final_states)``: the last layer's first state at every
        step, and every state after each layer's and direction's last valid step.

    Shape:
        input ``(L, N, H_in)``, states ``(D * num_layers, N, *)``;
        output ``(L, N, D * H_out)``, final_states as states.
    """
    num_directions = 2 if bidirectional else 1
    num_layers = len(all_weights) // num_directions
    seq_len, batch = input.shape[:2]
    if lengths is None:
        lengths = [seq_len] * batch
    # (L, N, 1): True where step t is inside sequence n
    valid = (torch.arange(seq_len)[:, None] < torch.as_tensor(lengths)[None, :])[..., None]
    valid = valid.to(input.device)

    layer_input, finals = input, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            state = tuple(s[index] for s in states)  # each (N, *)
            out = [None] * seq_len
            steps = range(seq_len - 1, -1, -1) if direction == 1 else range(seq_len)
            for t in steps:
                new = step(layer_input[t], state, all_weights[index], t)
                # padding carries every state unchanged
                state = tuple(torch.where(valid[t], n, s) for n, s in zip(new, state, strict=True))
                out[t] = torch.where(valid[t], state[0], torch.zeros_like(state[0]))
            outputs.append(torch.stack(out))  # (L, N, H_out)
            finals.append(state)
        layer_input = torch.cat(outputs, dim=2)  # (L, N, D * H_out)
        if layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training)
    return layer_input, tuple(torch.stack(s) for s in zip(*finals, strict=True))


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
    weights = [(*w, None, None)[:4] for w in all_weights]  # no biases: None
    output, (h_n,) = stack_reference(
        input, (hx,), weights,
        lambda x, state, w, _: (rnn_cell_reference(x, *state, *w, nonlinearity),),
        bidirectional, dropout, training, lengths,
    )  # fmt: skip
    return output, h_n
