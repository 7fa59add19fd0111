"""What the options torch lacks cost: recurrent dropout, zoneout and layer norm, timed.

torch has no such option, so a torch user writes the step loop by hand: the layer's
cell (``torch.nn.RNNCell``, ``LSTMCell``, ``GRUCell``) with the option applied around it
at every step, through autograd. That loop is the baseline here, and
``rnnkit.functional_options.options_reference`` is exactly it. rnnkit runs it on its
compiled loops and on its torch-ops loops (``RNNKIT_ENGINE=compiled`` and ``fused``;
``auto`` picks the compiled ones on CPU once their kernels are loaded). For scale,
torch's own layer without any option is timed too. All in one process, median of
``--repeats``; training is forward + backward of ``output.sum()``.

Example:
    python benchmarks/bench_options.py                       # 100x30x4x64, every cell
    python benchmarks/bench_options.py --shape 50,64,32,128 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import rnnkit
from rnnkit.compiled import warmup

LAYERS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}
TORCH_LAYERS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
OPTIONS = {"recurrent_dropout": 0.25, "zoneout": 0.1, "layer_norm": True}


def _time(call, repeats: int) -> float:
    """Median seconds of ``call()`` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step(module, x):
    def call():
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()

    return call


def _infer_step(module, x):
    def call():
        with torch.no_grad():
            module(x)

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="100,30,4,64", help="L,N,H_in,H (default %(default)s)")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, batch, features, hidden = map(int, args.shape.split(","))
    x = torch.randn(steps, batch, features)  # (L, N, H_in)
    print(
        f"options {OPTIONS} at L,N,H_in,H = {args.shape}, {args.threads} thread(s), float32, "
        f"torch {torch.__version__}; ms, median of {args.repeats}"
    )
    warmup.wait(torch.float32, "options")  # the compiled kernels, loaded before timing
    print("| cell | mode | torch layer, no option | torch step loop with the options "
          "| rnnkit, torch ops | rnnkit, compiled | compiled over the loop |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        torch.manual_seed(0)
        ours = LAYERS[cell](features, hidden, **OPTIONS).train()
        plain = TORCH_LAYERS[cell](features, hidden).train()
        for mode, step in (("train", _train_step), ("inference", _infer_step)):
            ours.train(mode == "train")
            timings = {}
            for name, module, engine in (
                ("torch", plain, None), ("loop", ours, "reference"), ("fused", ours, "fused"),
                ("compiled", ours, "compiled"),
            ):  # fmt: skip
                os.environ["RNNKIT_ENGINE"] = engine or "auto"
                timings[name] = _time(step(module, x), args.repeats) * 1e3
            os.environ["RNNKIT_ENGINE"] = "auto"
            speed_up = timings["loop"] / timings["compiled"]
            print(f"| {cell} | {mode} | {timings['torch']:.2f} | {timings['loop']:.2f} "
                  f"| {timings['fused']:.2f} | {timings['compiled']:.2f} "
                  f"| {speed_up:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
