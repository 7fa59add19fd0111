"""Times GRU inference with ``W_hh`` read in place against its transposed copy.

The measurement behind ``rnnkit.engine.recurrent_operand.reads_in_place`` (which the GRU
engine calls as ``gru.reads_in_place``, patched here): the compiled GRU loop either
copies ``W_hh`` transposed once per call (the per-step products then read it as brgemm
and BLAS like best) or reads it in place, transposed, every step (no copy). For each
``L x N x H x H`` row (float32, inference, compiled engine) it prints the median time of
a call both ways, alternating, their ratio (above 1: in place faster), and what the rule
picks.

Example:
    python benchmarks/weight_in_place.py --threads 1
    python benchmarks/weight_in_place.py --steps 1 16 --batches 1 8 --hidden 128 512
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

import rnnkit
from rnnkit.benchmark import _median_interleaved
from rnnkit.compiled import warmup
from rnnkit.engine import gru as gru_engine


def time_row(steps: int, batch: int, hidden: int, repeats: int) -> tuple[float, float]:
    """Median microseconds of one inference call with the copy and read in place."""
    layer = rnnkit.GRU(hidden, hidden)
    x = torch.randn(steps, batch, hidden)
    rule = gru_engine.reads_in_place

    def call_with(in_place: bool):
        def call():
            gru_engine.reads_in_place = lambda *args, **kwargs: in_place and len(args[4]) == 1
            try:
                with torch.inference_mode():
                    layer(x)
            finally:
                gru_engine.reads_in_place = rule

        return call

    medians = _median_interleaved({"copy": call_with(False), "in place": call_with(True)},
                                  repeats)  # fmt: skip
    return tuple(seconds * 1e6 for seconds in medians.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    previous = os.environ.get("RNNKIT_ENGINE")
    os.environ["RNNKIT_ENGINE"] = "compiled"
    warmup.wait(torch.float32, "gru")
    print("| L x N x H | copy us | in place us | ratio | rule |")
    print("|---|---:|---:|---:|---|")
    try:
        for hidden, batch, steps in itertools.product(args.hidden, args.batches, args.steps):
            copy, in_place = time_row(steps, batch, hidden, args.repeats)
            parts = [(0, batch)]  # the rule's answer for a batch run whole
            rule = (
                "in place"
                if gru_engine.reads_in_place(steps, batch, 3 * hidden**2, False, parts)
                else "copy"
            )
            print(f"| {steps}x{batch}x{hidden} | {copy:.1f} | {in_place:.1f} | "
                  f"{copy / in_place:.2f} | {rule} |", flush=True)  # fmt: skip
    finally:
        if previous is None:
            os.environ.pop("RNNKIT_ENGINE", None)
        else:
            os.environ["RNNKIT_ENGINE"] = previous
    return 0


if __name__ == "__main__":
    sys.exit(main())
