"""Calls into the compiled LSTM and GRU loops (:mod:`rnnkit.compiled.gated_kernels`).

Each function takes tensors, checks what the kernels would misread (they do
not bounds-check), and runs one direction's time loop; the engine
(:mod:`rnnkit.engine.lstm`, :mod:`rnnkit.engine.gru`) does the GEMMs around it.
Shape symbols as there.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnkit.compiled import (
    SMALL_GEMM,
    _absent,
    _as_numpy,
    _blas,
    _refuse_misfits,
    _single_threaded_scipy_blas,
    _sizes_array,
    _written_in_place,
)


@functools.cache
def _kernels():
    from rnnkit.compiled import gated_kernels

    return gated_kernels


@functools.cache
def _consts(dtype: np.dtype) -> np.ndarray:
    """``[0.5, 1.0]`` in ``dtype``, read-only (see the kernels' module doc)."""
    consts = np.array([0.5, 1.0], dtype)
    consts.flags.writeable = False
    return consts


def _prologue(rows: int, batch_sizes, batch: int, dtype: np.dtype):
    """The checked batch sizes and the arguments every kernel takes."""
    sizes = _sizes_array(batch_sizes, rows, batch)
    _single_threaded_scipy_blas()
    return sizes, _consts(dtype), SMALL_GEMM, _blas().tall_rows()


def lstm_forward(gates, cells, tanh_cells, out, column, h0, c0, w_hh_t, w_hr_t, batch_sizes,
                 reverse, h_n, c_n, keep=True, w_in_place=False, parts=None) -> None:  # fmt: skip
    """One LSTM direction's recurrence, in place (see ``gated_kernels.lstm_forward_loop``;
    gates in torch's order ``i, f, g, o``; ``w_in_place`` and ``parts`` as in
    :func:`gru_forward`).

    Shape:
        gates ``(R, 4H)``, cells and tanh_cells ``(R, H)`` (without ``keep``:
        ``(2N, H)`` and ``(N, H)``), out ``(R, W)``, h0 and h_n ``(N, P)``, c0 and
        c_n ``(N, H)``, w_hh_t ``(P, 4H)`` (with ``w_in_place``: ``(4H, P)``), w_hr_t
        ``(H, P)`` or None.
    """
    gates_np = _written_in_place(gates, "gates")
    rows, hidden = gates_np.shape[0], cells.size(-1)
    batch, width = h0.size(0), h0.size(-1)
    arrays = {
        "gates": (gates_np, (rows, 4 * hidden)),
        "out": (_written_in_place(out, "out"), (rows, out.size(-1))),
        "cells": (_written_in_place(cells, "cells"), (rows if keep else 2 * batch, hidden)),
        "tanh_cells": (
            _written_in_place(tanh_cells, "tanh_cells"),
            (rows if keep else batch, hidden),
        ),
        "h0": (_as_numpy(h0), (batch, width)),
        "c0": (_as_numpy(c0), (batch, hidden)),
        "w_hh_t": (_as_numpy(w_hh_t), (4 * hidden, width) if w_in_place else (width, 4 * hidden)),
        "h_n": (_written_in_place(h_n, "h_n"), (batch, width)),
        "c_n": (_written_in_place(c_n, "c_n"), (batch, hidden)),
    }
    dtype = gates_np.dtype
    w_hr_np, raw = _absent(dtype, 2), _absent(dtype, 2)
    if w_hr_t is not None:
        w_hr_np, raw = _as_numpy(w_hr_t), np.empty((batch, hidden), dtype)
        arrays["w_hr_t"] = (w_hr_np, (hidden, width))
    _check(arrays, "out", column, width)
    a = {name: array for name, (array, _) in arrays.items()}
    if parts is not None and len(parts) > 1:
        fields = _team_fields(rows, batch_sizes, batch, dtype, reverse, parts, out.size(-1),
                              hidden, column, keep, w_in_place, width,
                              w_hr_t is not None)  # fmt: skip
        arrays = {**a, "w_hr_t": w_hr_np, "raw": raw, "consts": _consts(dtype)}
        _team().run("lstm_forward", arrays, fields, parts)
        return
    _kernels().lstm_forward_loop(
        a["gates"], a["cells"], a["tanh_cells"], a["out"], column, a["h0"], a["c0"], a["w_hh_t"],
        w_hr_np, raw, *_step_args(rows, batch_sizes, batch, dtype, reverse), a["h_n"], a["c_n"],
        keep, w_in_place, 0, 0,
    )  # fmt: skip


def lstm_backward(d_gates, d_out, d_raw, grad_out, column, gates, cells, tanh_cells, c0, w_hh,
                  w_hr, batch_sizes, reverse, carry_h, carry_c, parts=None) -> None:  # fmt: skip
    """One LSTM direction's walk back in time (see ``gated_kernels.lstm_backward_walk``;
    ``parts`` as in :func:`gru_forward`).

    Shape:
        d_gates ``(R, 4H)`` (torch's gate order), d_out ``(R, P)``, d_raw ``(N, H)``: one
        step's scratch (``d_out`` without a projection), grad_out ``(R, W)``, w_hh ``(4H, P)``,
        w_hr ``(P, H)`` or None, carry_h ``(N, P)``, carry_c ``(N, H)``.
    """
    d_gates_np = _written_in_place(d_gates, "d_gates")
    rows, hidden = d_gates_np.shape[0], cells.size(-1)
    batch, width = carry_h.size(0), carry_h.size(-1)
    arrays = {
        "grad_out": (_as_numpy(grad_out), (rows, grad_out.size(-1))),
        "d_gates": (d_gates_np, (rows, 4 * hidden)),
        "d_out": (_written_in_place(d_out, "d_out"), (rows, width)),
        "d_raw": (
            _written_in_place(d_raw, "d_raw"),
            (batch, hidden) if w_hr is not None else (rows, width),
        ),
        "gates": (_as_numpy(gates), (rows, 4 * hidden)),
        "cells": (_as_numpy(cells), (rows, hidden)),
        "tanh_cells": (_as_numpy(tanh_cells), (rows, hidden)),
        "c0": (_as_numpy(c0), (batch, hidden)),
        "w_hh": (_as_numpy(w_hh), (4 * hidden, width)),
        "carry_h": (_written_in_place(carry_h, "carry_h"), (batch, width)),
        "carry_c": (_written_in_place(carry_c, "carry_c"), (batch, hidden)),
    }
    dtype = d_gates_np.dtype
    w_hr_np = _absent(dtype, 2)
    if w_hr is not None:
        w_hr_np = _as_numpy(w_hr)
        arrays["w_hr"] = (w_hr_np, (width, hidden))
    _check(arrays, "grad_out", column, width)
    a = {name: array for name, (array, _) in arrays.items()}
    if parts is not None and len(parts) > 1:
        fields = _team_fields(rows, batch_sizes, batch, dtype, reverse, parts,
                              grad_out.size(-1), hidden, column, True, False, width,
                              w_hr is not None)  # fmt: skip
        _team().run("lstm_backward", {**a, "w_hr": w_hr_np, "consts": _consts(dtype)}, fields,
                    parts)  # fmt: skip
        return
    sizes, consts, small_gemm, tall_rows = _prologue(rows, batch_sizes, batch, dtype)
    _kernels().lstm_backward_walk(
        a["d_gates"], a["d_out"], a["d_raw"], a["grad_out"], column, a["gates"], a["cells"],
        a["tanh_cells"], a["c0"], a["w_hh"], w_hr_np, sizes, reverse,
        consts, small_gemm, tall_rows, a["carry_h"], a["carry_c"], 0, 0,
    )  # fmt: skip


def gru_forward(gates, products, kept_n, out, column, h0, w_hh_t, bias_hn, batch_sizes, reverse,
                h_n, keep=True, w_in_place=False, parts=None) -> None:  # fmt: skip
    """One GRU direction's recurrence, in place (see ``gated_kernels.gru_forward_loop``;
    with ``w_in_place``, ``w_hh_t`` is the weight itself, not its transpose).

    ``parts``: ``(first, count)`` sequences of a float32 batch of equal lengths, each run
    by a thread of torch's OpenMP team (:mod:`rnnkit.compiled.team`); None or one part
    runs the whole batch here.

    Shape:
        gates ``(R, 3H)``, products ``(N, 3H)``, kept_n ``(R, H)`` (without ``keep``:
        ``(N, H)``), out ``(R, W)``, h0 and h_n ``(N, H)``, w_hh_t ``(H, 3H)`` (with
        ``w_in_place``: ``(3H, H)``), bias_hn ``(H,)`` or None.
    """
    gates_np = _written_in_place(gates, "gates")
    rows, hidden, batch = gates_np.shape[0], h0.size(-1), h0.size(0)
    dtype = gates_np.dtype
    arrays = {
        "out": (_written_in_place(out, "out"), (rows, out.size(-1))),
        "gates": (gates_np, (rows, 3 * hidden)),
        "products": (_written_in_place(products, "products"), (batch, 3 * hidden)),
        "kept_n": (_written_in_place(kept_n, "kept_n"), (rows if keep else batch, hidden)),
        "h0": (_as_numpy(h0), (batch, hidden)),
        "w_hh_t": (
            _as_numpy(w_hh_t),
            (3 * hidden, hidden) if w_in_place else (hidden, 3 * hidden),
        ),
        "bias_hn": (np.zeros(hidden, dtype) if bias_hn is None else _as_numpy(bias_hn), (hidden,)),
        "h_n": (_written_in_place(h_n, "h_n"), (batch, hidden)),
    }
    _check(arrays, "out", column, hidden)
    a = {name: array for name, (array, _) in arrays.items()}
    if parts is not None and len(parts) > 1:
        fields = _team_fields(rows, batch_sizes, batch, dtype, reverse, parts, out.size(-1),
                              hidden, column, keep, w_in_place)  # fmt: skip
        _team().run("gru_forward", {**a, "consts": _consts(dtype)}, fields, parts)
        return
    _kernels().gru_forward_loop(
        a["gates"], a["products"], a["kept_n"], a["out"], column, a["h0"], a["w_hh_t"],
        a["bias_hn"], *_step_args(rows, batch_sizes, batch, dtype, reverse), a["h_n"], keep,
        w_in_place, 0, 0,
    )  # fmt: skip


def gru_backward(d_hidden, d_n, grad_out, out, column, gates, kept_n, h0, w_hh, batch_sizes,
                 reverse, carry, parts=None) -> None:  # fmt: skip
    """One GRU direction's walk back in time (see ``gated_kernels.gru_backward_walk``;
    ``parts`` as in :func:`gru_forward`).

    Shape:
        d_hidden and gates ``(R, 3H)``, d_n and kept_n ``(R, H)``, grad_out and out
        ``(R, W)``, h0 and carry ``(N, H)``, w_hh ``(3H, H)``.
    """
    d_hidden_np = _written_in_place(d_hidden, "d_hidden")
    rows, hidden, batch = d_hidden_np.shape[0], h0.size(-1), h0.size(0)
    dtype = d_hidden_np.dtype
    arrays = {
        "grad_out": (_as_numpy(grad_out), (rows, grad_out.size(-1))),
        "out": (_as_numpy(out), (rows, grad_out.size(-1))),
        "d_hidden": (d_hidden_np, (rows, 3 * hidden)),
        "d_n": (_written_in_place(d_n, "d_n"), (rows, hidden)),
        "gates": (_as_numpy(gates), (rows, 3 * hidden)),
        "kept_n": (_as_numpy(kept_n), (rows, hidden)),
        "h0": (_as_numpy(h0), (batch, hidden)),
        "w_hh": (_as_numpy(w_hh), (3 * hidden, hidden)),
        "carry": (_written_in_place(carry, "carry"), (batch, hidden)),
    }
    _check(arrays, "grad_out", column, hidden)
    a = {name: array for name, (array, _) in arrays.items()}
    if parts is not None and len(parts) > 1:
        fields = _team_fields(rows, batch_sizes, batch, dtype, reverse, parts,
                              grad_out.size(-1), hidden, column, True, False)  # fmt: skip
        _team().run("gru_backward", {**a, "consts": _consts(dtype)}, fields, parts)
        return
    sizes, consts, small_gemm, tall_rows = _prologue(rows, batch_sizes, batch, dtype)
    _kernels().gru_backward_walk(
        a["d_hidden"], a["d_n"], a["grad_out"], a["out"], column, a["gates"], a["kept_n"],
        a["h0"], a["w_hh"], sizes, reverse, consts, small_gemm, tall_rows,
        a["carry"], 0, 0,
    )  # fmt: skip


def _step_args(rows, batch_sizes, batch, dtype, reverse) -> tuple:
    """``batch_sizes, reverse, consts, small_gemm, tall_rows`` of a forward kernel."""
    sizes, consts, small_gemm, tall_rows = _prologue(rows, batch_sizes, batch, dtype)
    return sizes, reverse, consts, small_gemm, tall_rows


@functools.cache
def _team():
    from rnnkit.compiled import team

    return team


def team_available() -> bool:
    """Whether the GRU and LSTM loops here can run ``parts``."""
    return _team().available()


def _team_fields(rows, batch_sizes, batch, dtype, reverse, parts, width, hidden, column, keep,
                 w_in_place, state_width=0, projected=False) -> dict:  # fmt: skip
    """The team callbacks' sizes and flags (:mod:`rnnkit.compiled.team`), after checking
    what they would misread: float32, equal lengths, parts that tile the batch, the
    weight transposed (the callbacks never read it in place)."""
    sizes, _, small_gemm, _ = _prologue(rows, batch_sizes, batch, dtype)
    bounds = [first for first, _ in parts] + [parts[-1][0] + parts[-1][1]]
    tiled = bounds[0] == 0 and bounds[-1] == batch and all(count >= 1 for _, count in parts)
    tiled = tiled and all(first + count == later for (first, count), later in
                          zip(parts, bounds[1:], strict=True))  # fmt: skip
    fits = dtype == np.float32 and sizes[-1] == batch and tiled and not w_in_place
    if not fits or not team_available():
        raise ValueError(
            f"rnnkit.compiled: expected parts (first, count) tiling a float32 batch of {batch} "
            f"sequences of equal length on torch's OpenMP runtime, with w_hh transposed, got "
            f"{list(parts)} for dtype {dtype}, batch_sizes {list(batch_sizes)} and w_in_place "
            f"{w_in_place}"
        )
    # Each part's products stay in its thread, as at one thread (see TALL_ROWS_PART).
    return _team().fields(rows, width, hidden, batch, len(sizes), column, reverse, small_gemm,
                          _blas().TALL_ROWS_PART, keep, state_width, projected)  # fmt: skip


def _check(arrays: dict, first: str, column: int, width: int) -> None:
    """Refuse arrays the kernels would misread; ``first`` holds the direction's columns."""
    ordered = [first, *(name for name in arrays if name != first)]
    checked = [(name, *arrays[name]) for name in ordered]
    _refuse_misfits(arrays[first][0].dtype, column, width, checked)
