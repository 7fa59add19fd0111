"""The compiled CPU engine: numba time loops around BLAS (SciPy's, and torch's own
for large products: see :mod:`rnnkit.compiled.blas`).

Imported lazily by :mod:`rnnkit.engine` (numba costs about half a second to
import); :func:`available` says whether it can run here. Kernels compile on
first use (about 15 s of CPU per dtype) and are cached on disk by numba (where:
:mod:`rnnkit.compiled.cache`), so later processes load them in under a second;
:mod:`rnnkit.compiled.warmup` does either in the background, so that no call
waits for it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# Products with m*k*n up to this run as a plain compiled loop, larger ones call
# BLAS. Measured per step, float32, 1 thread: BLAS takes 0.16 us at 1x64x64
# (the loop 0.30), 0.61 us at 8x64x64 (loop 2.0-5.2), 0.08 us at 8x16x16 (loop
# 0.26-0.31); the loop wins only below about 1x16x16.
SMALL_GEMM = 16 * 16


@functools.cache
def available() -> bool:
    """True when numba and SciPy (whose BLAS the kernels call) are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("numba", "scipy"))


def large_gemm_library() -> str:
    """The BLAS the kernels give large products: ``"torch"`` (the one bundled in
    torch's library, on torch's threads) or ``"scipy"`` where that is not usable."""
    return _blas().LARGE_GEMM_LIBRARY


@functools.cache
def _blas():
    from rnnkit.compiled import blas

    return blas


@functools.cache
def _kernels():
    from rnnkit.compiled import kernels

    return kernels


@functools.cache
def _single_threaded_scipy_blas() -> None:
    """Put SciPy's BLAS, the one the kernels call, on one thread, once per process.

    SciPy's BLAS gets only small products (large ones go to torch's BLAS, on
    torch's ``torch.get_num_threads()`` threads, or, without it, ``auto``
    leaves large steps to the torch-ops engine); a second BLAS thread pool
    would only spin against torch's threads on the same cores. This also applies to
    ``scipy.linalg`` elsewhere in the process, so it is logged.
    """
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so threadpoolctl sees it)
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if "scipy" in lib.filepath.lower() and lib.num_threads != 1:
            logger.info(
                "rnnkit.compiled: %s set to 1 thread (was %d)", lib.filepath, lib.num_threads
            )
            lib.set_num_threads(1)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=64)
def _equal_sizes(batch: int, steps: int) -> np.ndarray:
    """``[batch] * steps`` as int64, read-only: shared by every call with that shape."""
    sizes = np.full(steps, batch, dtype=np.int64)
    sizes.flags.writeable = False
    return sizes


def _sizes_array(batch_sizes: Sequence[int], rows: int, batch: int) -> np.ndarray:
    """``batch_sizes`` as int64, checked: the kernels slice rows by them unchecked."""
    if len(batch_sizes) and batch_sizes[0] == batch_sizes[-1]:  # equal lengths: O(1)
        sizes = _equal_sizes(batch_sizes[0], len(batch_sizes))
        valid = batch_sizes[0] >= 0 and len(batch_sizes) * batch_sizes[0] == rows
    else:
        sizes = np.array(batch_sizes, dtype=np.int64)
        sizes.flags.writeable = False  # as _equal_sizes': one kernel signature, not two
        valid = sizes.ndim == 1 and sizes.size > 0 and sizes[-1] >= 0
        valid = valid and sizes.sum() == rows and not np.any(sizes[1:] > sizes[:-1])
    if not valid or sizes[0] != batch:
        raise ValueError(
            "rnnkit.compiled: expected batch_sizes non-negative, non-increasing, summing to "
            f"the {rows} rows and starting with the batch of {batch}, got {list(batch_sizes)}"
        )
    return sizes


# Attribute getters for map(): checking every array at C speed, with no bytecode per array.
_SHAPE, _DTYPE = operator.attrgetter("shape"), operator.attrgetter("dtype")
_C_CONTIGUOUS = operator.attrgetter("flags.c_contiguous")


