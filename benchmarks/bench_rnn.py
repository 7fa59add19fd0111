"""Times rnnkit.RNN against torch.nn.RNN on CPU and prints a table.

The measurement itself lives in :mod:`rnnkit.benchmark`; this script parses the
options, prints the table and writes the JSON.

Example:
    python benchmarks/bench_rnn.py --quick                 # reference shape, seconds
    python benchmarks/bench_rnn.py --threads 1 --markdown  # full grid at 1 thread
    python benchmarks/bench_rnn.py --shapes 1000,8,16,64 --modes train --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark from command-line options.

    Args:
        argv: The options; ``sys.argv[1:]`` if None.

    Returns:
        The exit status: 0 on success, 2 on invalid options.
    """
    # Kineto, the profiler behind the memory measurement, writes lines to stderr at
    # each profile's start and stop, at its highest level but one; only a level
    # above all of its own, read when torch is imported, keeps the table readable.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from rnnkit import benchmark

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchmark.add_arguments(parser)
    parser.add_argument("--markdown", action="store_true", help="print a GitHub markdown table")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    parser.add_argument("--quiet", action="store_true", help="log warnings only, no progress")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        config = benchmark.config_from_args(args)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2
    results = benchmark.run_benchmark(config)
    print(benchmark.format_table(results, markdown=args.markdown))
    if args.json:
        report = {
            "environment": benchmark.environment(),
            "config": benchmark.config_to_dict(config),
            "results": results,
        }
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=1)
            file.write("\n")
        print(f"Wrote {len(results)} rows to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
