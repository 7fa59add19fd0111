"""Choose the estimators' defaults by cross-validation on the panel's training splits only.

Each candidate is a set of estimator arguments on top of the defaults. It is
scored by 3-fold cross-validation (stratified for labels, folds seeded) inside
each data set's *training* split: the test splits are never read, so
``scripts/defaults_panel.py`` can report them honestly afterwards::

    python scripts/defaults_cv.py                                 # every candidate (~1 h)
    python scripts/defaults_cv.py --candidates defaults single --sets GunPoint

It prints one line per (candidate, data set) as it goes and a table at the end:
mean validation accuracy (higher is better) or RMSE (lower is better), and the
mean seconds per fit.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.toolkit.estimators import SequenceClassifier, SequenceRegressor

FOLDS = 3
FOLD_SEED = 123
# Arguments on top of the defaults; each says what the default is measured against.
CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single": {"ensemble_size": 1},  # one model instead of an ensemble of five
    "hidden64": {"hidden_size": 64},
    "last-uni": {"pooling": "last", "bidirectional": False},  # the old pooling and direction
    "no-carve": {"validation_fraction": 0},  # every member trains on every sequence
    "budget3000": {"max_steps": 3000},
    "ensemble10": {"ensemble_size": 10},
    "no-stop": {"early_stopping_patience": None},  # the whole budget; the best epoch kept
}


def _panel() -> Any:
    """scripts/defaults_panel.py, for its data sets and loader."""
    path = Path(__file__).with_name("defaults_panel.py")
    spec = importlib.util.spec_from_file_location("defaults_panel", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def folds(targets: Any, classification: bool) -> np.ndarray:
    """A fold number per training sequence; stratified by label for classification."""
    rng = np.random.default_rng(FOLD_SEED)
    n = len(targets)
    fold = np.zeros(n, dtype=int)
    if not classification:
        fold[rng.permutation(n)] = np.arange(n) % FOLDS
        return fold
    for label in sorted(set(targets)):
        members = rng.permutation([i for i in range(n) if targets[i] == label])
        fold[members] = (np.arange(len(members)) + rng.integers(FOLDS)) % FOLDS
    return fold


def cross_validate(panel: Any, name: str, params: dict[str, Any]) -> tuple[float, float]:
    """Mean validation score over the folds of the training split, and seconds per fit."""
    data = panel.SETS[name]
    X, y = panel.load(name, data.kind, "train")
    classification = data.kind == "classification"
    estimator = SequenceClassifier if classification else SequenceRegressor
    fold = folds(y, classification)
    scores, seconds = [], []
    for k in range(FOLDS):
        train = [i for i in range(len(X)) if fold[i] != k]
        held = [i for i in range(len(X)) if fold[i] == k]
        pick = (lambda idx: [y[i] for i in idx]) if classification else (lambda idx: y[idx])
        started = time.perf_counter()
        model = estimator(seed=0, **params).fit([X[i] for i in train], pick(train))
        seconds.append(time.perf_counter() - started)
        scores.append(panel.score(model, data.kind, [X[i] for i in held], pick(held)))
    return float(np.mean(scores)), float(np.mean(seconds))


def main(argv: Sequence[str] | None = None) -> int:
    panel = _panel()
    in_panel = [name for name, data in panel.SETS.items() if data.in_panel]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--sets", nargs="+", default=in_panel, choices=in_panel)
    args = parser.parse_args(argv)
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for candidate in args.candidates:
        for name in args.sets:
            score, seconds = cross_validate(panel, name, CANDIDATES[candidate])
            table.setdefault(candidate, {})[name] = (score, seconds)
            print(f"{candidate:<12} {name:<22} {score:.4f}  {seconds:.1f} s/fit", flush=True)
    print("\n| candidate | " + " | ".join(args.sets) + " |")
    print("|---|" + "---:|" * len(args.sets))
    for candidate, row in table.items():
        cells = " | ".join(f"{row[name][0]:.4f}" for name in args.sets)
        print(f"| {candidate} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
