"""The fused recurrence engine: equivalent to ``rnnkit.functional.rnn_reference``.

One custom autograd function per layer and direction. Its forward computes the
input projection of all steps in one GEMM, then runs the recurrence in place
in that buffer, which becomes the output. Its backward (backpropagation through
time) loops over steps computing only the gradient of the pre-activation, then
gets every weight gradient, the bias gradient and the input gradient with one
large GEMM each. It saves only the input, ``h_0`` and the hidden sequence: no
per-step autograd graph.

Sequences are held in the packed layout of ``torch.nn.utils.rnn.PackedSequence``:
the rows of all steps stacked, step ``t`` holding ``batch_sizes[t]`` rows (the
sequences still running, longest first). An ordinary ``(L, N, H_in)`` batch is
the special case ``batch_sizes = [N] * L``, so padding is never computed.

Only torch ops are used, so the engine runs on any device and floating dtype.

Shape symbols: ``R = sum(batch_sizes)`` packed rows, ``N = batch_sizes[0]``,
``H_in`` input features, ``H_out`` hidden features.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit import compiled

# Largest batch * hidden_size**2 for which "auto" picks the compiled loops:
# beyond it a step's product dwarfs the interpreter's cost per step, and torch's
# own GEMM threads do better (measured with benchmarks/bench_rnn.py).
AUTO_COMPILED_MAX = 64 * 512 * 512

# Input widths up to which the backward GEMMs run transposed (see backward).
_NARROW_INPUT = 8


def _step_offsets(batch_sizes: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per packed row, its step and its position in the batch.

    Returns:
        ``(offsets, step, row)``: offsets ``(L + 1,)`` of each step's first
        row; ``step`` and ``row`` ``(R,)`` the step and batch position of each row.
    """
    sizes = torch.tensor(batch_sizes, device=device)
    offsets = torch.zeros(len(batch_sizes) + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(sizes, 0)
    step = torch.repeat_interleave(torch.arange(len(batch_sizes), device=device), sizes)
    row = torch.arange(int(offsets[-1]), device=device) - offsets[step]
    return offsets, step, row


def _last_step_rows(batch_sizes: Sequence[int], device: torch.device) -> Tensor:
    """Packed row index of each sequence's last step, in batch order ``(N,)``."""
    sizes = torch.tensor(batch_sizes, device=device)
    offsets = torch.cumsum(sizes, 0) - sizes
    batch = torch.arange(batch_sizes[0], device=device)
    lengths = (sizes[None, :] > batch[:, None]).sum(1)  # (N,)
    return offsets[lengths - 1] + batch


def _previous_state_rows(batch_sizes: Sequence[int], reverse: bool, device: torch.device) -> Tensor:
    """For each packed row, the row holding its previous state in ``cat([out, h0])``.

    The previous state of step ``t`` is step ``t - 1`` (``t + 1`` in reverse)
    for the sequences that ran there, and ``h0`` (row ``R + n``) for those that
    start at ``t``.
    """
    offsets, step, row = _step_offsets(batch_sizes, device)
    total = int(offsets[-1])
    from_h0 = total + row
    if not reverse:
        from_out = offsets[(step - 1).clamp(min=0)] + row
        return torch.where(step == 0, from_h0, from_out)
    sizes_next = torch.tensor([*batch_sizes[1:], 0], device=device)[step]
    from_out = offsets[step + 1] + row
    return torch.where(row < sizes_next, from_out, from_h0)


def _recurrence(out: Tensor, h0: Tensor, w_hh_t: Tensor, batch_sizes, reverse, activate_) -> None:
    """In place: ``out_t = activate(out_t + h_prev(t) @ w_hh_t)`` step by step.

    ``w_hh_t`` should be contiguous: BLAS calls on a transposed view cost about
    1 us more per step (measured at N=30, H=64), most of a small step.

    Shape:
        out ``(R, H_out)`` holding each step's input projection, h0 ``(N, H_out)``,
        w_hh_t ``(H_out, H_out)``.
    """
    steps = out.split(batch_sizes)
    n_prev = batch_sizes[-1] if reverse else batch_sizes[0]
    h = h0[:n_prev]
    if reverse:
        steps, batch_sizes = reversed(steps), reversed(batch_sizes)
    for o, n in zip(steps, batch_sizes, strict=True):
        if n == n_prev:
            o.addmm_(h, w_hh_t)
        elif n < n_prev:  # forward direction: finished sequences drop out
            o.addmm_(h[:n], w_hh_t)
        else:  # reverse direction: sequences starting here begin from h0
            o[:n_prev].addmm_(h, w_hh_t)
            o[n_prev:].addmm_(h0[n_prev:n], w_hh_t)
        activate_(o)
        h, n_prev = o, n


def _backward_recurrence(d, g, grad_h_n, w_hh, batch_sizes, reverse) -> None:
    """In place, walking back in time: ``d_t *= g_t + d_next @ w_hh``.

    On entry d holds act'(pre) and g the upstream dL/dh; on return d holds the
    gradient of every pre-activation. ``grad_h_n`` enters at each sequence's
    last step.

    Shape:
        d, g ``(R, H_out)``, grad_h_n ``(N, H_out)``, w_hh ``(H_out, H_out)``.
    """
    d_steps, g_steps = d.split(batch_sizes), g.split(batch_sizes)
    if not reverse:  # walk back from the last step
        d_steps, g_steps, batch_sizes = d_steps[::-1], g_steps[::-1], batch_sizes[::-1]
    d_next, n_prev = None, 0
    for d_t, g_t, n in zip(d_steps, g_steps, batch_sizes, strict=True):
        if d_next is None:  # the first step walked back: only dL/dh_n flows in
            g_t += grad_h_n[:n]
        elif n == n_prev:
            g_t.addmm_(d_next, w_hh)
        elif n < n_prev:  # reverse direction: the batch shrinks
            g_t.addmm_(d_next[:n], w_hh)
        else:  # forward direction: sequences whose last step is t get dL/dh_n
            g_t[:n_prev].addmm_(d_next, w_hh)
            g_t[n_prev:] += grad_h_n[n_prev:n]
        d_t.mul_(g_t)
        d_next, n_prev = d_t, n


def _forward_torch_ops(x, h0, w_ih, w_hh, bias, batch_sizes, reverse, relu) -> Tensor:
    """The recurrence with one torch op per step (any device and dtype)."""
    if relu or x.dtype != torch.float32 or x.device.type != "cpu":
        # The input projection of every step in one GEMM; the recurrence
        # then runs in place, so this buffer ends up holding the output.
        out = F.linear(x, w_ih, bias)  # (R, H_out)
        activate_ = Tensor.relu_ if relu else Tensor.tanh_
        _recurrence(out, h0, w_hh.t().contiguous(), batch_sizes, reverse, activate_)
        return out
    # float32 tanh on CPU costs 3x a sigmoid, and tanh(p) = 2 sigmoid(2p) - 1,
    # so run the recurrence on s = (h + 1) / 2 = sigmoid(2p):
    # 2 p_t = 2 (W_ih x_t + b - W_hh 1) + (4 W_hh) s_{t-1}.
    shift = -w_hh.sum(1) if bias is None else bias - w_hh.sum(1)
    out = F.linear(x, 2 * w_ih, 2 * shift)  # (R, H_out)
    s0 = (h0 + 1) * 0.5
    _recurrence(out, s0, (4 * w_hh).t().contiguous(), batch_sizes, reverse, Tensor.sigmoid_)
    return out.mul_(2).sub_(1)


def _forward_compiled(x, h0, w_ih, w_hh, bias, batch_sizes, reverse, relu) -> Tensor:
    """The recurrence in compiled loops (CPU, float32/float64)."""
    out = F.linear(x, w_ih, bias)  # (R, H_out), contiguous
    kind = "relu" if relu else "fast_tanh" if x.dtype == torch.float32 else "tanh"
    compiled.forward(out, h0, w_hh, batch_sizes, reverse, kind)
    return out


def _pre_activation_grad_torch_ops(grad_out, grad_h_n, out, w_hh, batch_sizes, reverse, relu):
    """dL/d(pre-activation) of every row, one torch op per step. Shape: ``(R, H_out)``."""
    # d: the activation's derivative, then (as g is walked back in time)
    # the gradient of the pre-activation, dpre_t = dL/dh_t * act'(pre_t).
    one = out.new_ones(())
    d = (out > 0).to(out.dtype) if relu else torch.addcmul(one, out, out, value=-1)  # 1 - h^2
    # g: dL/dh_t, the upstream gradient plus, added in place step by step,
    # what flows back through the recurrence.
    g = grad_out.clone(memory_format=torch.contiguous_format)  # (R, H_out)
    _backward_recurrence(d, g, grad_h_n, w_hh, batch_sizes, reverse)
    return d


class RNNLayerFunction(torch.autograd.Function):
    """One layer and direction of the Elman RNN over packed rows (see module doc)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, engine):
        relu = nonlinearity == "relu"
        bias = None if b_ih is None else b_ih + b_hh
        run = _forward_compiled if engine == "compiled" else _forward_torch_ops
        out = run(x, h0, w_ih, w_hh, bias, batch_sizes, reverse, relu)  # (R, H_out)
        # h_n: (N, H_out), each sequence's state after its last processed step
        if reverse:
            h_n = out[: batch_sizes[0]].clone()
        elif batch_sizes[-1] == batch_sizes[0]:
            h_n = out[out.size(0) - batch_sizes[-1] :].clone()
        else:
            h_n = out.index_select(0, _last_step_rows(batch_sizes, out.device))
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        ctx.batch_sizes, ctx.reverse, ctx.relu = batch_sizes, reverse, relu
        ctx.has_bias, ctx.engine = b_ih is not None, engine
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        batch_sizes, reverse = ctx.batch_sizes, ctx.reverse
        if ctx.engine == "compiled":
            pre_activation_grad = compiled.backward
        else:
            pre_activation_grad = _pre_activation_grad_torch_ops
        d = pre_activation_grad(grad_out, grad_h_n, out, w_hh, batch_sizes, reverse, ctx.relu)
        grad_x = grad_w_ih = None
        # BLAS is slow (4-7x, measured) on products with an output this narrow
        # (H_in columns); the transposed products are the same numbers, fast.
        narrow = x.size(1) <= _NARROW_INPUT
        if ctx.needs_input_grad[0]:
            grad_x = w_ih.t().mm(d.t()).t() if narrow else d.mm(w_ih)  # (R, H_in)
        if ctx.needs_input_grad[2]:
            grad_w_ih = x.t().mm(d).t() if narrow else d.t().mm(x)  # (H_out, H_in)
        grad_w_hh = grad_h0 = grad_b_ih = grad_b_hh = None
        if ctx.needs_input_grad[3]:
            grad_w_hh = _weight_hh_grad(d, out, h0, batch_sizes, reverse)
        if ctx.needs_input_grad[1]:
            if not reverse:
                first = d[: batch_sizes[0]]  # every sequence starts at step 0
            elif batch_sizes[-1] == batch_sizes[0]:
                first = d[d.size(0) - batch_sizes[0] :]
            else:
                first = d.index_select(0, _last_step_rows(batch_sizes, d.device))
            grad_h0 = first.mm(w_hh)  # (N, H_out)
        if ctx.has_bias:
            grad_b_ih = d.sum(0)
            # A separate tensor: autograd may accumulate into it in place.
            grad_b_hh = grad_b_ih.clone()
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None, None, None, None


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
    rows = _previous_state_rows(batch_sizes, reverse, d.device)
    h_prev = torch.cat([out, h0]).index_select(0, rows)  # (R, H_out)
    return d.t().mm(h_prev)


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
    engine = resolve_engine(engine, x, h0.size(0), w_hh.size(0))
    return RNNLayerFunction.apply(
        x, h0, w_ih, w_hh, b_ih, b_hh, tuple(batch_sizes), reverse, nonlinearity, engine
    )


def _check_layer_args(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes) -> None:
    """Refuse shapes the loops would misread (the compiled ones do not bounds-check)."""
    if any(not isinstance(n, int) or n <= 0 for n in batch_sizes) or any(
        later > earlier for earlier, later in itertools.pairwise(batch_sizes)
    ):
        raise ValueError(
            "Received an invalid value for argument `batch_sizes`, expected positive "
            f"non-increasing ints, got {list(batch_sizes)}."
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
    received = {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    for name, tensor in received.items():
        if tensor is not None and tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected shape "
                f"{expected[name]}, got {tuple(tensor.shape)}."
            )


def _describe(tensor: Tensor | None) -> str:
    return "None" if tensor is None else f"a tensor of shape {tuple(tensor.shape)}"


def rnn_stack(
    x: Tensor,
    hx: Tensor,
    all_weights: Sequence[Sequence[Tensor]],
    batch_sizes: Sequence[int],
    nonlinearity: str,
    bidirectional: bool,
    dropout: float,
    training: bool,
    engine: str = "auto",
) -> tuple[Tensor, Tensor]:
    """A multi-layer, optionally bidirectional RNN over packed rows.

    Args:
        x: packed input rows.
        hx: initial state of every layer and direction.
        all_weights: per (layer, direction), as in ``torch.nn.RNN.all_weights``.
        batch_sizes: rows per step.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bidirectional: every second entry of ``all_weights`` is a reverse pass.
        dropout: dropout on the outputs of all layers but the last.
        training: dropout applies only when True.
        engine: ``"auto"``, ``"compiled"`` or ``"fused"`` (see :func:`resolve_engine`).

    Returns:
        ``(out, h_n)``.

    Shape:
        x ``(R, H_in)``, hx ``(D * num_layers, N, H_out)``;
        out ``(R, D * H_out)``, h_n ``(D * num_layers, N, H_out)``.
    """
    num_directions = 2 if bidirectional else 1
    num_layers = len(all_weights) // num_directions
    batch_sizes = tuple(batch_sizes)
    engine = resolve_engine(engine, x, batch_sizes[0], hx.size(-1))
    layer_input, h_n = x, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            w_ih, w_hh, b_ih, b_hh = (*all_weights[index], None, None)[:4]
            out, h_last = RNNLayerFunction.apply(
                layer_input,
                hx[index],
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                batch_sizes,
                direction == 1,
                nonlinearity,
                engine,
            )
            outputs.append(out)
            h_n.append(h_last)
        layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, 1)
        if dropout and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, True)
    return layer_input, torch.stack(h_n)