def _refuse_misfits(dtype: np.dtype, column: int, hidden: int, checked) -> None:
    """Refuse arrays whose shapes, dtypes or layout the kernels would misread.

    The kernels trust their arrays (compiled code does not bounds-check, and
    BLAS reads each operand by the first one's dtype), so this is the gate in
    front of them, checked on the very arrays they get: C-contiguous, all in
    ``dtype``, each of its expected shape, the direction's columns
    ``column : column + hidden`` inside the first array's width. Arrays that
    fit pass one check of all of them at once (these wrappers run once per
    layer and direction, where every microsecond shows at small sizes); else
    the first misfit is named.

    Args:
        dtype: the dtype every array must have (the first array's).
        column, hidden: this direction's columns in the first array.
        checked: ``(name, array, expected shape)`` triples, the widest row
            array first.
    """
    names, arrays, shapes = zip(*checked, strict=True)
    width = arrays[0].shape[-1]
    if (
        dtype in _FLOATS
        and 0 <= column <= width - hidden
        and tuple(map(_SHAPE, arrays)) == shapes
        and all(map(_C_CONTIGUOUS, arrays))
        and all(map(dtype.__eq__, map(_DTYPE, arrays)))
    ):
        return
    if dtype not in _FLOATS:
        raise ValueError(f"rnnkit.compiled: expected float32 or float64, got {dtype}")
    if not 0 <= column <= width - hidden:
        raise ValueError(
            f"rnnkit.compiled: expected columns {column}:{column + hidden} within the "
            f"{width} columns of {names[0]}"
        )
    for name, array, shape in checked:
        if array.shape != shape or array.dtype != dtype or not array.flags.c_contiguous:
            raise ValueError(
                f"rnnkit.compiled: expected {name} of shape {shape} in {dtype}, C-contiguous; "
                f"got shape {array.shape} in {array.dtype} with strides {array.strides}"
            )


@functools.cache
def _absent(dtype: np.dtype, ndim: int) -> np.ndarray:
    """An empty array of ``ndim`` dimensions standing for an operand not given
    (the kernels test its first dimension); one per dtype and rank, never written."""
    return np.empty((0,) * ndim, dtype)


def _as_numpy(tensor: Tensor) -> np.ndarray:
    """A numpy view (a contiguous copy only if the tensor is not contiguous)."""
    if tensor.requires_grad:
        tensor = tensor.detach()
    return (tensor if tensor.is_contiguous() else tensor.contiguous()).numpy()


def _written_in_place(tensor: Tensor, name: str) -> np.ndarray:
    """The numpy view of a 2-D tensor the kernels write (checked C-contiguous later)."""
    if tensor.dim() != 2:
        raise ValueError(
            f"rnnkit.compiled: expected {name} to be 2-D, got shape {tuple(tensor.shape)}"
        )
    return (tensor.detach() if tensor.requires_grad else tensor).numpy()


def forward(
    out: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    bias: Tensor | None,
    batch_sizes: Sequence[int],
    reverse: bool,
    kind: str,
    column: int = 0,
    *,
    x: Tensor | None = None,
    w_ih: Tensor | None = None,
    h_n: Tensor | None = None,
    bias_hh: Tensor | None = None,
    project_steps: bool = False,
) -> None:
    """Run one direction's recurrence in its columns of ``out``.

    Args:
        out: contiguous CPU float32/float64 tensor: written with the hidden
            sequence; without ``x``, it holds each step's input projection
            (without bias) and is updated in place.
        h0: initial state of each sequence.
        w_hh: recurrent weight.
        bias: ``b_ih + b_hh``, or None.
        batch_sizes: rows per step.
        reverse: run from the last step to the first.
        kind: ``"tanh"``, ``"fast_tanh"`` (float32 only) or ``"relu"``.
        column: this direction's first column in ``out`` (the directions of a
            bidirectional layer share one buffer).
        x, w_ih: the layer input and this direction's input weight: the kernel
            projects ``x`` itself (both or neither).
        h_n: if given, written with each sequence's last state.
        bias_hh: if given, ``bias`` is ``b_ih`` and this is ``b_hh``: the kernel adds them.
        project_steps: ``out`` holds the input of a one-direction layer, which
            the kernel projects with ``w_ih`` (given without ``x``) step by step,
            each step's rows just before it overwrites them.

    Shape:
        out ``(R, W)`` with ``W >= column + H``, h0 ``(N, H)``, w_hh ``(H, H)``,
        bias and bias_hh ``(H,)``, x ``(R, H_in)``, w_ih ``(H, H_in)``, h_n ``(N, H)``.
    """
    out_np = _written_in_place(out, "out")  # never copied: checked C-contiguous below
    if kind == "fast_tanh" and out.dtype != torch.float32:
        raise ValueError(f"rnnkit.compiled: fast_tanh is float32 only, got {out.dtype}")
    if project_steps and (x is not None or w_ih is None):
        raise ValueError("rnnkit.compiled: project_steps expects w_ih without x")
    if not project_steps and (x is None) != (w_ih is None):
        raise ValueError("rnnkit.compiled: expected x and w_ih both given or both None")
    if bias_hh is not None and bias is None:
        raise ValueError("rnnkit.compiled: expected bias (b_ih) with bias_hh")
    rows, hidden = out_np.shape[0], w_hh.size(0)
    sizes = _sizes_array(batch_sizes, rows, h0.size(0) if h0.dim() else -1)
    batch, dtype = int(sizes[0]), out_np.dtype
    h0_np, w_hh_np = _as_numpy(h0), _as_numpy(w_hh)
    bias_np = np.zeros(hidden, dtype) if bias is None else _as_numpy(bias)
    checked = [("out", out_np, out_np.shape), ("h0", h0_np, (batch, hidden)),
               ("w_hh", w_hh_np, (hidden, hidden)), ("bias", bias_np, (hidden,))]  # fmt: skip
    bias_hh_np = _absent(dtype, 1)
    if bias_hh is not None:
        bias_hh_np = _as_numpy(bias_hh)
        checked.append(("bias_hh", bias_hh_np, (hidden,)))
    x_np = w_ih_np = h_n_np = _absent(dtype, 2)
    if x is not None:
        x_np, w_ih_np = _as_numpy(x), _as_numpy(w_ih)
        width = x_np.shape[1] if x_np.ndim == 2 else -1
        checked += [("x", x_np, (rows, width)), ("w_ih", w_ih_np, (hidden, width))]
    elif project_steps:  # the input is all of out's columns
        w_ih_np = _as_numpy(w_ih)
        checked.append(("w_ih", w_ih_np, (hidden, out_np.shape[1])))
    if h_n is not None:
        h_n_np = _written_in_place(h_n, "h_n")
        checked.append(("h_n", h_n_np, (batch, hidden)))
    _refuse_misfits(dtype, column, hidden, checked)
    _single_threaded_scipy_blas()
    _kernels().forward_loop(
        out_np, column, h0_np, w_hh_np, bias_np, bias_hh_np, sizes, reverse, _kind_code(kind),
        SMALL_GEMM, _blas().tall_rows(), x_np, w_ih_np, h_n_np, project_steps,
    )  # fmt: skip


