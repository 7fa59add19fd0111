"""What compiling each kernel set costs: CPU seconds of ``rnnkit warmup`` in new processes.

For every cell's kernel set (``rnn``, ``lstm``, ``gru``, ``options``) and dtype, a
new process runs ``python -m rnnkit warmup --cell C --dtype D`` with an empty numba
cache directory (it compiles), then another with the directory that one filled (it
loads). The compile cost is the first's CPU time (user + system) less the second's,
so imports and process start cancel out. Each figure is the median over
``--repeats``; runs alternate between the checkouts given, so that a slow spell on a
shared machine falls on all of them alike.

``--src`` compares revisions: each is a source directory put first on
``PYTHONPATH`` (``git worktree add /tmp/before REV``, then ``--src /tmp/before/src
src``); the default is the installed rnnkit.

Example:
    OMP_NUM_THREADS=1 python benchmarks/compile_cost.py --repeats 3
    python benchmarks/compile_cost.py --src /tmp/before/src src --cell options
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CELLS = ("rnn", "lstm", "gru", "options")
DTYPES = ("float32", "float64")


def _child_cpu(src: str | None, cache: Path, cell: str, dtype: str) -> float:
    """CPU seconds (user + system) of one ``rnnkit warmup`` process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    if src is not None:  # the child runs elsewhere: an absolute path
        paths = [str(Path(src).resolve()), env.get("PYTHONPATH")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "rnnkit", "warmup", "--cell", cell, "--dtype", dtype]
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compile_seconds(src: str | None, cell: str, dtype: str) -> tuple[float, float]:
    """``(compile CPU, load CPU)``: an empty cache's run less a filled one's, and the
    filled one's own CPU beyond process start (not subtracted: reported as is)."""
    with tempfile.TemporaryDirectory() as cache:
        cold = _child_cpu(src, Path(cache), cell, dtype)
        warm = _child_cpu(src, Path(cache), cell, dtype)
    return cold - warm, warm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", nargs="+", default=[None], help="source dirs to compare")
    parser.add_argument("--cell", nargs="+", choices=CELLS, default=list(CELLS))
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    results: dict[tuple, list[float]] = {}
    for _ in range(args.repeats):
        for cell in args.cell:
            for dtype in args.dtype:
                for src in args.src:
                    cost, _ = compile_seconds(src, cell, dtype)
                    results.setdefault((src, cell, dtype), []).append(cost)

    labels = [src or "installed" for src in args.src]
    print(f"compile CPU seconds (empty cache less filled cache), median of {args.repeats}")
    print("| set | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for cell in args.cell:
        for dtype in args.dtype:
            row = [statistics.median(results[(src, cell, dtype)]) for src in args.src]
            print(f"| {dtype} {cell} | " + " | ".join(f"{value:.1f}" for value in row) + " |")


if __name__ == "__main__":
    main()
