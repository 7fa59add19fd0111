"""Times rnnkit.RNN (or LSTM, GRU) against torch.nn's layer on CPU and prints a table.

The same as ``rnnkit bench``: the measurement lives in :mod:`rnnkit.benchmark`,
the options and output in :mod:`rnnkit.cli`.

Example:
    python benchmarks/bench_rnn.py --quick                 # reference shape, seconds
    python benchmarks/bench_rnn.py --threads 1 --markdown  # full grid at 1 thread
    python benchmarks/bench_rnn.py --shapes 1000,8,16,64 --modes train --json out.json
    python benchmarks/bench_rnn.py --cell all --quick      # RNN, LSTM (two baselines), GRU
"""

from __future__ import annotations

import sys

from rnnkit.cli import main as rnnkit_main


def main(argv: list[str] | None = None) -> int:
    """Runs ``rnnkit bench`` with these options (``sys.argv[1:]`` if None); returns its status."""
    return rnnkit_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
