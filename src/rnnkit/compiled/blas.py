"""BLAS GEMM callable from numba-compiled code: SciPy's BLAS, and torch's own.

Two BLAS libraries serve the compiled loops, picked per product by its size
(and shape: see :func:`goes_to_large_library`), and a third kernel serves the per-step
products when torch runs on one thread, and those of a few rows on more (see
:func:`goes_to_brgemm`):

- SciPy's (OpenBLAS in its wheels), on one thread: the fastest here on small
  products (1 x 64 x 64: 0.14 against 0.29 us; 8 x 256 x 256: 9.0 against 17 us).
- The BLAS inside torch's own library (MKL in torch's x86 wheels), which runs
  on torch's thread pool at ``torch.get_num_threads()``: faster from about
  ``m * k * n = 2**20`` up (30 x 256 x 256: 43.6 against 57.0 us at 1 thread,
  29.0 against 56.8 us at 2), the sizes where ``torch.mm`` used to beat the
  compiled loops. It is a private symbol (``sgemm_``/``dgemm_`` exported by
  ``libtorch_cpu``), so it is used only after a probe product checks it; where
  it is missing or wrong, or ``RNNKIT_BLAS=scipy`` is set, SciPy's takes every
  product.
- oneDNN's batch-reduce GEMM as torch exposes it (``at::native::cpublas::brgemm``,
  a JIT-generated kernel per shape, cached by torch per thread), for float32
  products that are not transposed, from ``BRGEMM_MIN`` multiply-adds up, with
  fewer than ``tall_rows`` rows (at most ``FEW_ROWS`` at two threads or more): a
  recurrence's per-step products. It runs near this CPU's peak on them: from 2**20
  multiply-adds, 1.2-1.3x faster than torch's MKL and 1.3-1.7x than SciPy's (30 x 256
  x 768: 103 us against 133 and 170; ``benchmarks/compare_blas.py``), even with
  SciPy's below. It is a private C++ symbol of ``libtorch_cpu`` (present in torch
  2.13, not in every release), probed like torch's BLAS; where it is missing or wrong,
  a compiled stand-in with its signature calls the large-product BLAS.

Those choices were measured on a CPU with AVX-512 (AMD Zen 4). On one without it
(measured on AMD Zen 3, AVX2) the libraries rank differently (``AVX512``, from
:func:`rnnkit.cpu.has_avx512`, and the ``AVX2_*`` constants): SciPy's OpenBLAS has no
fast path for small products there (1 x 64 x 256: 11 us against 1.4 for torch's MKL and
1.2 for brgemm) and brgemm loses to MKL once a product has more than a few rows and a
weight beyond the caches (32 x 256 x 1024: 577 against 306 us).

The functions' addresses are registered with LLVM under fixed symbol names, so
compiled kernels refer to them by name and numba can cache those kernels on
disk (a raw pointer would make them uncachable). Integer arguments travel in
8-byte slots: read as 4-byte integers (LP64 BLAS) or 8-byte ones (ILP64) on a
little-endian machine, they hold the same value.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import torch
from numba import cfunc, njit, types
from numba.extending import get_cython_function_address, overload

from rnnkit.compiled.cache import configure_numba
from rnnkit.cpu import has_avx512

logger = logging.getLogger(__name__)

# Products with m * k * n at least this go to torch's BLAS (when usable), smaller
# ones to SciPy's. Measured per product, float32, in a compiled loop, 1 thread:
# SciPy wins at 32 x 128 x 128 (10.2 against 13.6 us), torch's MKL at
# 64 x 128 x 128 (21.1 against 24.5 us) and 30 x 256 x 256 (above).
# benchmarks/compare_blas.py measures it. numba compiles this module into the
# kernels that call it, and its disk cache checks only the kernels' own source
# file: after editing this file, delete the __pycache__/*.nb* files.
LARGE_GEMM = 1 << 20
# Exceptions, where SciPy's OpenBLAS beats torch's MKL on large products too
# (benchmarks/compare_blas.py --products with a T prefix for a.T @ b):
# - Products with an output this narrow, at any thread count: 3000 x 256 x 4
#   (an input gradient, 4 input features) 0.18 against 0.87 ms at 1 thread and
#   0.47-0.51 at 2; T256 x 3000 x 4 (its weight gradient) 0.35 against 0.97.
NARROW_COLUMNS = 8
# - When torch runs on one thread, products of at least this many rows that
#   are not transposed (input projections and input gradients over all steps):
#   2048 x 256 x 256 3.1 against 3.8-4.1 ms, 6400 x 128 x 512 10.0 against
#   16-18 ms, 3000 x 256 x 512 8.3-9.4 against 11.4-14.6 ms; the two are even
#   at 128 rows and MKL wins below (32 x 256 x 256 0.051 against 0.062 ms) and
#   on transposed ones (the weight gradients, T256 x 3000 x 256 4.3 against
#   5.7-6.0 ms). At two threads MKL uses both and wins those too.
TALL_ROWS_ONE_THREAD = 256
# The tall_rows of a part of a time loop split by sequences (rnnkit.compiled.team): one
# thread's, as TALL_ROWS_ONE_THREAD (one row more), but its products run beside the other
# parts'. Without AVX-512 those of at most AVX2_PART_ROWS rows by a weight of fewer than
# AVX2_PART_WEIGHT elements go to brgemm: it reads the weight where MKL packs it afresh on
# every call, and with both cores doing so the GRU's split loops ran 1.05-1.12x faster on
# brgemm at 50 x 64 x 32 x 128 and 100 x 30 x 4 x 256, two threads; the LSTM's at 100 x 30
# x 4 x 256 (a 256 x 1024 weight) ran 0.88-0.97x, and it stays on MKL
# (benchmarks/compare_revisions.py --threads 2).
TALL_ROWS_PART = TALL_ROWS_ONE_THREAD + 1
AVX2_PART_ROWS = 32
AVX2_PART_WEIGHT = 1 << 18
NO_TALL_LIMIT = 1 << 62
_TALL_ROWS_SLOT = 8  # where scratch() keeps the tall-rows limit

# Float32 products of at least this many multiply-adds go to torch's brgemm (where it is
# usable, torch runs on one thread, the product is not transposed and has fewer than
# tall_rows rows). In a compiled loop, 1 thread (benchmarks/compare_blas.py --threads 1):
# even with SciPy's below (30 x 64 x 64: 2.18 us both; 30 x 64 x 256: 8.6 against 8.9),
# faster than both from 2**20 (30 x 128 x 384: 25.5 against 34.2 us for torch's MKL and
# 42.8 for SciPy's; 30 x 256 x 768: 103 against 133 and 170; 64 x 128 x 512: 72 against 85).
BRGEMM_MIN = 1 << 18
# At two threads or more, float32 products of at most this many rows go to brgemm too (on
# the calling thread), while their weight ``k * n`` is at most FEW_ROWS_MAX_WEIGHT: torch's
# MKL shares so few rows badly between its threads. In a compiled loop, 2 threads
# (benchmarks/compare_blas.py --threads 2): 4 x 512 x 1536 56-62 against 158-207 us,
# 8 x 256 x 768 28 against 44, 12 x 512 x 2048 230 against 318, 12 x 1024 x 3072 936
# against 1154; at 16 rows even (0.95-1.6x) and MKL ahead from 24 (0.77-0.97x at 24-32
# rows); with a 1024 x 4096 weight (16 MiB) MKL won at 2, 8 and 12 rows (0.77-0.80x).
FEW_ROWS = 12
FEW_ROWS_MAX_WEIGHT = 3 << 20
# A product of one row by a weight read in place (b transposed: a matrix-vector product)
# with more than this many output columns goes to the large-product library whatever its
# size: SciPy's OpenBLAS slows down 3-4x there. In a compiled loop, 1 thread, k x n:
# 416 x 1248 181 against 44 us for torch's MKL, 512 x 1536 282 against 61, 128 x 1536 71
# against 18, 256 x 1280 118 against 41; up to 1200 columns SciPy's is the faster (400 x
# 1200 27 against 41, 512 x 1152 28 against 49, 768 x 768 28 against 41).
ONE_ROW_WIDE = 1200
# Without AVX-512 (AVX2 only: measured on AMD Zen 3, benchmarks/compare_blas.py
# --threads 1 2), torch's brgemm takes float32 products that are not transposed (nor
# narrow) of
# - at most AVX2_ANY_WEIGHT_ROWS rows, whatever their weight: 4 x 650 x 1950 247 against
#   281 us for MKL, 4 x 256 x 1024 73 against 108; one row 0.6-1.04x MKL's time;
# - at most AVX2_SMALL_PRODUCT multiply-adds: 32 x 32 x 128 3.0 against 3.2 us, 16 x 32
#   x 128 1.6 against 1.9 (SciPy's 4.2); 64 x 32 x 128 (2**18) 7.1 against 6.0;
# - at one thread, at most AVX2_FEW_ROWS rows of a weight ``k * n`` of at most
#   AVX2_SMALL_WEIGHT elements (16 x 128 x 512 25 against 30 us, 8 x 256 x 1024 119
#   against 102, 24 x 128 x 512 50 against 47), and twice as many of at most
#   AVX2_TINY_WEIGHT (24 x 256 x 64 9.0 against 11.7, 32 x 64 x 256 13.3 against 12.8; a
#   GRU at 100 x 30 x 4 x 64 ran its inference 1.13x faster so than on MKL,
#   benchmarks/compare_revisions.py);
# - at two threads or more, where MKL uses them all, at most AVX2_FEW_ROWS rows of at
#   most AVX2_TINY_WEIGHT (8 x 64 x 256 4.5 against 6.7, 8 x 128 x 512 22 against 21,
#   16 x 256 x 768 116 against 78, 32 x 64 x 256 17 against 12.5).
# Every other product that is not narrow (nor, at one thread, tall) goes to torch's MKL,
# whatever its size: SciPy's was 1.5-8x slower on every product above.
AVX2_ANY_WEIGHT_ROWS = 4
AVX2_SMALL_PRODUCT = 1 << 17
AVX2_FEW_ROWS = 16
AVX2_SMALL_WEIGHT = 1 << 16
AVX2_TINY_WEIGHT = 1 << 14
# The mangled name of at::native::cpublas::brgemm(M, N, K, ld_a, ld_b, ld_c, add_C,
# const float* A, const float* B, float* C, bool is_vnni), exported by libtorch_cpu.
_BRGEMM_SYMBOL = "_ZN2at6native7cpublas6brgemmEllllllbPKfS3_Pfb"

_CACHE = configure_numba()  # where the kernels' disk cache is, or False: none (see cache.py)
# Which measured rules pick the products' libraries (see the module doc).
AVX512 = has_avx512()
_NO_TRANSPOSE, _TRANSPOSE = 78, 84  # ord("N"), ord("T")
_ENVIRONMENT = "RNNKIT_BLAS"


def _scipy_address(name: str) -> int:
    return get_cython_function_address("scipy.linalg.cython_blas", name)


def _torch_library() -> Path | None:
    """torch's CPU library, which bundles its BLAS, or None if not found."""
    lib_dir = Path(torch.__file__).parent / "lib"
    names = {"darwin": "libtorch_cpu.dylib", "win32": "torch_cpu.dll"}
    path = lib_dir / names.get(sys.platform, "libtorch_cpu.so")
    return path if path.exists() else None


