"""One layer and direction: the forward and backward of the fused engine.

``layer_forward`` and ``layer_backward`` are plain functions; two thin wrappers
give them to autograd: ``RNNLayerFunction`` (an ``autograd.Function``, the
cheapest in eager mode) and the ``torch.library`` custom ops
``rnnkit::rnn_layer`` / ``rnnkit::rnn_layer_backward`` with fake (meta)
implementations, which ``torch.compile(fullgraph=True)`` and ``torch.export``
trace as single opaque nodes. ``run_layer`` picks the wrapper.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit import compiled
from rnnkit.engine.rows import last_step_rows, previous_state_rows
from rnnkit.engine.torch_ops import forward_torch_ops, pre_activation_grad_torch_ops

# Largest batch * hidden_size**2 for which "auto" picks the compiled loops.
# Beyond it a step's product dwarfs the interpreter's few microseconds per step,
# and torch's GEMM (MKL) beats SciPy's OpenBLAS on such steps: at 1 thread,
# 4.9 ms against 6.2 ms for 100 steps of 30x256x256; at 2 threads torch also
# parallelises them (200x32x64x512 inference: torch ops 1.32x nn.RNN, compiled
# 0.77x). Measured with benchmarks/bench_rnn.py and rnnkit.bound.
AUTO_COMPILED_MAX = 512 * 1024

# Input widths up to which the backward GEMMs run transposed (see layer_backward).
_NARROW_INPUT = 8


def _forward_compiled(x, h0, w_ih, w_hh, bias, batch_sizes, reverse, relu) -> Tensor:
    """The recurrence in compiled loops (CPU, float32/float64)."""
    # The kernels add the bias in their activation loop: a bias here would cost
    # one more pass over the output (GEMM with beta=1 on a broadcast copy).
    out = x.mm(w_ih.t())  # (R, H_out), contiguous
    kind = "relu" if relu else "fast_tanh" if x.dtype == torch.float32 else "tanh"
    compiled.forward(out, h0, w_hh, bias, batch_sizes, reverse, kind)
    return out


def layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine):
    """The forward pass of one layer and direction; ``engine`` already resolved.

    Returns:
        ``(out, h_n)``, as :func:`rnn_layer`.
    """
    relu = nonlinearity == "relu"
    bias = None if b_ih is None else b_ih + b_hh
    run = _forward_compiled if engine == "compiled" else forward_torch_ops
    out = run(x, h0, w_ih, w_hh, bias, batch_sizes, reverse, relu)  # (R, H_out)
    # h_n: (N, H_out), each sequence's state after its last processed step
    if reverse:
        h_n = out[: batch_sizes[0]].clone()
    elif batch_sizes[-1] == batch_sizes[0]:
        h_n = out[out.size(0) - batch_sizes[-1] :].clone()
    else:
        h_n = out.index_select(0, last_step_rows(batch_sizes, out.device))
    return out, h_n


def layer_backward(
    grad_out, grad_h_n, x, h0, w_ih, w_hh, out, batch_sizes, reverse, nonlinearity, engine, needs
):
    """Backpropagation through time for one layer and direction.

    Args:
        grad_out, grad_h_n: upstream gradients of ``out`` and ``h_n``.
        x, h0, w_ih, w_hh: the forward inputs; out: the forward's hidden sequence.
        batch_sizes, reverse, nonlinearity, engine: as in the forward.
        needs: which of ``(x, h0, w_ih, w_hh, bias)`` need a gradient.

    Returns:
        ``(grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_bias)``, None where not needed.
    """
    relu = nonlinearity == "relu"
    if engine == "compiled":
        pre_activation_grad = compiled.backward
    else:
        pre_activation_grad = pre_activation_grad_torch_ops
    d = pre_activation_grad(grad_out, grad_h_n, out, w_hh, batch_sizes, reverse, relu)
    grad_x = grad_h0 = grad_w_ih = grad_w_hh = grad_bias = None
    # BLAS is slow (4-7x, measured) on products with an output this narrow
    # (H_in columns); the transposed products are the same numbers, fast.
    narrow = x.size(1) <= _NARROW_INPUT
    if needs[0]:
        grad_x = w_ih.t().mm(d.t()).t() if narrow else d.mm(w_ih)  # (R, H_in)
    if needs[1]:
        if not reverse:
            first = d[: batch_sizes[0]]  # every sequence starts at step 0
        elif batch_sizes[-1] == batch_sizes[0]:
            first = d[d.size(0) - batch_sizes[0] :]
        else:
            first = d.index_select(0, last_step_rows(batch_sizes, d.device))
        grad_h0 = first.mm(w_hh)  # (N, H_out)
    if needs[2]:
        grad_w_ih = x.t().mm(d).t() if narrow else d.t().mm(x)  # (H_out, H_in)
    if needs[3]:
        grad_w_hh = _weight_hh_grad(d, out, h0, batch_sizes, reverse)
    if needs[4]:
        grad_bias = d.sum(0)  # (H_out,)
    return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_bias


def _weight_hh_grad(d: Tensor, out: Tensor, h0: Tensor, batch_sizes, reverse: bool) -> Tensor:
    """``sum_t dpre_t^T @ h_prev(t)`` as (at most) two GEMMs.

    Shape:
        d, out ``(R, H_out)``, h0 ``(N, H_out)``; returns ``(H_out, H_out)``.
    """
    n = batch_sizes[0]
    if batch_sizes[-1] == n:  # equal lengths: previous states are a shifted slice
        if reverse:
            return torch.addmm(d[-n:].t().mm(h0), d[:-n].t(), out[n:])
        return torch.addmm(d[:n].t().mm(h0), d[n:].t(), out[:-n])
    rows = previous_state_rows(batch_sizes, reverse, d.device)
    h_prev = torch.cat([out, h0]).index_select(0, rows)  # (R, H_out)
    return d.t().mm(h_prev)


class RNNLayerFunction(torch.autograd.Function):
    """``layer_forward``/``layer_backward`` for eager autograd (see module doc)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine):
        out, h_n = layer_forward(
            x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine
        )
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        ctx.args = (batch_sizes, reverse, nonlinearity, engine)
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        need = ctx.needs_input_grad
        needs = (need[0], need[1], need[2], need[3], need[4] or need[5])
        grads = layer_backward(grad_out, grad_h_n, x, h0, w_ih, w_hh, out, *ctx.args, needs)
        grad_bias = grads[4]
        # b_hh gets a separate tensor: autograd may accumulate into it in place.
        grad_b_hh = None if grad_bias is None else grad_bias.clone()
        return (*grads, grad_b_hh, None, None, None, None)


