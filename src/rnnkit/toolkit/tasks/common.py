"""Helpers the tasks share: the seeded train / val / test split, label scoring
for the many-to-one classifiers (``classify``, ``classify-series``), the error
for a label not seen in training, and the formatting of figures in reports.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.toolkit.data import DataError, LabelEncoder, collate_classification, read_text
from rnnkit.toolkit.tasks.base import SequenceDataset
from rnnkit.toolkit.tasks.running import _forward_all

__all__ = ["majority_label", "predict_labels", "report_labels", "score_labels"]


# The split of one file into train / val / test does not follow train.seed: another seed (or
# `--resume --set train.seed=...`) would move examples between the parts, and the model would
# be scored on examples it was trained on.
_SPLIT_SEED = 0


def _split_examples(
    n: int, val_fraction: float, test_fraction: float, source: str
) -> tuple[list[int], list[int], list[int]]:
    """Random train / val / test indices, the same in every run (file order within each part)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED)).tolist()
    n_test, n_val = _held_out_sizes(n, val_fraction, test_fraction, source, "examples")
    if n - n_test - n_val < 1:
        raise DataError(source, f"expected examples left for training, got {n} in all")
    test = sorted(order[:n_test])
    val = sorted(order[n_test : n_test + n_val])
    train = sorted(order[n_test + n_val :])
    return train, val, test


def _held_out_sizes(
    n: int, val_fraction: float, test_fraction: float, source: str, what: str
) -> tuple[int, int]:
    """``(n_test, n_val)`` of `n` examples or characters; a fraction > 0 must hold out one."""
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    for name, fraction, size in (("test", test_fraction, n_test), ("val", val_fraction, n_val)):
        if fraction > 0 and size == 0:
            raise DataError(
                source,
                f"expected enough {what} for data.{name}_fraction={fraction} to hold out at "
                f"least one, got {n}",
            )
    return n_test, n_val


def score_labels(
    model: nn.Module, dataset: SequenceDataset, labels: LabelEncoder, baseline: dict[str, Any]
) -> tuple[dict[str, Any], list[Any]]:
    """Accuracy of a many-to-one classifier and of the majority label; the predicted labels."""
    outputs = _forward_all(model, dataset, collate_classification)  # (examples, classes)
    predicted = outputs.argmax(dim=-1)  # (examples,)
    targets = torch.tensor([target for _, target in dataset.items])  # (examples,)
    majority = baseline.get("majority")
    results = {
        "examples": len(dataset),
        "model": {"accuracy": _share(predicted == targets)},
        "majority": {
            "label": majority,
            "accuracy": _share(torch.tensor([g == majority for g in dataset.gold])),
        },
    }
    return results, labels.decode(predicted)


def predict_labels(
    model: nn.Module, inputs: Sequence[Any], labels: LabelEncoder
) -> tuple[list[Any], np.ndarray]:
    """The most likely label of each input sequence, and its softmax probability."""
    outputs = _forward_all(model, [(x, 0) for x in inputs], collate_classification)
    best = torch.softmax(outputs, dim=-1).max(dim=-1)  # (examples,)
    return labels.decode(best.indices), best.values.numpy()


def report_labels(results: dict[str, Any], examples: str) -> list[str]:
    """The lines of :func:`score_labels`'s results, `examples` saying what was scored."""
    return [
        f"{examples}:",
        f"  accuracy {_percent(results['model']['accuracy'])} (majority label "
        f"{results['majority']['label']!r}: {_percent(results['majority']['accuracy'])})",
    ]


def majority_label(labels: Sequence[Any]) -> Any:
    """The commonest label; ties go to the one seen first."""
    counts = Counter(labels)
    return max(counts, key=lambda label: (counts[label], -labels.index(label)))


def _unknown_label(source: str, what: str, value: Any, known: Sequence[Any]) -> DataError:
    shown = ", ".join(repr(k) for k in known[:20]) + (", ..." if len(known) > 20 else "")
    return DataError(source, f"expected a {what} seen in training ({shown}), got {value!r}")


def _lines(path: str | os.PathLike[str]) -> list[str]:
    texts = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not texts:
        raise DataError(path, "expected one text per line, got only blank lines")
    return texts


def _share(flags: Tensor) -> float:
    return float(flags.double().mean()) if flags.numel() else math.nan


def _percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