def _gemm_is_correct(address: int, dtype: type) -> bool:
    """Whether the Fortran GEMM at ``address`` computes a small product exactly."""
    gemm = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(address)
    a = np.arange(1, 7, dtype=dtype).reshape(2, 3)
    b = np.arange(1, 13, dtype=dtype).reshape(3, 4)
    c = np.full((2, 4), np.nan, dtype=dtype)  # beta = 0 must not read it
    # Column-major c^T = b^T @ a^T: transa, transb, m, n, k, ldb, lda, ldc.
    ints = np.array([_NO_TRANSPOSE, _NO_TRANSPOSE, 4, 2, 3, 4, 3, 4], np.int64)
    scalars = np.array([1.0, 0.0], dtype=dtype)

    def p(array: np.ndarray, index: int = 0) -> ctypes.c_void_p:
        return ctypes.c_void_p(array.ctypes.data + index * array.itemsize)

    gemm(p(ints, 0), p(ints, 1), p(ints, 2), p(ints, 3), p(ints, 4), p(scalars, 0),
         p(b), p(ints, 5), p(a), p(ints, 6), p(scalars, 1), p(c), p(ints, 7))  # fmt: skip
    return bool(np.array_equal(c, a @ b))


def _torch_addresses(symbols: tuple[str, ...], what: str) -> tuple[Path, list[int]] | None:
    """``(library path, addresses)`` of these symbols in torch's CPU library, or None
    where ``RNNKIT_BLAS=scipy``, the library is not found, or it does not export them
    all (logged, naming ``what`` is missing)."""
    requested = os.environ.get(_ENVIRONMENT, "auto")
    if requested not in ("auto", "scipy"):
        raise ValueError(f"{_ENVIRONMENT}: expected 'auto' or 'scipy', got {requested!r}")
    path = _torch_library()
    if requested == "scipy" or path is None:
        return None
    try:
        library = ctypes.CDLL(str(path))
        functions = [getattr(library, symbol) for symbol in symbols]
    except (OSError, AttributeError):
        logger.info("rnnkit.compiled: %s exports no %s", path, what)
        return None
    return path, [ctypes.cast(function, ctypes.c_void_p).value for function in functions]


