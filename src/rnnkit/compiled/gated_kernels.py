"""Compiled time loops of the LSTM and GRU: the loops of :mod:`rnnkit.engine.lstm` and
:mod:`rnnkit.engine.gru`, without an interpreter round trip per op.

Each step is one BLAS product (the recurrent one; two with an LSTM projection)
and one fused loop over the step's rows that applies every gate, so a step
costs its arithmetic. The input projections before the loop and the weight
gradients after it are large GEMMs, left to torch.

Layouts are the torch-ops engine's: packed rows (step ``t`` owns rows
``offsets[t] : offsets[t] + batch_sizes[t]``), GRU gates ``r, z, n``; a
direction's output is the columns ``column : column + H_out`` of a buffer the
directions share. LSTM gates are in torch's order ``i, f, g, o`` (the torch-ops
engine's are ``o, i, f, g``: see :mod:`rnnkit.engine.lstm`), so the loops read torch's
weights as they are. All arrays are C-contiguous.

``consts`` carries ``0.5`` and ``1.0`` in the arrays' dtype, so that float32
arithmetic stays float32 (a Python float literal would promote it to float64).
The cell bodies are compiled for the arrays' dtype only (:func:`per_dtype`): float32
takes the rational tanh of :mod:`rnnkit.compiled.kernels` under fastmath, float64
``np.tanh``, exactly.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload

from rnnkit.compiled.blas import scratch
from rnnkit.compiled.cache import configure_numba
from rnnkit.compiled.kernels import (
    AS_IS,
    ZERO,
    _fast_tanh,
    _last_states,
    _matmul_accumulate,
    _matmul_into,
    _offsets,
    per_dtype,
)

_CACHE = configure_numba()


def _is_float32(x):
    """In compiled code, whether ``x`` is float32: a constant of its type."""
    raise NotImplementedError("compiled code only")


@overload(_is_float32, inline="always")
def _is_float32_of(x):
    single = x == types.float32
    return lambda x: single


@njit(inline="always", error_model="numpy")
def _tanh(x):
    """The rational approximation for float32 (under the caller's fastmath: see
    :func:`per_dtype`), ``np.tanh`` for float64; the other branch folds away."""
    return _fast_tanh(x) if _is_float32(x) else np.tanh(x)


@njit(inline="always", error_model="numpy")
def _sigmoid(x, half):
    return half * _tanh(half * x) + half  # sigmoid(x) = (1 + tanh(x / 2)) / 2


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _recurrent_product(states, column, width, h0, w_t, into, offsets, batch_sizes, t, reverse,
                       small_gemm, int_args, scalar_args, overwrite, transpose_w):  # fmt: skip
    """``into += h_prev @ w_t`` (``into = ...`` if ``overwrite``; ``w_t.T`` if
    ``transpose_w``) for step ``t``'s rows: the previous step's states in
    ``states[:, column : column + width]``, or ``h0`` for sequences starting at ``t``."""
    n, steps = batch_sizes[t], batch_sizes.shape[0]
    if not reverse:
        previous = h0[:n]
        if t > 0:
            first = offsets[t - 1]
            previous = states[first : first + n, column : column + width]
        _product(previous, w_t, into, small_gemm, int_args, scalar_args, overwrite, transpose_w)
        return
    n_next = batch_sizes[t + 1] if t + 1 < steps else 0  # they continue; the rest start here
    previous = states[offsets[t + 1] : offsets[t + 1] + n_next, column : column + width]
    _product(previous, w_t, into[:n_next], small_gemm, int_args, scalar_args, overwrite,
             transpose_w)  # fmt: skip
    _product(h0[n_next:n], w_t, into[n_next:], small_gemm, int_args, scalar_args, overwrite,
             transpose_w)  # fmt: skip


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _product(a, b, c, small_gemm, int_args, scalar_args, overwrite, transpose_b):
    """``c = a @ op(b)`` if ``overwrite``, else ``c += a @ op(b)`` (op: ``.T`` if
    ``transpose_b``)."""
    if overwrite:
        _matmul_into(a, b, c, small_gemm, int_args, scalar_args, transpose_b)
    else:
        _matmul_accumulate(a, b, c, small_gemm, int_args, scalar_args, transpose_b)


@njit(cache=_CACHE, nogil=True)
def _continuing(offsets, batch_sizes, t, reverse):
    """``(count, first)``: step ``t``'s first ``count`` rows continue sequences whose
    previous states are rows ``first : first + count``; its other rows start from h0."""
    if not reverse:
        return (batch_sizes[t], offsets[t - 1]) if t > 0 else (0, 0)
    if t + 1 < batch_sizes.shape[0]:
        return batch_sizes[t + 1], offsets[t + 1]
    return 0, 0


@njit(cache=_CACHE, nogil=True)
def _keep_ending(states, first, batch_sizes, t, reverse, into):
    """Into ``into``, the states of the sequences whose last processed step is ``t``,
    held in rows ``first...`` of ``states`` (in the step's row order)."""
    n = batch_sizes[t]
    if reverse:  # every sequence ends at step 0
        ending = 0 if t == 0 else n
    else:
        ending = batch_sizes[t + 1] if t + 1 < batch_sizes.shape[0] else 0
    for i in range(ending, n):
        for j in range(into.shape[1]):
            into[i, j] = states[first + i, j]


# The gates of a block of rows, ``count`` rows from ``first``, whose previous states are
# rows ``prev_row...`` of ``c_prev`` / ``h_prev``: a step's continuing rows read the
# step before's, its starting rows read h0/c0. Each body is compiled for the arrays'
# dtype (per_dtype): exact for float64, fast for float32 (the rational tanh, fastmath,
# vectorised).


def _lstm_cells_body(gates, cells, cell_row, tanh_cells, tanh_row, dest, dest_row, dest_column,
                     first, count, c_prev, prev_row, half):  # fmt: skip
    """Activate the gates (``i, f, g, o``, in place), write ``c`` (into ``cells`` from
    row ``cell_row``), ``tanh(c)`` (``tanh_cells`` from ``tanh_row``) and ``o * tanh(c)``
    (``dest`` from row ``dest_row``, column ``dest_column``)."""
    hidden = cells.shape[1]
    h1, h2, h3 = np.uint64(hidden), np.uint64(2 * hidden), np.uint64(3 * hidden)
    for r in range(count):
        row, before = first + r, prev_row + r
        for j in range(hidden):
            u = np.uint64(j)
            gi = _sigmoid(gates[row, u], half)
            f = _sigmoid(gates[row, h1 + u], half)
            g = _tanh(gates[row, h2 + u])
            o = _sigmoid(gates[row, h3 + u], half)
            c = f * c_prev[before, u] + gi * g
            tanh_c = _tanh(c)
            gates[row, u], gates[row, h1 + u], gates[row, h2 + u], gates[row, h3 + u] = (
                gi, f, g, o,
            )  # fmt: skip
            cells[cell_row + r, u], tanh_cells[tanh_row + r, u] = c, tanh_c
            dest[dest_row + r, np.uint64(dest_column) + u] = o * tanh_c


def _lstm_cells_back_body(d_gates, carry_c, d_raw, raw_row, gates, cells, tanh_cells, first,
                          count, carry_row, c_prev, prev_row, one):  # fmt: skip
    """dL/d(pre-activation) of the block's gates from dL/d(o * tanh(c)) (rows
    ``raw_row...`` of ``d_raw``) and the carried dL/dc (rows ``carry_row...`` of
    ``carry_c``, updated to dL/dc_prev)."""
    hidden = cells.shape[1]
    h1, h2, h3 = np.uint64(hidden), np.uint64(2 * hidden), np.uint64(3 * hidden)
    for r in range(count):
        row, before, k = first + r, prev_row + r, carry_row + r
        for j in range(hidden):
            u = np.uint64(j)
            dh = d_raw[raw_row + r, u]
            gi, f = gates[row, u], gates[row, h1 + u]
            g, o = gates[row, h2 + u], gates[row, h3 + u]
            tanh_c = tanh_cells[row, u]
            dc = carry_c[k, u] + dh * o * (one - tanh_c * tanh_c)
            d_gates[row, u] = dc * g * gi * (one - gi)
            d_gates[row, h1 + u] = dc * c_prev[before, u] * f * (one - f)
            d_gates[row, h2 + u] = dc * gi * (one - g * g)
            d_gates[row, h3 + u] = dh * tanh_c * o * (one - o)
            carry_c[k, u] = dc * f


def _gru_cells_body_keeping(keep):
    """The GRU gates' body; ``keep`` (a constant of the compiled code) also writes what
    only the backward pass reads: the activated gates and ``W_hn h_prev + b_hn``."""

    def body(gates, products, offset, kept_n, kept_row, out, column, first, count, h_prev,
             prev_row, prev_column, bias_hn, half):  # fmt: skip
        """Activate the gates (``r, z, n``; in place with keep) from the step's recurrent
        products (row ``row - offset`` for packed row ``row``: ``offset`` is the step's
        first), with keep also ``W_hn h_prev + b_hn`` (into ``kept_n`` from row
        ``kept_row``), and write ``h = n + z * (h_prev - n)`` into ``out``'s columns from
        ``column``."""
        hidden = bias_hn.shape[0]
        h1, h2 = np.uint64(hidden), np.uint64(2 * hidden)
        for r in range(count):
            row, before, p = first + r, prev_row + r, first - offset + r
            for j in range(hidden):
                u = np.uint64(j)
                h_before = h_prev[before, np.uint64(prev_column) + u]
                gh_n = products[p, h2 + u] + bias_hn[u]
                reset = _sigmoid(gates[row, u] + products[p, u], half)
                update = _sigmoid(gates[row, h1 + u] + products[p, h1 + u], half)
                candidate = _tanh(gates[row, h2 + u] + reset * gh_n)
                if keep:
                    kept_n[kept_row + r, u] = gh_n
                    gates[row, u], gates[row, h1 + u] = reset, update
                    gates[row, h2 + u] = candidate
                out[row, np.uint64(column) + u] = candidate + update * (h_before - candidate)

    body.__name__ = body.__qualname__ = "_gru_cells_kept" if keep else "_gru_cells_inference"
    return body


def _gru_cells_back_body(d_hidden, d_n, grad_out, carry, column, gates, kept_n, first, count,
                         carry_row, h_prev, prev_row, prev_column, one):  # fmt: skip
    """dL/d(recurrent pre-activations) of the block's gates (``d_hidden``; ``d_n``: the
    ``n`` gate's input pre-activation, not scaled by ``r``) from dL/dh (upstream plus the
    carried rows ``carry_row...`` of ``carry``, which become dL/dh_prev through the
    update gate)."""
    hidden = carry.shape[1]
    h1, h2 = np.uint64(hidden), np.uint64(2 * hidden)
    for r in range(count):
        row, before, k = first + r, prev_row + r, carry_row + r
        for j in range(hidden):
            u = np.uint64(j)
            dh = grad_out[row, np.uint64(column) + u] + carry[k, u]
            h_before = h_prev[before, np.uint64(prev_column) + u]
            reset, update, candidate = gates[row, u], gates[row, h1 + u], gates[row, h2 + u]
            d_candidate = dh * (one - update) * (one - candidate * candidate)
            d_z = dh * (h_before - candidate) * update * (one - update)
            d_r = d_candidate * kept_n[row, u] * reset * (one - reset)
            d_hidden[row, u], d_hidden[row, h1 + u], d_hidden[row, h2 + u] = (
                d_r, d_z, d_candidate * reset,
            )  # fmt: skip
            d_n[row, u] = d_candidate
            carry[k, u] = dh * update


_lstm_cells = per_dtype(_lstm_cells_body)
_lstm_cells_back = per_dtype(_lstm_cells_back_body)
# The GRU's inference writes only what the next step reads: 8.6% faster at 100x30x4x64,
# 2% at 50x64x32x128, for 0.7 s more compiling (float32). The LSTM's variant gained 2-3%
# (its dense float32 layers run on oneDNN) for 1.3 s, so it has none.
_gru_cells = per_dtype(_gru_cells_body_keeping(True))
_gru_cells_inference = per_dtype(_gru_cells_body_keeping(False))
_gru_cells_back = per_dtype(_gru_cells_back_body)


@njit(cache=_CACHE, nogil=True)
def _gru_gates(keep, *args):
    """The GRU gates' body for ``args``, the kept variant if ``keep``."""
    if keep:
        _gru_cells(*args)
    else:
        _gru_cells_inference(*args)


@njit(cache=_CACHE, nogil=True)
def _part_offsets(batch_sizes, part_first, part_stride):
    """Each step's first row: packed (``part_stride`` 0), or of a part of a batch of
    equal-length sequences, which a thread runs while others run the rest: the part's
    ``batch_sizes[0]`` sequences from sequence ``part_first``, in rows of
    ``part_stride`` sequences a step. Shape: ``(T + 1,)``."""
    if part_stride == 0:
        return _offsets(batch_sizes)
    steps = batch_sizes.shape[0]
    offsets = np.empty(steps + 1, np.int64)
    for t in range(steps + 1):
        offsets[t] = t * part_stride + part_first
    return offsets


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def lstm_forward_loop(
    gates, cells, tanh_cells, out, column, h0, c0, w_hh_t, w_hr_t, raw, batch_sizes, reverse,
    consts, small_gemm, tall_rows, h_n, c_n, keep, w_in_place, part_first, part_stride,
):  # fmt: skip
    """One LSTM direction's recurrence (for a part of a batch: see :func:`_part_offsets`;
    ``h0``, ``c0``, ``raw``, ``h_n``, ``c_n`` and, without keep, ``cells`` and
    ``tanh_cells`` are then the part's).

    Args:
        gates: each row's input projection plus bias (order ``i, f, g, o``);
            becomes the activated gates.
        cells, tanh_cells: written with every row's cell state and its tanh; without
            ``keep`` (inference), scratch: the cell states of the last two steps, the
            tanh of one.
        out: written with the hidden states, in columns ``column : column + P``.
        h0, c0: initial states.
        w_hh_t: the recurrent weight transposed, or with ``w_in_place`` the weight itself
            (torch's, read transposed).
        w_hr_t: the projection, transposed; 0 rows: none.
        raw: scratch for one step's ``o * tanh(c)`` (used with a projection).
        batch_sizes, reverse, consts, small_gemm, tall_rows: see the module doc.
        h_n, c_n: written with each sequence's last states.
        keep: keep every row's cell state and its tanh for the backward pass.
        w_in_place: whether ``w_hh_t`` is the weight itself.

    Shape:
        gates ``(R, 4H)``, cells and tanh_cells ``(R, H)`` (without keep ``(2N, H)``
        and ``(N, H)``), out ``(R, W)``, h0 ``(N, P)``, c0 ``(N, H)``, w_hh_t
        ``(P, 4H)`` (with ``w_in_place``: ``(4H, P)``), w_hr_t ``(H, P)``, raw ``(N, H)``.
    """
    int_args, scalar_args = scratch(gates.dtype, tall_rows)
    half = consts[0]
    batch, width = h0.shape[0], h0.shape[1]
    projected = w_hr_t.shape[0] > 0
    offsets = _part_offsets(batch_sizes, part_first, part_stride)
    steps = batch_sizes.shape[0]
    for i in range(steps):
        t = steps - 1 - i if reverse else i
        n, start = batch_sizes[t], offsets[t]
        _recurrent_product(out, column, width, h0, w_hh_t, gates[start : start + n], offsets,
                           batch_sizes, t, reverse, small_gemm, int_args, scalar_args,
                           False, w_in_place)  # fmt: skip
        n_cont, previous = _continuing(offsets, batch_sizes, t, reverse)
        cell_row, tanh_row = start, start
        if not keep:  # steps alternate between two blocks of cell rows
            cell_row, tanh_row, previous = (i % 2) * batch, 0, ((i + 1) % 2) * batch
        dest, dest_row, dest_column = (raw, 0, 0) if projected else (out, start, column)
        _lstm_cells(gates, cells, cell_row, tanh_cells, tanh_row, dest, dest_row,
                    dest_column, start, n_cont, cells, previous, half)  # fmt: skip
        _lstm_cells(gates, cells, cell_row + n_cont, tanh_cells, tanh_row + n_cont, dest,
                    dest_row + n_cont, dest_column, start + n_cont, n - n_cont, c0, n_cont,
                    half)  # fmt: skip
        if not keep:
            _keep_ending(cells, cell_row, batch_sizes, t, reverse, c_n)
        if projected:
            rows = out[start : start + n, column : column + width]
            _matmul_into(raw[:n], w_hr_t, rows, small_gemm, int_args, scalar_args, AS_IS)
    _last_states(out, column, batch_sizes, offsets, reverse, h_n)
    if keep:
        _last_states(cells, ZERO, batch_sizes, offsets, reverse, c_n)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def lstm_backward_walk(
    d_gates, d_out, d_raw, grad_out, column, gates, cells, tanh_cells, c0, w_hh, w_hr,
    batch_sizes, reverse, consts, small_gemm, tall_rows, carry_h, carry_c, part_first,
    part_stride,
):  # fmt: skip
    """One LSTM direction's walk back in time: dL/d(pre-activation) of every row (for a
    part of a batch: see :func:`_part_offsets`; ``c0``, ``carry_h``, ``carry_c`` and,
    with a projection, ``d_raw`` are then the part's).

    Args:
        d_gates: written, gate order ``i, f, g, o``.
        d_out: written with dL/dh of every row.
        d_raw: with a projection, scratch for one step's dL/d(o * tanh(c)); else
            ``d_out`` itself.
        grad_out: upstream gradient of the output, columns ``column : column + P``.
        gates, cells, tanh_cells, c0: from the forward pass.
        w_hh: the recurrent weight (torch's).
        w_hr: the projection; 0 rows: none.
        carry_h, carry_c: on entry dL/dh_n and dL/dc_n; on return dL/dh_0 and dL/dc_0.

    Shape:
        d_gates ``(R, 4H)``, d_out ``(R, P)``, d_raw ``(N, H)`` (``(R, P)`` without a
        projection), grad_out ``(R, W)``,
        w_hh ``(4H, P)``, w_hr ``(P, H)``, carry_h ``(N, P)``, carry_c ``(N, H)``.
    """
    int_args, scalar_args = scratch(d_gates.dtype, tall_rows)
    one = consts[1]
    width = carry_h.shape[1]
    projected = w_hr.shape[0] > 0
    offsets = _part_offsets(batch_sizes, part_first, part_stride)
    steps = batch_sizes.shape[0]
    for i in range(steps):
        t = i if reverse else steps - 1 - i
        n, start = batch_sizes[t], offsets[t]
        for r in range(n):
            for j in range(width):
                u = np.uint64(j)
                d_out[start + r, u] = grad_out[start + r, np.uint64(column) + u] + carry_h[r, u]
        raw_row = start  # the step's dL/d(o * tanh(c)): its rows of d_out, or of the scratch
        if projected:
            raw_row = 0
            _matmul_into(d_out[start : start + n], w_hr, d_raw[:n], small_gemm, int_args,
                         scalar_args, AS_IS)  # fmt: skip
        n_cont, previous = _continuing(offsets, batch_sizes, t, reverse)
        _lstm_cells_back(d_gates, carry_c, d_raw, raw_row, gates, cells, tanh_cells, start,
                         n_cont, ZERO, cells, previous, one)  # fmt: skip
        _lstm_cells_back(d_gates, carry_c, d_raw, raw_row + n_cont, gates, cells, tanh_cells,
                         start + n_cont, n - n_cont, n_cont, c0, n_cont, one)  # fmt: skip
        _matmul_into(d_gates[start : start + n], w_hh, carry_h[:n], small_gemm, int_args,
                     scalar_args, AS_IS)  # fmt: skip


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def gru_forward_loop(
    gates, products, kept_n, out, column, h0, w_hh_t, bias_hn, batch_sizes, reverse, consts,
    small_gemm, tall_rows, h_n, keep, w_in_place, part_first, part_stride,
):  # fmt: skip
    """One GRU direction's recurrence (for a part of a batch: see :func:`_part_offsets`).

    Args:
        gates: each row's input projection plus ``b_ih`` (and ``b_hh`` for r, z);
            becomes the activated gates ``r, z, n``.
        products: scratch for one step's recurrent products ``W_hh h_prev``.
        kept_n: written with each row's ``W_hn h_prev + b_hn`` (what the backward
            pass reads); without ``keep`` (inference), unused.
        out: written with the hidden states, in columns ``column : column + H``.
        h0: initial states.
        w_hh_t: the recurrent weight, transposed; with ``w_in_place``, the weight itself,
            read transposed in place (at batch 1, where BLAS's product is as fast either
            way, it saves the copy).
        bias_hn: ``b_hn`` (zeros without biases).
        h_n: written with each sequence's last state.
        keep: keep every row's ``kept_n`` for the backward pass.
        part_first, part_stride: see :func:`_part_offsets`; ``h0``, ``products``,
            ``kept_n`` (without keep) and ``h_n`` are then the part's rows.

    Shape:
        gates ``(R, 3H)``, products ``(N, 3H)``, kept_n ``(R, H)`` (without keep
        ``(N, H)``), out ``(R, W)``, h0 ``(N, H)``, w_hh_t ``(H, 3H)`` (with
        ``w_in_place``: ``(3H, H)``), bias_hn ``(H,)``.
    """
    int_args, scalar_args = scratch(gates.dtype, tall_rows)
    half = consts[0]
    hidden = h0.shape[1]
    offsets = _part_offsets(batch_sizes, part_first, part_stride)
    steps = batch_sizes.shape[0]
    for i in range(steps):
        t = steps - 1 - i if reverse else i
        n, start = batch_sizes[t], offsets[t]
        _recurrent_product(out, column, hidden, h0, w_hh_t, products[:n], offsets, batch_sizes,
                           t, reverse, small_gemm, int_args, scalar_args, True,
                           w_in_place)  # fmt: skip
        n_cont, previous = _continuing(offsets, batch_sizes, t, reverse)
        kept_row = start if keep else 0
        _gru_gates(keep, gates, products, start, kept_n, kept_row, out, column, start,
                   n_cont, out, previous, column, bias_hn, half)  # fmt: skip
        _gru_gates(keep, gates, products, start, kept_n, kept_row + n_cont, out, column,
                   start + n_cont, n - n_cont, h0, n_cont, ZERO, bias_hn, half)  # fmt: skip
    _last_states(out, column, batch_sizes, offsets, reverse, h_n)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def gru_backward_walk(
    d_hidden, d_n, grad_out, out, column, gates, kept_n, h0, w_hh, batch_sizes, reverse,
    consts, small_gemm, tall_rows, carry, part_first, part_stride,
):  # fmt: skip
    """One GRU direction's walk back in time (for a part of a batch: see
    :func:`_part_offsets`; ``h0`` and ``carry`` are then the part's rows).

    Args:
        d_hidden: written with dL/d(recurrent pre-activations) ``r, z, n`` of every
            row (the ``n`` one scaled by ``r``).
        d_n: written with dL/d(the ``n`` gate's input pre-activation) of every row;
            the ``r`` and ``z`` ones are ``d_hidden``'s.
        grad_out: upstream gradient of the output, columns ``column : column + H``.
        out, gates, kept_n, h0: from the forward pass.
        w_hh: the recurrent weight.
        carry: on entry dL/dh_n; on return dL/dh_0.

    Shape:
        d_hidden ``(R, 3H)``, d_n and kept_n ``(R, H)``, grad_out and out ``(R, W)``,
        w_hh ``(3H, H)``, carry ``(N, H)``.
    """
    int_args, scalar_args = scratch(d_hidden.dtype, tall_rows)
    one = consts[1]
    offsets = _part_offsets(batch_sizes, part_first, part_stride)
    steps = batch_sizes.shape[0]
    for i in range(steps):
        t = i if reverse else steps - 1 - i
        n, start = batch_sizes[t], offsets[t]
        n_cont, previous = _continuing(offsets, batch_sizes, t, reverse)
        _gru_cells_back(d_hidden, d_n, grad_out, carry, column, gates, kept_n, start,
                        n_cont, ZERO, out, previous, column, one)  # fmt: skip
        _gru_cells_back(d_hidden, d_n, grad_out, carry, column, gates, kept_n,
                        start + n_cont, n - n_cont, n_cont, h0, n_cont, ZERO, one)  # fmt: skip
        _matmul_accumulate(d_hidden[start : start + n], w_hh, carry[:n], small_gemm, int_args,
                           scalar_args, AS_IS)  # fmt: skip


# A batch's parts on torch's OpenMP team (rnnkit.compiled.team compiles the two bodies
# below as C callbacks and runs them; they live here so that numba's cache of them goes
# stale with the loops they call). Each thread of the team enters the callback with one
# int64 descriptor: the header's fields in TEAM_FIELDS order, then from slot TEAM_ARRAYS
# the float32 arrays' addresses (C-contiguous, checked by rnnkit.compiled.gated) in the
# callback's order, then from TEAM_PARTS (first, count) per part. The thread runs parts
# thread_num, thread_num + num_threads, ...
TEAM_FIELDS = ("rows", "width", "hidden", "batch", "steps", "column", "reverse", "small_gemm",
               "tall_rows", "parts", "keep", "w_in_place", "state_width", "projected")  # fmt: skip
TEAM_FORWARD_ARRAYS = ("gates", "products", "kept_n", "out", "h0", "w_hh_t", "bias_hn", "h_n",
                       "consts")  # fmt: skip
TEAM_BACKWARD_ARRAYS = ("d_hidden", "d_n", "grad_out", "out", "gates", "kept_n", "h0", "w_hh",
                        "carry", "consts")  # fmt: skip
TEAM_LSTM_FORWARD_ARRAYS = ("gates", "cells", "tanh_cells", "out", "h0", "c0", "w_hh_t",
                            "w_hr_t", "raw", "h_n", "c_n", "consts")  # fmt: skip
TEAM_LSTM_BACKWARD_ARRAYS = ("d_gates", "d_out", "d_raw", "grad_out", "gates", "cells",
                             "tanh_cells", "c0", "w_hh", "w_hr", "carry_h", "carry_c",
                             "consts")  # fmt: skip
TEAM_ARRAYS, TEAM_PARTS, TEAM_MAX_PARTS = 16, 32, 64
# The fields' slots, read by position from TEAM_FIELDS. w_in_place is a flag, not a
# constant, so that a callback's call matches one from Python; state_width is the LSTM's P.
(_ROWS, _WIDTH, _HIDDEN, _BATCH, _STEPS, _COLUMN, _REVERSE, _SMALL, _TALL, _PARTS, _KEEP,
 _W_IN_PLACE, _STATE_WIDTH, _PROJECTED) = map(TEAM_FIELDS.index, (
    "rows", "width", "hidden", "batch", "steps", "column", "reverse", "small_gemm",
    "tall_rows", "parts", "keep", "w_in_place", "state_width", "projected"))  # fmt: skip

_thread_num = types.ExternalFunction("rnnkit_omp_get_thread_num", types.intc())
_num_threads = types.ExternalFunction("rnnkit_omp_get_num_threads", types.intc())


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a pointer."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.int64), codegen


@intrinsic
def _readonly(typingctx, array):
    """``array`` typed read-only, as the sizes and constants of a call from Python are:
    the callbacks then call the loops' compiled code of those calls, not their own."""

    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, signature.return_type, args[0])

    return array.copy(readonly=True)(array), codegen


