"""Compiled time loops of a layer with recurrent dropout, zoneout or layer norm: the loops
of :mod:`rnnkit.engine.options`, without an interpreter round trip per op.

One direction per call, every cell (``cell``: 0 Elman, 1 LSTM, 2 GRU). Each step is
one BLAS product (``h_in @ W_hh^T``, ``h_in`` the previous states times the recurrent
dropout mask) and a few fused loops over the step's rows: the layer norm of each gate's
product, the cell's gates, zoneout. The walk back is the same with the derivatives.
The input projection before the loop and the weight gradients after it are large
GEMMs, left to torch (the engine's code, shared with its torch-ops loops).

Layouts are the torch-ops loops': packed rows (step ``t`` owns rows ``offsets[t] :
offsets[t] + batch_sizes[t]``), gates in torch's order (LSTM ``i, f, g, o``, GRU ``r,
z, n``); a direction's output is the columns ``column : column + H`` of a buffer the
directions share. All arrays are C-contiguous; an option that is off gets an array
with no rows. ``consts`` carries ``0.5``, ``1.0`` and the layer norm's epsilon in the
arrays' dtype. The row loops are compiled for the arrays' dtype only: float32 takes
the rational tanh under fastmath, float64 ``np.tanh``, as in
:mod:`rnnkit.compiled.gated_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rnnkit.compiled.blas import scratch
from rnnkit.compiled.cache import configure_numba
from rnnkit.compiled.gated_kernels import _continuing, _sigmoid, _tanh
from rnnkit.compiled.kernels import (
    AS_IS,
    ZERO,
    _last_states,
    _matmul_accumulate,
    _offsets,
    per_dtype,
)

_CACHE = configure_numba()

RNN, LSTM, GRU = 0, 1, 2


@njit(cache=_CACHE, nogil=True)
def _states_in(h_in, out, column, h0, previous, n_cont, n, mask):
    """``h_in[:n]``: each row's previous state (rows ``previous...`` of ``out``'s
    columns for the first ``n_cont``, ``h0`` for the rest) times ``mask`` if it has rows."""
    hidden = h_in.shape[1]
    masked = mask.shape[0] > 0
    for r in range(n):
        for j in range(hidden):
            h = out[previous + r, np.uint64(column) + np.uint64(j)] if r < n_cont else h0[r, j]
            h_in[r, j] = h * mask[r, j] if masked else h


def _layer_norm_rows_body(product, n, raw, first, mean, inv_std, gain, shift, eps):
    """Each gate's products of rows ``:n`` normalised, scaled by ``gain`` and shifted by
    ``shift`` in place; the products kept in ``raw`` (from row ``first``) and their mean
    and ``1 / std`` in ``mean``, ``inv_std``.

    Shape:
        product ``(N, G * H)``, raw ``(R, G * H)``, mean and inv_std ``(R, G)``.
    """
    gates = mean.shape[1]
    hidden = product.shape[1] // gates
    one = eps / eps
    for r in range(n):
        row = first + r
        for g in range(gates):
            base = g * hidden
            total = eps * 0
            for j in range(hidden):
                value = product[r, base + j]
                raw[row, base + j] = value
                total += value
            mu = total / hidden
            spread = eps * 0
            for j in range(hidden):
                centred = product[r, base + j] - mu
                spread += centred * centred
            inv = one / np.sqrt(spread / hidden + eps)
            mean[row, g], inv_std[row, g] = mu, inv
            for j in range(hidden):
                k = base + j
                product[r, k] = (product[r, k] - mu) * inv * gain[k] + shift[k]


def _forward_rows_body(cell, relu, gates, product, out, column, first, count, h_prev, prev_row,
                       prev_column, c_prev, c_prev_row, cells, tanh_cells, recurrent_n, zone,
                       zone_c, half):  # fmt: skip
    """The gates of rows ``first : first + count`` (in place in ``gates``, which holds
    their input projections) from their recurrent terms (``product``'s rows from 0),
    their new states into ``out`` (columns from ``column``) and, for the LSTM,
    ``cells``/``tanh_cells``; zoneout where ``zone`` (``zone_c``) has rows. ``h_prev`` and
    ``c_prev`` hold the previous states from rows ``prev_row``/``c_prev_row``
    (``h_prev``'s columns from ``prev_column``). One loop nest per cell, so that each
    vectorises."""
    zoned, zoned_c = zone.shape[0] > 0, zone_c.shape[0] > 0
    if cell == 0:
        hidden = gates.shape[1]
        for r in range(count):
            row, before = first + r, prev_row + r
            for j in range(hidden):
                u = np.uint64(j)
                pre = gates[row, u] + product[r, u]
                # relu keeps a NaN a NaN (pre * 0), as torch's
                h_new = (pre if pre > 0 else pre * 0) if relu else _tanh(pre)
                gates[row, u] = h_new
                if zoned:
                    h_new += zone[row, u] * (h_prev[before, np.uint64(prev_column) + u] - h_new)
                out[row, np.uint64(column) + u] = h_new
    elif cell == 1:
        hidden = tanh_cells.shape[1]
        h1, h2, h3 = np.uint64(hidden), np.uint64(2 * hidden), np.uint64(3 * hidden)
        for r in range(count):
            row, before, c_before_row = first + r, prev_row + r, c_prev_row + r
            for j in range(hidden):
                u = np.uint64(j)
                gi = _sigmoid(gates[row, u] + product[r, u], half)
                f = _sigmoid(gates[row, h1 + u] + product[r, h1 + u], half)
                g = _tanh(gates[row, h2 + u] + product[r, h2 + u])
                o = _sigmoid(gates[row, h3 + u] + product[r, h3 + u], half)
                gates[row, u], gates[row, h1 + u], gates[row, h2 + u], gates[row, h3 + u] = (
                    gi, f, g, o,
                )  # fmt: skip
                c_before = c_prev[c_before_row, u]
                c = f * c_before + gi * g
                tanh_c = _tanh(c)
                tanh_cells[row, u] = tanh_c
                if zoned_c:
                    c += zone_c[row, u] * (c_before - c)
                cells[row, u] = c
                h_new = o * tanh_c
                if zoned:
                    h_new += zone[row, u] * (h_prev[before, np.uint64(prev_column) + u] - h_new)
                out[row, np.uint64(column) + u] = h_new
    else:
        hidden = recurrent_n.shape[1]
        h1, h2 = np.uint64(hidden), np.uint64(2 * hidden)
        for r in range(count):
            row, before = first + r, prev_row + r
            for j in range(hidden):
                u = np.uint64(j)
                h_before = h_prev[before, np.uint64(prev_column) + u]
                reset = _sigmoid(gates[row, u] + product[r, u], half)
                update = _sigmoid(gates[row, h1 + u] + product[r, h1 + u], half)
                a_n = product[r, h2 + u]
                recurrent_n[row, u] = a_n
                candidate = _tanh(gates[row, h2 + u] + reset * a_n)
                gates[row, u], gates[row, h1 + u], gates[row, h2 + u] = reset, update, candidate
                h_new = candidate + update * (h_before - candidate)
                if zoned:
                    h_new += zone[row, u] * (h_before - h_new)
                out[row, np.uint64(column) + u] = h_new


def _backward_rows_body(cell, relu, d_pre, d_rec, grad_out, column, carry, carry_c, to_prev,
                        first, count, gates, h_prev, prev_row, prev_column, c_prev, c_prev_row,
                        tanh_cells, recurrent_n, zone, zone_c, one):  # fmt: skip
    """dL/d(input projection) (``d_pre``) and dL/d(recurrent term) (``d_rec``) of rows
    ``first : first + count`` from dL/dh (upstream plus ``carry``'s rows ``:count``); what
    flows to ``h_{t-1}`` around the product goes to ``to_prev``; the LSTM's ``carry_c``
    (dL/dc in) becomes dL/dc_{t-1}."""
    hidden = carry.shape[1]
    zoned, zoned_c = zone.shape[0] > 0, zone_c.shape[0] > 0
    for r in range(count):
        row = first + r
        for j in range(hidden):
            u = np.uint64(j)
            dh = grad_out[row, np.uint64(column) + u] + carry[r, u]
            around = dh * 0
            if zoned:
                around = dh * zone[row, u]
                dh = dh - around
            if cell == 0:
                h_new = gates[row, u]
                d = (dh if h_new > 0 else dh * 0) if relu else dh * (one - h_new * h_new)
                d_pre[row, u] = d
            elif cell == 1:
                h1, h2, h3 = np.uint64(hidden), np.uint64(2 * hidden), np.uint64(3 * hidden)
                gi, f = gates[row, u], gates[row, h1 + u]
                g, o = gates[row, h2 + u], gates[row, h3 + u]
                tanh_c = tanh_cells[row, u]
                dc = carry_c[r, u]
                kept_c = dc * 0
                if zoned_c:
                    kept_c = dc * zone_c[row, u]
                    dc = dc - kept_c
                dc = dc + dh * o * (one - tanh_c * tanh_c)
                d_pre[row, u] = dc * g * gi * (one - gi)
                d_pre[row, h1 + u] = dc * c_prev[c_prev_row + r, u] * f * (one - f)
                d_pre[row, h2 + u] = dc * gi * (one - g * g)
                d_pre[row, h3 + u] = dh * tanh_c * o * (one - o)
                carry_c[r, u] = dc * f + kept_c
            else:
                h1, h2 = np.uint64(hidden), np.uint64(2 * hidden)
                reset, update, candidate = gates[row, u], gates[row, h1 + u], gates[row, h2 + u]
                h_before = h_prev[prev_row + r, np.uint64(prev_column) + u]
                d_n = dh * (one - update) * (one - candidate * candidate)
                d_z = dh * (h_before - candidate) * update * (one - update)
                d_r = d_n * recurrent_n[row, u] * reset * (one - reset)
                d_pre[row, u], d_pre[row, h1 + u], d_pre[row, h2 + u] = d_r, d_z, d_n
                d_rec[row, u], d_rec[row, h1 + u], d_rec[row, h2 + u] = d_r, d_z, d_n * reset
                around = around + dh * update
            to_prev[r, u] = around


_forward_rows = per_dtype(_forward_rows_body)
_layer_norm_rows = per_dtype(_layer_norm_rows_body)
_backward_rows = per_dtype(_backward_rows_body)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def options_forward_loop(
    cell, relu, gates, out, column, h0, c0, w_hh_t, b_hh, gain, shift, recurrent_mask, zone,
    zone_c, raw, mean, inv_std, recurrent_n, cells, tanh_cells, product, h_in, batch_sizes,
    reverse, consts, small_gemm, tall_rows, h_n, c_n,
):  # fmt: skip
    """One direction's recurrence with the options.

    Args:
        cell, relu: the cell (0 Elman, 1 LSTM, 2 GRU) and the Elman activation.
        gates: each row's input projection plus ``b_ih``; becomes the activated gates
            (Elman: the new state before zoneout).
        out: written with the states, in columns ``column : column + H``.
        h0, c0: initial states (``c0``: no rows but for the LSTM).
        w_hh_t: the recurrent weight, transposed.
        b_hh: the recurrent bias (no rows: none).
        gain, shift: the layer norm's (no rows: no layer norm); ``shift`` includes ``b_hh``.
        recurrent_mask, zone, zone_c: the masks (no rows: off).
        raw, mean, inv_std: written with the layer norm's input and statistics.
        recurrent_n: written with the GRU's ``n`` recurrent term.
        cells, tanh_cells: written with the LSTM's cell states and ``tanh`` of each update.
        product, h_in: scratch for one step.
        batch_sizes, reverse, consts, small_gemm, tall_rows: see the module doc.
        h_n, c_n: written with each sequence's last states.

    Shape:
        gates, raw ``(R, G * H)``, out ``(R, W)``, h0 ``(N, H)``, w_hh_t ``(H, G * H)``,
        gain, shift and b_hh ``(G * H,)``, recurrent_mask ``(N, H)``, zone, zone_c,
        recurrent_n, cells, tanh_cells ``(R, H)``, mean and inv_std ``(R, G)``, product
        ``(N, G * H)``, h_in ``(N, H)``.
    """
    int_args, scalar_args = scratch(gates.dtype, tall_rows)
    half, eps = consts[0], consts[2]
    normed, biased = gain.shape[0] > 0, b_hh.shape[0] > 0
    offsets = _offsets(batch_sizes)
    steps = batch_sizes.shape[0]
    for i in range(steps):
        t = steps - 1 - i if reverse else i
        n, start = batch_sizes[t], offsets[t]
        n_cont, previous = _continuing(offsets, batch_sizes, t, reverse)
        _states_in(h_in, out, column, h0, previous, n_cont, n, recurrent_mask)
        step = product[:n]
        for r in range(n):
            for k in range(step.shape[1]):
                step[r, k] = b_hh[k] if biased and not normed else 0.0
        _matmul_accumulate(h_in[:n], w_hh_t, step, small_gemm, int_args, scalar_args, AS_IS)
        if normed:
            _layer_norm_rows(step, n, raw, start, mean, inv_std, gain, shift, eps)
        # continuing rows read the step before's states, starting rows h0 (and c0)
        _forward_rows(cell, relu, gates, step, out, column, start, n_cont, out, previous,
                      column, cells, previous, cells, tanh_cells, recurrent_n, zone, zone_c,
                      half)  # fmt: skip
        if n > n_cont:
            _forward_rows(cell, relu, gates, step[n_cont:], out, column, start + n_cont,
                          n - n_cont, h0, n_cont, ZERO, c0, n_cont, cells, tanh_cells, recurrent_n,
                          zone, zone_c, half)  # fmt: skip
    _last_states(out, column, batch_sizes, offsets, reverse, h_n)
    if cell == LSTM:
        _last_states(cells, ZERO, batch_sizes, offsets, reverse, c_n)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _layer_norm_back_rows(d_rec, d_raw, raw, mean, inv_std, gain, first, count):
    """dL/d(products) of rows ``first : first + count`` (into ``d_raw``) from dL/d(their
    normalised, scaled and shifted values) (``d_rec``)."""
    gates = mean.shape[1]
    hidden = d_rec.shape[1] // gates
    for r in range(first, first + count):
        for g in range(gates):
            base = g * hidden
            mu, inv = mean[r, g], inv_std[r, g]
            total, dot = 0.0, 0.0
            for j in range(hidden):
                k = base + j
                d_normed = d_rec[r, k] * gain[k]
                total += d_normed
                dot += d_normed * (raw[r, k] - mu) * inv
            total, dot = total / hidden, dot / hidden
            for j in range(hidden):
                k = base + j
                x_hat = (raw[r, k] - mu) * inv
                d_raw[r, k] = (d_rec[r, k] * gain[k] - total - x_hat * dot) * inv


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def options_backward_walk(
    cell, relu, d_pre, d_rec, d_raw, grad_out, out, column, gates, h0, c0, w_hh, gain, raw, mean,
    inv_std, recurrent_n, cells, tanh_cells, recurrent_mask, zone, zone_c, to_prev, carry_hh,
    batch_sizes, reverse, consts, small_gemm, tall_rows, carry, carry_c,
):  # fmt: skip
    """One direction's walk back in time with the options.

    Args:
        cell, relu: as in :func:`options_forward_loop`.
        d_pre: written with dL/d(input projection) of every row.
        d_rec: written with dL/d(recurrent term) (the GRU's; the others' is ``d_pre``).
        d_raw: written with dL/d(``h_in @ W_hh^T``) (with layer norm; else ``d_rec``).
        grad_out: upstream gradient of the output, columns ``column : column + H``.
        out, gates, raw, mean, inv_std, recurrent_n, cells, tanh_cells: from the forward.
        h0, c0, w_hh, gain, recurrent_mask, zone, zone_c: as in the forward (w_hh not
            transposed).
        to_prev, carry_hh: scratch for one step.
        carry, carry_c: on entry dL/dh_n and dL/dc_n; on return dL/dh_0 and dL/dc_0.

    Shape:
        d_pre, d_rec, d_raw ``(R, G * H)``, w_hh ``(G * H, H)``, to_prev, carry_hh,
        carry, carry_c ``(N, H)``; the others as in the forward.
    """
    int_args, scalar_args = scratch(d_pre.dtype, tall_rows)
    one = consts[1]
    normed, masked = gain.shape[0] > 0, recurrent_mask.shape[0] > 0
    offsets = _offsets(batch_sizes)
    steps = batch_sizes.shape[0]
    hidden = carry.shape[1]
    for i in range(steps):
        t = i if reverse else steps - 1 - i
        n, start = batch_sizes[t], offsets[t]
        n_cont, previous = _continuing(offsets, batch_sizes, t, reverse)
        _backward_rows(cell, relu, d_pre, d_rec, grad_out, column, carry, carry_c,
                       to_prev, start, n_cont, gates, out, previous, column, cells, previous,
                       tanh_cells, recurrent_n, zone, zone_c, one)  # fmt: skip
        if n > n_cont:
            _backward_rows(cell, relu, d_pre, d_rec, grad_out, column, carry[n_cont:],
                           carry_c[n_cont:], to_prev[n_cont:], start + n_cont, n - n_cont, gates,
                           h0, n_cont, ZERO, c0, n_cont, tanh_cells, recurrent_n, zone, zone_c,
                           one)  # fmt: skip
        if normed:
            _layer_norm_back_rows(d_rec, d_raw, raw, mean, inv_std, gain, start, n)
        through = carry_hh[:n]
        through[:] = 0.0
        _matmul_accumulate(d_raw[start : start + n], w_hh, through, small_gemm, int_args,
                           scalar_args, AS_IS)  # fmt: skip
        for r in range(n):
            for j in range(hidden):
                value = through[r, j] * recurrent_mask[r, j] if masked else through[r, j]
                carry[r, j] = value + to_prev[r, j]
