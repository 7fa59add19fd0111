"""One layer, all its directions: the forward and backward of the fused engine.

``layer_forward`` and ``layer_backward`` are plain functions; two thin wrappers
give them to autograd: ``RNNLayerFunction`` (an ``autograd.Function``, the
cheapest in eager mode) and the ``torch.library`` custom ops
``rnnkit::rnn_layer`` / ``rnnkit::rnn_layer_backward`` with fake (meta)
implementations, which ``torch.compile(fullgraph=True)`` and ``torch.export``
trace as single opaque nodes. ``run_layer`` picks the wrapper.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit import compiled
from rnnkit.compiled import warmup
from rnnkit.engine.onednn import ALWAYS
from rnnkit.engine.products import add_input_grad
from rnnkit.engine.rows import last_step_rows
from rnnkit.engine.torch_ops import forward_torch_ops, pre_activation_grad_torch_ops
from rnnkit.engine.walk import recurrent_weight_grad
from rnnkit.engine.workspace import scratch

# Largest batch * hidden_size**2 for which "auto" picks the compiled loops when
# they have only SciPy's BLAS (torch's own BLAS not usable: see
# rnnkit.compiled.blas). Beyond it SciPy's OpenBLAS, on one thread, loses to
# torch's GEMM (MKL) on a step's product: at 1 thread, 4.9 ms against 6.2 ms for
# 100 steps of 30x256x256; at 2 threads torch also parallelises them
# (200x32x64x512 inference: torch ops 1.32x nn.RNN, compiled 0.77x). With
# torch's BLAS the compiled loops call it for large products and win at every
# size measured (see resolve_engine). Measured with benchmarks/bench_rnn.py.
AUTO_COMPILED_MAX = 512 * 1024
# The same limit when torch runs on one thread, where nothing parallelises torch's
# per-step GEMM: at 50x64x32x128 (64 * 128**2 = 2**20) the compiled loops beat the
# torch-ops engine in all 8 layer/direction/mode rows, by 6-25%, at 1 thread, and
# lose by 7-12% at 2 (interleaved in one process); at 100x30x4x256 they tie.
AUTO_COMPILED_MAX_ONE_THREAD = 1 << 20

_FULL_PRECISION = (torch.float32, torch.float64)

# In inference, a stacked layer's input projection overwrites its input (the layer
# below's output, which nothing else reads) in row chunks of a sixteenth of it, so
# that the stack holds one layer's output at a time plus a chunk; chunks have at
# least _IN_PLACE_MIN_ROWS rows, so short inputs do not pay for many small GEMMs.
# (A one-direction layer on the compiled engine needs no chunk: its kernel projects
# step by step; see _forward_compiled. A thirty-second measured 2-6% slower.)
_IN_PLACE_CHUNKS = 16
_IN_PLACE_MIN_ROWS = 64
# ... except where a step has at most _BY_STEP_FEW_ROWS rows and w_ih at least
# _BY_STEP_LARGE_WEIGHT elements: there each step's projection reads the whole weight for a
# few rows, beside W_hh, and projecting all rows first (through the chunks) wins; see
# _forward_compiled.
_BY_STEP_FEW_ROWS = 8
_BY_STEP_LARGE_WEIGHT = 1 << 16


def _per_direction(weights: Sequence[Tensor], num_directions: int) -> list[tuple]:
    """``(w_ih, w_hh, b_ih, b_hh)`` per direction from the flat list (biases None if absent)."""
    per = len(weights) // num_directions
    return [(*weights[k * per : (k + 1) * per], None, None)[:4] for k in range(num_directions)]


def _project(x: Tensor, w_ihs: Sequence[Tensor], x_is_scratch: bool, biases=None) -> Tensor:
    """``x @ w_ih^T`` of every direction, side by side (plus ``biases`` if given, one
    per direction); overwriting ``x`` chunk by chunk where allowed.

    Each direction's GEMM writes its own columns (BLAS takes the row stride), so
    the weights are never concatenated. In float32/float64 the bias is left to
    the caller: a GEMM with the bias costs far more than without it plus one
    pass adding it (9.9 ms against 6.1 + 0.4 ms at 6400x64 -> 512, 1 thread). In
    half precision that pass would round the sum a second time, so there the
    GEMM adds it (see :func:`layer_forward`).

    Shape:
        x ``(R, H_in)``, each w_ih ``(H_out, H_in)``; returns ``(R, D * H_out)``.
    """
    hidden = w_ihs[0].size(0)
    width = hidden * len(w_ihs)

    def into(rows: Tensor, out: Tensor) -> None:
        for k, w_ih in enumerate(w_ihs):
            columns = out[:, k * hidden : (k + 1) * hidden]
            if biases is None:
                torch.mm(rows, w_ih.t(), out=columns)
            else:
                torch.addmm(biases[k], rows, w_ih.t(), out=columns)

    if not _projects_in_place(x, width, x_is_scratch):
        out = x.new_empty(x.size(0), width)
        into(x, out)
        return out
    rows = max(-(-x.size(0) // _IN_PLACE_CHUNKS), _IN_PLACE_MIN_ROWS)
    buffer = x.new_empty(min(rows, x.size(0)), width)
    for chunk in x.split(rows):
        product = buffer[: chunk.size(0)]
        into(chunk, product)
        chunk.copy_(product)
    return x


def _empty_like(tensor: Tensor) -> Tensor:
    """An uninitialised contiguous tensor like ``tensor``: ``t.new_empty(t.shape)``
    parses the size as a sequence of symbolic ints (2.1 against 0.9 us)."""
    return torch.empty_like(tensor, memory_format=torch.contiguous_format)


def _projects_in_place(x: Tensor, width: int, x_is_scratch: bool) -> bool:
    """Whether :func:`_project` writes its ``width`` columns over ``x``."""
    return x_is_scratch and x.size(1) == width and x.is_contiguous() and x.size(0) > 0


def layer_forward(
    x, h0, weights, batch_sizes, directions, nonlinearity, engine, x_is_scratch=False, h_n=None
):
    """The forward pass of every direction of one layer; ``engine`` already resolved.

    The directions share one output buffer: each direction's input projection
    is written into its columns and its recurrence runs there in place, so
    nothing is concatenated.

    Args:
        x: packed input rows.
        h0: initial state per direction.
        weights: per direction ``w_ih, w_hh[, b_ih, b_hh]``, flattened.
        batch_sizes: rows per step.
        directions: per direction, whether it runs in reverse.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        engine: ``"compiled"`` or ``"fused"``.
        x_is_scratch: ``x`` may be overwritten (a stacked layer's input in inference).
        h_n: where to write the last states (the layer's rows of a stack's
            ``h_n``, in inference), or None for a new tensor.

    Returns:
        ``(out, h_n)``: the state of every direction at every packed row, and
        each sequence's state after its last processed step.

    Shape:
        x ``(R, H_in)``, h0 ``(D, N, H_out)``; out ``(R, D * H_out)``, h_n ``(D, N, H_out)``.
    """
    relu = nonlinearity == "relu"
    layers = _per_direction(weights, len(directions))
    h_n = _empty_like(h0) if h_n is None else h_n
    if engine == "compiled":
        return _forward_compiled(x, h0, layers, batch_sizes, directions, relu, x_is_scratch, h_n)
    biases = [None if b_ih is None else b_ih + b_hh for _, _, b_ih, b_hh in layers]
    # Other dtypes (half precision: torch ops only) add the bias in the GEMM, rounding once.
    in_gemm = biases[0] is not None and x.dtype not in _FULL_PRECISION
    out = _project(x, [w[0] for w in layers], x_is_scratch, biases if in_gemm else None)
    remaining = [None] * len(biases) if in_gemm else biases
    forward_torch_ops(out, h0, [w[1] for w in layers], remaining, batch_sizes, directions, relu)
    return out, _last_states(out, batch_sizes, directions, h_n)


def _forward_compiled(x, h0, layers, batch_sizes, directions, relu, x_is_scratch, h_n):
    """:func:`layer_forward` on the compiled loops: one kernel call per direction
    projects the input into the direction's columns, runs the recurrence and
    writes ``h_n`` (at small sizes the torch ops around a kernel cost more than
    it: 100 steps of 1 x 64). A stacked layer's input that may be overwritten is
    projected in place first, as in the torch-ops engine.

    Args:
        as :func:`layer_forward`; layers: per direction ``(w_ih, w_hh, b_ih,
        b_hh)`` (the kernel adds the biases); relu: the activation; h_n: written.
    """
    hidden = h0.size(2)
    width = hidden * len(directions)
    kind = "relu" if relu else "fast_tanh" if x.dtype == torch.float32 else "tanh"
    in_place = _projects_in_place(x, width, x_is_scratch)
    # One direction over its own input: the kernel projects each step's rows just
    # before it overwrites them, with no buffer (two directions both read every row).
    # Against projecting all rows first through a buffer (same process, alternating,
    # 2-layer uni inference): 0.85-1.07x the time on the six benchmark shapes at 1
    # and 2 threads, faster on the small ones (100x1x4x64 0.85x). But a step of few rows
    # by a large w_ih reads the weight for little work: at 1-8 sequences by H = 256-768
    # (16-100 steps, one thread, AMD Zen 3) projecting first was 1.05-1.47x faster; at
    # 30-64 sequences a tie (0.91-1.13), at H = 64-128 slower (0.71-1.09).
    by_step = (
        in_place
        and len(directions) == 1
        and not _few_rows_by_large_weight(batch_sizes, layers[0][0])
    )
    if by_step:
        out = x
    elif in_place:
        out = _project(x, [w[0] for w in layers], x_is_scratch)
    else:
        x, out = x.contiguous(), x.new_empty(x.size(0), width)
    for k, reverse in enumerate(directions):
        w_ih, w_hh, b_ih, b_hh = layers[k]
        if by_step:
            projected = {"w_ih": w_ih, "project_steps": True}
        else:  # already projected in place, or projected by the kernel from x
            projected = {} if in_place else {"x": x, "w_ih": w_ih}
        column = k * hidden  # the kernels add the bias in their activation loop
        compiled.forward(
            out, h0[k], w_hh, b_ih, batch_sizes, reverse, kind, column,
            h_n=h_n[k], bias_hh=b_hh, **projected,
        )  # fmt: skip
    return out, h_n


def _few_rows_by_large_weight(batch_sizes, w_ih: Tensor) -> bool:
    """Whether a step has at most ``_BY_STEP_FEW_ROWS`` rows (the first, the most) and
    ``w_ih`` at least ``_BY_STEP_LARGE_WEIGHT`` elements: a stacked layer's input is then
    projected before its time loop, not step by step (:func:`_forward_compiled`)."""
    return batch_sizes[0] <= _BY_STEP_FEW_ROWS and w_ih.numel() >= _BY_STEP_LARGE_WEIGHT


def _last_states(out: Tensor, batch_sizes, directions, h_n: Tensor) -> Tensor:
    """Each sequence's state after its last processed step, per direction, into ``h_n``.

    Shape:
        out ``(R, D * H_out)``; h_n ``(D, N, H_out)``, returned.
    """
    hidden, n = out.size(1) // len(directions), batch_sizes[0]
    last_rows = None
    for k, reverse in enumerate(directions):
        columns = out[:, k * hidden : (k + 1) * hidden]
        if reverse:
            h_n[k].copy_(columns[:n])
        elif batch_sizes[-1] == n:
            h_n[k].copy_(columns[out.size(0) - n :])
        else:
            last_rows = last_step_rows(batch_sizes, out.device) if last_rows is None else last_rows
            torch.index_select(columns, 0, last_rows, out=h_n[k])
    return h_n


def layer_backward(
    grad_out, grad_h_n, x, h0, weights, out, batch_sizes, directions, nonlinearity, engine, needs
):
    """Backpropagation through time for every direction of one layer.

    Each direction walks back through time in a few chunks of steps (see
    :func:`_time_chunks`): the gradient of the pre-activations of one chunk is
    computed into a chunk-sized buffer, turned into its share of every weight,
    input and ``h_0`` gradient with a few GEMMs, and the buffer is reused for the
    next chunk. A chunk boundary needs only ``d @ w_hh`` of the step just past it,
    which enters the next chunk as if it were ``grad_h_n``.

    Args:
        grad_out, grad_h_n: upstream gradients of ``out`` and ``h_n``.
        x, h0, weights: the forward inputs; out: the forward's hidden sequence.
        batch_sizes, directions, nonlinearity, engine: as in :func:`layer_forward`.
        needs: whether ``x``, ``h0`` and the weights need a gradient.

    Returns:
        ``(grad_x, grad_h0, grad_weights)``; grad_weights in the order of ``weights``
        (None where ``needs`` says no).

    Shape:
        as in :func:`layer_forward`; grad_x ``(R, H_in)``, grad_h0 ``(D, N, H_out)``.
    """
    relu = nonlinearity == "relu"
    hidden = out.size(1) // len(directions)
    grad_out = grad_out.contiguous()  # (R, D * H_out), each direction reads its columns
    chunks = _time_chunks(batch_sizes, out)
    # Every row is written by the first direction's chunks, then added to.
    grad_x = _empty_like(x) if needs[0] else None
    grad_h0 = _empty_like(h0) if needs[1] else None
    grad_weights = [] if needs[2] else None
    layers = _per_direction(weights, len(directions))
    if engine == "compiled" and batch_sizes[-1] == batch_sizes[0] > 0:
        # dL/d(pre-activation) of one chunk, one direction at a time
        d = scratch("rnn.d", (max(hi - lo for lo, hi in chunks) * batch_sizes[0], hidden), out)
        args = (grad_out, grad_h_n, x, h0, layers, out, directions, relu, d)
        return _backward_compiled_equal_lengths(*args, grad_x, grad_h0, grad_weights)
    offsets = [0, *itertools.accumulate(batch_sizes)]
    rows = max(offsets[hi] - offsets[lo] for lo, hi in chunks)
    d = scratch("rnn.d", (rows, out.size(1)), out)  # dL/d(pre-activation) of one chunk
    for k, (w_ih, w_hh, b_ih, _) in enumerate(layers):
        reverse, columns = directions[k], slice(k * hidden, (k + 1) * hidden)
        grads = _DirectionGrads(b_ih is not None) if needs[2] else None
        grad_h0_k = None if grad_h0 is None else grad_h0[k]
        into = _ChunkTarget(grad_x, grad_h0_k, w_ih, w_hh, grads, k == 0)
        entering = grad_h_n[k]  # dL/dh entering each sequence's last step in the chunk
        for lo, hi in chunks[::-1] if not reverse else chunks:
            r0, r1, sizes = offsets[lo], offsets[hi], batch_sizes[lo:hi]
            n = sizes[0]
            # The states the chunk's first step (in its direction) read.
            after = batch_sizes[hi] if hi < len(batch_sizes) else 0  # sequences running on
            if not reverse:
                before = h0[k] if lo == 0 else out[offsets[lo - 1] : offsets[lo - 1] + n, columns]
            elif after == n:
                before = out[r1 : r1 + n, columns]
            else:  # those running on read step hi, the others start here from h0
                before = h0[k][:n].clone()
                before[:after] = out[r1 : r1 + after, columns]
            d_chunk = d[: r1 - r0]
            _pre_activation_grad(
                engine, d_chunk, grad_out[r0:r1], entering[:n], out[r0:r1], w_hh,
                sizes, reverse, relu, columns,
            )  # fmt: skip
            d_k = d_chunk[:, columns]
            ended = after if reverse else 0
            into.add(d_k, x[r0:r1], out[r0:r1, columns], before, sizes, reverse, r0, ended)
            # dL/dh entering the next chunk (earlier in time, or later in reverse).
            if not reverse and lo > 0:
                entering = grad_h_n[k].clone()  # for the sequences that end in it
                entering[:n] = d_k[:n].mm(w_hh)  # for those that continue into this chunk
            elif reverse and after:
                last = offsets[hi - 1] - r0
                entering = d_k[last : last + after].mm(w_hh)
        if grads is not None:
            grad_weights += _direction_weight_grads(grads.w_ih_t.t(), grads.w_hh, grads.bias)
    return grad_x, grad_h0, grad_weights


def _backward_compiled_equal_lengths(
    grad_out, grad_h_n, x, h0, layers, out, directions, relu, d, grad_x, grad_h0, grad_weights
):  # fmt: skip
    """:func:`layer_backward` for sequences of equal length on the compiled
    engine: per direction, one compiled call walks the chunks of steps (each
    chunk's time loop, then its share of every other gradient as BLAS
    products), instead of a dozen torch ops per chunk, which cost more than the
    arithmetic at small sizes (measured: 100 steps of 1 x 64).

    Args:
        as :func:`layer_backward`; layers: per direction ``(w_ih, w_hh, b_ih, b_hh)``;
        d: a buffer for one chunk's dL/d(pre-activation) ``(S * N, H_out)``;
        grad_x, grad_h0: outputs or None; grad_weights: a list to extend, or None.
    """
    hidden = out.size(1) // len(directions)
    for k, (w_ih, w_hh, b_ih, _) in enumerate(layers):
        grads = compiled.backward_equal_lengths(
            d, grad_out, grad_h_n[k], x, out, h0[k], w_ih, w_hh, k * hidden, directions[k], relu,
            grad_x, None if grad_h0 is None else grad_h0[k], k > 0,
            grad_weights is not None, grad_weights is not None and b_ih is not None,
        )  # fmt: skip
        if grad_weights is not None:
            grad_weights += grads
    return grad_x, grad_h0, grad_weights


def _direction_weight_grads(w_ih: Tensor, w_hh: Tensor, bias: Tensor | None) -> list[Tensor]:
    """One direction's gradients in the order of its weights ``w_ih, w_hh[, b_ih, b_hh]``."""
    if bias is None:
        return [w_ih, w_hh]
    # b_hh gets a separate tensor: autograd may accumulate into it in place.
    return [w_ih, w_hh, bias, bias.clone()]


# Chunks of time steps in the backward pass when its gradient buffer would exceed
# _CHUNKED_BACKWARD_BYTES: two chunks halve that buffer, which keeps a training
# step's peak extra memory under twice the output (output + half + input gradient)
# for a few more small GEMMs per chunk. Below, one chunk: no extra calls.
_BACKWARD_CHUNKS = 2
_CHUNKED_BACKWARD_BYTES = 256 * 1024


def _time_chunks(batch_sizes, out: Tensor) -> list[tuple[int, int]]:
    """Step ranges ``[lo, hi)`` the backward pass walks, in time order."""
    steps = len(batch_sizes)
    if out.numel() * out.element_size() < _CHUNKED_BACKWARD_BYTES or steps < _BACKWARD_CHUNKS:
        return [(0, steps)]
    bounds = [steps * i // _BACKWARD_CHUNKS for i in range(_BACKWARD_CHUNKS + 1)]
    return list(itertools.pairwise(bounds))


def _pre_activation_grad(engine, d, grad_out, grad_h_n, out, w_hh, sizes, reverse, relu, columns):
    """One direction's dL/d(pre-activation) over a run of steps, into ``d[:, columns]``.

    Shape:
        d, grad_out, out ``(R, D * H_out)``, grad_h_n ``(N, H_out)``.
    """
    if engine == "compiled":
        compiled.backward(d, grad_out, grad_h_n, out, w_hh, sizes, reverse, relu, columns.start)
    else:
        args = (grad_h_n, out[:, columns], w_hh, sizes, reverse, relu)
        pre_activation_grad_torch_ops(d[:, columns], grad_out[:, columns], *args)


class _DirectionGrads:
    """One direction's weight gradients, summed over chunks of time steps: ``w_ih_t``
    (transposed), ``w_hh`` and ``bias`` (None without biases)."""

    def __init__(self, has_bias: bool):
        self.has_bias = has_bias
        self.w_ih_t = self.w_hh = self.bias = None

    def add(self, d: Tensor, x: Tensor, out: Tensor, before: Tensor, sizes, reverse: bool):
        """Shape: d, out ``(r, H_out)``, x ``(r, H_in)``, before ``(n, H_out)``."""
        w_ih_t = x.t().mm(d)  # (H_in, H_out): transposed, fast also for a narrow H_in
        w_hh = recurrent_weight_grad(d, out, before, sizes, reverse)  # (H_out, H_out)
        bias = d.sum(0) if self.has_bias else None
        if self.w_ih_t is None:
            self.w_ih_t, self.w_hh, self.bias = w_ih_t, w_hh, bias
            return
        self.w_ih_t += w_ih_t
        self.w_hh += w_hh
        if bias is not None:
            self.bias += bias


class _ChunkTarget:
    """Where one direction's chunks of dL/d(pre-activation) go: input, ``h_0`` and weights.

    Args:
        grad_x: the input gradient, shared by the directions: the first writes
            each row (its chunks are disjoint), the others add to it.
        grad_h0: this direction's ``h_0`` gradient, each row written once (in
            the chunk holding that sequence's first processed step).
        w_ih, w_hh: this direction's weights.
        grads: this direction's weight gradients, or None when none is needed.
        first: this is the first direction.
    """

    def __init__(self, grad_x, grad_h0, w_ih: Tensor, w_hh: Tensor, grads, first: bool):
        self.grad_x, self.grad_h0, self.grads, self.first = grad_x, grad_h0, grads, first
        self.w_ih, self.w_hh = w_ih, w_hh

    def add(self, d, x, out, before, sizes, reverse, first_row, ended) -> None:
        """Adds one chunk's share.

        Args:
            d: the chunk's dL/d(pre-activation); x, out: its input and states.
            before: the state before the chunk's first step (in its direction).
            sizes: the chunk's batch sizes; reverse: the direction.
            first_row: the chunk's first packed row.
            ended: in reverse, sequences ``ended:`` have their first processed step here.

        Shape:
            d, out ``(r, H_out)``, x ``(r, H_in)``, before ``(sizes[0], H_out)``.
        """
        w_ih, w_hh = self.w_ih, self.w_hh
        if self.grad_x is not None:
            rows = self.grad_x[first_row : first_row + d.size(0)]  # (r, H_in)
            add_input_grad(rows, d, w_ih, self.first)
        if self.grad_h0 is not None:
            if not reverse and first_row == 0:  # every sequence starts at step 0
                torch.mm(d[: sizes[0]], w_hh, out=self.grad_h0)
            elif reverse:  # each sequence starts at its last step
                first = last_step_rows(sizes, d.device)[ended:]
                self.grad_h0[ended : sizes[0]] = d.index_select(0, first).mm(w_hh)
        if self.grads is not None:
            self.grads.add(d, x, out, before, sizes, reverse)


class RNNLayerFunction(torch.autograd.Function):
    """``layer_forward``/``layer_backward`` for eager autograd (see module doc)."""

    @staticmethod
    def forward(ctx, x, h0, batch_sizes, directions, nonlinearity, engine, *weights):
        out, h_n = layer_forward(x, h0, weights, batch_sizes, directions, nonlinearity, engine)
        ctx.save_for_backward(x, h0, out, *weights)
        ctx.args = (batch_sizes, directions, nonlinearity, engine)
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n):
        x, h0, out, *weights = ctx.saved_tensors
        need = ctx.needs_input_grad
        needs = (need[0], need[1], any(need[6:]))
        grad_x, grad_h0, grad_weights = layer_backward(
            grad_out, grad_h_n, x, h0, weights, out, *ctx.args, needs
        )
        grad_weights = grad_weights or [None] * len(weights)
        grad_weights = [g if n else None for g, n in zip(grad_weights, need[6:], strict=True)]
        return grad_x, grad_h0, None, None, None, None, *grad_weights


@torch.library.custom_op("rnnkit::rnn_layer", mutates_args=())
def _rnn_layer_op(
    x: Tensor,
    h0: Tensor,
    weights: list[Tensor],
    batch_sizes: list[int],
    directions: list[bool],
    nonlinearity: str,
    engine: str,
) -> tuple[Tensor, Tensor]:
    engine = resolve_engine(engine, x, h0.size(1), h0.size(2))
    return layer_forward(x, h0, weights, batch_sizes, directions, nonlinearity, engine)


@_rnn_layer_op.register_fake
def _(x, h0, weights, batch_sizes, directions, nonlinearity, engine):
    return x.new_empty(x.size(0), h0.size(0) * h0.size(2)), h0.new_empty(h0.shape)


@torch.library.custom_op("rnnkit::rnn_layer_backward", mutates_args=())
def _rnn_layer_backward_op(
    grad_out: Tensor,
    grad_h_n: Tensor,
    x: Tensor,
    h0: Tensor,
    weights: list[Tensor],
    out: Tensor,
    batch_sizes: list[int],
    directions: list[bool],
    nonlinearity: str,
    engine: str,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    engine = resolve_engine(engine, x, h0.size(1), h0.size(2))
    args = (out, batch_sizes, directions, nonlinearity, engine, (True,) * 3)
    grad_x, grad_h0, grad_weights = layer_backward(
        grad_out.contiguous(), grad_h_n.contiguous(), x, h0, weights, *args
    )
    # Contiguous and unaliased, as the fake implementation promises (some are
    # transposed or column views).
    contiguous = torch.contiguous_format
    grad_weights = [g.clone(memory_format=contiguous) for g in grad_weights]
    return grad_x.contiguous(), grad_h0.contiguous(), grad_weights


@_rnn_layer_backward_op.register_fake
def _(grad_out, grad_h_n, x, h0, weights, out, batch_sizes, directions, nonlinearity, engine):
    # contiguous, whatever the operands' strides, as the real implementation returns
    return x.new_empty(x.shape), h0.new_empty(h0.shape), [w.new_empty(w.shape) for w in weights]


def _setup_context(ctx, inputs, output):
    x, h0, weights, batch_sizes, directions, nonlinearity, engine = inputs
    ctx.save_for_backward(x, h0, output[0], *weights)
    ctx.args = (batch_sizes, directions, nonlinearity, engine)


def _op_backward(ctx, grad_out, grad_h_n):
    x, h0, out, *weights = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_x, grad_h0, grad_weights = _rnn_layer_backward_op(
        grad_out, grad_h_n, x, h0, weights, out, *ctx.args
    )
    return grad_x, grad_h0, grad_weights, None, None, None, None


_rnn_layer_op.register_autograd(_op_backward, setup_context=_setup_context)


def run_layer(
    x, h0, weights, batch_sizes, directions, nonlinearity, engine, x_is_scratch=False, h_n=None
):
    """One layer (all directions) through autograd: the custom op while
    torch.compile/export traces (one opaque node with a fake implementation),
    the autograd.Function in eager mode (a few microseconds cheaper per call),
    neither when no gradient is needed (then ``x_is_scratch`` lets the input
    projection overwrite ``x``, and the last states go into ``h_n`` if given).

    Shape:
        as in :func:`layer_forward`.
    """
    if torch.compiler.is_compiling():
        return _rnn_layer_op(
            x, h0, list(weights), list(batch_sizes), list(directions), nonlinearity, engine
        )
    engine = resolve_engine(engine, x, h0.size(1), h0.size(2))
    args = (tuple(batch_sizes), tuple(directions), nonlinearity, engine)
    if grad_needed(x, h0, weights):
        return RNNLayerFunction.apply(x, h0, *args, *weights)
    # nothing to differentiate: skip autograd's bookkeeping
    return layer_forward(x, h0, weights, *args, x_is_scratch=x_is_scratch, h_n=h_n)


def grad_needed(x: Tensor, h0: Tensor, weights: Iterable[Tensor]) -> bool:
    """Whether eager autograd records a layer (or stack) with these inputs:
    :func:`run_layer` then goes through :class:`RNNLayerFunction`."""
    return torch.is_grad_enabled() and (
        x.requires_grad or h0.requires_grad or any(w.requires_grad for w in weights)
    )


def resolve_engine(
    requested: str,
    x: Tensor,
    batch: int,
    hidden_size: int,
    cell: str = "rnn",
    onednn: str | None = None,
    native: str | None = None,
) -> str:
    """The one place that picks the engine of a layer: ``"compiled"``, ``"fused"``
    or, for a whole LSTM stack, ``"onednn"``, or for a whole stack on torch's own layer,
    ``"native"``.

    ``"auto"`` takes the compiled CPU loops where they run (CPU, float32 or
    float64, numba and SciPy installed) and win: at every size when they can
    call torch's own BLAS for large products, else only while a step's product
    is small (``batch * hidden_size**2 <= AUTO_COMPILED_MAX``, or
    ``AUTO_COMPILED_MAX_ONE_THREAD`` when torch runs on one thread), once their
    kernels for the input's dtype and the cell are loaded: until then (compiling
    takes 5-15 s on first use) the torch-ops engine runs while they are prepared
    in the background (:mod:`rnnkit.compiled.warmup`). The torch-ops engine everywhere
    else. An LSTM stack that torch's oneDNN LSTM can run (``onednn``, from
    :func:`rnnkit.engine.onednn.onednn_fit`) runs there under ``"auto"`` where it
    wins (``"always"``), and where it only beats the torch-ops engine
    (``"until_compiled"``) until the compiled kernels are ready. A stack that torch's
    own layer may run (``native``) runs there on CPU where it wins (``"always"``: a
    GRU's or Elman layer's call of one step), and in inference (``"until_compiled"``)
    until the compiled kernels are ready: our torch-ops loops are slower than it there.
    ``"compiled"`` insists on the compiled loops, waiting for their kernels if
    need be; ``"fused"`` on torch ops.

    Args:
        requested: ``"auto"``, ``"compiled"`` or ``"fused"``.
        x: the layer input (its device and dtype decide).
        batch: sequences in the batch.
        hidden_size: features of the hidden state.
        cell: "rnn", "lstm" or "gru": whose kernels the compiled engine needs.
        onednn: ``"always"``, ``"until_compiled"`` or None (oneDNN cannot run it).
        native: ``"always"``, ``"until_compiled"`` or None (torch's layer does not run it).

    Returns:
        ``"compiled"``, ``"fused"``, ``"onednn"`` or ``"native"``.
    """
    if requested == "fused":
        return "fused"
    # is_cpu: a sixth of device.type's cost, which shows in a batch-1 call
    runs_compiled = x.is_cpu and x.dtype in (torch.float32, torch.float64)
    if requested == "compiled":
        if not runs_compiled:
            raise ValueError(
                "The compiled engine runs on CPU in float32 or float64; received input on "
                f"{x.device} in {x.dtype}. Use engine 'auto' or 'fused'."
            )
        if not compiled.available():
            raise ImportError("The compiled engine needs numba and scipy: pip install numba scipy")
        warmup.wait(x.dtype, cell)
        return "compiled"
    if requested != "auto":
        raise ValueError(
            "Received an invalid value for argument `engine`, expected one of "
            f"'auto', 'compiled', 'fused', got {requested!r}."
        )
    if onednn == ALWAYS:
        return "onednn"
    if native == ALWAYS and x.is_cpu:
        return "native"
    if not (runs_compiled and compiled.available()):
        return "onednn" if onednn else "fused"
    # Asked before the size rule, whose large_gemm_library() would import numba here.
    if not warmup.ready(x.dtype, cell):  # starts preparing the kernels in the background
        return "onednn" if onednn else "native" if native else "fused"
    one_thread = torch.get_num_threads() == 1
    limit = AUTO_COMPILED_MAX_ONE_THREAD if one_thread else AUTO_COMPILED_MAX
    if batch * hidden_size * hidden_size <= limit:
        return "compiled"
    # Large steps: compiled only where its loops can hand large products to torch's
    # BLAS. Interleaved with the torch-ops engine in one process, it then won 47 of
    # 48 rows of 100x30x4x256, 200x32x64x512 and 50x64x32x128 (1-2 layers, uni/bi,
    # train/inference, 1 and 2 threads; the one loss a noisy 0.91 against 1.16),
    # and tied at 50x256x64x1024 (1.23 against 1.25 train, 1.07 against 1.04
    # inference, 2 threads).
    return "compiled" if compiled.large_gemm_library() == "torch" else "fused"


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
    weights = [w_ih, w_hh] if b_ih is None else [w_ih, w_hh, b_ih, b_hh]
    out, h_n = run_layer(x, h0.unsqueeze(0), weights, batch_sizes, (reverse,), nonlinearity, engine)
    return out, h_n[0]


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
