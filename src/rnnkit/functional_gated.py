r"""The LSTM and GRU recurrences, written as plain loops: the documentation of the math.

An LSTM step, with torch's gate order ``i, f, g, o`` stacked in the rows of
:math:`W_{ih}` and :math:`W_{hh}` (``4 * H_cell`` rows):

.. math::
    \begin{array}{ll}
    i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
    f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
    g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
    o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
    c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
    h_t = o_t \odot \tanh(c_t)
    \end{array}

and with ``proj_size > 0`` the hidden state is projected,
:math:`h_t = W_{hr} (o_t \odot \tanh(c_t))`, so it has ``proj_size`` features
while the cell state keeps ``hidden_size``.

A GRU step, with torch's gate order ``r, z, n`` (``3 * H_out`` rows):

.. math::
    \begin{array}{ll}
    r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
    z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
    n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
    h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
    \end{array}

(the reset gate multiplies :math:`W_{hn} h_{t-1} + b_{hn}`, bias included, as
torch does; here :math:`W_{hr}` is the reset gate's recurrent weight, not the
LSTM's projection).

The layers and directions are stacked as in ``rnnkit.functional.rnn_reference``:
layer ``k > 0`` reads the outputs of layer ``k - 1`` at all steps, a
bidirectional layer runs a second pass from the last step to the first and
concatenates the two outputs feature-wise, dropout (in training only) applies
between layers, and padding past a sequence's length carries the state unchanged
and gives zero output. One loop, ``rnnkit.functional.stack_reference``, does this for every cell.

This module is short on purpose: it is the oracle the gated fast engine is
tested against.

Shape symbols: ``L`` sequence length, ``N`` batch, ``D`` directions (2 if
bidirectional else 1), ``H_in`` input features, ``H_out`` output (hidden)
features, ``H_cell`` LSTM cell features (``hidden_size``; ``H_out`` is
``proj_size`` when that is positive, else ``hidden_size``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.functional import stack_reference


def lstm_cell_reference(
    input: Tensor,
    hx: Tensor,
    cx: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step.

    Args:
        input: the step's input ``x_t``.
        hx: the previous hidden state ``h_{t-1}``.
        cx: the previous cell state ``c_{t-1}``.
        w_ih, w_hh: input-hidden and hidden-hidden weights, gates ``i, f, g, o`` stacked by row.
        b_ih, b_hh: optional biases, in the same layout.
        w_hr: optional projection of the hidden state (``proj_size > 0``).

    Returns:
        ``(h_t, c_t)``.

    Shape:
        input ``(N, H_in)``, hx ``(N, H_out)``, cx ``(N, H_cell)``,
        w_ih ``(4 * H_cell, H_in)``, w_hh ``(4 * H_cell, H_out)``, biases ``(4 * H_cell,)``,
        w_hr ``(H_out, H_cell)``; returns ``(N, H_out)`` and ``(N, H_cell)``.
    """
    gates = F.linear(input, w_ih, b_ih) + F.linear(hx, w_hh, b_hh)  # (N, 4 * H_cell)
    h, c = lstm_update(gates, cx)  # (N, H_cell) each
    if w_hr is not None:
        h = F.linear(h, w_hr)  # (N, H_out)
    return h, c


