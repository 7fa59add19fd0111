"""Times a weight gradient ``d.T @ a`` in both orientations BLAS can be asked for.

The measurement behind ``rnnkit.engine.products.transposed_faster``: the gradient of a
weight from every row's dL/d(pre-activation) ``d`` and the rows ``a`` it multiplied is
``d.T @ a``, a ``(G, K)`` product summed over ``R`` rows. BLAS can compute it as asked
(``d.T @ a``) or as the transpose of ``a.T @ d`` (``(K, G)``, read back as a transposed
view): the same sums, in a different blocking. For each product the script prints the
median time of each, alternating which runs first, and their ratio (above 1: the
transposed product is faster), then the orientation the rule picks.

A product is ``RxGxK``, with ``:S`` after it when ``d`` is ``G`` columns of rows
``S`` wide (a GRU's reset and update gates inside its three).

Example:
    python benchmarks/weight_grad_orientation.py --threads 1 2
    python benchmarks/weight_grad_orientation.py --products 3200x512x32 3000x768x256
"""

from __future__ import annotations

import argparse
import sys

import torch

from rnnkit.benchmark import _median_interleaved
from rnnkit.engine.products import transposed_faster

# The weight gradients of rnnkit bench's rows: (rows, gate columns, input width).
PRODUCTS = (
    # LSTM 100x30x4x64 (x, h), 50x64x32x128 (x and, with proj_size 32, h; h), 100x30x4x256
    "3000x256x4", "3000x256x64", "3200x512x32", "3200x512x128",
    "3000x1024x4", "3000x1024x256",
    # GRU: all three gates (h), reset and update (x) inside three, at H = 64, 128, 256
    "3000x192x64", "3000x128x4:192", "3200x384x128", "3200x256x32:384",
    "3000x768x256", "3000x512x4:768",
    # Elman (torch-ops engine, packed input)
    "3000x64x64", "3200x128x128", "3000x256x256",
)  # fmt: skip


def _parse(product: str) -> tuple[int, int, int, int]:
    """``RxGxK[:S]`` to ``(R, G, K, S)``."""
    shape, _, stride = product.partition(":")
    rows, gates, width = (int(part) for part in shape.split("x"))
    return rows, gates, width, int(stride) if stride else gates


def time_product(product: str, repeats: int) -> tuple[float, float]:
    """Median ms of ``d.T @ a`` as asked and as the transpose of ``a.T @ d``."""
    rows, gates, width, stride = _parse(product)
    d = torch.randn(rows, stride)[:, :gates]  # (R, G), maybe a column view
    a = torch.randn(rows, width)  # (R, K)
    calls = {"as asked": lambda: d.t().mm(a), "transposed": lambda: a.t().mm(d).t()}
    return tuple(seconds * 1e3 for seconds in _median_interleaved(calls, repeats).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", nargs="+", default=PRODUCTS, help="RxGxK[:S] each")
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args(argv)
    print("| threads | product | as asked ms | transposed ms | ratio | rule |")
    print("|---:|---|---:|---:|---:|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for product in args.products:
            asked, transposed = time_product(product, args.repeats)
            width = _parse(product)[2]
            rule = "transposed" if transposed_faster(width) else "as asked"
            print(f"| {threads} | {product} | {asked:.3f} | {transposed:.3f} | "
                  f"{asked / transposed:.2f} | {rule} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