@torch.library.custom_op("rnnkit::rnn_layer", mutates_args=())
def _rnn_layer_op(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    batch_sizes: list[int],
    reverse: bool,
    nonlinearity: str,
    engine: str,
) -> tuple[Tensor, Tensor]:
    engine = resolve_engine(engine, x, h0.size(0), w_hh.size(0))
    return layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine)


@_rnn_layer_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine):
    return x.new_empty(x.size(0), w_hh.size(0)), h0.new_empty(h0.shape)


@torch.library.custom_op("rnnkit::rnn_layer_backward", mutates_args=())
def _rnn_layer_backward_op(
    grad_out: Tensor,
    grad_h_n: Tensor,
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    out: Tensor,
    batch_sizes: list[int],
    reverse: bool,
    nonlinearity: str,
    engine: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    engine = resolve_engine(engine, x, h0.size(0), w_hh.size(0))
    args = (x, h0, w_ih, w_hh, out, batch_sizes, reverse, nonlinearity, engine, (True,) * 5)
    grads = layer_backward(grad_out.contiguous(), grad_h_n.contiguous(), *args)
    # Contiguous, as the fake implementation promises (some come out transposed).
    return tuple(grad.contiguous() for grad in grads)


@_rnn_layer_backward_op.register_fake
def _(grad_out, grad_h_n, x, h0, w_ih, w_hh, out, batch_sizes, reverse, nonlinearity, engine):
    hidden = w_hh.size(0)
    return (
        torch.empty_like(x),
        torch.empty_like(h0),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        w_hh.new_empty(hidden),
    )


def _setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, _, batch_sizes, reverse, nonlinearity, engine = inputs
    ctx.save_for_backward(x, h0, w_ih, w_hh, output[0])
    ctx.args = (batch_sizes, reverse, nonlinearity, engine)
    ctx.has_bias = b_ih is not None


def _op_backward(ctx, grad_out, grad_h_n):
    x, h0, w_ih, w_hh, out = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grads = _rnn_layer_backward_op(grad_out, grad_h_n, x, h0, w_ih, w_hh, out, *ctx.args)
    grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_bias = grads
    if not ctx.has_bias:
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, None, None, None, None, None, None
    return (
        grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_bias, grad_bias.clone(),
        None, None, None, None,
    )  # fmt: skip


_rnn_layer_op.register_autograd(_op_backward, setup_context=_setup_context)


def run_layer(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine):
    """One layer through autograd: the custom op while torch.compile/export traces
    (one opaque node with a fake implementation), the autograd.Function in eager
    mode (a few microseconds cheaper per call), neither when no gradient is needed."""
    if torch.compiler.is_compiling():
        return _rnn_layer_op(
            x, h0, w_ih, w_hh, b_ih, b_hh, list(batch_sizes), reverse, nonlinearity, engine
        )
    engine = resolve_engine(engine, x, h0.size(0), w_hh.size(0))
    args = (x, h0, w_ih, w_hh, b_ih, b_hh, tuple(batch_sizes), reverse, nonlinearity, engine)
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, w_ih, w_hh, b_ih, b_hh)
    ):
        return RNNLayerFunction.apply(*args)
    return layer_forward(*args)  # nothing to differentiate: skip autograd's bookkeeping