def torch_blas_addresses() -> dict[str, int] | None:
    """``{"sgemm": address, "dgemm": address}`` of torch's bundled BLAS, or None
    where it is not exported, fails the probe, or ``RNNKIT_BLAS=scipy``."""
    found = _torch_addresses(("sgemm_", "dgemm_"), "BLAS; using SciPy's for every product")
    if found is None:
        return None
    path, (sgemm, dgemm) = found
    if not (_gemm_is_correct(sgemm, np.float32) and _gemm_is_correct(dgemm, np.float64)):
        logger.warning("rnnkit.compiled: the BLAS in %s failed its probe; using SciPy's", path)
        return None
    return {"sgemm": sgemm, "dgemm": dgemm}


def _brgemm_is_correct(address: int) -> bool:
    """Whether the brgemm at ``address`` computes and accumulates a small product
    exactly, with leading dimensions wider than the rows."""
    brgemm = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * 6, ctypes.c_bool, *[ctypes.c_void_p] * 3,
                              ctypes.c_bool)(address)  # fmt: skip
    a = np.arange(1, 11, dtype=np.float32).reshape(2, 5)  # rows of 5, 3 used
    b = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    c = np.full((2, 6), np.nan, dtype=np.float32)  # rows of 6, 4 used; add_C False must not read
    expected = a[:, :3] @ b
    brgemm(2, 4, 3, 5, 4, 6, False, a.ctypes.data, b.ctypes.data, c.ctypes.data, False)
    first = np.array_equal(c[:, :4], expected) and np.isnan(c[:, 4:]).all()
    brgemm(2, 4, 3, 5, 4, 6, True, a.ctypes.data, b.ctypes.data, c.ctypes.data, False)
    return bool(first and np.array_equal(c[:, :4], 2 * expected))


