"""The compiled CPU engine: numba time loops around SciPy's BLAS.

Imported lazily by :mod:`rnnkit.engine` (numba costs about half a second to
import); :func:`available` says whether it can run here. Kernels compile on
first use and are cached on disk by numba (``cache=True``), so later processes
load them in milliseconds.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
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


@functools.cache
def _kernels():
    from rnnkit.compiled import kernels

    return kernels


@functools.cache
def _single_threaded_scipy_blas() -> None:
    """Put SciPy's BLAS, the one the kernels call, on one thread, once per process.

    Per-step products are small (``auto`` sends large ones to torch, whose
    GEMMs use ``torch.get_num_threads()``); a second BLAS thread pool would
    only spin against torch's threads on the same cores. This also applies to
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


def _sizes_array(batch_sizes: Sequence[int]) -> np.ndarray:
    if batch_sizes[0] == batch_sizes[-1]:  # equal lengths: no per-element conversion
        return np.full(len(batch_sizes), batch_sizes[0], dtype=np.int64)
    return np.asarray(batch_sizes, dtype=np.int64)


def _as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


def forward(
    out: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    bias: Tensor | None,
    batch_sizes: Sequence[int],
    reverse: bool,
    kind: str,
) -> None:
    """In place on ``out`` (the input projection): run the recurrence.

    Args:
        out: contiguous CPU float32/float64 tensor, each step's input projection
            without bias.
        h0: initial state of each sequence.
        w_hh: recurrent weight.
        bias: ``b_ih + b_hh``, or None.
        batch_sizes: rows per step.
        reverse: run from the last step to the first.
        kind: ``"tanh"``, ``"fast_tanh"`` (float32 only) or ``"relu"``.

    Shape:
        out ``(R, H)``, h0 ``(N, H)``, w_hh ``(H, H)``, bias ``(H,)``.
    """
    kernels = _kernels()
    _single_threaded_scipy_blas()
    code = {"tanh": kernels.TANH, "fast_tanh": kernels.FAST_TANH, "relu": kernels.RELU}[kind]
    out_np = out.numpy()
    kernels.forward_loop(
        out_np,
        _as_numpy(h0),
        _as_numpy(w_hh.t()),
        np.zeros(out_np.shape[1], out_np.dtype) if bias is None else _as_numpy(bias),
        _sizes_array(batch_sizes),
        reverse,
        code,
        SMALL_GEMM,
    )


def backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    out: Tensor,
    w_hh: Tensor,
    batch_sizes: Sequence[int],
    reverse: bool,
    relu: bool,
) -> Tensor:
    """The gradient of every pre-activation (see ``kernels.backward_loop``).

    Shape:
        grad_out, out ``(R, H)``, grad_h_n ``(N, H)``, w_hh ``(H, H)``;
        returns ``(R, H)``.
    """
    kernels = _kernels()
    _single_threaded_scipy_blas()
    d = torch.empty_like(out, memory_format=torch.contiguous_format)
    d_np = d.numpy()
    kernels.backward_loop(
        d_np,
        _as_numpy(grad_out),
        _as_numpy(grad_h_n),
        _as_numpy(out),
        _as_numpy(w_hh),
        _sizes_array(batch_sizes),
        reverse,
        relu,
        out.dtype == torch.float32,
        SMALL_GEMM,
    )
    return d