def lstm_update(gates: Tensor, cx: Tensor) -> tuple[Tensor, Tensor]:
    """An LSTM step after its products: the gates' activations and the new states.

    Args:
        gates: the pre-activations ``i, f, g, o`` side by side.
        cx: the previous cell state.

    Returns:
        ``(h_t, c_t)`` (``h_t`` before any projection).

    Shape:
        gates ``(N, 4 * H_cell)``, cx ``(N, H_cell)``; returns ``(N, H_cell)`` each.
    """
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell_reference(
    input: Tensor,
    hx: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step.

    Args:
        input: the step's input ``x_t``.
        hx: the previous hidden state ``h_{t-1}``.
        w_ih, w_hh: input-hidden and hidden-hidden weights, gates ``r, z, n`` stacked by row.
        b_ih, b_hh: optional biases, in the same layout.

    Returns:
        The next hidden state ``h_t``.

    Shape:
        input ``(N, H_in)``, hx ``(N, H_out)``, w_ih ``(3 * H_out, H_in)``,
        w_hh ``(3 * H_out, H_out)``, biases ``(3 * H_out,)``; returns ``(N, H_out)``.
    """
    # The two products stay apart: the reset gate scales only the hidden one.
    return gru_update(F.linear(input, w_ih, b_ih), F.linear(hx, w_hh, b_hh), hx)


def gru_update(projected: Tensor, recurrent: Tensor, hx: Tensor) -> Tensor:
    """A GRU step after its products: the gates and the new state.

    Args:
        projected: the input's products ``W_i* x_t + b_i*`` for ``r, z, n``.
        recurrent: the hidden state's products ``W_h* h_{t-1} + b_h*`` for ``r, z, n``.
        hx: the previous hidden state.

    Returns:
        The next hidden state ``h_t``.

    Shape:
        projected, recurrent ``(N, 3 * H_out)``, hx ``(N, H_out)``; returns ``(N, H_out)``.
    """
    x_r, x_z, x_n = projected.chunk(3, dim=1)
    h_r, h_z, h_n = recurrent.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * hx


def _split_weights(
    weights: Sequence[Tensor], index: int, projected: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """``(w_ih, w_hh, b_ih, b_hh, w_hr)`` from one entry of a torch ``all_weights``.

    torch's order is ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``: the biases come
    before the projection, so the count alone says which are present.
    """
    expected = (3, 5) if projected else (2, 4)
    if len(weights) not in expected:
        raise ValueError(
            f"all_weights[{index}] must hold {expected[0]} or {expected[1]} tensors "
            f"(proj_size {'> 0' if projected else '= 0'}), got {len(weights)}"
        )
    w_hr = weights[-1] if projected else None
    rest = weights[:-1] if projected else weights
    w_ih, w_hh, b_ih, b_hh = (*rest, None, None)[:4]  # no biases: None
    return w_ih, w_hh, b_ih, b_hh, w_hr


def lstm_reference(
    input: Tensor,
    hx: Tensor,
    cx: Tensor,
    all_weights: Sequence[Sequence[Tensor]],
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Sequence[int] | Tensor | None = None,
    proj_size: int = 0,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """A multi-layer, optionally bidirectional and projected LSTM as a loop over time.

    Args:
        input: time-major input sequence.
        hx: initial hidden state of every layer and direction.
        cx: initial cell state of every layer and direction.
        all_weights: per (layer, direction), ``[w_ih, w_hh, b_ih, b_hh, w_hr]``
            without the biases when there are none and without ``w_hr`` when
            ``proj_size == 0``: the order of ``torch.nn.LSTM.all_weights``.
        bidirectional, dropout, training, lengths: as in
            :func:`rnnkit.functional.rnn_reference` (padding carries both states
            unchanged and gives zero output).
        proj_size: the size of the projected hidden state; 0 for none.

    Returns:
        ``(output, (h_n, c_n))``: the last layer's hidden states at every step,
        and every layer's and direction's states after its last valid step.

    Shape:
        input ``(L, N, H_in)``, hx ``(D * num_layers, N, H_out)``,
        cx ``(D * num_layers, N, H_cell)``; output ``(L, N, D * H_out)``,
        h_n and c_n as hx and cx.
    """
    projected = proj_size > 0
    parts = [_split_weights(w, i, projected) for i, w in enumerate(all_weights)]
    output, (h_n, c_n) = stack_reference(
        input,
        (hx, cx),
        parts,
        lambda x, state, w, _: lstm_cell_reference(x, *state, *w),
        bidirectional,
        dropout,
        training,
        lengths,
    )
    return output, (h_n, c_n)


def gru_reference(
    input: Tensor,
    hx: Tensor,
    all_weights: Sequence[Sequence[Tensor]],
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A multi-layer, optionally bidirectional GRU as a loop over time.

    Args:
        input: time-major input sequence.
        hx: initial hidden state of every layer and direction.
        all_weights: per (layer, direction), ``[w_ih, w_hh, b_ih, b_hh]`` or
            ``[w_ih, w_hh]``, in the order of ``torch.nn.GRU.all_weights``.
        bidirectional, dropout, training, lengths: as in
            :func:`rnnkit.functional.rnn_reference` (padding carries the state unchanged
            and gives zero output).

    Returns:
        ``(output, h_n)``: the last layer's states at every step, and every
        layer's and direction's state after its last valid step.

    Shape:
        input ``(L, N, H_in)``, hx ``(D * num_layers, N, H_out)``;
        output ``(L, N, D * H_out)``, h_n ``(D * num_layers, N, H_out)``.
    """
    parts = [_split_weights(w, i, projected=False)[:4] for i, w in enumerate(all_weights)]
    output, (h_n,) = stack_reference(
        input,
        (hx,),
        parts,
        lambda x, state, w, _: (gru_cell_reference(x, *state, *w),),
        bidirectional,
        dropout,
        training,
        lengths,
    )
    return output, h_n