@njit(inline="always")
def _team_array(d, index, rows, columns):
    """The float32 ``(rows, columns)`` array whose address is the ``index``-th array's."""
    return carray(_pointer(d[TEAM_ARRAYS + index]), (rows, columns), np.float32)


@njit(inline="always")
def _team_part(d, p):
    """Part ``p``'s ``(first, end)``."""
    first = d[TEAM_PARTS + 2 * p]
    return first, first + d[TEAM_PARTS + 2 * p + 1]


@njit(inline="always")
def _team_descriptor(data):
    """The callbacks' int64 descriptor at ``data``: fields, then the arrays' addresses and
    the parts (see TEAM_FIELDS)."""
    return carray(data, (TEAM_PARTS + 2 * TEAM_MAX_PARTS,), np.int64)


@njit(inline="always")
def _part_batch_sizes(d, first, end):
    """The batch sizes of the part ``first : end`` (every step runs all its rows), read-only
    as the loops' other callers pass them."""
    return _readonly(np.full(d[_STEPS], end - first, np.int64))


def gru_forward_parts(data):
    """:func:`gru_forward_loop` for this thread's parts (a C callback's body)."""
    d = _team_descriptor(data)
    rows, width, hidden, batch, keep = d[_ROWS], d[_WIDTH], d[_HIDDEN], d[_BATCH], d[_KEEP] != 0
    gates = _team_array(d, 0, rows, 3 * hidden)
    products = _team_array(d, 1, batch, 3 * hidden)
    kept_n = _team_array(d, 2, rows if keep else batch, hidden)
    out = _team_array(d, 3, rows, width)
    h0 = _team_array(d, 4, batch, hidden)
    w_hh_t = _team_array(d, 5, hidden, 3 * hidden)
    bias_hn = _team_array(d, 6, 1, hidden)[0]
    h_n = _team_array(d, 7, batch, hidden)
    consts = _readonly(_team_array(d, 8, 1, 2)[0])
    for p in range(_thread_num(), d[_PARTS], _num_threads()):
        first, end = _team_part(d, p)
        gru_forward_loop(
            gates, products[first:end], kept_n if keep else kept_n[first:end], out, d[_COLUMN],
            h0[first:end], w_hh_t, bias_hn, _part_batch_sizes(d, first, end),
            d[_REVERSE] != 0, consts, d[_SMALL], d[_TALL], h_n[first:end], keep,
            d[_W_IN_PLACE] != 0, first, batch,
        )  # fmt: skip


