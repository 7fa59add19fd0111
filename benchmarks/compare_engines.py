"""Times rnnkit's two fast engines against torch.nn.RNN, interleaved in one process.

The measurement behind ``resolve_engine``'s choice of engine: for each row,
``torch.nn.RNN``, rnnkit with ``RNNKIT_ENGINE=fused`` (torch ops) and rnnkit
with ``RNNKIT_ENGINE=compiled`` run in turn, the engine switched per call, so
that machine noise falls on all three alike; it prints each engine's median
ratio (torch time / engine time, above 1 is faster than torch).

Example:
    python benchmarks/compare_engines.py --shapes 100,30,4,256 --threads 1 2
    RNNKIT_BLAS=scipy python benchmarks/compare_engines.py --shapes 50,64,32,128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

import rnnkit
from rnnkit.benchmark import _make_steps, _time_interleaved, _warm_up, parse_shape
from rnnkit.compiled import large_gemm_library
from rnnkit.rnn import ENGINE_ENV

ENGINES = ("fused", "compiled")


def _with_engine(step, engine: str):
    """``step`` run with ``RNNKIT_ENGINE=engine`` (read by rnnkit at every forward)."""

    def call():
        os.environ[ENGINE_ENV] = engine
        return step()

    return call


def compare(shape, num_layers: int, bidirectional: bool, mode: str, repeats: int) -> dict:
    """Median milliseconds of torch and of each engine on one row.

    Shape:
        shape ``(T, N, H_in, H_out)``, as in the benchmark.
    """
    steps = {}
    for engine in ENGINES:
        pair = _make_steps(rnnkit.RNN, shape, num_layers, bidirectional, mode, seed=0)
        steps.setdefault("torch", pair["torch"])
        steps[engine] = _with_engine(pair["rnnkit"], engine)
    _warm_up(steps, warmup=2, budget_s=1.0)
    samples = _time_interleaved(steps, repeats)
    return {name: statistics.median(times) * 1e3 for name, times in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, required=True,
                        metavar="T,N,H_in,H_out")  # fmt: skip
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["train", "inference"],
                        choices=["train", "inference"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each")
    args = parser.parse_args(argv)
    before = os.environ.get(ENGINE_ENV)
    print(f"large products in: {large_gemm_library()}'s BLAS")
    print("| shape | layers | dir | mode | threads | torch ms | fused ratio | compiled ratio |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    try:
        for shape in args.shapes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                for num_layers in args.layers:
                    for bidirectional in (False, True):
                        for mode in args.modes:
                            ms = compare(shape, num_layers, bidirectional, mode, args.repeats)
                            label = "x".join(map(str, shape))
                            ratios = [ms["torch"] / ms[engine] for engine in ENGINES]
                            direction = "bi" if bidirectional else "uni"
                            print(f"| {label} | {num_layers} | {direction} | {mode} | {threads} "
                                  f"| {ms['torch']:.3g} | {ratios[0]:.2f} | {ratios[1]:.2f} |",
                                  flush=True)  # fmt: skip
    finally:
        if before is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = before
    return 0


if __name__ == "__main__":
    sys.exit(main())