@functools.cache
def _kind_code(kind: str) -> int:
    """The kernels' code for an activation: ``"tanh"``, ``"fast_tanh"`` or ``"relu"``."""
    kernels = _kernels()
    return {"tanh": kernels.TANH, "fast_tanh": kernels.FAST_TANH, "relu": kernels.RELU}[kind]


def backward(
    d: Tensor,
    grad_out: Tensor,
    grad_h_n: Tensor,
    out: Tensor,
    w_hh: Tensor,
    batch_sizes: Sequence[int],
    reverse: bool,
    relu: bool,
    column: int = 0,
) -> None:
    """Fills ``d`` with the gradient of every pre-activation (see ``kernels.backward_loop``).

    Args:
        d: written in place, this direction's columns only.
        grad_out, grad_h_n: upstream gradients of the hidden sequence and the last states.
        out: the forward's hidden sequence.
        w_hh, batch_sizes, reverse: as in :func:`forward`.
        relu: the activation was relu (else tanh).
        column: as in :func:`forward`, the same in ``d``, ``grad_out`` and ``out``.

    Shape:
        d, grad_out, out ``(R, W)`` with ``W >= column + H``, grad_h_n ``(N, H)``,
        w_hh ``(H, H)``.
    """
    d_np = _written_in_place(d, "d")
    rows, hidden = d_np.shape[0], w_hh.size(0)
    sizes = _sizes_array(batch_sizes, rows, grad_h_n.size(0) if grad_h_n.dim() else -1)
    batch = int(sizes[0])
    grad_out_np, out_np = _as_numpy(grad_out), _as_numpy(out)
    grad_h_n_np, w_hh_np = _as_numpy(grad_h_n), _as_numpy(w_hh)
    checked = (("d", d_np, d_np.shape), ("grad_out", grad_out_np, d_np.shape),
               ("out", out_np, d_np.shape), ("grad_h_n", grad_h_n_np, (batch, hidden)),
               ("w_hh", w_hh_np, (hidden, hidden)))  # fmt: skip
    _refuse_misfits(d_np.dtype, column, hidden, checked)
    _single_threaded_scipy_blas()
    _kernels().backward_loop(
        d_np, grad_out_np, grad_h_n_np, out_np, w_hh_np, column,
        sizes, reverse, relu, SMALL_GEMM, _blas().tall_rows(),
    )  # fmt: skip


