"""The first minute of a new user: import, first forward, first backward, in new processes.

Each run starts a new Python process that imports torch and rnnkit, builds
``RNN(4, 64)`` (``--cell lstm`` or ``gru``: ``LSTM(4, 64)`` or ``GRU(4, 64)``)
and times, on ``(100, 30, 4)`` input, the first forward, the first backward and
the tenth forward + backward; then it keeps calling until
the compiled engine is in use (rnnkit's "auto"), and reports the CPU time spent
compiling. The same for ``torch.nn.RNN``
(20 more calls, as rnnkit's runs make after the switch).
"empty cache" gives every run a new, empty numba cache directory
(``NUMBA_CACHE_DIR``): what a fresh environment after ``pip install`` sees,
save for the operating system's file cache. "warm cache" reuses the directory
the previous empty-cache run filled. ``--train`` also times the main job,
``rnnkit train``, with an empty and with a warm cache.

Columns: "while warming", the median forward + backward while the kernels
are prepared in the background (the caller's slowdown; "-": none ran);
"fast path in use at", seconds from the process start until ``auto`` picks the
compiled engine (or, for the LSTM, torch's oneDNN LSTM, which it runs without
kernels: ``rnnkit.engine.onednn``); "after", the median of 20 calls after that; "compile CPU",
the CPU time of the first forward + backward (where compiling happened before
background compilation), plus what ``rnnkit.compiled.warmup`` reports for its
worker process and thread, less the torch.nn.RNN run's first calls (median).

Example:
    python benchmarks/cold_start.py --repeats 3 --train
    python benchmarks/cold_start.py --repeats 3 --cell lstm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the new process; prints one JSON line. Works on revisions without
# rnnkit.compiled.warmup (before background compilation existed).
_CHILD = r"""
import json, os, sys, time
start = time.perf_counter()
import torch
torch_imported = time.perf_counter()
module, cell = sys.argv[1], sys.argv[2]
layer = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
if module == "rnnkit":
    import rnnkit
    make = getattr(rnnkit, layer)
else:
    make = getattr(torch.nn, layer)
imported = time.perf_counter()
torch.manual_seed(0)
model, x = make(4, 64), torch.randn(100, 30, 4)

def timed(fn):
    begin = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - begin

cpu = time.process_time()
(out, _), forward = timed(lambda: model(x))
_, backward = timed(lambda: out.sum().backward())
first_cpu = time.process_time() - cpu  # compiling, before background compilation existed
for _ in range(8):
    model(x)[0].sum().backward()
_, tenth = timed(lambda: model(x)[0].sum().backward())
engine, ready, warming = "torch", None, []
if module == "rnnkit":
    from rnnkit.engine import resolve_engine
    which = () if cell == "rnn" else (cell,)  # revisions before kernel sets per cell take none
    try:  # the layer's own question: may torch's oneDNN LSTM run it (a trained layer)?
        from rnnkit.engine.onednn import onednn_fit
    except ImportError:  # revisions before it
        pass
    else:
        if cell == "lstm":
            which += (onednn_fit(x.view(-1, 4), [30] * 100, (False,), False, True, 64),)
    import inspect
    # A GRU runs torch's own GRU while its kernels compile (revisions before: fused).
    native = cell == "gru" and "native" in inspect.signature(resolve_engine).parameters
    extra = {"native": True} if native else {}
    engine = resolve_engine("auto", x, 30, 64, *which, **extra)
    # calls go on while the kernels are prepared in the background (none before
    # background compilation existed): how much does the caller slow down?
    while resolve_engine("auto", x, 30, 64, *which, **extra) not in ("compiled", "onednn") and (
        time.perf_counter() - start < 300
    ):
        warming.append(timed(lambda: model(x)[0].sum().backward())[1])
    ready = time.perf_counter() - start
    try:
        from rnnkit.compiled import warmup
    except ImportError:  # before background compilation
        pass
    else:
        if engine != "compiled":  # else loaded by the first call: in first_cpu already
            first_cpu += warmup.cpu_seconds(torch.float32, *which[:1]) or 0.0
after = [timed(lambda: model(x)[0].sum().backward())[1] for _ in range(20)]
median = lambda values: sorted(values)[len(values) // 2] if values else None
print(json.dumps({
    "import": imported - start, "torch_import": torch_imported - start,
    "forward": forward, "backward": backward, "tenth": tenth, "engine": engine,
    "ready": ready, "warming": median(warming), "warming_calls": len(warming),
    "after": median(after), "cpu": first_cpu,
}))
"""

_COLUMNS = ("import", "forward", "backward", "tenth", "ready", "warming", "after", "cpu")


def _run_child(module: str, cache: Path, cell: str = "rnn") -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("RNNKIT_ENGINE", None)  # the default, "auto"
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, module, cell], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def _time_train(cache: Path, out: Path) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("RNNKIT_ENGINE", None)
    begin = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "--out", str(out)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - begin


def _median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run[key] is not None]
    return statistics.median(values) if values else None


def _row(name: str, runs: list[dict], torch_total: float, torch_cpu: float) -> str:
    m = {key: _median(runs, key) for key in _COLUMNS}
    total = m["import"] + m["forward"] + m["backward"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.1f}"

    ready = "-" if m["ready"] is None else f"{m['ready']:.1f}"
    engines = "/".join(sorted({run["engine"] for run in runs}))
    compile_cpu = "-" if name.startswith("torch") else f"{m['cpu'] - torch_cpu:.1f}"
    return (
        f"| {name} | {m['import']:.2f} | {m['forward'] * 1e3:.0f} | {m['backward'] * 1e3:.0f} "
        f"| {total:.2f} | {total / torch_total:.2f} | {ms(m['tenth'])} | {engines} "
        f"| {ms(m['warming'])} | {ready} | {ms(m['after'])} | {compile_cpu} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--train", action="store_true", help="also time `rnnkit train`")
    parser.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="rnn",
                        help="the layer: RNN(4, 64), LSTM(4, 64) or GRU(4, 64)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rnnkit-cold-") as tmp:
        root = Path(tmp)
        torch_runs, empty_runs, warm_runs = [], [], []
        for repeat in range(args.repeats):
            cache = root / f"cache{repeat}"
            torch_runs.append(_run_child("torch", cache, args.cell))
            empty_runs.append(_run_child("rnnkit", cache, args.cell))
            warm_runs.append(_run_child("rnnkit", cache, args.cell))
        torch_m = {key: _median(torch_runs, key) for key in _COLUMNS}
        torch_total = torch_m["import"] + torch_m["forward"] + torch_m["backward"]
        print(
            "| run | import (s) | 1st forward (ms) | 1st backward (ms) | import+fwd+bwd (s) "
            "| / torch | 10th fwd+bwd (ms) | engine at 10th | fwd+bwd while warming (ms) "
            "| fast path in use at (s) | fwd+bwd after (ms) | compile CPU (s) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        layer = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[args.cell]
        for name, runs in ((f"torch.nn.{layer}", torch_runs),
                           ("rnnkit, empty cache", empty_runs),
                           ("rnnkit, warm cache", warm_runs)):  # fmt: skip
            print(_row(name, runs, torch_total, torch_m["cpu"]))
        print(f"\n{args.repeats} runs per row, medians; python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        if args.train:
            cache = root / "train-cache"
            empty = _time_train(cache, root / "run-empty")
            warm = _time_train(cache, root / "run-warm")
            print(f"\nrnnkit train: {empty:.1f} s with an empty cache, {warm:.1f} s with a warm")


if __name__ == "__main__":
    main()