def torch_brgemm_address() -> int | None:
    """The address of torch's float32 brgemm (see the module doc), or None where it is
    not exported (not every torch release has it), fails its probe, or
    ``RNNKIT_BLAS=scipy``."""
    found = _torch_addresses((_BRGEMM_SYMBOL,), "brgemm; per-step products use BLAS")
    if found is None:
        return None
    path, (address,) = found
    if not _brgemm_is_correct(address):
        logger.warning("rnnkit.compiled: the brgemm in %s failed its probe; using BLAS", path)
        return None
    return address


_TORCH_BLAS = torch_blas_addresses()
# Which library large products go to: "torch" or "scipy".
LARGE_GEMM_LIBRARY = "scipy" if _TORCH_BLAS is None else "torch"
for _name in ("sgemm", "dgemm"):
    _small = _scipy_address(_name)
    llvm.add_symbol(f"rnnkit_{_name}", _small)
    llvm.add_symbol(f"rnnkit_{_name}_large", _small if _TORCH_BLAS is None else _TORCH_BLAS[_name])

# Fortran BLAS takes every argument by pointer; pointers travel as intp.
_GEMM = types.void(*([types.intp] * 13))
_sgemm = types.ExternalFunction("rnnkit_sgemm", _GEMM)
_dgemm = types.ExternalFunction("rnnkit_dgemm", _GEMM)
_sgemm_large = types.ExternalFunction("rnnkit_sgemm_large", _GEMM)
_dgemm_large = types.ExternalFunction("rnnkit_dgemm_large", _GEMM)

