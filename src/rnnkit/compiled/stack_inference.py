"""A whole LSTM, GRU or Elman stack's inference on the compiled loops, with nothing around
them.

The general path (:mod:`rnnkit.engine.gated_stack`) runs each layer through the engine's
bookkeeping and each direction through a checked wrapper (:mod:`rnnkit.compiled.gated`):
about 150 us of Python a call at 2 x 1 x 4 x 64 on an AMD Zen 3, more than the kernels'
work over a few steps. This module makes the same kernel calls on arrays built to size:
per layer and direction one ``addmm`` (the input projection) and one call of the time loop
(an Elman direction's kernel projects its input itself),
for calls of few steps or small ones (:mod:`rnnkit.engine.few_steps` decides which). The arrays are
built here, so their shapes hold by construction; the caller checks the module's weights
(:func:`rnnkit.recurrent.short_path_states`).

Every array has the type the kernels were compiled for (:func:`rnnkit.compiled.warmup.load`
exercises them with the same helpers): C-contiguous, read-only ``batch_sizes`` and
``consts``, so that no call here compiles a new specialisation.

Shape symbols: ``R`` packed rows, ``N`` batch, ``D`` directions, ``G`` gate rows (``4H``
or ``3H``), ``P`` state features (``proj_size`` or ``H``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.compiled import (
    SMALL_GEMM,
    _absent,
    _as_numpy,
    _blas,
    _equal_sizes,
    _kind_code,
    _single_threaded_scipy_blas,
)
from rnnkit.compiled import _kernels as _elman_kernels
from rnnkit.compiled.gated import _consts as consts_of
from rnnkit.compiled.gated import _kernels
from rnnkit.engine.gru import input_bias


def stack_inference(
    cell: str, data: Tensor, sizes: np.ndarray, states: tuple[Tensor, ...],
    weights: list[Tensor], num_layers: int, bidirectional: bool, hidden: int, width: int,
    relu: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
    """Run every layer and direction of an LSTM, GRU or Elman stack, without autograd.

    Args:
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        data: packed input rows, CPU, float32 or float64.
        sizes: rows per step, non-increasing, summing to ``R``: int64, read-only (see
            :func:`step_sizes`).
        states: ``(h_0,)`` (GRU) or ``(h_0, c_0)`` (LSTM), in the sorted order; ``()``
            for zeros.
        weights: the module's ``_flat_weights`` (per layer and direction ``w_ih, w_hh[,
            b_ih, b_hh][, w_hr]``), each of its shape in ``data``'s dtype.
        num_layers, bidirectional: the stack's.
        hidden: ``H``; width: ``P``.
        relu: an Elman stack's activation is ``relu`` (else ``tanh``).

    Returns:
        ``(out, finals)``: the last layer's outputs and each state after each sequence's
        last step (``(h_n,)`` or ``(h_n, c_n)``).

    Shape:
        data ``(R, H_in)``, each state ``(D * num_layers, N, P)`` (``c_0``: ``H``);
        out ``(R, D * P)``, finals as states.
    """
    lstm = cell == "lstm"
    directions = 2 if bidirectional else 1
    batch, rows = int(sizes[0]), data.size(0)
    np_dtype = _NUMPY[data.dtype]
    _single_threaded_scipy_blas()
    # what every kernel call takes after its arrays
    steps = (sizes, consts_of(np_dtype), SMALL_GEMM, _blas().tall_rows())
    widths = (width, hidden) if lstm else (hidden,)
    if states:
        initial = [_as_numpy(state) for state in states]  # (D * num_layers, N, P or H)
    else:
        initial = [np.zeros((num_layers * directions, batch, n), np_dtype) for n in widths]
    finals = tuple(data.new_empty(state.shape) for state in initial)
    finals_np = [final.numpy() for final in finals]
    if lstm:  # two steps' cell rows, one step's tanh of them; with a projection o * tanh(c)
        scratch = (np.empty((2 * batch, hidden), np_dtype), np.empty((batch, hidden), np_dtype),
                   np.empty((batch, hidden), np_dtype) if width != hidden else None)  # fmt: skip
    elif cell == "gru":  # a step's recurrent products, and W_hn h + b_hn
        scratch = (np.empty((batch, 3 * hidden), np_dtype), np.empty((batch, hidden), np_dtype))
    else:  # no scratch: the activation's code, as the general path picks it
        fast = data.dtype == torch.float32
        scratch = _kind_code("relu" if relu else "fast_tanh" if fast else "tanh")
    run_direction = {"lstm": _lstm_direction, "gru": _gru_direction, "rnn": _elman_direction}[cell]
    per = len(weights) // (num_layers * directions)
    x = data
    for layer in range(num_layers):
        out = data.new_empty(rows, directions * width)  # (R, D * P)
        out_np = out.numpy()
        for direction in range(directions):
            k = layer * directions + direction
            ends = [state[k] for state in initial] + [final[k] for final in finals_np]
            run_direction(x, weights[k * per : (k + 1) * per], out_np, direction * width, ends,
                          scratch, direction == 1, steps)  # fmt: skip
        x = out
    return x, finals


def _lstm_direction(x, weights, out, column, ends, scratch, reverse, steps) -> None:
    """One LSTM direction: the input projection, then the time loop into ``out``'s columns
    from ``column``. ``ends``: ``h0, c0, h_n, c_n`` (numpy); ``steps``: the kernels'
    ``batch_sizes, consts, small_gemm, tall_rows``."""
    w_ih, w_hh, *rest = weights
    bias = rest[0] + rest[1] if len(rest) >= 2 else None
    gates = _project(x, w_ih, bias)  # (R, 4H)
    cells, tanh_cells, raw = scratch
    w_hr_t = _absent(cells.dtype, 2)
    if raw is None:
        raw = w_hr_t
    else:
        w_hr_t = _as_numpy(rest[-1].t())  # (H, P)
    sizes, consts, small_gemm, tall_rows = steps
    h0, c0, h_n, c_n = ends
    _kernels().lstm_forward_loop(
        gates.numpy(), cells, tanh_cells, out, column, h0, c0, _as_numpy(w_hh), w_hr_t, raw,
        sizes, reverse, consts, small_gemm, tall_rows, h_n, c_n, False, True, 0, 0,
    )  # fmt: skip


def _gru_direction(x, weights, out, column, ends, scratch, reverse, steps) -> None:
    """One GRU direction, as :func:`_lstm_direction`; ``ends``: ``h0, h_n``."""
    w_ih, w_hh, *biases = weights
    hidden = w_hh.size(1)
    if biases:
        b_ih, b_hh = biases
        gates = _project(x, w_ih, input_bias(b_ih, b_hh))
        b_hn = _as_numpy(b_hh)[2 * hidden :]  # (H,)
    else:
        gates, b_hn = _project(x, w_ih, None), np.zeros(hidden, out.dtype)
    products, kept_n = scratch
    sizes, consts, small_gemm, tall_rows = steps
    h0, h_n = ends
    _kernels().gru_forward_loop(
        gates.numpy(), products, kept_n, out, column, h0, _as_numpy(w_hh), b_hn, sizes,
        reverse, consts, small_gemm, tall_rows, h_n, False, True, 0, 0,
    )  # fmt: skip


def _elman_direction(x, weights, out, column, ends, kind, reverse, steps) -> None:
    """One Elman direction, as :func:`_lstm_direction`: the kernel projects ``x`` itself and
    adds both biases; ``ends``: ``h0, h_n``; ``kind``: the activation's code."""
    w_ih, w_hh, *biases = weights
    dtype = out.dtype
    if biases:
        bias, bias_hh = _as_numpy(biases[0]), _as_numpy(biases[1])
    else:
        bias, bias_hh = np.zeros(w_hh.size(0), dtype), _absent(dtype, 1)
    sizes, _, small_gemm, tall_rows = steps
    h0, h_n = ends
    _elman_kernels().forward_loop(
        out, column, h0, _as_numpy(w_hh), bias, bias_hh, sizes, reverse, kind, small_gemm,
        tall_rows, _as_numpy(x), _as_numpy(w_ih), h_n, False,
    )  # fmt: skip


_NUMPY = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _project(x: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ w_ih.t() (+ bias)``, a fresh tensor (autograd does not record this path).
    Shape: ``(R, G)``."""
    return torch.mm(x, w_ih.t()) if bias is None else torch.addmm(bias, x, w_ih.t())


def step_sizes(sizes: list[int], batch_sizes: Tensor | None) -> np.ndarray:
    """The rows per step as the kernels take them (int64, C-contiguous, read-only):
    ``sizes`` (checked by :func:`rnnkit.recurrent.packed_sizes`, or equal), read from
    ``batch_sizes``, a packed input's, where that can be read in place. Shape: ``(T,)``."""
    if sizes[0] == sizes[-1]:
        return _equal_sizes(sizes[0], len(sizes))  # shared by every call of this shape
    if batch_sizes is not None and batch_sizes.is_contiguous():
        array = batch_sizes.numpy()  # int64: packed_sizes checked it
    else:
        array = np.array(sizes, np.int64)
    array.flags.writeable = False  # the kernels' signature: one, not two
    return array
