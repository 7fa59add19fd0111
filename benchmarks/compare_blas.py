"""Times one per-step product in each BLAS the compiled loops can call.

The measurement behind ``rnnkit.compiled.blas.LARGE_GEMM`` and its exceptions
(``NARROW_COLUMNS``, ``TALL_ROWS_ONE_THREAD``): for each ``m x k x n`` product
(``T`` in front: ``a.T @ b`` with ``a`` stored ``k x m``, as in the weight
gradients), the best-of-5 time per product of a compiled loop calling SciPy's
BLAS (on one thread, as the kernels run it), torch's bundled BLAS (at torch's
thread count), torch's brgemm (one thread; products that are not transposed;
``BRGEMM_MIN``) and ``torch.addmm`` in a Python loop; and which of them
``gemm_accumulate`` gives it at that thread count.

Example:
    python benchmarks/compare_blas.py --threads 1 2
    python benchmarks/compare_blas.py --products 30x256x256 3000x256x4 T256x3000x256
    python benchmarks/compare_blas.py --threads 1 --products 30x64x64 16x64x256 30x64x192
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from numba import njit

from rnnkit.compiled import _single_threaded_scipy_blas, blas

PRODUCTS = ("1x64x64", "8x64x64", "30x64x64", "32x128x128", "64x128x128", "8x256x256",
            "30x256x256", "1x512x512", "32x512x512")  # fmt: skip


def _loop(gemm):
    """A compiled loop of ``steps`` products ``c += a @ b`` through ``gemm``,
    called as :func:`rnnkit.compiled.blas.gemm_accumulate` calls it."""

    @njit
    def loop(a, b, c, steps, transpose_a):
        int_args, scalar_args = blas.scratch(c.dtype)
        for _ in range(steps):
            gemm(*blas.gemm_arguments(a, b, c, int_args, scalar_args, transpose_a, 1.0))

    return loop


@njit
def _brgemm_loop(a, b, c, steps, transpose_a):
    """As :func:`_loop`'s loops, through torch's brgemm (``c += a @ b``; no transposes)."""
    m, k = a.shape
    for _ in range(steps):
        blas._brgemm(m, b.shape[1], k, k, b.shape[1], c.shape[1], np.uint8(1), a.ctypes.data,
                     b.ctypes.data, c.ctypes.data, np.uint8(0))  # fmt: skip


def _best_us(call, steps: int) -> float:
    call(1)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        call(steps)
        best = min(best, time.perf_counter() - start)
    return best / steps * 1e6


def parse_product(product: str) -> tuple[bool, int, int, int]:
    """``"T256x3000x4"`` -> ``(True, 256, 3000, 4)``: transposed a, m, k, n."""
    transpose_a = product[:1].upper() == "T"
    m, k, n = map(int, product[transpose_a:].lower().split("x"))
    return transpose_a, m, k, n


def time_product(loops: dict, product: str) -> list[float]:
    """Microseconds per product in each compiled loop, then in ``torch.addmm``."""
    transpose_a, m, k, n = parse_product(product)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if transpose_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32) * 0.01
    c = np.zeros((m, n), np.float32)
    steps = max(20, int(3e7 / (m * k * n)))
    times = []
    for name, loop in loops.items():
        if name == "brgemm" and transpose_a:  # it takes no transposed operand
            times.append(float("nan"))
            continue
        times.append(_best_us(lambda s, loop=loop: loop(a, b, c, s, transpose_a), steps))
    at, bt, ct = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    at = at.t() if transpose_a else at

    def addmm(s):
        for _ in range(s):
            torch.addmm(ct, at, bt, out=ct)

    times.append(_best_us(addmm, steps))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", nargs="+", default=list(PRODUCTS), metavar="MxKxN")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args(argv)
    _single_threaded_scipy_blas()
    large = f"{blas.LARGE_GEMM_LIBRARY} (large)"
    loops = {"scipy": _loop(blas._sgemm), large: _loop(blas._sgemm_large), "brgemm": _brgemm_loop}
    size = f">= {blas.LARGE_GEMM} multiply-adds" if blas.AVX512 else "any size: no AVX-512"
    print(f"float32; large products ({size}) go to {blas.LARGE_GEMM_LIBRARY}'s BLAS")
    names = " | ".join(f"{name} us" for name in loops)
    print(f"| m x k x n | threads | {names} | torch.addmm us | gemm_accumulate uses |")
    print("|---|---:|" + "---:|" * (len(loops) + 1) + "---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for product in args.products:
            times = " | ".join("-" if t != t else f"{t:.2f}" for t in time_product(loops, product))
            transpose_a, m, k, n = parse_product(product)
            tall_rows = blas.tall_rows()
            large = blas.goes_to_large_library(m, k, n, transpose_a, tall_rows, blas.AVX512)
            used = blas.LARGE_GEMM_LIBRARY if large else "scipy"
            if not transpose_a and blas.goes_to_brgemm(m, k, n, 4, tall_rows, blas.AVX512):
                used = "brgemm"
            print(f"| {product} | {threads} | {times} | {used} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