# brgemm: M, N, K, ld_a, ld_b, ld_c, add_C, A, B, C, is_vnni (bools as bytes).
_BRGEMM = types.void(*([types.int64] * 6), types.uint8, types.intp, types.intp, types.intp,
                     types.uint8)  # fmt: skip
_brgemm = types.ExternalFunction("rnnkit_brgemm", _BRGEMM)


def _brgemm_stand_in(m, n, k, ld_a, ld_b, ld_c, add_c, a, b, c, is_vnni):
    """brgemm's signature and result, by the large-product BLAS: where torch has none."""
    ints = np.empty(8, np.int64)  # transa, transb, m, n, k, lda, ldb, ldc of BLAS's call
    ints[0], ints[1] = _NO_TRANSPOSE, _NO_TRANSPOSE
    ints[2], ints[3], ints[4] = n, m, k  # row-major c = a @ b is column-major c^T = b^T @ a^T
    ints[5], ints[6], ints[7] = ld_b, ld_a, ld_c
    scalars = np.empty(2, np.float32)
    scalars[0], scalars[1] = 1.0, 1.0 if add_c else 0.0
    p, s = ints.ctypes.data, scalars.ctypes.data
    _sgemm_large(p, p + 8, p + 16, p + 24, p + 32, s, b, p + 40, a, p + 48, s + 4, c, p + 56)


def brgemm_stand_in_address() -> int:
    """The address of :func:`_brgemm_stand_in`, compiled (once per cache) on first call."""
    return cfunc(_BRGEMM, cache=_CACHE, nopython=True)(_brgemm_stand_in).address


_TORCH_BRGEMM = torch_brgemm_address()
llvm.add_symbol("rnnkit_brgemm", _TORCH_BRGEMM or brgemm_stand_in_address())


