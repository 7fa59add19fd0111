"""Does a regulariser help? Train a config without and with each ``--set`` (one row per
``--set``, given once or more), over seeds, and compare the validation figure (never the
test split: the choice is made on validation).

Each run is ``python -m rnnkit train CONFIG --set train.seed=S [--set SETTING]`` in the
repository root; the table (mean and spread of the validation figure per seed) is printed
and, with ``--write``, saved as markdown::

    python scripts/compare_regulariser.py configs/sst2_classify.toml \\
        --set model.weight_drop=0.3 --set model.zoneout=0.1 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def validation_figure(results: dict) -> tuple[str, float]:
    """The validation figure a run's results.json reports: accuracy, else loss."""
    model = results["val"]["model"]
    return ("accuracy", model["accuracy"]) if "accuracy" in model else ("loss", model["loss"])


def train(config: str, seed: int, settings: list[str], out: Path) -> dict:
    command = [sys.executable, "-m", "rnnkit", "train", config, "--out", str(out),
               "--set", f"train.seed={seed}"]  # fmt: skip
    for setting in settings:
        command += ["--set", setting]
    print("$ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "results.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a config of configs/, relative to the repository root")
    parser.add_argument(
        "--set", dest="settings", action="append", required=True,
        help="a regulariser's --set; give it again for another row",
    )  # fmt: skip
    parser.add_argument(
        "--base", action="append", default=[],
        help="a --set for every run, the one without a regulariser too (e.g. model.cell=gru)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--write", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="rnnkit-regulariser-") as tmp:
        for row, setting in enumerate([None, *args.settings]):
            values = []
            for seed in args.seeds:
                out = Path(tmp) / f"{row}-{seed}"
                settings = [*args.base, *([setting] if setting else [])]
                name, value = validation_figure(train(args.config, seed, settings, out))
                values.append(value)
            rows[setting or "without it"] = (name, values)
    base = "".join(f" --set {s}" for s in args.base)
    command = " ".join(
        [args.config, *(f"--base {s}" for s in args.base), *(f"--set {s}" for s in args.settings),
         "--seeds", *map(str, args.seeds)]
    )  # fmt: skip
    lines = [
        f"`{args.config}`{base}, validation figure per seed ({', '.join(map(str, args.seeds))}):",
        "",
        "| run | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | spread |",
        "|---|" + "---|" * (len(args.seeds) + 2),
    ]
    for label, (name, values) in rows.items():
        shown = [f"{v:.1%}" if name == "accuracy" else f"{v:.4f}" for v in values]
        mean = statistics.mean(values)
        spread = max(values) - min(values)
        mean_shown = f"{mean:.1%}" if name == "accuracy" else f"{mean:.4f}"
        spread_shown = f"{spread:.1%}" if name == "accuracy" else f"{spread:.4f}"
        lines.append(f"| `{label}` ({name}) | " + " | ".join(shown)
                     + f" | {mean_shown} | {spread_shown} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.write:
        args.write.write_text(
            "# Does a regulariser help?\n\nWritten by `python scripts/compare_regulariser.py "
            f"{command}`.\n\n" + table + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
