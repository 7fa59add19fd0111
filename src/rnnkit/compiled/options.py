"""Calls into the compiled loops of a layer with the options
(:mod:`rnnkit.compiled.options_kernels`).

Each function takes one direction's tensors, checks what the kernels would misread
(they do not bounds-check) and runs its time loop; the engine
(:mod:`rnnkit.engine.options`) does the GEMMs around it. An operand that is None
(an option that is off) goes to the kernel as an array with no rows. Shape symbols
as there.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnkit.compiled import _absent, _as_numpy, _refuse_misfits, _written_in_place
from rnnkit.compiled.gated import _prologue
from rnnkit.functional_options import LAYER_NORM_EPS

CELL_CODES = {"rnn": 0, "lstm": 1, "gru": 2}
# What the forward keeps for the walk back, as the engine's Kept after its gates.
_KEPT = ("raw", "mean", "inv_std", "recurrent_n", "cells", "tanh_cells")


@functools.cache
def _kernels():
    from rnnkit.compiled import options_kernels

    return options_kernels


@functools.cache
def _consts(dtype: np.dtype) -> np.ndarray:
    """``[0.5, 1.0, eps]`` in ``dtype``, read-only (see the kernels' module doc)."""
    consts = np.array([0.5, 1.0, LAYER_NORM_EPS], dtype)
    consts.flags.writeable = False
    return consts


def _operands(dtype: np.dtype, given: dict, written: dict, first: str) -> tuple[dict, list]:
    """numpy views of the given and written tensors (``(tensor, shape)``; None: absent)
    and the ``(name, array, shape)`` triples to check, ``first`` (the array holding the
    direction's columns) first."""
    arrays, checked = {}, []
    operands = {**written, **given}
    for name in [first, *(n for n in operands if n != first)]:
        tensor, shape = operands[name]
        if tensor is None:
            arrays[name] = _absent(dtype, len(shape))
            continue
        array = _written_in_place(tensor, name) if name in written else _as_numpy(tensor)
        arrays[name] = array
        checked.append((name, array, shape))
    return arrays, checked


def _kept_and_masks(spec, kept, masks, rows: int, batch: int, hidden: int) -> dict:
    """The operands both loops take: what the forward keeps and the masks, with the
    shapes the kernels expect (``(tensor or None, shape)`` by kernel argument name)."""
    width, gated, per_gate = spec.gates * hidden, (rows, hidden), (rows, spec.gates)
    kept_shapes = ((rows, width), per_gate, per_gate, gated, gated, gated)
    shapes = dict(zip(_KEPT, kept_shapes, strict=True))
    shapes |= {"recurrent_mask": (batch, hidden), "zone": gated, "zone_c": gated}
    return {name: (t, shapes[name]) for name, t in zip(shapes, (*kept, *masks), strict=True)}


def options_forward(spec, gates, out, column, h0, c0, w_hh_t, b_hh, norm, masks, kept, product,
                    h_in, batch_sizes, reverse, h_n, c_n) -> None:  # fmt: skip
    """One direction's recurrence with the options, in place (see
    ``options_kernels.options_forward_loop``).

    Args:
        spec: the engine's ``OptionsSpec``.
        norm: ``(gain, shift)`` with ``b_hh`` in the shift, or None.
        masks: ``(recurrent, zone, zone_c)`` of this direction, each None if off.
        kept: ``(raw, mean, inv_std, recurrent_n, cells, tanh_cells)``, each None if
            the spec keeps none (mean and inv_std ``(R, G)``).
        the others: see the kernel.
    """
    dtype = _written_in_place(gates, "gates").dtype
    rows, width = gates.shape
    batch, hidden = h0.shape
    operands = _kept_and_masks(spec, kept, masks, rows, batch, hidden)
    written = {
        "out": (out, (rows, out.size(1))),
        "gates": (gates, (rows, width)),
        **{name: operands.pop(name) for name in _KEPT},
        "product": (product, (batch, width)),
        "h_in": (h_in, (batch, hidden)),
        "h_n": (h_n, (batch, hidden)),
        "c_n": (c_n, (batch, hidden)),
    }
    given = {
        "h0": (h0, (batch, hidden)),
        "c0": (c0, (batch, hidden)),
        "w_hh_t": (w_hh_t, (hidden, width)),
        "b_hh": (b_hh, (width,)),
        "gain": (None if norm is None else norm[0], (width,)),
        "shift": (None if norm is None else norm[1], (width,)),
        **operands,  # the masks
    }
    a, checked = _operands(dtype, given, written, "out")
    _refuse_misfits(dtype, column, hidden, checked)
    sizes, _, small_gemm, tall_rows = _prologue(rows, batch_sizes, batch, dtype)
    consts = _consts(dtype)  # with the layer norm's epsilon
    _kernels().options_forward_loop(
        CELL_CODES[spec.cell], spec.relu, a["gates"], a["out"], column, a["h0"], a["c0"],
        a["w_hh_t"], a["b_hh"], a["gain"], a["shift"], a["recurrent_mask"], a["zone"],
        a["zone_c"], a["raw"], a["mean"], a["inv_std"], a["recurrent_n"], a["cells"],
        a["tanh_cells"], a["product"], a["h_in"], sizes, reverse, consts,
        small_gemm, tall_rows, a["h_n"], a["c_n"],
    )  # fmt: skip


def options_backward(spec, d_pre, d_rec, d_raw, grad_out, out, column, gates, h0, c0, w_hh,
                     gain, masks, kept, to_prev, carry_hh, batch_sizes, reverse, carry,
                     carry_c) -> None:  # fmt: skip
    """One direction's walk back in time with the options (see
    ``options_kernels.options_backward_walk``); arguments as :func:`options_forward`'s
    and the kernel's."""
    dtype = _written_in_place(d_pre, "d_pre").dtype
    rows, width = d_pre.shape
    batch, hidden = carry.shape
    written = {
        "d_pre": (d_pre, (rows, width)),
        "d_rec": (d_rec, (rows, width)),
        "d_raw": (d_raw, (rows, width)),
        "to_prev": (to_prev, (batch, hidden)),
        "carry_hh": (carry_hh, (batch, hidden)),
        "carry": (carry, (batch, hidden)),
        "carry_c": (carry_c, (batch, hidden)),
    }
    given = {
        "grad_out": (grad_out, (rows, grad_out.size(1))),
        "out": (out, (rows, out.size(1))),
        "gates": (gates, (rows, width)),
        "h0": (h0, (batch, hidden)),
        "c0": (c0, (batch, hidden)),
        "w_hh": (w_hh, (width, hidden)),
        "gain": (gain, (width,)),
        **_kept_and_masks(spec, kept, masks, rows, batch, hidden),
    }
    a, checked = _operands(dtype, given, written, "grad_out")
    _refuse_misfits(dtype, column, hidden, checked)
    sizes, _, small_gemm, tall_rows = _prologue(rows, batch_sizes, batch, dtype)
    consts = _consts(dtype)  # with the layer norm's epsilon
    _kernels().options_backward_walk(
        CELL_CODES[spec.cell], spec.relu, a["d_pre"], a["d_rec"], a["d_raw"], a["grad_out"],
        a["out"], column, a["gates"], a["h0"], a["c0"], a["w_hh"], a["gain"], a["raw"],
        a["mean"], a["inv_std"], a["recurrent_n"], a["cells"], a["tanh_cells"],
        a["recurrent_mask"], a["zone"], a["zone_c"], a["to_prev"], a["carry_hh"], sizes, reverse,
        consts, small_gemm, tall_rows, a["carry"], a["carry_c"],
    )  # fmt: skip