@njit(inline="always")
def _leading_dimension(array):
    """BLAS's leading dimension of a row-major 2-D array: its row stride, at least
    its row length. A one-row array may have any row stride (torch and numpy call
    a ``(1, n)`` tensor with row stride 1 contiguous), which BLAS would refuse as
    shorter than the row; its one row is read either way."""
    return max(array.strides[0] // array.itemsize, array.shape[1], 1)


@njit(inline="always")
def gemm_arguments(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b=False):
    """The 13 by-pointer arguments of a Fortran GEMM computing ``c = op(a) @ op(b) +
    beta * c`` (op transposes where asked) for row-major arrays, written into the
    scratch buffers; see :func:`gemm_accumulate` for the operands.

    Returns:
        The arguments in BLAS's order, each an address (intp).
    """
    k, m = a.shape if transpose_a else (a.shape[1], a.shape[0])
    # Row-major c = a @ b is column-major c^T = b^T @ a^T: swap the operands.
    # An operand's memory read column-major is its transpose, so a transposed
    # operand is BLAS's transpose of that memory.
    int_args[0] = _TRANSPOSE if transpose_b else _NO_TRANSPOSE
    int_args[7] = _TRANSPOSE if transpose_a else _NO_TRANSPOSE
    int_args[1] = b.shape[0] if transpose_b else b.shape[1]
    int_args[2] = m
    int_args[3] = k
    int_args[4] = _leading_dimension(b)
    int_args[5] = _leading_dimension(a)
    int_args[6] = _leading_dimension(c)
    scalar_args[0] = 1.0
    scalar_args[1] = beta
    p = int_args.ctypes.data
    s = scalar_args.ctypes.data
    i8 = int_args.itemsize
    sx = scalar_args.itemsize
    return (p, p + 7 * i8, p + i8, p + 2 * i8, p + 3 * i8, s, b.ctypes.data, p + 4 * i8,
            a.ctypes.data, p + 5 * i8, s + sx, c.ctypes.data, p + 6 * i8)  # fmt: skip


@njit(cache=_CACHE, nogil=True)
def goes_to_brgemm(m, k, n, itemsize, tall_rows, avx512):
    """Whether :func:`gemm_accumulate` gives an ``(m, k) @ (k, n)`` product that is not
    transposed (and accumulates or overwrites) to torch's brgemm: float32 (``itemsize``
    4) and not narrow; then with AVX-512 (``avx512``: pass ``AVX512``) at least
    ``BRGEMM_MIN`` multiply-adds, and with torch on one thread (``tall_rows`` set) fewer
    than ``tall_rows`` rows, on more (``tall_rows`` unlimited) at most ``FEW_ROWS`` rows
    of a weight of at most ``FEW_ROWS_MAX_WEIGHT``; without it, the ``AVX2_*`` rules."""
    if itemsize != 4 or n <= NARROW_COLUMNS:
        return False
    if not avx512:
        if m <= AVX2_ANY_WEIGHT_ROWS or m * k * n <= AVX2_SMALL_PRODUCT:
            return True
        if tall_rows == TALL_ROWS_PART:
            return m <= AVX2_PART_ROWS and k * n < AVX2_PART_WEIGHT
        if tall_rows == NO_TALL_LIMIT:  # torch runs on two threads or more
            return m <= AVX2_FEW_ROWS and k * n <= AVX2_TINY_WEIGHT
        if k * n <= AVX2_TINY_WEIGHT:
            return m <= 2 * AVX2_FEW_ROWS
        return m <= AVX2_FEW_ROWS and k * n <= AVX2_SMALL_WEIGHT
    if m * k * n < BRGEMM_MIN:
        return False
    if tall_rows == NO_TALL_LIMIT:  # torch runs on two threads or more
        return m <= FEW_ROWS and k * n <= FEW_ROWS_MAX_WEIGHT
    return m < tall_rows


@njit(cache=_CACHE, nogil=True)
def goes_to_large_library(m, k, n, transpose_a, tall_rows, avx512):
    """Whether :func:`gemm_accumulate` gives an ``(m, k) @ (k, n)`` product to
    the large-product library (torch's BLAS where usable): not narrow, transposed or
    fewer than ``tall_rows`` rows, and with AVX-512 (``avx512``: pass ``AVX512``) large;
    without it, of any size (see ``AVX2_SMALL_PRODUCT``)."""
    if n <= NARROW_COLUMNS or (avx512 and m * k * n < LARGE_GEMM):
        return False
    return transpose_a or m < tall_rows


@njit(cache=_CACHE, nogil=True)
def wide_matrix_vector(m, n, transpose_b):
    """Whether an ``(m, k) @ op(b)`` product is one row by a weight read in place with more
    than ``ONE_ROW_WIDE`` output columns, which goes to the large-product library."""
    return transpose_b and m == 1 and n > ONE_ROW_WIDE


def gemm_accumulate(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b):
    """``c = op(a) @ op(b) + beta * c`` with BLAS (op: ``.T`` where asked, read in
    place), for row-major 2-D arrays with unit column stride; per-step products to
    torch's brgemm (:func:`goes_to_brgemm`), products of ``LARGE_GEMM`` multiply-adds or
    more (of any size without AVX-512) to torch's BLAS, except narrow and (at one thread)
    tall ones, and so do wide matrix-vector products read in place (``ONE_ROW_WIDE``; see
    the module constants).

    Args:
        a, b, c: float32 or float64 arrays (the same dtype); rows may be strided.
        int_args: int64 scratch from :func:`scratch`: BLAS's by-pointer integers,
            and in its last slot the row count from which products that are
            not transposed stay in SciPy's BLAS.
        scalar_args: scratch of c's dtype, length >= 2, for alpha and beta.
        transpose_a, transpose_b: multiply by ``a.T`` / ``b.T``.
        beta: 1 accumulates into c; 0 overwrites it (c is not read).

    Shape:
        a ``(m, k)`` (``(k, m)`` if transpose_a), b ``(k, n)`` (``(n, k)`` if
        transpose_b), c ``(m, n)``.
    """
    raise NotImplementedError("compiled code only: see _gemm_of")


@overload(gemm_accumulate)
def _gemm_accumulate_of(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b):
    compiled = _gemm_of(a.dtype)

    def call(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b):
        compiled(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b)

    return call


@functools.cache
def _gemm_of(dtype: types.Type):
    """:func:`gemm_accumulate` compiled for ``dtype``, on first use of that dtype (a
    float32 program never compiles the float64 one). One declared signature: any
    layout of the matrices and flags that are variables, so the kernels' many
    call sites share one compilation (undeclared, numba made nine per dtype)."""
    matrix = types.Array(dtype, 2, "A")
    signature = types.void(matrix, matrix, matrix, types.int64[::1], dtype[::1], types.boolean,
                           types.float64, types.boolean)  # fmt: skip
    return njit([signature], cache=_CACHE, nogil=True)(_gemm_accumulate)


def _gemm_accumulate(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b):
    k, m = a.shape if transpose_a else (a.shape[1], a.shape[0])
    n = b.shape[0] if transpose_b else b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # an empty sum
        if beta == 0.0:
            c[:] = 0.0
        return
    tall_rows = int_args[_TALL_ROWS_SLOT]
    if (not (transpose_a or transpose_b) and (beta == 0.0 or beta == 1.0)
            and goes_to_brgemm(m, k, n, c.itemsize, tall_rows, AVX512)):  # fmt: skip
        add_c, is_vnni = np.uint8(beta == 1.0), np.uint8(0)
        _brgemm(m, n, k, _leading_dimension(a), _leading_dimension(b), _leading_dimension(c),
                add_c, a.ctypes.data, b.ctypes.data, c.ctypes.data, is_vnni)  # fmt: skip
        return
    args = gemm_arguments(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b)
    large = goes_to_large_library(m, k, n, transpose_a, tall_rows, AVX512)
    large = large or wide_matrix_vector(m, n, transpose_b)
    if c.itemsize == 4:
        if large:
            _sgemm_large(*args)
        else:
            _sgemm(*args)
    elif large:
        _dgemm_large(*args)
    else:
        _dgemm(*args)


@njit(cache=_CACHE, nogil=True)
def scratch(dtype, tall_rows=NO_TALL_LIMIT):
    """Fresh argument buffers for :func:`gemm_accumulate`.

    Args:
        dtype: the products' dtype.
        tall_rows: products of at least this many rows, not transposed, stay in
            SciPy's BLAS: ``TALL_ROWS_ONE_THREAD`` when torch runs on one thread
            (see :func:`tall_rows`).
    """
    int_args = np.zeros(_TALL_ROWS_SLOT + 1, np.int64)
    int_args[_TALL_ROWS_SLOT] = tall_rows
    return int_args, np.zeros(2, dtype)


@njit(cache=_CACHE, nogil=True)
def repeated_products(h, w, out, steps, tall_rows):
    """``out += h @ w``, ``steps`` times, each product to the library the kernels pick:
    what :mod:`rnnkit.bound` times as a layer's dependent per-step products.

    Shape:
        h ``(N, K)``, w ``(K, M)``, out ``(N, M)``.
    """
    int_args, scalar_args = scratch(out.dtype, tall_rows)
    for _ in range(steps):
        gemm_accumulate(h, w, out, int_args, scalar_args, False, 1.0, False)


def tall_rows() -> int:
    """The ``tall_rows`` of :func:`scratch` for torch's current thread count."""
    return TALL_ROWS_ONE_THREAD if torch.get_num_threads() == 1 else NO_TALL_LIMIT
