"""How much a call of rnnkit slows down when each follows a call of torch.nn.RNN.

``bench_rnn.py`` interleaves the two implementations so that machine noise
falls on both alike. At tiny shapes that interleaving itself costs rnnkit
time: torch's long step leaves the CPU's branch predictors and instruction
cache to its own code, and every Python-level operation of ours pays for it.
This prints, for one row, the median time of each implementation run in a loop
of its own (blocks of ten calls, the two implementations' blocks alternated) and run
interleaved, and the time of a step through an empty
``autograd.Function`` with the same inputs and outputs (the part of a step
that torch's autograd costs whatever the engine does).

With ``--cell lstm`` it also times both after a call of torch's LSTM with oneDNN off,
as ``rnnkit bench`` interleaves its LSTM rows: torch's per-step path leaves the caches
to its own code, and our checks in front of the same oneDNN call pay for it. ``--packed``
times ``PackedSequence`` input (packed inside each call, as ``rnnkit bench --packed 1``
does), where torch's LSTM runs sequences of equal lengths (a batch of one) on oneDNN and
others on its per-step path.

Example:
    python benchmarks/interleave_effect.py --shape 100,1,4,64 --threads 1
    python benchmarks/interleave_effect.py --cell lstm --mode inference
    python benchmarks/interleave_effect.py --cell lstm --packed --shape 12,1,4,64
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import rnnkit
from rnnkit.benchmark import (
    _LAYER_NAMES,
    ONEDNN_OFF,
    _make_steps,
    _time_interleaved,
    parse_shape,
)


class _Empty(torch.autograd.Function):
    """Outputs and gradients of the right shapes, nothing computed."""

    @staticmethod
    def forward(ctx, x, h0, *weights):
        ctx.save_for_backward(x, h0, *weights)
        return x.new_empty(x.size(0), h0.size(0) * h0.size(2)), torch.empty_like(h0)

    @staticmethod
    def backward(ctx, grad_out, grad_h_n):
        x, h0, *weights = ctx.saved_tensors
        return torch.empty_like(x), torch.empty_like(h0), *map(torch.empty_like, weights)


def _empty_step(shape, num_layers: int, bidirectional: bool):
    """A training step of the empty Function over one layer's worth of leaves."""
    T, N, H_in, H_out = shape
    D = 2 if bidirectional else 1
    x = torch.randn(T * N, H_in, requires_grad=True)
    h0 = torch.randn(D * num_layers, N, H_out)
    weights = [p.detach().requires_grad_() for p in rnnkit.RNN(H_in, H_out).parameters()]
    grad_out, grad_h_n = torch.randn(T * N, D * num_layers * H_out), torch.randn(h0.shape)

    def step():
        for leaf in (x, *weights):
            leaf.grad = None
        out, h_n = _Empty.apply(x, h0, *weights)
        torch.autograd.backward((out, h_n), (grad_out, grad_h_n))

    return step


def _alone_us(steps: dict, repeats: int, block: int = 10) -> dict[str, float]:
    """Median microseconds a call of each step, run in blocks of ``block`` calls of its
    own, the blocks alternated so that the machine's noise falls on each alike."""
    blocks = {
        name: (lambda step=step: [step() for _ in range(block)]) for name, step in steps.items()
    }
    samples = _time_interleaved(blocks, max(repeats // block, 3))
    return {name: statistics.median(times) / block * 1e6 for name, times in samples.items()}


def _median_us(calls, repeats: int, before=None) -> float:
    return statistics.median(_time_interleaved({"": calls}, repeats, before=before)[""]) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=parse_shape, default=(100, 1, 4, 64), metavar="T,N,H_in,H_out"
    )
    parser.add_argument("--cell", choices=sorted(_LAYER_NAMES), default="rnn")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--mode", choices=["train", "inference"], default="train")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--packed", action="store_true", help="PackedSequence input")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    candidate = getattr(rnnkit, _LAYER_NAMES[args.cell])
    steps = _make_steps(
        candidate, args.shape, args.layers, args.bidirectional, args.mode, 0, cell=args.cell,
        packed=args.packed,
    )  # fmt: skip
    off = steps.pop(ONEDNN_OFF, None)  # LSTM: torch with oneDNN off
    theirs, ours = steps["torch"], steps["rnnkit"]
    for _ in range(20):
        theirs(), ours()
    alone = _alone_us(steps, args.repeats)
    after = {"torch": _median_us(theirs, args.repeats, before=ours),
             "rnnkit": _median_us(ours, args.repeats, before=theirs)}  # fmt: skip
    rows = [("alone", alone), ("each after the other", after)]
    if off is not None:
        # Alternating which runs first, each after its own call of the per-step path.
        samples = _time_interleaved(steps, args.repeats, before=off)
        after_off = {name: statistics.median(times) * 1e6 for name, times in samples.items()}
        rows.append(("each after torch without oneDNN", after_off))
    direction = "bi" if args.bidirectional else "uni"
    label = "x".join(map(str, args.shape)) + (" packed" if args.packed else "")
    print(f"{args.cell} {label}, {args.layers} layer(s), {direction}, {args.mode}, "
          f"{args.threads} thread(s)")  # fmt: skip
    print("| | torch us | rnnkit us | ratio |")
    print("|---|---:|---:|---:|")
    for label, times in rows:
        ratio = times["torch"] / times["rnnkit"]
        print(f"| {label} | {times['torch']:.0f} | {times['rnnkit']:.0f} | {ratio:.2f} |")
    if args.mode == "train":
        empty = _median_us(_empty_step(args.shape, args.layers, args.bidirectional), args.repeats)
        print(f"empty autograd.Function step (alone): {empty:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
