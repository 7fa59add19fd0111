"""Fit the estimators with nothing but a seed on the time-series panel; write docs/defaults.md.

The panel is the UCR/UEA data sets that ``aeon==1.6.0`` ships (offline), each
on its own train/test split: the settings the fit derives (scaling, patch size,
step budget, validation split) are what is measured, never tuned per data set.
Beside ours stand the published figures of ``../shared/data/README.md``, the
estimators' old defaults (10 epochs, last-step pooling, raw input), and, for
the data sets outside the panel that have no published figure here, a 1-NN DTW
classifier and the training mean measured in this script::

    python scripts/defaults_panel.py                      # every set, seeds 0 1 2 (~15 min)
    python scripts/defaults_panel.py --sets GunPoint --seeds 0
    python scripts/defaults_panel.py --smoke              # a few steps on one small set, temp dir
    python scripts/defaults_panel.py --rewrite            # docs/defaults.md from defaults.json

The exit status is 0 when every fit succeeded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.toolkit.estimators import SequenceClassifier, SequenceRegressor

REPO = Path(__file__).resolve().parent.parent
# The estimators' defaults before the derived settings: what a user got from fit(X, y)
# (training by epochs carves no validation part).
BEFORE = {
    "epochs": 10, "hidden_size": 64, "pooling": "last", "bidirectional": False, "lr": 1e-3,
    "scaling": "none", "patch_size": 1, "ensemble_size": 1, "early_stopping_patience": None,
}  # fmt: skip


@dataclass(frozen=True)
class DataSet:
    """One data set and the figures it is judged against.

    Attributes:
        name: aeon's name for it.
        kind: "classification" (accuracy, higher is better) or "regression" (RMSE).
        published: Published test figures by method, from ../shared/data/README.md.
        target: The method whose figure ours must reach ("1-NN DTW", "training mean").
        stretch: The method of the stretch target, if any.
        in_panel: Used to choose the defaults; False for the sets that check them.
    """

    name: str
    kind: str
    published: dict[str, float] = field(default_factory=dict)
    target: str = "1-NN DTW"
    stretch: str | None = None
    in_panel: bool = True


SETS = {
    s.name: s
    for s in (
        DataSet("ACSF1", "classification",
                {"1-NN DTW": 0.640, "FCN": 0.898, "ResNet": 0.916, "ROCKET": 0.886},
                stretch="ResNet"),
        DataSet("BasicMotions", "classification", {"1-NN DTW": 0.975}),
        DataSet("GunPoint", "classification",
                {"1-NN DTW": 0.907, "FCN": 1.000, "ResNet": 0.991, "ROCKET": 1.000},
                stretch="ResNet"),
        DataSet("ItalyPowerDemand", "classification",
                {"1-NN DTW": 0.950, "FCN": 0.963, "ResNet": 0.962, "ROCKET": 0.970},
                stretch="ResNet"),
        DataSet("OSULeaf", "classification",
                {"1-NN DTW": 0.591, "FCN": 0.979, "ResNet": 0.980, "ROCKET": 0.941},
                stretch="ResNet"),
        DataSet("JapaneseVowels", "classification",
                {"1-NN DTW": 0.949, "FCN": 0.993, "ResNet": 0.992}, stretch="ResNet"),
        DataSet("Covid3Month", "regression",
                {"training mean": 0.0447, "ROCKET": 0.0389, "FreshPRINCE": 0.0402, "FCN": 0.0436,
                 "1-NN DTW": 0.0522}, target="training mean", stretch="ROCKET"),
        # Outside the panel: nothing was chosen on these.
        DataSet("ArrowHead", "classification", in_panel=False),
        DataSet("PickupGestureWiimoteZ", "classification", in_panel=False),
        DataSet("CardanoSentiment", "regression", target="training mean", in_panel=False),
    )
}  # fmt: skip


def load(name: str, kind: str, split: str) -> tuple[list[np.ndarray], Any]:
    """One split as a list of ``(length, channels)`` arrays and its targets."""
    from aeon.datasets import load_classification, load_regression

    loader = load_classification if kind == "classification" else load_regression
    X, y = loader(name, split=split)
    series = [np.asarray(case, dtype=np.float64).T for case in X]  # (length, channels)
    targets = [str(label) for label in y] if kind == "classification" else y.astype(float)
    return series, targets


def score(model: Any, kind: str, X: list[np.ndarray], y: Any) -> float:
    """Accuracy, or RMSE in the units of y."""
    if kind == "classification":
        return float(model.score(X, y))
    return float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))


def fit_one(data: DataSet, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """Fit on the train split with `params` and the seed; score on the test split."""
    X, y = load(data.name, data.kind, "train")
    X_test, y_test = load(data.name, data.kind, "test")
    estimator = SequenceClassifier if data.kind == "classification" else SequenceRegressor
    started = time.perf_counter()
    model = estimator(seed=seed, **params).fit(X, y)
    seconds = time.perf_counter() - started
    return {
        "score": score(model, data.kind, X_test, y_test),
        "seconds": seconds,
        "settings": model.fitted_settings_,
    }


def measured_baselines(data: DataSet) -> dict[str, float]:
    """1-NN DTW (classification) or the training mean (regression), measured here."""
    X, y = load(data.name, data.kind, "train")
    X_test, y_test = load(data.name, data.kind, "test")
    if data.kind == "regression":
        return {"training mean": float(np.sqrt(np.mean((np.mean(y) - y_test) ** 2)))}
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    knn = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw")
    knn.fit([x.T for x in X], np.array(y))  # aeon wants (channels, length)
    predicted = knn.predict([x.T for x in X_test])
    return {"1-NN DTW": float(np.mean(predicted == np.array(y_test)))}


def evaluate(data: DataSet, seeds: Sequence[int], params: dict[str, Any], before: bool) -> dict:
    """Every seed's fit, the old defaults' fit and the baselines of one data set."""
    row: dict[str, Any] = {"name": data.name, "kind": data.kind, "in_panel": data.in_panel}
    row["fits"] = []
    for seed in seeds:
        fit = fit_one(data, seed, params)
        print(f"  {data.name} seed {seed}: {fit['score']:.4f} in {fit['seconds']:.1f} s",
              flush=True)  # fmt: skip
        row["fits"].append({"seed": seed, **fit})
    if before:
        row["before"] = fit_one(data, seeds[0], BEFORE)["score"]
    row["reference"] = dict(data.published) or measured_baselines(data)
    row["measured_here"] = not data.published
    return row


def judge(data: DataSet, row: dict[str, Any]) -> tuple[bool, bool | None]:
    """Whether the mean over seeds meets the target and the stretch target (None: none)."""
    mean = float(np.mean([fit["score"] for fit in row["fits"]]))
    better = (lambda a, b: a >= b) if data.kind == "classification" else (lambda a, b: a < b)
    met = better(mean, row["reference"][data.target])
    if data.stretch is None or data.stretch not in row["reference"]:
        return met, None
    reference = row["reference"][data.stretch]
    if data.kind == "classification":
        return met, mean >= reference - 0.03  # within 3 points of ResNet
    return met, mean <= reference


def shown(value: float, kind: str) -> str:
    return f"{value:.3f}" if kind == "classification" else f"{value:.4f}"


def settings_text(settings: dict[str, Any]) -> str:
    """What one fit chose, in a table cell."""

    def span(values: list[int]) -> str:
        return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"

    parts = []
    if "patch_size" in settings:
        parts.append(f"patch {settings['patch_size']}")
    parts.append(settings["scaling"])
    parts.append(f"{settings['ensemble_size']} x hidden {settings['hidden_size']}")
    parts.append(f"{settings['train_sequences']}+{settings['validation_sequences']} train+val")
    parts.append(f"steps {span(settings['steps_run'])} of {settings['max_steps']}, best epochs "
                 f"{span(settings['best_epoch'])} of {settings['epochs']}")  # fmt: skip
    return "; ".join(parts)


def machine() -> str:
    """Where the fits ran, for the docs."""
    return (
        f"{dt.date.today().isoformat()} ({platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__})"
    )


def markdown(
    rows: list[dict[str, Any]], seeds: Sequence[int], seconds: float, where: str | None = None
) -> str:
    """docs/defaults.md; `where` the fits ran (default: here, now)."""
    lines = [
        "# Defaults on data nobody tuned for",
        "",
        "`SequenceClassifier(seed=s).fit(X, y)` and `SequenceRegressor(seed=s).fit(X, y)`: no "
        "argument but the seed, on each data set's own train/test split, as a list of "
        "`(length, channels)` arrays. What the fit chose is its `fitted_settings_` "
        f"(seed {seeds[0]} shown). Scores are test accuracy (higher is better) or test RMSE "
        f"(lower is better): the mean over seeds {', '.join(map(str, seeds))}, with the range. "
        "*before*: the old defaults (10 epochs, last-step pooling, raw input), seed "
        f"{seeds[0]}. Published figures from `../shared/data/README.md`; for the sets outside "
        "the panel, which have none there, 1-NN DTW (aeon's, full window) and the training "
        "mean are measured by the script (marked *here*).",
        "",
        "How these defaults were chosen (cross-validation on the training splits only): "
        "[`defaults_cv.md`](defaults_cv.md).",
        "",
        f"Written by `python scripts/defaults_panel.py` on {where or machine()} in "
        f"{seconds / 60:.1f} minutes.",
        "",
        "| data set | ours | range | before | target | met | stretch | fit s (max) | settings "
        f"chosen (seed {seeds[0]}) |",
        "|---|---:|---:|---:|---|---|---|---:|---|",
    ]
    for row in rows:
        data = SETS[row["name"]]
        scores = [fit["score"] for fit in row["fits"]]
        met, stretch = judge(data, row)
        target = row["reference"][data.target]
        where = " (here)" if row["measured_here"] else ""
        stretch_text = "-"
        if stretch is not None:
            stretch_text = f"{'yes' if stretch else 'no'} ({data.stretch} " \
                           f"{shown(row['reference'][data.stretch], data.kind)})"  # fmt: skip
        name = data.name + ("" if data.in_panel else " (outside)")
        lines.append(
            f"| {name} | {shown(float(np.mean(scores)), data.kind)} | "
            f"{shown(min(scores), data.kind)}-{shown(max(scores), data.kind)} | "
            f"{shown(row['before'], data.kind) if 'before' in row else '-'} | "
            f"{data.target}{where} {shown(target, data.kind)} | {'yes' if met else '**no**'} | "
            f"{stretch_text} | {max(fit['seconds'] for fit in row['fits']):.0f} | "
            f"{settings_text(row['fits'][0]['settings'])} |"
        )
    lines.append("")
    for in_panel, group in ((True, "panel"), (False, "outside the panel")):
        chosen = [row for row in rows if SETS[row["name"]].in_panel == in_panel]
        if chosen:
            met = sum(judge(SETS[row["name"]], row)[0] for row in chosen)
            lines.append(f"Targets met, {group}: {met} of {len(chosen)}.")
    gaps = [
        row["reference"]["ResNet"] - float(np.mean([fit["score"] for fit in row["fits"]]))
        for row in rows if "ResNet" in row["reference"]
    ]  # fmt: skip
    if gaps:
        lines.append(
            f"Mean distance to ResNet over the {len(gaps)} sets with its figure: "
            f"{float(np.mean(gaps)):.3f} (the stretch target: at most 0.03)."
        )
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--docs-dir", type=Path, default=None, help="default docs/")
    parser.add_argument("--no-before", action="store_true", help="skip the old defaults")
    parser.add_argument(
        "--smoke", action="store_true", help="20 steps on ItalyPowerDemand into a temp dir"
    )
    parser.add_argument(
        "--rewrite", action="store_true", help="rewrite defaults.md from defaults.json, no fits"
    )
    args = parser.parse_args(argv)
    params: dict[str, Any] = {}
    sets, seeds, before = args.sets, args.seeds, not args.no_before
    docs = args.docs_dir or REPO / "docs"
    if args.smoke:
        params, sets, seeds, before = {"max_steps": 20}, ["ItalyPowerDemand"], [0], False
        docs = args.docs_dir or Path(tempfile.mkdtemp(prefix="defaults-panel-"))
    if args.rewrite:
        document = json.loads((docs / "defaults.json").read_text(encoding="utf-8"))
        text = markdown(document["rows"], document["seeds"], document["seconds"], document["where"])
        (docs / "defaults.md").write_text(text, encoding="utf-8")
        print(f"rewrote {docs / 'defaults.md'}")
        return 0
    started = time.perf_counter()
    rows = []
    for name in sets:
        print(f"{name}:", flush=True)
        rows.append(evaluate(SETS[name], seeds, params, before))
    seconds = time.perf_counter() - started
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "defaults.md").write_text(markdown(rows, seeds, seconds), encoding="utf-8")
    document = {"seeds": seeds, "seconds": seconds, "where": machine(), "rows": rows}
    (docs / "defaults.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {docs / 'defaults.md'} and defaults.json in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
