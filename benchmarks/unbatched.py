"""Times rnnkit's layers on unbatched input, ``(L, H_in)``, against torch.nn's.

A tutorial's first call, and a step-by-step generator fed one sequence, pass a 2-D
input without a batch: torch unsqueezes a batch of one, calls its layer and squeezes
the result. ``rnnkit bench`` times batched and packed input only, so this times the
unbatched call: for each cell and ``L x H_in x H_out`` row, the median of each layer's
call (alternating, same weights, from given states), their ratio (above 1: rnnkit
faster) and the largest difference of their outputs.

Example:
    python benchmarks/unbatched.py --threads 1
    python benchmarks/unbatched.py --cell lstm --shapes 1,16,64 30,16,64 --modes train
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

import rnnkit
from rnnkit.benchmark import _LAYER_NAMES, _make_step, _median_interleaved, positive_ints
from rnnkit.compiled import warmup

parse_row = positive_ints("L,H_in,H_out")


def time_row(cell: str, row: tuple[int, int, int], mode: str, repeats: int) -> dict:
    """Median microseconds of torch's and rnnkit's call on one unbatched input, and the
    largest absolute difference of their outputs.

    Shape:
        input ``(L, H_in)``; states ``(1, H_out)``.
    """
    steps, input_size, hidden = row
    name = _LAYER_NAMES[cell]
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(input_size, hidden)
    ours = getattr(rnnkit, name)(input_size, hidden)
    ours.load_state_dict(theirs.state_dict())
    x, h0 = torch.randn(steps, input_size), torch.randn(1, hidden)
    grad_output, grad_h_n = torch.randn(steps, hidden), torch.randn(1, hidden)
    hx, grad_state = h0, grad_h_n
    if cell == "lstm":
        hx, grad_state = (h0, torch.randn(1, hidden)), (grad_h_n, torch.randn(1, hidden))
    calls = {
        label: _make_step(layer, mode, x, hx, grad_output, grad_state)
        for label, layer in (("torch", theirs), ("rnnkit", ours))
    }
    difference = max(
        (a - b).abs().max().item()
        for a, b in zip(calls["torch"](), calls["rnnkit"](), strict=True)
    )  # fmt: skip
    warmup.wait(torch.float32, cell)  # else the first rows time torch ops while they compile
    medians = _median_interleaved(calls, repeats)
    return {"torch": medians["torch"] * 1e6, "rnnkit": medians["rnnkit"] * 1e6,
            "difference": difference}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", nargs="+", choices=sorted(_LAYER_NAMES),
                        default=sorted(_LAYER_NAMES))  # fmt: skip
    parser.add_argument("--shapes", type=parse_row, nargs="+", metavar="L,H_in,H_out",
                        default=[(1, 16, 64), (1, 16, 256), (4, 16, 64), (8, 16, 64),
                                 (30, 16, 64)])  # fmt: skip
    parser.add_argument("--modes", nargs="+", choices=["inference", "train"],
                        default=["inference"])  # fmt: skip
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=300, help="timed calls of each per row")
    args = parser.parse_args(argv)
    print("| cell | shape L x H_in x H_out | mode | threads | torch us | rnnkit us | ratio "
          "| max abs diff |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for threads, cell, row, mode in itertools.product(
        args.threads, args.cell, args.shapes, args.modes
    ):
        torch.set_num_threads(threads)
        us = time_row(cell, row, mode, args.repeats)
        print(
            f"| {cell} | {'x'.join(map(str, row))} | {mode} | {threads} | {us['torch']:.1f} | "
            f"{us['rnnkit']:.1f} | {us['torch'] / us['rnnkit']:.2f} | {us['difference']:.1e} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