def backward_equal_lengths(
    d: Tensor,
    grad_out: Tensor,
    grad_h_n: Tensor,
    x: Tensor,
    out: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    column: int,
    reverse: bool,
    relu: bool,
    grad_x: Tensor | None,
    grad_h0: Tensor | None,
    accumulate_x: bool,
    weight_grads: bool,
    bias_grads: bool,
) -> list[Tensor]:
    """All sequences of equal length: one direction's whole backward in one
    compiled call, in chunks of steps that share the buffer ``d`` (see
    ``kernels.backward_equal_lengths``).

    Args:
        d: scratch for dL/d(pre-activation) of one chunk; its rows (a whole
            number of steps) set the chunk's length.
        grad_out, grad_h_n: upstream gradients of the hidden sequence and of
            this direction's last states.
        x, out, h0, w_ih, w_hh: the layer's input, hidden sequence, this
            direction's initial states and weights.
        column, reverse, relu: this direction's columns, time order, activation.
        grad_x, grad_h0: written in place, or None to skip them.
        accumulate_x: add into ``grad_x`` instead of overwriting it.
        weight_grads: compute the gradients of ``w_ih`` and ``w_hh``.
        bias_grads: also those of ``b_ih`` and ``b_hh`` (equal: each gets a copy).

    Returns:
        ``[grad_w_ih, grad_w_hh]``, then ``grad_b_ih, grad_b_hh`` with
        ``bias_grads``, made here (contiguous, as the kernel needs); ``[]``
        without ``weight_grads``.

    Shape:
        d ``(S * N, H)`` with ``1 <= S <= L``, grad_out and out ``(R, W)``, x
        ``(R, H_in)``, h0 and grad_h_n ``(N, H)`` with ``R = L * N``;
        gradients as their operands.
    """
    rows, hidden = out.size(0), w_hh.size(0)
    batch = h0.size(0) if h0.dim() else -1
    chunk_rows = d.size(0) if d.dim() else -1
    if batch <= 0 or rows % batch or chunk_rows % batch or not 0 < chunk_rows <= rows:
        raise ValueError(
            f"rnnkit.compiled: expected {rows} rows and the {chunk_rows} rows of d to be "
            f"whole steps of the batch of {batch}, d at most all of them"
        )
    if bias_grads and not weight_grads:
        raise ValueError("rnnkit.compiled: expected bias gradients only with weight gradients")
    grad_out_np, out_np, d_np = _as_numpy(grad_out), _as_numpy(out), _written_in_place(d, "d")
    h0_np, grad_h_n_np = _as_numpy(h0), _as_numpy(grad_h_n)
    x_np, w_ih_np, w_hh_np = _as_numpy(x), _as_numpy(w_ih), _as_numpy(w_hh)
    width = x_np.shape[1] if x_np.ndim == 2 else -1
    row_shape = (rows, grad_out_np.shape[-1])
    checked = [("grad_out", grad_out_np, row_shape), ("out", out_np, row_shape),
               ("h0", h0_np, (batch, hidden)), ("grad_h_n", grad_h_n_np, (batch, hidden)),
               ("w_hh", w_hh_np, (hidden, hidden)), ("d", d_np, (chunk_rows, hidden)),
               ("x", x_np, (rows, width)), ("w_ih", w_ih_np, (hidden, width))]  # fmt: skip
    dtype = grad_out_np.dtype
    grad_x_np, grad_h0_np = _absent(dtype, 2), _absent(dtype, 2)
    if grad_x is not None:
        grad_x_np = _written_in_place(grad_x, "grad_x")
        checked.append(("grad_x", grad_x_np, (rows, width)))
    if grad_h0 is not None:
        grad_h0_np = _written_in_place(grad_h0, "grad_h0")
        checked.append(("grad_h0", grad_h0_np, (batch, hidden)))
    _refuse_misfits(dtype, column, hidden, checked)
    weights = [out.new_empty(hidden, width), out.new_empty(hidden, hidden)] if weight_grads else []
    biases = [out.new_empty(hidden), out.new_empty(hidden)] if bias_grads else []
    _single_threaded_scipy_blas()
    _kernels().backward_equal_lengths(
        d_np, grad_out_np, grad_h_n_np, x_np, out_np, h0_np, w_ih_np, w_hh_np, column, reverse,
        relu, SMALL_GEMM, _blas().tall_rows(), accumulate_x,
        grad_x_np, grad_h0_np,
        *([w.numpy() for w in weights] or [_absent(dtype, 2)] * 2),  # empty: not wanted
        *([b.numpy() for b in biases] or [_absent(dtype, 1)] * 2),
    )  # fmt: skip
    return weights + biases
