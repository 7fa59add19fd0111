"""The compiled CPU engine: numba time loops around SciPy's BLAS.

Imported lazily by :mod:`rnnkit.engine` (numba costs about half a second to
import); :func:`available` says whether it can run here. Kernels compile on
first use and are cached on disk by numba (``cache=True``), so later processes
load them in milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# Products with m*k*n up to this run as plain compiled loops; larger ones call
# BLAS (measured with benchmarks/bench_small_gemm.py: the loop wins below it).
SMALL_GEMM = 8 * 64 * 64


@functools.cache
def available() -> bool:
    """True when numba and SciPy (whose BLAS the kernels call) are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("numba", "scipy"))


@functools.cache
def _kernels():
    from rnnkit.compiled import blas, kernels

    return blas, kernels


@functools.cache
def _scipy_blas_controllers():
    """threadpoolctl handles on SciPy's BLAS, the one the kernels call."""
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so threadpoolctl sees it)
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    return [lib for lib in controller.lib_controllers if "scipy" in lib.filepath.lower()]


@contextlib.contextmanager
def _single_threaded_blas():
    """Run SciPy's BLAS on one thread inside the kernels, then restore it.

    Per-step products are small; a second BLAS thread pool would only spin
    against torch's own threads on the same cores.
    """
    libraries = _scipy_blas_controllers()
    previous = [lib.num_threads for lib in libraries]
    for lib in libraries:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, threads in zip(libraries, previous, strict=True):
            lib.set_num_threads(threads)


def _as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


def forward(
    out: Tensor, h0: Tensor, w_hh: Tensor, batch_sizes: Sequence[int], reverse: bool, kind: str
) -> None:
    """In place on ``out`` (the input projection): run the recurrence.

    Args:
        out: contiguous CPU float32/float64 tensor, each step's input projection.
        h0: initial state of each sequence.
        w_hh: recurrent weight.
        batch_sizes: rows per step.
        reverse: run from the last step to the first.
        kind: ``"tanh"``, ``"fast_tanh"`` (float32 only) or ``"relu"``.

    Shape:
        out ``(R, H)``, h0 ``(N, H)``, w_hh ``(H, H)``.
    """
    blas, kernels = _kernels()
    code = {"tanh": kernels.TANH, "fast_tanh": kernels.FAST_TANH, "relu": kernels.RELU}[kind]
    out_np = out.numpy()
    with _single_threaded_blas():
        kernels.forward_loop(
            out_np,
            _as_numpy(h0),
            _as_numpy(w_hh.t()),
            np.asarray(batch_sizes, dtype=np.int64),
            reverse,
            code,
            SMALL_GEMM,
            *blas.scratch(out_np.dtype),
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
    blas, kernels = _kernels()
    d = torch.empty_like(out, memory_format=torch.contiguous_format)
    d_np = d.numpy()
    with _single_threaded_blas():
        kernels.backward_loop(
            d_np,
            _as_numpy(grad_out),
            _as_numpy(grad_h_n),
            _as_numpy(out),
            _as_numpy(w_hh),
            np.asarray(batch_sizes, dtype=np.int64),
            reverse,
            relu,
            out.dtype == torch.float32,
            SMALL_GEMM,
            *blas.scratch(d_np.dtype),
        )
    return d