def resolve_engine(requested: str, x: Tensor, batch: int, hidden_size: int) -> str:
    """The one place that picks the engine of a layer: ``"compiled"`` or ``"fused"``.

    ``"auto"`` takes the compiled CPU loops where they run (CPU, float32 or
    float64, numba and SciPy installed) and a step's product is small enough
    that they win (``batch * hidden_size**2 <= AUTO_COMPILED_MAX``); the
    torch-ops engine everywhere else. ``"compiled"`` insists on the compiled
    loops; ``"fused"`` on torch ops.

    Args:
        requested: ``"auto"``, ``"compiled"`` or ``"fused"``.
        x: the layer input (its device and dtype decide).
        batch: sequences in the batch.
        hidden_size: features of the hidden state.

    Returns:
        ``"compiled"`` or ``"fused"``.
    """
    if requested == "fused":
        return "fused"
    runs_compiled = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    if requested == "compiled":
        if not runs_compiled:
            raise ValueError(
                "The compiled engine runs on CPU in float32 or float64; received input on "
                f"{x.device} in {x.dtype}. Use engine 'auto' or 'fused'."
            )
        if not compiled.available():
            raise ImportError("The compiled engine needs numba and scipy: pip install numba scipy")
        return "compiled"
    if requested != "auto":
        raise ValueError(
            "Received an invalid value for argument `engine`, expected one of "
            f"'auto', 'compiled', 'fused', got {requested!r}."
        )
    small_step = batch * hidden_size * hidden_size <= AUTO_COMPILED_MAX
    return "compiled" if runs_compiled and small_step and compiled.available() else "fused"


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    batch_sizes: Sequence[int],
    reverse: bool,
    nonlinearity: str,
    engine: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Run one layer and direction with the fused engine.

    Args:
        x: packed input rows.
        h0: initial state of each sequence.
        w_ih, w_hh, b_ih, b_hh: the layer's weights; the biases are both
            tensors or both None.
        batch_sizes: rows per step, non-increasing, all positive.
        reverse: run from the last step to the first.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        engine: ``"auto"``, ``"compiled"`` or ``"fused"`` (see :func:`resolve_engine`).

    Returns:
        ``(out, h_n)``: the state at every packed row, and each sequence's
        state after its last processed step.

    Shape:
        x ``(R, H_in)``, h0 ``(N, H_out)``; out ``(R, H_out)``, h_n ``(N, H_out)``.
    """
    if (b_ih is None) != (b_hh is None):
        raise ValueError(
            "Received biases b_ih and b_hh of which only one is None; expected both "
            f"tensors or both None, got b_ih={_describe(b_ih)} and b_hh={_describe(b_hh)}."
        )
    _check_layer_args(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes)
    args = (tuple(batch_sizes), reverse, nonlinearity, engine)  # run_layer resolves engine
    return run_layer(x, h0, w_ih, w_hh, b_ih, b_hh, *args)


def _check_layer_args(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes) -> None:
    """Refuse shapes the loops would misread (the compiled ones do not bounds-check)."""
    if (
        not batch_sizes
        or any(not isinstance(n, int) or n <= 0 for n in batch_sizes)
        or any(later > earlier for earlier, later in itertools.pairwise(batch_sizes))
    ):
        raise ValueError(
            "Received an invalid value for argument `batch_sizes`, expected positive "
            f"non-increasing ints, got {list(batch_sizes)}."
        )
    received = {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    for name, tensor in received.items():
        dims = 1 if name.startswith("b_") else 2
        if tensor is not None and tensor.dim() != dims:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected shape of "
                f"{dims} dimensions, got {tuple(tensor.shape)}."
            )
    hidden = w_hh.size(0)
    expected = {
        "x": (sum(batch_sizes), x.size(-1)),
        "h0": (batch_sizes[0], hidden),
        "w_ih": (hidden, x.size(-1)),
        "w_hh": (hidden, hidden),
        "b_ih": (hidden,),
        "b_hh": (hidden,),
    }
    for name, tensor in received.items():
        if tensor is not None and tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected shape "
                f"{expected[name]}, got {tuple(tensor.shape)}."
            )


def _describe(tensor: Tensor | None) -> str:
    return "None" if tensor is None else f"a tensor of shape {tuple(tensor.shape)}"