def gru_backward_parts(data):
    """:func:`gru_backward_walk` for this thread's parts (a C callback's body)."""
    d = _team_descriptor(data)
    rows, width, hidden, batch = d[_ROWS], d[_WIDTH], d[_HIDDEN], d[_BATCH]
    d_hidden = _team_array(d, 0, rows, 3 * hidden)
    d_n = _team_array(d, 1, rows, hidden)
    grad_out = _team_array(d, 2, rows, width)
    out = _team_array(d, 3, rows, width)
    gates = _team_array(d, 4, rows, 3 * hidden)
    kept_n = _team_array(d, 5, rows, hidden)
    h0 = _team_array(d, 6, batch, hidden)
    w_hh = _team_array(d, 7, 3 * hidden, hidden)
    carry = _team_array(d, 8, batch, hidden)
    consts = _readonly(_team_array(d, 9, 1, 2)[0])
    for p in range(_thread_num(), d[_PARTS], _num_threads()):
        first, end = _team_part(d, p)
        gru_backward_walk(
            d_hidden, d_n, grad_out, out, d[_COLUMN], gates, kept_n, h0[first:end], w_hh,
            _part_batch_sizes(d, first, end), d[_REVERSE] != 0, consts,
            d[_SMALL],
            d[_TALL], carry[first:end], first, batch,
        )  # fmt: skip


