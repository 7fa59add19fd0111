"""The ``classify-series`` run task: one label per multivariate, variable-length series.

E.g. JapaneseVowels (9 speakers, 12 cepstrum channels, 7-29 frames): the
series are standardised per channel with training statistics, batched as
packed sequences (no padding is ever computed on) and read by a
``ManyToOneModel``, scored against the majority training label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.data import DataError, LabelEncoder, StandardScaler, collate_classification
from rnnkit.toolkit.data.series_archive import read_labelled_series
from rnnkit.toolkit.tasks.base import SequenceDataset, Task, TaskData
from rnnkit.toolkit.tasks.common import (
    _split_examples,
    _unknown_label,
    majority_label,
    predict_labels,
    report_labels,
    score_labels,
)

__all__ = ["ClassifySeriesTask", "SeriesLabelTransform"]


@dataclass(frozen=True, eq=False)
class SeriesLabelTransform:
    """Channel standardisation and label ids, fitted on the training series."""

    scaler: StandardScaler  # per channel, over every training frame
    labels: LabelEncoder  # label -> class id

    def to_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.to_dict(), "labels": self.labels.to_dict()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SeriesLabelTransform:
        scaler = StandardScaler.from_dict(state["scaler"])
        return cls(scaler, LabelEncoder.from_dict(state["labels"]))

    def inputs(self, series: list[np.ndarray], source: str) -> list[torch.Tensor]:
        """Standardised float32 tensors ``(length, channels)``; the channels must match."""
        channels = len(self.scaler.columns)
        if series[0].shape[1] != channels:
            raise DataError(
                source, f"expected {channels} channels per frame (as in training), got "
                f"{series[0].shape[1]}",
            )  # fmt: skip
        return [torch.from_numpy(self.scaler.transform(s).astype(np.float32)) for s in series]


class ClassifySeriesTask(Task):
    """A label per series from a ``.ts`` file or ``aeon:NAME:SPLIT`` (see data.series_archive)."""

    name = "classify-series"

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        series, labels = self._read(data.path, data.limit)
        train_idx, val_idx, test_idx = _split_examples(
            len(series), 0.0 if data.val_path else data.val_fraction,
            0.0 if data.test_path else data.test_fraction, data.path,
        )  # fmt: skip
        train_series = [series[i] for i in train_idx]
        train_labels = [labels[i] for i in train_idx]
        channels = [f"channel {j + 1}" for j in range(train_series[0].shape[1])]
        transform = SeriesLabelTransform(
            StandardScaler.fit(np.concatenate(train_series), channels),
            LabelEncoder.fit(train_labels),
        )
        if len(transform.labels) < 2:
            raise DataError(data.path, "expected at least two distinct labels in the training "
                                       f"part, got {transform.labels.classes}")  # fmt: skip

        def part(idx: list[int], path: str) -> SequenceDataset | None:
            if path:
                return self._dataset(transform, *self._read(path, data.limit), path)
            if not idx:
                return None
            return self._dataset(transform, [series[i] for i in idx],
                                 [labels[i] for i in idx], data.path)  # fmt: skip

        train = self._dataset(transform, train_series, train_labels, data.path)
        val, test = part(val_idx, data.val_path), part(test_idx, data.test_path)
        lengths = [len(s) for s in series]
        return TaskData(
            train=train,
            val=val,
            test=test,
            collate_fn=collate_classification,
            model_config=config.model.to_model_config(self.name, **self.model_sizes(transform)),
            transform=transform,
            baseline={"majority": majority_label(train_labels)},
            description=[
                f"data: {data.path}: {len(train):,} series train"
                + (f", {len(val):,} validation" if val is not None else ", no validation")
                + (f", {len(test):,} test" if test is not None else ", no test"),
                f"  {len(channels)} channels, {min(lengths)}-{max(lengths)} steps per series, "
                f"{len(transform.labels)} labels",
            ],
        )

    def transform_from_dict(self, state: dict[str, Any]) -> SeriesLabelTransform:
        return SeriesLabelTransform.from_dict(state)

    def model_sizes(self, transform: SeriesLabelTransform) -> dict[str, int]:
        return {"input_size": len(transform.scaler.columns), "num_outputs": len(transform.labels)}

    def collate_fn(self, transform: Any) -> Any:
        return collate_classification

    def dataset(self, config: RunConfig, transform: Any, path: str | os.PathLike[str]) -> Any:
        return self._dataset(transform, *self._read(path, 0), os.fspath(path))

    def score(self, model, dataset, transform, baseline):
        results, predicted = score_labels(model, dataset, transform.labels, baseline)
        frame = pd.DataFrame(
            {"series": range(1, len(dataset) + 1), "label": dataset.gold, "predicted": predicted}
        )
        return results, frame

    def predict(self, model, transform, path):
        series, _ = read_labelled_series(path, labelled=False)
        inputs = transform.inputs(series, os.fspath(path))
        predicted, probability = predict_labels(model, inputs, transform.labels)
        return pd.DataFrame(
            {"series": range(1, len(series) + 1), "predicted": predicted,
             "probability": probability}
        )  # fmt: skip

    def report(self, results):
        return report_labels(results, f"{results['examples']:,} series")

    @staticmethod
    def _read(path: str | os.PathLike[str], limit: int) -> tuple[list[np.ndarray], list[str]]:
        series, labels = read_labelled_series(path)
        return (series[:limit], labels[:limit]) if limit else (series, labels)

    @staticmethod
    def _dataset(
        transform: SeriesLabelTransform, series: list[np.ndarray], labels: list[str], source: str
    ) -> SequenceDataset:
        inputs = transform.inputs(series, source)
        try:
            ids = transform.labels.encode(labels)
        except ValueError:
            unknown = next(label for label in labels if label not in transform.labels.classes)
            raise _unknown_label(source, "label", unknown, transform.labels.classes) from None
        words = [[f"{len(s)} steps"] for s in series]  # what `SequenceDataset.words` shows
        return SequenceDataset(list(zip(inputs, ids, strict=True)), words, labels)
