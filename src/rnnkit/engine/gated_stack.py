"""LSTM and GRU stacks on the gated loops, through autograd or as custom ops.

As for the Elman engine (:mod:`rnnkit.engine.layer`), each layer is one
autograd node: an ``autograd.Function`` in eager mode, a ``torch.library``
custom op (``rnnkit::lstm_layer``, ``rnnkit::gru_layer``, with fake
implementations) while ``torch.compile`` or ``torch.export`` traces, and a
plain call when nothing needs a gradient.

The time loops run compiled (:mod:`rnnkit.compiled.gated_kernels`) or in torch
ops; :func:`rnnkit.engine.resolve_engine` picks, as for the Elman layer. In eager
mode, a dense float32 CPU LSTM stack may run on torch's oneDNN LSTM instead, as one
call (:mod:`rnnkit.engine.onednn`), and LSTM and GRU inference on CPU on torch's own
layer while the compiled kernels are prepared (:func:`native_stack`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.engine.gru import gru_layer_backward, gru_layer_forward
from rnnkit.engine.layer import grad_needed, resolve_engine
from rnnkit.engine.lstm import lstm_layer_backward, lstm_layer_forward
from rnnkit.engine.native import call_quietly, native_fit
from rnnkit.engine.onednn import UNTIL_COMPILED, native_lstm, onednn_fit


class LSTMLayerFunction(torch.autograd.Function):
    """:func:`lstm_layer_forward` and its backward for eager autograd."""

    @staticmethod
    def forward(ctx, x, h0, c0, batch_sizes, directions, projected, engine, *weights):
        out, h_n, c_n, *saved = lstm_layer_forward(
            x, h0, c0, weights, batch_sizes, directions, projected, engine
        )
        ctx.save_for_backward(x, h0, c0, out, *saved, *weights)
        ctx.args = (batch_sizes, directions, projected)
        ctx.engine = engine
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n):
        x, h0, c0, out, gates, cells, tanh_cells, *weights = ctx.saved_tensors
        need = ctx.needs_input_grad
        needs = (need[0], need[1] or need[2], any(need[7:]))
        grad_x, grad_h0, grad_c0, grad_weights = lstm_layer_backward(
            grad_out.contiguous(), grad_h_n, grad_c_n, x, h0, c0, weights, out,
            gates, cells, tanh_cells, *ctx.args, needs, ctx.engine,
        )  # fmt: skip
        grad_weights = _only_needed(grad_weights, need[7:])
        return grad_x, grad_h0, grad_c0, None, None, None, None, *grad_weights


class GRULayerFunction(torch.autograd.Function):
    """:func:`gru_layer_forward` and its backward for eager autograd."""

    @staticmethod
    def forward(ctx, x, h0, batch_sizes, directions, engine, *weights):
        out, h_n, gates, kept_n = gru_layer_forward(x, h0, weights, batch_sizes, directions, engine)
        ctx.save_for_backward(x, h0, out, gates, kept_n, *weights)
        ctx.args = (batch_sizes, directions)
        ctx.engine = engine
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, h0, out, gates, kept_n, *weights = ctx.saved_tensors
        need = ctx.needs_input_grad
        needs = (need[0], need[1], any(need[5:]))
        grad_x, grad_h0, grad_weights = gru_layer_backward(
            grad_out.contiguous(), grad_h_n, x, h0, weights, out, gates, kept_n,
            *ctx.args, needs, ctx.engine,
        )  # fmt: skip
        return grad_x, grad_h0, None, None, None, *_only_needed(grad_weights, need[5:])


def _only_needed(grads, needed) -> list:
    """The weight gradients autograd asked for, None for the others."""
    grads = grads or [None] * len(needed)
    return [g if n else None for g, n in zip(grads, needed, strict=True)]


# -- custom ops: what torch.compile and torch.export trace --------------------


@torch.library.custom_op("rnnkit::lstm_layer", mutates_args=())
def _lstm_layer_op(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: list[Tensor],
    batch_sizes: list[int],
    directions: list[bool],
    projected: bool,
    engine: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    engine = resolve_engine(engine, x, h0.size(1), c0.size(2), "lstm")
    return lstm_layer_forward(x, h0, c0, weights, batch_sizes, directions, projected, engine)


@_lstm_layer_op.register_fake
def _(x, h0, c0, weights, batch_sizes, directions, projected, engine):
    rows, hidden = x.size(0), c0.size(2)
    gates = x.new_empty(len(directions), rows, 4 * hidden)
    cells = x.new_empty(len(directions), rows, hidden)
    out = x.new_empty(rows, h0.size(0) * h0.size(2))
    tanh_cells = cells.new_empty(cells.shape)
    return out, h0.new_empty(h0.shape), c0.new_empty(c0.shape), gates, cells, tanh_cells


@torch.library.custom_op("rnnkit::lstm_layer_backward", mutates_args=())
def _lstm_layer_backward_op(
    grad_out: Tensor,
    grad_h_n: Tensor,
    grad_c_n: Tensor,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: list[Tensor],
    saved: list[Tensor],
    batch_sizes: list[int],
    directions: list[bool],
    projected: bool,
    engine: str,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    engine = resolve_engine(engine, x, h0.size(1), c0.size(2), "lstm")
    grad_x, grad_h0, grad_c0, grad_weights = lstm_layer_backward(
        grad_out.contiguous(), grad_h_n, grad_c_n, x, h0, c0, weights, *saved,
        batch_sizes, directions, projected, (True, True, True), engine,
    )  # fmt: skip
    return grad_x, grad_h0, grad_c0, [g.contiguous() for g in grad_weights]


@_lstm_layer_backward_op.register_fake
def _(grad_out, grad_h_n, grad_c_n, x, h0, c0, weights, saved, batch_sizes, directions, projected,
      engine):  # fmt: skip
    like = [w.new_empty(w.shape) for w in weights]
    return x.new_empty(x.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape), like


def _lstm_setup_context(ctx, inputs, output):
    x, h0, c0, weights, batch_sizes, directions, projected, engine = inputs
    ctx.save_for_backward(x, h0, c0, *output[:1], *output[3:], *weights)
    ctx.args = (batch_sizes, directions, projected, engine)


def _lstm_op_backward(ctx, grad_out, grad_h_n, grad_c_n, *_):
    x, h0, c0, out, gates, cells, tanh_cells, *weights = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
    grad_x, grad_h0, grad_c0, grad_weights = _lstm_layer_backward_op(
        grad_out, grad_h_n, grad_c_n, x, h0, c0, weights,
        [out, gates, cells, tanh_cells], *ctx.args,
    )  # fmt: skip
    return grad_x, grad_h0, grad_c0, grad_weights, None, None, None, None


_lstm_layer_op.register_autograd(_lstm_op_backward, setup_context=_lstm_setup_context)


@torch.library.custom_op("rnnkit::gru_layer", mutates_args=())
def _gru_layer_op(
    x: Tensor,
    h0: Tensor,
    weights: list[Tensor],
    batch_sizes: list[int],
    directions: list[bool],
    engine: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    engine = resolve_engine(engine, x, h0.size(1), h0.size(2), "gru")
    return gru_layer_forward(x, h0, weights, batch_sizes, directions, engine)


@_gru_layer_op.register_fake
def _(x, h0, weights, batch_sizes, directions, engine):
    gates = x.new_empty(len(directions), x.size(0), 3 * h0.size(2))
    out = x.new_empty(x.size(0), h0.size(0) * h0.size(2))
    kept_n = x.new_empty(len(directions), x.size(0), h0.size(2))
    return out, h0.new_empty(h0.shape), gates, kept_n


@torch.library.custom_op("rnnkit::gru_layer_backward", mutates_args=())
def _gru_layer_backward_op(
    grad_out: Tensor,
    grad_h_n: Tensor,
    x: Tensor,
    h0: Tensor,
    weights: list[Tensor],
    saved: list[Tensor],
    batch_sizes: list[int],
    directions: list[bool],
    engine: str,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    engine = resolve_engine(engine, x, h0.size(1), h0.size(2), "gru")
    grad_x, grad_h0, grad_weights = gru_layer_backward(
        grad_out.contiguous(), grad_h_n, x, h0, weights, *saved,
        batch_sizes, directions, (True, True, True), engine,
    )  # fmt: skip
    return grad_x, grad_h0, [g.contiguous() for g in grad_weights]


@_gru_layer_backward_op.register_fake
def _(grad_out, grad_h_n, x, h0, weights, saved, batch_sizes, directions, engine):
    return x.new_empty(x.shape), h0.new_empty(h0.shape), [w.new_empty(w.shape) for w in weights]


def _gru_setup_context(ctx, inputs, output):
    x, h0, weights, batch_sizes, directions, engine = inputs
    ctx.save_for_backward(x, h0, output[0], *output[2:], *weights)
    ctx.args = (batch_sizes, directions, engine)


def _gru_op_backward(ctx, grad_out, grad_h_n, *_):
    x, h0, out, gates, kept_n, *weights = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_x, grad_h0, grad_weights = _gru_layer_backward_op(
        grad_out, grad_h_n, x, h0, weights, [out, gates, kept_n], *ctx.args
    )
    return grad_x, grad_h0, grad_weights, None, None, None


_gru_layer_op.register_autograd(_gru_op_backward, setup_context=_gru_setup_context)


# -- stacks ---------------------------------------------------------------------


def _lstm_layer(x, h0, c0, weights, batch_sizes, directions, projected, engine):
    """One LSTM layer through the right wrapper. Returns ``(out, h_n, c_n)``."""
    if torch.compiler.is_compiling():
        result = _lstm_layer_op(
            x, h0, c0, list(weights), list(batch_sizes), list(directions), projected, engine
        )
        return result[:3]
    engine = resolve_engine(engine, x, h0.size(1), c0.size(2), "lstm")
    args = (batch_sizes, directions, projected, engine)
    if grad_needed(x, h0, [c0, *weights]):
        return LSTMLayerFunction.apply(x, h0, c0, *args, *weights)
    return lstm_layer_forward(x, h0, c0, weights, *args, keep=False)[:3]


def _gru_layer(x, h0, weights, batch_sizes, directions, engine):
    """One GRU layer through the right wrapper. Returns ``(out, h_n)``."""
    if torch.compiler.is_compiling():
        result = _gru_layer_op(x, h0, list(weights), list(batch_sizes), list(directions), engine)
        return result[:2]
    engine = resolve_engine(engine, x, h0.size(1), h0.size(2), "gru")
    if grad_needed(x, h0, weights):
        return GRULayerFunction.apply(x, h0, batch_sizes, directions, engine, *weights)
    return gru_layer_forward(x, h0, weights, batch_sizes, directions, engine, keep=False)[:2]


def _on_torch_layer(cell, x, states, all_weights, batch_sizes, bidirectional, dropout,
                    training, proj_size, engine):  # fmt: skip
    """The stack on torch's own LSTM or GRU where :func:`resolve_engine` picks it, as
    ``(out, final_states)``; else None. Arguments as :func:`gated_stack`'s.

    Three cases: an LSTM stack torch's oneDNN LSTM can run (``onednn_fit``); a stack of
    few steps, training included (``native_fit``: a step-by-step decoder's call, say), an
    LSTM's where oneDNN cannot run it; and, while the compiled kernels are being prepared,
    inference of any CPU stack (``native``).
    Only inference for the last: in training our torch-ops loops are mostly the
    faster (GRU 0.91-1.69 of ``nn.GRU``'s speed, LSTM 1.00-3.18 of ``nn.LSTM`` without
    oneDNN), and a GRU training step on torch's GRU beside the worker that compiles the
    kernels took 34 ms against the torch-ops engine's 24 at 100x30x4x64
    (``python benchmarks/cold_start.py --cell gru``).

    A GRU call of one step has no recurrence to gain on: torch's layer runs its three
    products and the gates with less Python around them than our loops. Against ours
    (ad-hoc script, one thread, two runs, 1 x N x H x H): inference 1.2-1.7x faster at
    H = 64-128, 1.07-1.17x at 256-512; training 1.3-1.8x at H = 64-128, 1.13-1.94x at
    256-512 (1.9x at 1 x 8 x 512 x 512). A few steps go the same way
    (:mod:`rnnkit.engine.native`).
    """
    h0 = states[0]
    flat_weights = [w for ws in all_weights for w in ws]
    grad = grad_needed(x, h0, [*states[1:], *flat_weights])
    directions = (False, True) if bidirectional else (False,)
    hidden = states[-1].size(2)  # the cell state's for an LSTM
    num_layers = len(all_weights) // len(directions)
    onednn = None
    if cell == "lstm":
        onednn = onednn_fit(x, batch_sizes, directions, proj_size > 0, grad, hidden, num_layers)
    native = None if grad else UNTIL_COMPILED
    if cell == "gru" or onednn is None:  # where oneDNN may run an LSTM, its rules hold
        packed = batch_sizes[-1] != batch_sizes[0]
        few = native_fit(cell, len(batch_sizes), h0.size(1), hidden, grad, packed)
        native = few or native
    picked = resolve_engine(engine, x, h0.size(1), hidden, cell, onednn, native)
    if picked not in ("onednn", "native"):
        return None
    return native_stack(
        cell, x, states, flat_weights, batch_sizes, num_layers, bidirectional, dropout, training
    )


def native_stack(
    cell: str,
    x: Tensor,
    states: Sequence[Tensor],
    weights: Sequence[Tensor],
    batch_sizes: Sequence[int],
    num_layers: int,
    bidirectional: bool,
    dropout: float,
    training: bool,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A whole LSTM or GRU stack on torch's own layer, through torch's autograd: the call
    ``torch.nn.LSTM.forward`` / ``torch.nn.GRU.forward`` makes (packed input as a
    ``PackedSequence`` makes it), dropout between layers included.

    Our torch-ops loops run inference at 0.55-0.96 of ``nn.GRU``'s speed and 0.66-0.93
    of ``nn.LSTM``'s where oneDNN does not run it (packed input, ``proj_size``;
    ``RNNKIT_ENGINE=fused rnnkit bench``), so this is what inference runs for the seconds
    the compiled kernels take to prepare.

    Args:
        cell: ``"lstm"`` or ``"gru"``.
        x: packed input rows.
        states: ``(h0, c0)`` or ``(h0,)`` of every layer and direction.
        weights: per layer and direction ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``, in
            torch's order.
        batch_sizes: rows per step.
        num_layers, bidirectional, dropout, training: the stack's.

    Returns:
        ``(out, final_states)``, final_states shaped as ``states``.

    Shape:
        x ``(R, H_in)``, states ``(D * num_layers, N, *)``; out ``(R, D * H_out)``.
    """
    weights = list(weights)
    rows_of_weights = len(weights) // states[0].size(0)  # per layer and direction
    projected = cell == "lstm" and states[0].size(2) != states[-1].size(2)
    has_biases = rows_of_weights - projected == 4
    op, hx = (native_lstm, tuple(states)) if cell == "lstm" else (native_gru, states[0])
    args = (weights, has_biases, num_layers, dropout, training, bidirectional)
    steps, batch = len(batch_sizes), batch_sizes[0]
    if batch_sizes[-1] == batch:  # equal lengths: the rows are already (L, N, H_in)
        dense = x.reshape(steps, batch, x.size(1))
        out, *finals = call_quietly(projected, op, dense, hx, *args, False)
        return out.reshape(steps * batch, out.size(2)), tuple(finals)
    sizes = torch.tensor(batch_sizes, dtype=torch.int64)
    out, *finals = call_quietly(projected, op, x, sizes, hx, *args)
    return out, tuple(finals)


# torch's GRU, the op ``torch.nn.GRU.forward`` calls: on a batched dense input ``(x, h0,
# weights, has_biases, num_layers, dropout, training, bidirectional, batch_first)``, on
# packed rows ``(data, batch_sizes, h0, weights, has_biases, num_layers, dropout,
# training, bidirectional)``, to ``(out, h_n)``; weights ``w_ih, w_hh[, b_ih, b_hh]`` per
# layer and direction.
# (Held here: each lookup of ``torch._VF``'s attributes costs 2 us. The LSTM's op,
# ``native_lstm``, is held in rnnkit.engine.onednn.)
native_gru = torch._VF.gru


def gated_stack(
    cell: str,
    x: Tensor,
    states: Sequence[Tensor],
    all_weights: Sequence[Sequence[Tensor]],
    batch_sizes: Sequence[int],
    bidirectional: bool,
    dropout: float,
    training: bool,
    proj_size: int = 0,
    engine: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A multi-layer, optionally bidirectional LSTM or GRU over packed rows.

    Args:
        cell: ``"lstm"`` or ``"gru"``.
        x: packed input rows.
        states: ``(h0, c0)`` for the LSTM, ``(h0,)`` for the GRU, over every
            layer and direction.
        all_weights: per (layer, direction), as in torch's ``all_weights``.
        batch_sizes: rows per step.
        bidirectional: every second entry of ``all_weights`` is a reverse pass.
        dropout: dropout on the outputs of all layers but the last.
        training: dropout applies only when True.
        proj_size: the LSTM's projection size, 0 for none.
        engine: ``"auto"``, ``"compiled"`` or ``"fused"`` (see
            :func:`rnnkit.engine.resolve_engine`).

    Returns:
        ``(out, final_states)``, final_states shaped as ``states``.

    Shape:
        x ``(R, H_in)``, h0 ``(D * num_layers, N, H_out)``, c0 ``(D * num_layers, N, H)``;
        out ``(R, D * H_out)``.
    """
    if not torch.compiler.is_compiling():
        on_torch = _on_torch_layer(
            cell, x, states, all_weights, batch_sizes, bidirectional, dropout, training,
            proj_size, engine,
        )  # fmt: skip
        if on_torch is not None:
            return on_torch

    def run_layer(layer, layer_input, layer_states, weights, batch_sizes, directions):
        if cell == "lstm":
            out, *last = _lstm_layer(
                layer_input, *layer_states, weights, batch_sizes, directions, proj_size > 0,
                engine,
            )  # fmt: skip
            return out, last
        out, *last = _gru_layer(
            layer_input, *layer_states, weights, batch_sizes, directions, engine
        )
        return out, last

    return stack_layers(run_layer, x, states, all_weights, batch_sizes, bidirectional, dropout,
                        training)  # fmt: skip


def stack_layers(run_layer, x, states, all_weights, batch_sizes, bidirectional, dropout, training):
    """Layers over packed rows, each reading the one below (after dropout in training):
    the stack every gated (and options) layer shares.

    Args:
        run_layer: ``(layer, x, layer_states, weights, batch_sizes, directions) ->
            (out, finals)`` for one layer, all its directions; ``weights`` flattened
            over them.
        x, states, all_weights, batch_sizes, bidirectional, dropout, training: as in
            :func:`gated_stack`.

    Returns:
        ``(out, final_states)``, final_states shaped as ``states``.
    """
    directions = (False, True) if bidirectional else (False,)
    num_layers = len(all_weights) // len(directions)
    batch_sizes = tuple(batch_sizes)
    layer_input, finals = x, []
    for layer in range(num_layers):
        rows = slice(layer * len(directions), (layer + 1) * len(directions))
        weights = [w for ws in all_weights[rows] for w in ws]
        layer_states = [s[rows] for s in states]
        layer_input, last = run_layer(
            layer, layer_input, layer_states, weights, batch_sizes, directions
        )
        finals.append(last)
        if dropout and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, True)
    return layer_input, tuple(torch.cat(parts) for parts in zip(*finals, strict=True))