def lstm_forward_parts(data):
    """:func:`lstm_forward_loop` for this thread's parts (a C callback's body)."""
    d = _team_descriptor(data)
    rows, width, hidden, batch, keep = d[_ROWS], d[_WIDTH], d[_HIDDEN], d[_BATCH], d[_KEEP] != 0
    state, projected = d[_STATE_WIDTH], d[_PROJECTED] != 0
    gates = _team_array(d, 0, rows, 4 * hidden)
    cells = _team_array(d, 1, rows if keep else 2 * batch, hidden)
    tanh_cells = _team_array(d, 2, rows if keep else batch, hidden)
    out = _team_array(d, 3, rows, width)
    h0 = _team_array(d, 4, batch, state)
    c0 = _team_array(d, 5, batch, hidden)
    w_hh_t = _team_array(d, 6, state, 4 * hidden)
    w_hr_t = _team_array(d, 7, hidden if projected else 0, state if projected else 0)
    raw = _team_array(d, 8, batch if projected else 0, hidden if projected else 0)
    h_n = _team_array(d, 9, batch, state)
    c_n = _team_array(d, 10, batch, hidden)
    consts = _readonly(_team_array(d, 11, 1, 2)[0])
    for p in range(_thread_num(), d[_PARTS], _num_threads()):
        first, end = _team_part(d, p)
        part_cells, part_tanh = cells, tanh_cells
        if not keep:  # the part's own scratch rows: two blocks of cell rows, one of tanh
            part_cells, part_tanh = cells[2 * first : 2 * end], tanh_cells[first:end]
        lstm_forward_loop(
            gates, part_cells, part_tanh, out, d[_COLUMN], h0[first:end], c0[first:end],
            w_hh_t, w_hr_t, raw[first:end] if projected else raw,
            _part_batch_sizes(d, first, end), d[_REVERSE] != 0, consts,
            d[_SMALL], d[_TALL], h_n[first:end], c_n[first:end], keep, d[_W_IN_PLACE] != 0,
            first, batch,
        )  # fmt: skip


