"""Times GRU and LSTM inference with ``W_hh`` read in place against its transposed copy.

The measurement behind ``rnnkit.engine.recurrent_operand.reads_in_place`` (which the GRU
and LSTM engines call as ``gru.reads_in_place`` and ``lstm.reads_in_place``, patched
here): the compiled loop either copies ``W_hh`` transposed once per call (the per-step
products then read it as brgemm and BLAS like best) or reads it in place, transposed,
every step (no copy). For each ``L x N x H_in x H`` row (float32, inference, compiled
engine; ``--packed 1``: sequences of unequal lengths as ``rnnkit bench`` draws them) it
prints the median time of a call both ways, alternating, their ratio (above 1: in place
faster), and what the rule picks.

Example:
    python benchmarks/weight_in_place.py --threads 1
    python benchmarks/weight_in_place.py --steps 1 16 --batches 1 8 --hidden 128 512
    python benchmarks/weight_in_place.py --cell gru lstm --packed 0 1 --steps 14 16 \\
        --batches 2 3 4 8 --hidden 256 512 768 --json in_place.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.benchmark import _median_interleaved, packed_lengths
from rnnkit.compiled import warmup
from rnnkit.engine import gru as gru_engine
from rnnkit.engine import lstm as lstm_engine

ENGINES = {"gru": gru_engine, "lstm": lstm_engine}
LAYERS = {"gru": rnnkit.GRU, "lstm": rnnkit.LSTM}


def time_row(
    cell: str, steps: int, batch: int, input_size: int, hidden: int, packed: bool, repeats: int
) -> tuple[float, float, bool]:
    """Median microseconds of one inference call with the copy and read in place, and
    whether the rule reads it in place."""
    torch.manual_seed(0)
    layer = LAYERS[cell](input_size, hidden)
    x = torch.randn(steps, batch, input_size)  # (L, N, H_in)
    if packed:
        x = pack_padded_sequence(x, packed_lengths(steps, batch, 0), enforce_sorted=False)
    engine = ENGINES[cell]
    rule = engine.reads_in_place
    picked = []

    def call_with(in_place: bool):
        def forced(*args, **kwargs):
            picked.append(rule(*args, **kwargs))
            return in_place and len(args[4]) == 1  # never for a split batch

        def call():
            engine.reads_in_place = forced
            try:
                with torch.inference_mode():
                    layer(x)
            finally:
                engine.reads_in_place = rule

        return call

    medians = _median_interleaved({"copy": call_with(False), "in place": call_with(True)},
                                  repeats)  # fmt: skip
    copy, in_place = (seconds * 1e6 for seconds in medians.values())
    return copy, in_place, picked[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=sorted(ENGINES), nargs="+", default=["gru"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--input-size", type=int, default=None,
                        help="H_in (default: H, each row's hidden size)")  # fmt: skip
    parser.add_argument("--packed", type=int, choices=(0, 1), nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    previous = os.environ.get("RNNKIT_ENGINE")
    os.environ["RNNKIT_ENGINE"] = "compiled"
    for cell in args.cell:
        warmup.wait(torch.float32, cell)
    print("| cell | L x N x H_in x H | packed | copy us | in place us | ratio | rule |")
    print("|---|---|---|---:|---:|---:|---|")
    rows = []
    try:
        grid = itertools.product(args.cell, args.hidden, args.batches, args.steps, args.packed)
        for cell, hidden, batch, steps, packed in grid:
            input_size = args.input_size or hidden
            copy, in_place, rule = time_row(
                cell, steps, batch, input_size, hidden, bool(packed), args.repeats
            )
            rows.append(dict(cell=cell, T=steps, N=batch, H_in=input_size, H=hidden,
                             packed=packed, copy_us=copy, in_place_us=in_place,
                             ratio=copy / in_place, rule_in_place=rule))  # fmt: skip
            print(f"| {cell} | {steps}x{batch}x{input_size}x{hidden} | {packed} | {copy:.1f} | "
                  f"{in_place:.1f} | {copy / in_place:.2f} | "
                  f"{'in place' if rule else 'copy'} |", flush=True)  # fmt: skip
    finally:
        if previous is None:
            os.environ.pop("RNNKIT_ENGINE", None)
        else:
            os.environ["RNNKIT_ENGINE"] = previous
        if args.json:
            with open(args.json, "w") as file:
                json.dump(rows, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
