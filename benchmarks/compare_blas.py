"""Times one per-step product in each BLAS the compiled loops can call.

The measurement behind ``rnnkit.compiled.blas.LARGE_GEMM``: for each
``m x k x n`` product, the best-of-5 time per product of a compiled loop
calling SciPy's BLAS (on one thread, as the kernels run it), torch's bundled
BLAS (at torch's thread count), and ``torch.addmm`` in a Python loop.

Example:
    python benchmarks/compare_blas.py --threads 1 2
    python benchmarks/compare_blas.py --products 30x256x256 64x128x128
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
    def loop(a, b, c, steps):
        int_args, scalar_args = blas.scratch(c.dtype)
        for _ in range(steps):
            gemm(*blas.gemm_arguments(a, b, c, int_args, scalar_args, False, 1.0))

    return loop


def _best_us(call, steps: int) -> float:
    call(1)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        call(steps)
        best = min(best, time.perf_counter() - start)
    return best / steps * 1e6


def time_product(loops: dict, product: str) -> list[float]:
    """Microseconds per product in each compiled loop, then in ``torch.addmm``."""
    m, k, n = map(int, product.lower().split("x"))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32) * 0.01
    c = np.zeros((m, n), np.float32)
    steps = max(20, int(3e7 / (m * k * n)))
    times = []
    for loop in loops.values():
        times.append(_best_us(lambda s, loop=loop: loop(a, b, c, s), steps))
    at, bt, ct = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)

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
    loops = {"scipy": _loop(blas._sgemm), large: _loop(blas._sgemm_large)}
    print(f"float32; large products (>= {blas.LARGE_GEMM} multiply-adds) go to "
          f"{blas.LARGE_GEMM_LIBRARY}'s BLAS")  # fmt: skip
    names = " | ".join(f"{name} us" for name in loops)
    print(f"| m x k x n | threads | {names} | torch.addmm us |")
    print("|---|---:|" + "---:|" * (len(loops) + 1))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for product in args.products:
            times = " | ".join(f"{t:.2f}" for t in time_product(loops, product))
            print(f"| {product} | {threads} | {times} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