def lstm_backward_parts(data):
    """:func:`lstm_backward_walk` for this thread's parts (a C callback's body)."""
    d = _team_descriptor(data)
    rows, width, hidden, batch = d[_ROWS], d[_WIDTH], d[_HIDDEN], d[_BATCH]
    state, projected = d[_STATE_WIDTH], d[_PROJECTED] != 0
    d_gates = _team_array(d, 0, rows, 4 * hidden)
    d_out = _team_array(d, 1, rows, state)
    d_raw = _team_array(d, 2, batch if projected else rows, hidden if projected else state)
    grad_out = _team_array(d, 3, rows, width)
    gates = _team_array(d, 4, rows, 4 * hidden)
    cells = _team_array(d, 5, rows, hidden)
    tanh_cells = _team_array(d, 6, rows, hidden)
    c0 = _team_array(d, 7, batch, hidden)
    w_hh = _team_array(d, 8, 4 * hidden, state)
    w_hr = _team_array(d, 9, state if projected else 0, hidden if projected else 0)
    carry_h = _team_array(d, 10, batch, state)
    carry_c = _team_array(d, 11, batch, hidden)
    consts = _readonly(_team_array(d, 12, 1, 2)[0])
    for p in range(_thread_num(), d[_PARTS], _num_threads()):
        first, end = _team_part(d, p)
        lstm_backward_walk(
            d_gates, d_out, d_raw[first:end] if projected else d_raw, grad_out, d[_COLUMN],
            gates, cells, tanh_cells, c0[first:end], w_hh, w_hr,
            _part_batch_sizes(d, first, end), d[_REVERSE] != 0, consts,
            d[_SMALL], d[_TALL], carry_h[first:end], carry_c[first:end], first, batch,
        )  # fmt: skip
