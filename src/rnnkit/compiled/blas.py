"""BLAS GEMM callable from numba-compiled code, through SciPy's BLAS.

SciPy exports its BLAS as Cython functions; their addresses are registered
with LLVM under fixed symbol names, so compiled kernels refer to them by name
and numba can cache those kernels on disk (a raw ctypes pointer would make
them uncachable).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

for _name in ("sgemm", "dgemm"):
    llvm.add_symbol(
        f"rnnkit_{_name}", get_cython_function_address("scipy.linalg.cython_blas", _name)
    )

# Fortran BLAS takes every argument by pointer; pointers travel as intp.
_GEMM = types.void(*([types.intp] * 13))
_sgemm = types.ExternalFunction("rnnkit_sgemm", _GEMM)
_dgemm = types.ExternalFunction("rnnkit_dgemm", _GEMM)

_NO_TRANSPOSE, _TRANSPOSE = 78, 84  # ord("N"), ord("T")


@njit(cache=True, nogil=True)
def gemm_accumulate(a, b, c, int_args, scalar_args, transpose_a=False, beta=1.0):
    """``c = a @ b + beta * c`` (``a.T @ b`` if transpose_a) with BLAS, for
    row-major 2-D arrays with unit column stride.

    Args:
        a, b, c: float32 or float64 arrays (the same dtype); rows may be strided.
        int_args: int32 scratch of length >= 8 for BLAS's by-pointer integers.
        scalar_args: scratch of c's dtype, length >= 2, for alpha and beta.
        transpose_a: multiply by ``a.T``, read in place.
        beta: 1 accumulates into c; 0 overwrites it (c is not read).

    Shape:
        a ``(m, k)`` (``(k, m)`` if transpose_a), b ``(k, n)``, c ``(m, n)``.
    """
    k, m = a.shape if transpose_a else (a.shape[1], a.shape[0])
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # an empty sum
        if beta == 0.0:
            c[:] = 0.0
        return
    # Row-major c = a @ b is column-major c^T = b^T @ a^T: swap the operands.
    # a's memory read column-major is a^T, so a.T is BLAS's transpose of it.
    int_args[0] = _NO_TRANSPOSE
    int_args[7] = _TRANSPOSE if transpose_a else _NO_TRANSPOSE
    int_args[1] = n
    int_args[2] = m
    int_args[3] = k
    int_args[4] = b.strides[0] // b.itemsize
    int_args[5] = a.strides[0] // a.itemsize
    int_args[6] = c.strides[0] // c.itemsize
    scalar_args[0] = 1.0
    scalar_args[1] = beta
    p = int_args.ctypes.data
    s = scalar_args.ctypes.data
    i4 = int_args.itemsize
    sx = scalar_args.itemsize
    args = (p, p + 7 * i4, p + i4, p + 2 * i4, p + 3 * i4, s, b.ctypes.data, p + 4 * i4)
    if c.itemsize == 4:
        _sgemm(*args, a.ctypes.data, p + 5 * i4, s + sx, c.ctypes.data, p + 6 * i4)
    else:
        _dgemm(*args, a.ctypes.data, p + 5 * i4, s + sx, c.ctypes.data, p + 6 * i4)


@njit(cache=True, nogil=True)
def scratch(dtype):
    """Fresh by-pointer argument buffers for :func:`gemm_accumulate`."""
    return np.zeros(8, np.int32), np.zeros(2, dtype)
