"""Times a text generator's steps: rnnkit's layers against torch.nn's, one sequence.

``rnnkit generate`` reads a prompt once, then feeds the layer one token at a time with the
states it returned: a stream of calls of one step at a batch of one. ``rnnkit bench``
times single calls; this times that stream. For each cell and stack it prints the median
time a step of each layer takes (a prompt, then ``--steps`` steps, alternating torch's
stream and ours; same weights), their ratio (above 1: rnnkit faster) and the largest
difference of their last outputs.

torch's oneDNN LSTM reorders its weights on every call, and in a process that has freed
no large block yet glibc returns those buffers to the system after each call, so every
call pays page faults (``rnnkit/engine/onednn.py``): run each row in a process of its own
to time what a generator sees as it starts (``--stacks`` takes one row at a time).

Example:
    python benchmarks/generation_step.py --threads 1
    python benchmarks/generation_step.py --cell lstm --stacks 2,64,512 --threads 1 2
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

import rnnkit
from rnnkit.benchmark import _LAYER_NAMES, _median_interleaved, positive_ints
from rnnkit.compiled import warmup

parse_stack = positive_ints("layers,H_in,H_out")


def time_stack(cell: str, stack: tuple[int, int, int], prompt: int, steps: int,
               repeats: int) -> dict:  # fmt: skip
    """Median microseconds a generated step takes on torch's layer and on rnnkit's, and
    the largest absolute difference of their last outputs.

    Shape:
        prompt ``(prompt, 1, H_in)``, then each step ``(1, 1, H_in)``.
    """
    layers, input_size, hidden = stack
    name = _LAYER_NAMES[cell]
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(input_size, hidden, num_layers=layers)
    ours = getattr(rnnkit, name)(input_size, hidden, num_layers=layers)
    ours.load_state_dict(theirs.state_dict())
    start, token = torch.randn(prompt, 1, input_size), torch.randn(1, 1, input_size)

    def stream(layer):
        def generate():
            with torch.inference_mode():
                out, state = layer(start)
                for _ in range(steps):
                    out, state = layer(token, state)
            return out

        return generate

    calls = {"torch": stream(theirs), "rnnkit": stream(ours)}
    warmup.wait(torch.float32, cell)  # else the first rows time torch ops while they compile
    difference = (calls["torch"]() - calls["rnnkit"]()).abs().max().item()
    medians = _median_interleaved(calls, repeats)
    return {"torch": medians["torch"] * 1e6 / steps, "rnnkit": medians["rnnkit"] * 1e6 / steps,
            "difference": difference}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", nargs="+", choices=sorted(_LAYER_NAMES),
                        default=sorted(_LAYER_NAMES))  # fmt: skip
    parser.add_argument("--stacks", type=parse_stack, nargs="+", metavar="layers,H_in,H_out",
                        default=[(2, 64, 512), (2, 64, 256), (1, 128, 384)])  # fmt: skip
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--prompt", type=int, default=20, help="steps of the prompt")
    parser.add_argument("--steps", type=int, default=100, help="generated steps a stream")
    parser.add_argument("--repeats", type=int, default=5, help="timed streams of each per row")
    args = parser.parse_args(argv)
    if min(args.prompt, args.steps, args.repeats, *args.threads) < 1:
        parser.error("--prompt, --steps, --repeats and --threads take positive ints")
    print("| cell | layers x H_in x H_out | threads | torch us a step | rnnkit us a step "
          "| ratio | max abs diff |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for threads, cell, stack in itertools.product(args.threads, args.cell, args.stacks):
        torch.set_num_threads(threads)
        us = time_stack(cell, stack, args.prompt, args.steps, args.repeats)
        print(
            f"| {cell} | {'x'.join(map(str, stack))} | {threads} | {us['torch']:.0f} | "
            f"{us['rnnkit']:.0f} | {us['torch'] / us['rnnkit']:.2f} | "
            f"{us['difference']:.1e} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
