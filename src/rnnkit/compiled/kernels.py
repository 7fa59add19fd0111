"""Compiled time loops of the recurrence: equivalent to ``rnnkit.functional``.

The same algorithm as the torch-ops engine (:mod:`rnnkit.engine`), with the
loops over time compiled by numba so that a step costs its arithmetic, not an
interpreter round trip. Every step's ``(n, H) @ (H, H)`` product goes to BLAS,
or to a plain loop when it is so small that the BLAS call costs more
(``small_gemm``); the activation and its derivative are fused loops.

Rows are in the packed layout described in :mod:`rnnkit.engine`: step ``t``
owns rows ``offsets[t] : offsets[t] + batch_sizes[t]``. All arrays are
C-contiguous. The directions of a bidirectional layer share one ``(R, D * H)``
buffer, so a direction is the columns ``column : column + H`` of it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from rnnkit.compiled.blas import (
    AVX512,
    gemm_accumulate,
    goes_to_brgemm,
    goes_to_large_library,
    scratch,
)
from rnnkit.compiled.cache import configure_numba

_CACHE = configure_numba()  # False where no cache directory can be written (see cache.py)

TANH, FAST_TANH, RELU = 0, 1, 2

# Without AVX-512 (AMD Zen 3): a call of at most AVX2_IN_PLACE_MAX_STEPS steps of at most
# AVX2_IN_PLACE_MAX_BATCH sequences reads a recurrent weight of AVX2_IN_PLACE_MIN_WEIGHT
# elements or more in place (its products on torch's MKL), not a transposed copy on
# brgemm. Against the copy (benchmarks/compare_revisions.py --cell rnn, N = 2-4, H =
# 256-640): over 3-8 steps 1.07-2.47x faster, inference and training, 1 and 2 threads, one
# direction and two, but for 0.92 at 8 x 3 x 64 x 384; over 12-16 steps 1.02-1.43 at H =
# 512 (N = 2-4), but 0.66-0.96 at 3 x 384 and 0.91 at 16 x 2 x 64 x 256; over 24-32 steps
# at H = 512, 1.03-1.15 at N = 2 and 4 but 0.74-0.96 at N = 3; 0.86-0.98 at 64 steps; a tie
# at N = 8-16 (0.99-1.01). So up to AVX2_LONG_IN_PLACE_MAX_STEPS steps from
# AVX2_LONG_IN_PLACE_MIN_WEIGHT elements (H = 512) of at most AVX2_LONG_IN_PLACE_MAX_BATCH.
# Over at most 8 steps of 5-16 sequences at H = 256 the copy (then 60 us, as long as 3-8 of
# their steps) cost more than reading in place saves: 1.03-1.40x faster in place,
# inference and training, one direction and two, dense and packed, one thread
# (compare_revisions.py --cell rnn --shapes 3,8,256,256 6,12,64,256 8,16,64,256 ...); at
# two threads those products read the weight in place already. Since the copy got faster
# (see _BLOCK), 3 sequences of equal length over 9-16 steps (AVX2_LONG_COPY_BATCH: MKL's
# products of three rows by a weight read in place are slow) read the copy, 1.03-1.54x
# faster than in place, 1-2 layers, 1 and 2 threads (compare_revisions.py --cell rnn
# --shapes 16,3,64,512 12,3,64,768 16,3,64,1024); packed in unequal lengths, where the
# rows fall to 2 and 1, and N = 2 and 4, in place still won (0.63-0.96 with the copy at
# 12-16 x 2 x 64 x 512-1024, packed and dense) or tied.
AVX2_IN_PLACE_MAX_BATCH = 16
AVX2_IN_PLACE_MAX_STEPS = 8
AVX2_IN_PLACE_MIN_WEIGHT = 1 << 16
AVX2_LONG_IN_PLACE_MAX_BATCH = 4
AVX2_LONG_COPY_BATCH = 3
AVX2_LONG_IN_PLACE_MAX_STEPS = 16
AVX2_LONG_IN_PLACE_MIN_WEIGHT = 1 << 18

# Typed constants for arguments that are elsewhere variables: numba compiles a callee
# once more for each literal it is passed (a literal 0 and an int64 are two signatures).
ZERO = np.int64(0)
AS_IS, TRANSPOSED = np.bool_(False), np.bool_(True)

# Eigen's rational approximation of tanh for float32 (generic_fast_tanh_float):
# odd polynomial over even polynomial on [-7.9053, 7.9053], where float32
# tanh(x) rounds to +-1. Max abs error vs torch.tanh is measured in the tests.
_CLAMP = np.float32(7.90531110763549805)
_A1, _A3, _A5 = (
    np.float32(4.89352455891786e-03),
    np.float32(6.37261928875436e-04),
    np.float32(1.48572235717979e-05),
)
_A7, _A9 = np.float32(5.12229709037114e-08), np.float32(-8.60467152213735e-11)
_A11, _A13 = np.float32(2.00018790482477e-13), np.float32(-2.76076847742355e-16)
_B0, _B2 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03)
_B4, _B6 = np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)
# Beyond this, float32 tanh is exactly +-1 (torch's from about 9.01): saturate exactly, so
# that 1 - h^2 is 0 as in torch (the clamped polynomial gives 1 - 2.4e-7, and infinite
# inputs would get a finite gradient where torch's is 0 or NaN).
_SATURATED = np.float32(9.1)
_ONE = np.float32(1.0)


# fastmath without "nnan"/"ninf": NaN and infinity must propagate as in torch.
_FAST = {"reassoc", "contract", "arcp", "nsz", "afn"}


@njit(inline="always", fastmath=_FAST, error_model="numpy")
def _fast_tanh(x):
    c = x  # comparisons, not min/max, so that NaN stays NaN
    if c > _CLAMP:
        c = _CLAMP
    elif c < -_CLAMP:
        c = -_CLAMP
    x2 = c * c
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    r = c * p / q
    # Assignments, not early returns: LLVM turns them into selects and keeps the loop
    # vectorised (measured: 2.96 against 3.13 us for a 30x256 activation).
    if x > _SATURATED:
        r = _ONE
    elif x < -_SATURATED:
        r = -_ONE
    return r


# Column indices in the loops below are unsigned: a signed index makes numba wrap
# negative values around, a branch per element that stops LLVM vectorising the
# loop (measured: 444 against 66 us for a 3000x64 fast tanh).


@njit(cache=_CACHE, nogil=True, fastmath=_FAST, error_model="numpy")
def _activate_fast_tanh(out, first, count, column, bias):
    for i in range(first, first + count):
        for j in range(bias.shape[0]):
            c = np.uint64(column) + np.uint64(j)
            out[i, c] = _fast_tanh(out[i, c] + bias[j])


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _activate(out, first, count, column, bias, kind):
    """In place on rows ``first : first + count``, columns ``column : column + H``:
    ``act(rows + bias)``. Indexing the C-contiguous buffer, not a strided view of
    it, keeps the unit column stride known to the compiler, so the loops vectorise."""
    if kind == FAST_TANH:
        _activate_fast_tanh(out, first, count, column, bias)
    elif kind == TANH:
        for i in range(first, first + count):
            for j in range(bias.shape[0]):
                c = np.uint64(column) + np.uint64(j)
                out[i, c] = np.tanh(out[i, c] + bias[j])
    else:
        for i in range(first, first + count):
            for j in range(bias.shape[0]):
                c = np.uint64(column) + np.uint64(j)
                value = out[i, c] + bias[j]
                out[i, c] = 0.0 if value < 0 else value  # NaN stays NaN, as torch.relu


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _matmul_accumulate(a, b, c, small_gemm, int_args, scalar_args, transpose_b):
    """``c += a @ op(b)`` (op: ``.T`` if transpose_b): a plain loop when
    ``m*k*n <= small_gemm``, else BLAS."""
    m, k = a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    if m * k * n > small_gemm:
        gemm_accumulate(a, b, c, int_args, scalar_args, False, 1.0, transpose_b)
        return
    for i in range(m):
        for p in range(k):
            a_ip = a[i, p]
            for j in range(n):
                c[i, j] += a_ip * (b[j, p] if transpose_b else b[p, j])


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _matmul_into(a, b, c, small_gemm, int_args, scalar_args, transpose_b):
    """``c = a @ op(b)``: BLAS overwrites c without reading it (beta 0), which saves
    zeroing it and reading the zeros back; the plain loop zeroes it first."""
    m, k = a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    if m * k * n > small_gemm:
        gemm_accumulate(a, b, c, int_args, scalar_args, False, 0.0, transpose_b)
        return
    c[:] = 0.0
    _matmul_accumulate(a, b, c, small_gemm, int_args, scalar_args, transpose_b)


@njit(cache=_CACHE, nogil=True)
def _offsets(batch_sizes):
    offsets = np.zeros(batch_sizes.shape[0] + 1, np.int64)
    for t in range(batch_sizes.shape[0]):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
    return offsets


# Blocks of the transposition below: 8 x 8, gathered in a small buffer so that the reads
# and the writes both run along rows. With 32 x 32 tiles read and written in place, a
# weight of a power-of-two width missed the cache on every write (a 1024 x 1024 float32
# transpose took 4.2 ms, 0.83 now; 512 x 512 585 us, 281 now; 256 x 256 60-99 us, 47 now:
# as fast as torch's ``w.t().contiguous()`` or faster).
_BLOCK = 8


@njit(cache=_CACHE, nogil=True)
def _transposed(w):
    """``w.T``, C-contiguous, copied block by block (see ``_BLOCK``).
    SciPy's BLAS reads a transposed operand in place at half speed on small
    per-step products (30x64x64: 3.8 against 2.2 us), so the loops copy it once
    for those; here, not in torch, whose transposed copy of a 64 x 64 weight
    took 11 us. Large products (torch's BLAS: no slower transposed) and the
    input projection read the weight in place, which saves the copy's memory."""
    rows, columns = w.shape
    result = np.empty((columns, rows), w.dtype)
    block = np.empty((_BLOCK, _BLOCK), w.dtype)
    for i0 in range(0, rows, _BLOCK):
        for j0 in range(0, columns, _BLOCK):
            if i0 + _BLOCK <= rows and j0 + _BLOCK <= columns:
                for i in range(_BLOCK):
                    for j in range(_BLOCK):
                        block[j, i] = w[i0 + i, j0 + j]
                for j in range(_BLOCK):
                    for i in range(_BLOCK):
                        result[j0 + j, i0 + i] = block[j, i]
            else:  # the edges of a weight whose sides are not multiples of _BLOCK
                for i in range(i0, min(i0 + _BLOCK, rows)):
                    for j in range(j0, min(j0 + _BLOCK, columns)):
                        result[j, i] = w[i, j]
    return result


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def forward_loop(
    out, column, h0, w_hh, bias, bias_hh, batch_sizes, reverse, kind, small_gemm, tall_rows, x,
    w_ih, h_n, project_steps,
):  # fmt: skip
    """``out_t = act(x_t @ w_ih.T + bias + h_prev(t) @ w_hh.T)``, step by step, in
    this direction's columns of ``out``; then each sequence's last state into ``h_n``.

    Args:
        out: written; if ``x`` has no rows, it already holds each step's input
            projection (no bias) and is updated in place, or, with
            ``project_steps``, the layer input itself, overwritten step by step.
        column: first column of this direction in ``out``.
        h0: initial state of each sequence.
        w_hh: the recurrent weight.
        bias: added to every step's pre-activation (``b_ih + b_hh``, or zeros).
        bias_hh: if it has elements, ``bias`` is ``b_ih`` and this ``b_hh``: added
            here once (a torch op adding them costs more than the loop at small sizes).
        batch_sizes: rows per step (int64), non-increasing.
        reverse: run from the last step to the first.
        kind: TANH, FAST_TANH or RELU.
        small_gemm: largest ``m*k*n`` computed without BLAS.
        tall_rows: as in :func:`rnnkit.compiled.blas.scratch`.
        x, w_ih: the layer input and input weight, projected here (one GEMM over
            all steps); 0 rows: ``out`` holds the projection already.
        h_n: written with each sequence's state after its last processed step;
            0 rows: skipped.
        project_steps: ``out`` holds the input of a one-direction layer (all its
            ``W = H_in`` columns); each step's rows are projected with ``w_ih``
            into a scratch of one step, just before the step overwrites them, so
            the layer needs no buffer of all steps' projections.

    Shape:
        out ``(R, W)`` with ``W >= column + H``, h0 ``(N, H)``, w_hh ``(H, H)``,
        bias and bias_hh ``(H,)``, batch_sizes ``(L,)``, x ``(R, H_in)``, w_ih ``(H, H_in)``,
        h_n ``(N, H)``.
    """
    int_args, scalar_args = scratch(out.dtype, tall_rows)
    hidden = h0.shape[1]
    if bias_hh.shape[0]:
        bias = bias + bias_hh  # rounded as torch's b_ih + b_hh
    # The largest step's product reads w_hh in place if it goes to torch's BLAS (see
    # _transposed), or if it has one row: there the copy is most of a call's extra
    # memory (16 KiB at H = 64 against a 25 KiB output at 100x1x4x64) and saves little
    # time (inference 2% faster with it, training the same, in compare_revisions); or if
    # the call has one step, where the copy costs more than the step (a step-by-step
    # decoder: 1 x 8 x 512 x 512 ran 2.35x slower with it); or, without AVX-512, over few
    # steps of few rows by a large weight (AVX2_IN_PLACE_*). torch's brgemm takes no
    # transposed operand: it reads the copy.
    batch = batch_sizes[0] if batch_sizes.shape[0] else 0
    to_brgemm = goes_to_brgemm(batch, hidden, hidden, out.itemsize, tall_rows, AVX512)
    to_large = goes_to_large_library(batch, hidden, hidden, False, tall_rows, AVX512)
    steps = batch_sizes.shape[0]
    in_place = batch == 1 or steps == 1 or (to_large and not to_brgemm)
    if not AVX512:
        weight = hidden * hidden
        unequal = steps > 0 and batch_sizes[steps - 1] < batch
        few = (
            steps <= AVX2_IN_PLACE_MAX_STEPS
            and weight >= AVX2_IN_PLACE_MIN_WEIGHT
            and batch <= AVX2_IN_PLACE_MAX_BATCH
        )
        long = (
            steps <= AVX2_LONG_IN_PLACE_MAX_STEPS
            and weight >= AVX2_LONG_IN_PLACE_MIN_WEIGHT
            and batch <= AVX2_LONG_IN_PLACE_MAX_BATCH
            and (batch != AVX2_LONG_COPY_BATCH or unequal)
        )
        in_place = in_place or few or long
    w_hh_t = w_hh if in_place else _transposed(w_hh)
    offsets = _offsets(batch_sizes)
    end = column + hidden
    if x.shape[0]:
        projection = out[:, column:end]
        gemm_accumulate(x, w_ih, projection, int_args, scalar_args, False, 0.0, True)
    step_rows = np.empty((batch if project_steps else 0, hidden), out.dtype)
    for i in range(steps):
        t = steps - 1 - i if reverse else i
        n, start = batch_sizes[t], offsets[t]
        rows = out[start : start + n, column:end]
        if project_steps:  # the step's input, still in its rows, projected aside
            rows = step_rows[:n]
            _matmul_into(
                out[start : start + n], w_ih, rows, small_gemm, int_args, scalar_args, TRANSPOSED
            )  # fmt: skip
        if not reverse:
            first = offsets[t - 1] if t else 0
            previous = out[first : first + n, column:end] if t else h0[:n]
            _matmul_accumulate(previous, w_hh_t, rows, small_gemm, int_args, scalar_args, in_place)
        else:
            # sequences running at t + 1 continue; the others start here from h0
            n_next = batch_sizes[t + 1] if t + 1 < steps else 0
            previous = out[offsets[t + 1] : offsets[t + 1] + n_next, column:end]
            _matmul_accumulate(
                previous, w_hh_t, rows[:n_next], small_gemm, int_args, scalar_args, in_place
            )
            _matmul_accumulate(
                h0[n_next:n], w_hh_t, rows[n_next:], small_gemm, int_args, scalar_args, in_place
            )
        if project_steps:
            for r in range(n):  # unsigned column indices: see _activate_fast_tanh
                for j in range(hidden):
                    out[start + r, np.uint64(column) + np.uint64(j)] = rows[r, np.uint64(j)]
        _activate(out, start, n, column, bias, kind)
    if h_n.shape[0]:
        _last_states(out, column, batch_sizes, offsets, reverse, h_n)


@njit(cache=_CACHE, nogil=True)
def _last_states(out, column, batch_sizes, offsets, reverse, h_n):
    """Each sequence's state after its last processed step: step 0 in reverse;
    else the step after which it stops running (rows ``n_next : n`` of step t)."""
    hidden = h_n.shape[1]
    steps = batch_sizes.shape[0]
    for t in range(1 if reverse else steps):
        n = batch_sizes[t]
        n_next = 0 if reverse or t + 1 == steps else batch_sizes[t + 1]
        for i in range(n_next, n):
            for j in range(hidden):
                h_n[i, j] = out[offsets[t] + i, np.uint64(column) + np.uint64(j)]


@njit(cache=_CACHE, nogil=True)
def _copy_columns(dst, src, first, count, column, hidden):
    """``dst[rows, columns] = src[rows, columns]`` for rows ``first : first + count``
    and columns ``column : column + hidden`` (loops over the C-contiguous arrays, not
    strided views, so that they vectorise: see _activate_fast_tanh)."""
    for i in range(first, first + count):
        for j in range(hidden):
            c = np.uint64(column) + np.uint64(j)
            dst[i, c] = src[i, c]


@njit(cache=_CACHE, nogil=True)
def _add_rows(dst, first, column, src, lo, hi):
    """``dst[first + i, column : column + H] += src[i]`` for ``lo <= i < hi``."""
    for i in range(lo, hi):
        for j in range(src.shape[1]):
            dst[first + i, np.uint64(column) + np.uint64(j)] += src[i, j]


def _times_derivative_body(d, d_row, d_column, h, h_row, h_column, count, hidden, relu):
    """In place on ``count`` rows from ``d_row``, ``hidden`` columns from ``d_column``:
    ``d *= act'(pre)``, from ``h = act(pre)`` in the matching rows and columns of h."""
    for i in range(count):
        for j in range(hidden):
            a = np.uint64(d_column) + np.uint64(j)  # unsigned: see _activate_fast_tanh
            b = np.uint64(h_column) + np.uint64(j)
            value = h[h_row + i, b]
            if relu:  # as torch: zero where h <= 0 only, so a NaN state passes the gradient
                d[d_row + i, a] = 0.0 if value <= 0 else d[d_row + i, a]
            else:
                d[d_row + i, a] *= 1 - value * value


def per_dtype(body):
    """``body`` compiled for the dtype of its first array argument only: float32 under
    fastmath (it may reorder float32 arithmetic), float64 exactly. The choice is made
    while the caller is typed, so numba compiles one variant per dtype, not both (a
    runtime flag compiled both for every dtype). It also keeps the two apart in numba's
    disk cache, whose key holds the signature but not fastmath: compiled for the same
    signature, either could be loaded for the other.

    Returns:
        A function to call from compiled code, with ``body``'s arguments.
    """
    exact = njit(cache=_CACHE, nogil=True, error_model="numpy")(body)
    fast = njit(cache=_CACHE, nogil=True, fastmath=_FAST, error_model="numpy")(body)

    def chosen_by_dtype(*args):
        raise NotImplementedError("compiled code only")

    @overload(chosen_by_dtype)
    def _choose(*args):
        array = next(arg for arg in args if isinstance(arg, types.Array))
        compiled = fast if array.dtype == types.float32 else exact
        return lambda *args: compiled(*args)

    chosen_by_dtype.__name__ = chosen_by_dtype.__qualname__ = body.__name__.removesuffix("_body")
    chosen_by_dtype.exact, chosen_by_dtype.fast = exact, fast  # for inspection
    return chosen_by_dtype


_times_derivative = per_dtype(_times_derivative_body)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def backward_loop(
    d, grad_out, grad_h_n, out, w_hh, column, batch_sizes, reverse, relu, small_gemm,
    tall_rows,
):  # fmt: skip
    """Backpropagation through time: fills ``d`` with dL/d(pre-activation).

    Walking back in time, ``dL/dh_t = grad_out_t + d_{t'} @ w_hh`` for the step
    ``t'`` that read ``h_t`` (or ``grad_h_n`` where ``t`` was a sequence's last
    step), and ``d_t = dL/dh_t * act'(pre_t)``, computed from ``h_t``.

    Args:
        d: output, every row of this direction's columns written.
        grad_out: upstream gradient of the hidden sequence.
        grad_h_n: upstream gradient of each sequence's last state.
        out: the hidden sequence of the forward pass.
        w_hh: the recurrent weight (not transposed).
        column: first column of this direction in ``d``, ``grad_out`` and ``out``.
        batch_sizes, reverse: as in :func:`forward_loop`.
        relu: the activation was relu (else tanh).
        small_gemm, tall_rows: as in :func:`forward_loop`.

    Shape:
        d, grad_out, out ``(R, W)`` with ``W >= column + H``, grad_h_n ``(N, H)``,
        w_hh ``(H, H)``.
    """
    int_args, scalar_args = scratch(d.dtype, tall_rows)
    offsets = _offsets(batch_sizes)
    steps = batch_sizes.shape[0]
    hidden = w_hh.shape[0]
    end = column + hidden
    for i in range(steps):
        t = i if reverse else steps - 1 - i
        n, start = batch_sizes[t], offsets[t]
        rows = d[start : start + n, column:end]
        _copy_columns(d, grad_out, start, n, column, hidden)
        if reverse:
            if t == 0:
                _add_rows(d, start, column, grad_h_n, ZERO, n)
            else:  # h_t was read by step t - 1, whose first n rows continue it
                later = d[offsets[t - 1] : offsets[t - 1] + n, column:end]
                _matmul_accumulate(later, w_hh, rows, small_gemm, int_args, scalar_args, AS_IS)
        else:
            n_next = batch_sizes[t + 1] if t + 1 < steps else 0
            later = d[offsets[t + 1] : offsets[t + 1] + n_next, column:end]
            _matmul_accumulate(later, w_hh, rows[:n_next], small_gemm, int_args, scalar_args, AS_IS)
            _add_rows(d, start, column, grad_h_n, n_next, n)  # sequences whose last step is t
        _times_derivative(d, start, column, out, start, column, n, hidden, relu)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def backward_equal_lengths(
    d, grad_out, grad_h_n, x, out, h0, w_ih, w_hh, column, reverse, relu, small_gemm,
    tall_rows, accumulate_x, grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_bias, grad_bias_hh,
):  # fmt: skip
    """One direction's whole backward, all sequences of equal length, in chunks of
    steps that reuse one buffer ``d`` for dL/d(pre-activation).

    Walking back in time (forward in time for a reverse direction) chunk by
    chunk: the time loop of :func:`backward_loop` fills the chunk's ``d``, then
    a few BLAS products over all its steps add its share of the input, weight
    and bias gradients, and ``d @ w_hh`` of its last processed step enters the
    next chunk as ``grad_h_n`` enters the first. One compiled call: at small
    sizes a torch op per product costs more than the arithmetic, and the
    buffer of a chunk keeps the peak memory of a training step down.

    Args:
        d: scratch for one chunk: its rows set the chunk's steps (``rows / N``).
        grad_out: upstream gradient of the hidden sequence.
        grad_h_n: upstream gradient of this direction's last states.
        x: the layer input; out: the hidden sequence; h0: initial states.
        w_ih, w_hh: this direction's weights.
        column: first column of this direction in ``grad_out`` and ``out``.
        reverse, relu, small_gemm, tall_rows: as in :func:`backward_loop`.
        accumulate_x: add to grad_x (another direction wrote it) rather than overwrite.
        grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_bias, grad_bias_hh: written
            (the two bias gradients are equal: each gets a copy); a 0-row array
            skips that gradient (grad_w_ih's skips every weight gradient).

    Shape:
        d ``(S * N, H)``, grad_out and out ``(R, W)`` with ``W >= column + H``,
        x ``(R, H_in)``, h0 and grad_h_n ``(N, H)``, w_ih ``(H, H_in)``, w_hh
        ``(H, H)``, ``R = L * N``; gradients as their operands.
    """
    int_args, scalar_args = scratch(d.dtype, tall_rows)
    hidden, n, rows = w_hh.shape[0], h0.shape[0], out.shape[0]
    steps, per_chunk = rows // n, d.shape[0] // n
    chunks = (steps + per_chunk - 1) // per_chunk
    entering = np.empty((n, hidden), d.dtype)  # dL/dh entering a chunk from the one before
    weights = grad_w_ih.shape[0] > 0
    bias = weights and (grad_bias.shape[0] > 0 or grad_bias_hh.shape[0] > 0)
    total = np.zeros(hidden, np.float64)  # the bias gradient, summed in float64 (see below)
    for c in range(chunks):
        chunk = c if reverse else chunks - 1 - c
        lo, hi = chunk * per_chunk, min((chunk + 1) * per_chunk, steps)
        own = d[: (hi - lo) * n]
        # the time loop: own rows (t - lo) * n hold step t
        for i in range(hi - lo):
            t = lo + i if reverse else hi - 1 - i
            row, state = (t - lo) * n, t * n
            for r in range(n):  # unsigned column indices: see _activate_fast_tanh
                for j in range(hidden):
                    u = np.uint64(j)
                    own[row + r, u] = grad_out[state + r, np.uint64(column) + u]
            if i == 0:  # the chunk's first processed step: grad_h_n or the carry
                _add_rows(own, row, ZERO, grad_h_n if c == 0 else entering, ZERO, n)
            else:  # h_t was read by the step processed just before
                later = row - n if reverse else row + n
                _matmul_accumulate(
                    own[later : later + n], w_hh, own[row : row + n], small_gemm, int_args,
                    scalar_args, AS_IS,
                )  # fmt: skip
            _times_derivative(own, row, ZERO, out, state, column, n, hidden, relu)
        first = (hi - lo - 1) * n if reverse else 0  # the chunk's last processed step
        if c + 1 < chunks:  # d of the chunk's last processed step, times w_hh, enters the next
            gemm_accumulate(own[first : first + n], w_hh, entering, int_args, scalar_args,
                            False, 0.0, False)  # fmt: skip
        _chunk_grads(
            own, x, out, h0, w_ih, w_hh, column, reverse, lo, hi, n, accumulate_x, c == 0,
            int_args, scalar_args, grad_x, grad_h0, grad_w_ih, grad_w_hh,
        )  # fmt: skip
        if bias:
            # Summed in float64: a float32 running sum over thousands of rows drifts
            # (measured 2.8e-4 against torch's 5e-6 on sums of size 66).
            for i in range(own.shape[0]):
                for j in range(hidden):
                    total[j] += own[i, np.uint64(j)]
    # Element loops, not `grad_bias[:] = total`: an array assignment brings numba's
    # shape-mismatch error formatting, about 1 s more to compile.
    for j in range(hidden if weights else 0):
        if grad_bias.shape[0]:
            grad_bias[j] = total[j]
        if grad_bias_hh.shape[0]:
            grad_bias_hh[j] = total[j]


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _chunk_grads(
    own, x, out, h0, w_ih, w_hh, column, reverse, lo, hi, n, accumulate_x, first_chunk,
    int_args, scalar_args, grad_x, grad_h0, grad_w_ih, grad_w_hh,
):  # fmt: skip
    """One chunk's share of the input, ``h_0`` and weight gradients (see
    :func:`backward_equal_lengths`): ``own`` holds d of steps ``lo : hi``."""
    hidden, steps = w_hh.shape[0], out.shape[0] // n
    states = out[:, column : column + hidden]
    if grad_x.shape[0]:
        beta = 1.0 if accumulate_x else 0.0
        gemm_accumulate(own, w_ih, grad_x[lo * n : hi * n], int_args, scalar_args, False, beta,
                        False)  # fmt: skip
    # The first processed step read h0: step 0, or the last step in reverse.
    reads_h0 = (hi == steps) if reverse else (lo == 0)
    h0_row = (steps - 1 - lo) * n if reverse else 0
    if grad_h0.shape[0] and reads_h0:
        gemm_accumulate(own[h0_row : h0_row + n], w_hh, grad_h0, int_args, scalar_args,
                        False, 0.0, False)  # fmt: skip
    if not grad_w_ih.shape[0]:
        return
    beta = 0.0 if first_chunk else 1.0
    gemm_accumulate(own, x[lo * n : hi * n], grad_w_ih, int_args, scalar_args, True, beta,
                    False)  # fmt: skip
    # every other step read the state of the step before it (after it, in reverse)
    if reverse:
        last = min(hi, steps - 1)  # steps lo : last read out[t + 1]
        later, earlier = own[: (last - lo) * n], states[(lo + 1) * n : (last + 1) * n]
    else:
        begin = max(lo, 1)  # steps begin : hi read out[t - 1]
        later, earlier = own[(begin - lo) * n :], states[(begin - 1) * n : (hi - 1) * n]
    gemm_accumulate(later, earlier, grad_w_hh, int_args, scalar_args, True, beta, False)
    if reads_h0:
        gemm_accumulate(own[h0_row : h0_row + n], h0, grad_w_hh, int_args, scalar_args,
                        True, 1.0, False)  # fmt: skip
