"""Wiring: from a :class:`~rnnkit.toolkit.config.RunConfig` to datasets, a model and scores.

One class per run task, each built on the data layer (:mod:`rnnkit.toolkit.data`)
and the models (:mod:`rnnkit.toolkit.models`):

==================  =========================  ===================  ============================
task                data                       model                scored against
==================  =========================  ===================  ============================
``forecast``        CSV -> sliding windows     ``ManyToOneModel``   persistence (``y[t]``)
``classify``        ``label text`` lines       ``ManyToOneModel``   the majority training label
``classify-series`` ``.ts`` / aeon archive     ``ManyToOneModel``   the majority training label
``tag``             CoNLL-U (form, UPOS)       ``TaggingModel``     each word's usual tag
``language-model``  plain text -> chunks       ``LanguageModel``    character frequencies
==================  =========================  ===================  ============================

Everything fitted on the training data (scalers, vocabulary, label classes, the
baseline's statistics) goes into ``transform.json`` of the run directory, so
``evaluate`` and ``predict`` rebuild exactly the inputs the model was trained
on and turn its outputs back into prices, labels, tags or characters.

Shapes are spelled out: ``(batch, window, features)`` for price windows,
``(batch, window)`` token ids, ``(batch, outputs)`` many-to-one outputs.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.data import Dataset, TensorDataset, default_collate

from rnnkit.toolkit.arguments import is_real
from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.data import (
    DataError,
    LabelEncoder,
    SeriesTransform,
    Vocabulary,
    WindowedSeries,
    chunk,
    collate_classification,
    collate_tagging,
    goog_csv_path,
    load_series,
    read_conllu,
    read_csv_series,
    read_label_text,
    read_text,
    tokenize,
)
from rnnkit.toolkit.data.tables import index_label, unique_names
from rnnkit.toolkit.devices import to_device
from rnnkit.toolkit.forecast_defaults import (
    DEFAULT_LOOKBACK,
    choose_lookback,
    few_windows_warning,
    figure,
)
from rnnkit.toolkit.metrics import loss_for_task, mae, metrics_for_task, rmse
from rnnkit.toolkit.word_embedding import MAX_WORD_CHARS, spell

logger = logging.getLogger(__name__)

TRANSFORM_FORMAT = "rnnkit-transform"
TRANSFORM_VERSION = 1
EVAL_BATCH_SIZE = 256  # sequences per forward pass when scoring: no gradients, so larger

__all__ = [
    "TaskData",
    "TextTransform",
    "get_task",
    "shape_trace",
]


@dataclass(frozen=True, eq=False)
class TextTransform:
    """Words or characters to ids, and labels to class ids, as fitted on the training data.

    Args:
        vocab: Token ids; ``<pad>`` = 0, ``<unk>`` = 1.
        labels: Class labels (classify) or tags (tag); None for language models.
        lowercase: Lowercase words before looking them up.
        chars: Character ids for a character RNN per word; None without one.
    """

    vocab: Vocabulary  # token -> id
    labels: LabelEncoder | None  # label or tag -> class id; None for a language model
    lowercase: bool = False  # words are lowercased before lookup
    chars: Vocabulary | None = None  # character -> id, when words are also spelled out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` reads back."""
        return {
            "vocab": self.vocab.to_dict(),
            "labels": None if self.labels is None else self.labels.to_dict(),
            "lowercase": self.lowercase,
            "chars": None if self.chars is None else self.chars.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TextTransform:
        labels, chars = state.get("labels"), state.get("chars")
        return cls(
            Vocabulary.from_dict(state["vocab"]),
            None if labels is None else LabelEncoder.from_dict(labels),
            bool(state.get("lowercase", False)),
            None if chars is None else Vocabulary.from_dict(chars),
        )

    def words(self, tokens: Sequence[str]) -> list[str]:
        """Tokens as the vocabulary holds them (lowercased if fitted so)."""
        return [t.lower() for t in tokens] if self.lowercase else list(tokens)

    def encode(self, words: Sequence[str]) -> list[int] | Tensor:
        """Model input of looked-up words: ids ``(words,)``, or with character ids
        ``(words, 1 + MAX_WORD_CHARS)`` rows ``[word id, char ids...]``."""
        ids = self.vocab.encode(words)
        if self.chars is None:
            return ids
        rows = [spell(i, self.chars.encode(w)) for i, w in zip(ids, words, strict=True)]
        return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), 1 + MAX_WORD_CHARS)


@dataclass(eq=False)
class TaskData:
    """A task's datasets, batching and model sizes, and what was fitted on training data.

    Attributes:
        train, val, test: The splits; val and test are None when held out
            nothing (a fraction of 0 and no file).
        collate_fn: The DataLoader's collate function (None: default stacking).
        model_config: The architecture: the ``[model]`` section plus the sizes
            the data decide.
        transform: ``SeriesTransform`` (forecast) or :class:`TextTransform`.
        baseline: JSON-able statistics of the naive baseline, fitted on train.
        description: Lines saying what was read, for the command line.
        derived: Config values the data decided in place of "auto", by dotted
            key (``{"data.lookback": 15}``); the run's config records them.
        warnings: Lines about the data that a person should read before the figures.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    collate_fn: Callable[[list[Any]], Any] | None
    model_config: Any
    transform: Any
    baseline: dict[str, Any] = field(default_factory=dict)
    description: list[str] = field(default_factory=list)
    derived: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def transform_document(self, task: str) -> dict[str, Any]:
        """The content of ``transform.json``."""
        return {
            "format": TRANSFORM_FORMAT,
            "version": TRANSFORM_VERSION,
            "task": task,
            "transform": self.transform.to_dict(),
            "baseline": self.baseline,
        }


class SeriesDataset(Dataset):
    """Windows of a series as ``(inputs, target)`` pairs; ``windows`` keeps dates and prices."""

    def __init__(self, windows: WindowedSeries) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.windows.inputs[i], self.windows.targets[i]  # (window, features), (1,)


class SequenceDataset(Dataset):
    """Token-id sequences with a label (classify) or a tag per token (tag).

    Attributes:
        words: The words of each example, as looked up (for readable output).
        gold: The labels or tags as written in the file.
    """

    def __init__(self, items: list[tuple[list[int], Any]], words: list[list[str]], gold: list[Any]):
        self.items = items
        self.words = words
        self.gold = gold

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], Any]:
        return self.items[i]


class Task:
    """What one run task does with data, models and scores; see the subclasses."""

    name = ""

    def prepare(self, config: RunConfig) -> TaskData:
        """Read the data, fit the transform on the training part, build the datasets."""
        raise NotImplementedError

    def transform_from_dict(self, state: dict[str, Any]) -> Any:
        """Rebuild the fitted transform from ``transform.json``."""
        raise NotImplementedError

    def model_sizes(self, transform: Any) -> dict[str, int]:
        """The model config sizes the fitted transform decides (``input_size`` or
        ``vocab_size``, ``num_outputs``, ``char_vocab_size``): the model is built with
        them, and a loaded model must have them."""
        raise NotImplementedError

    def check_baseline(self, transform: Any, baseline: dict[str, Any]) -> None:
        """Raise ValueError if the baseline statistics read from ``transform.json`` could
        not be scored (the base class scores none that could not)."""

    def collate_fn(self, transform: Any) -> Callable[[list[Any]], Any] | None:
        """The collate function of this task's datasets."""
        return None

    def dataset(self, config: RunConfig, transform: Any, path: str | os.PathLike[str]) -> Dataset:
        """Every example of another file in the training format, for ``evaluate --data``."""
        raise NotImplementedError

    def score(
        self, model: nn.Module, dataset: Dataset, transform: Any, baseline: dict[str, Any]
    ) -> tuple[dict[str, Any], pd.DataFrame | None]:
        """Scores of `model` and of the naive baseline on `dataset`, and the predictions."""
        raise NotImplementedError

    def predict(
        self, model: nn.Module, transform: Any, path: str | os.PathLike[str]
    ) -> pd.DataFrame:
        """Predictions for the inputs in `path`, in the data's own terms (prices, labels, tags)."""
        raise NotImplementedError

    def report(self, results: dict[str, Any]) -> list[str]:
        """Lines that show `results` (one split's scores) to a person."""
        raise NotImplementedError

    def validation_warning(self, results: dict[str, Any]) -> str | None:
        """A line to show before the test figures when validation already says the model
        loses to its baseline; None when it does not."""
        return None

    def loss_fn(self) -> Callable[[Any, Any], Tensor]:
        return loss_for_task(_model_task(self.name))

    def metrics(self) -> tuple[Any, ...]:
        return metrics_for_task(_model_task(self.name))


def _model_task(task: str) -> str:
    from rnnkit.toolkit.config import MODEL_TASKS

    return MODEL_TASKS[task]


def get_task(name: str) -> Task:
    """The :class:`Task` of a run task name, e.g. ``"forecast"``."""
    from rnnkit.toolkit.series_task import ClassifySeriesTask  # it builds on this module

    tasks = {
        "forecast": ForecastTask,
        "classify": ClassifyTask,
        "classify-series": ClassifySeriesTask,
        "tag": TagTask,
        "language-model": LanguageModelTask,
    }
    if name not in tasks:
        raise ValueError(
            f"Received an invalid value for argument `name`, expected one of {list(tasks)}, "
            f"got {name!r}"
        )
    return tasks[name]()


# ----------------------------------------------------------------------------- forecast


class ForecastTask(Task):
    """Next value of a series from the last ``lookback`` rows of its feature columns."""

    name = "forecast"

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        path = data.path or goog_csv_path()
        # Read once: "auto" and the few-windows warning need the row count first.
        frame = read_csv_series(path, unique_names([*data.features, data.target]))
        rows = len(frame)
        lookback = data.lookback
        derived = {}
        if lookback == "auto":
            lookback = derived["data.lookback"] = choose_lookback(rows, data.horizon)
        splits = load_series(
            frame,
            source_name=os.fspath(path),
            target_column=data.target,
            lookback=lookback,
            horizon=data.horizon,
            feature_columns=list(data.features),
            train_fraction=1 - data.val_fraction - data.test_fraction,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            target_transform=data.target_transform,
        )
        model_config = config.model.to_model_config(
            "forecast", **self.model_sizes(splits.transform)
        )
        name = "bundled GOOG.csv" if not data.path else str(path)
        description = [
            f"data: {name}: {_count(len(splits.train), 'window')} train, "
            f"{len(splits.val):,} validation, {len(splits.test):,} test "
            f"(lookback {lookback}{' from the data' if derived else ''}, "
            f"horizon {data.horizon})",
        ]
        warning = few_windows_warning(
            len(splits.train), len(splits.val), len(splits.test), lookback, rows, data.horizon
        )
        for label, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
            if len(part):
                description.append(
                    f"  {label:<5} targets {index_label(part.target_index[0])} .. "
                    f"{index_label(part.target_index[-1])}"
                )
        return TaskData(
            train=SeriesDataset(splits.train),
            val=SeriesDataset(splits.val) if len(splits.val) else None,
            test=SeriesDataset(splits.test) if len(splits.test) else None,
            collate_fn=None,
            model_config=model_config,
            transform=splits.transform,
            description=description,
            derived=derived,
            warnings=[] if warning is None else [warning],
        )

    def transform_from_dict(self, state: dict[str, Any]) -> SeriesTransform:
        return SeriesTransform.from_dict(state)

    def model_sizes(self, transform: SeriesTransform) -> dict[str, int]:
        return {"input_size": len(transform.feature_columns), "num_outputs": 1}

    def dataset(
        self, config: RunConfig, transform: SeriesTransform, path: str | os.PathLike[str]
    ) -> SeriesDataset:
        frame = read_csv_series(
            path, unique_names([*transform.feature_columns, transform.target_column])
        )
        return SeriesDataset(transform.windows(frame, source=os.fspath(path)))

    def score(
        self,
        model: nn.Module,
        dataset: SeriesDataset,
        transform: SeriesTransform,
        baseline: dict[str, Any],
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        windows = dataset.windows
        outputs = _forward_all(model, dataset, None)  # (windows, 1), scaled
        predicted = transform.to_target_values(outputs, windows.baseline).double()
        actual = windows.target_values.double()  # (windows, 1), original units
        last = windows.baseline.double()  # persistence: y[t]
        moved = actual != last  # days without a change have no direction
        up = (actual > last)[moved]
        results = {
            "windows": len(windows),
            "first_target": index_label(windows.target_index[0]),
            "last_target": index_label(windows.target_index[-1]),
            "target": transform.target_column,
            "model": {
                "rmse": float(rmse(predicted, actual)),
                "mae": float(mae(predicted, actual)),
                "directional_accuracy": _share((predicted > last)[moved] == up),
            },
            "persistence": {"rmse": float(rmse(last, actual)), "mae": float(mae(last, actual))},
            # The direction a forecaster gets right by always saying "up".
            "always_up_directional_accuracy": _share(up),
        }
        # float32, as the model computes: a CSV then shows 616.05, not 616.0499877929688.
        frame = pd.DataFrame(
            {
                "date": windows.target_index,
                "actual": windows.target_values[:, 0].numpy(),
                "predicted": predicted[:, 0].float().numpy(),
                "persistence": windows.baseline[:, 0].numpy(),
            }
        )
        return results, frame

    def predict(
        self, model: nn.Module, transform: SeriesTransform, path: str | os.PathLike[str]
    ) -> pd.DataFrame:
        """A forecast for every window of the file, including those past its last row.

        Each row is one window: ``date`` is its last observed row, ``target_date``
        the row it forecasts (empty past the end of the file), ``predicted``
        the forecast in original units, ``actual`` the value where the file
        has it, ``persistence`` the last observed value.
        """
        source = os.fspath(path)
        columns = unique_names([*transform.feature_columns, transform.target_column])
        frame = read_csv_series(path, columns)
        lookback, horizon = transform.lookback, transform.horizon
        rows = len(frame)
        if rows < lookback:
            raise DataError(source, f"expected at least lookback = {lookback} rows, got {rows}")
        features = frame[list(transform.feature_columns)].to_numpy(
            np.float64, copy=True
        )  # (rows, features)
        target = frame[transform.target_column].to_numpy(np.float64, copy=True)  # (rows,)
        scaled = transform.feature_scaler.transform(features).astype(np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(scaled, lookback, axis=0)
        inputs = torch.from_numpy(np.ascontiguousarray(windows.transpose(0, 2, 1)))
        # inputs: (batch, window, features), one window ending at each row t >= lookback - 1
        last = torch.from_numpy(target[lookback - 1 :, None])  # (batch, 1), y[t]
        dataset = TensorDataset(inputs, torch.zeros(len(inputs), 1))
        outputs = _forward_all(model, dataset, None)  # (batch, 1), scaled
        predicted = transform.to_target_values(outputs, last.float()).double()
        ahead = np.arange(lookback - 1, rows) + horizon  # row t + horizon
        inside = ahead < rows
        target_dates = pd.Series(frame.index[np.minimum(ahead, rows - 1)]).where(inside)
        actual = np.where(inside, target[np.minimum(ahead, rows - 1)], np.nan)
        return pd.DataFrame(
            {
                "date": frame.index[lookback - 1 :],
                "target_date": target_dates.to_numpy(),
                "predicted": predicted[:, 0].float().numpy(),  # float32, as the model computes
                "actual": actual,
                "persistence": last[:, 0].numpy(),
            }
        )

    def report(self, results: dict[str, Any]) -> list[str]:
        model, persistence = results["model"], results["persistence"]
        target = results["target"]
        lines = [
            f"{_count(results['windows'], 'forecast')} of {target}, "
            f"{results['first_target']} .. {results['last_target']}, in original units:",
            f"  {'':<24}{'RMSE':>10}{'MAE':>10}{'direction':>11}",
            f"  {'model':<24}{figure(model['rmse']):>10}{figure(model['mae']):>10}"
            f"{_percent(model['directional_accuracy']):>11}",
            f"  {'persistence (y[t+1]=y[t])':<24}{figure(persistence['rmse']):>10}"
            f"{figure(persistence['mae']):>10}{'-':>11}",
            f"  {'always up':<24}{'-':>10}{'-':>10}"
            f"{_percent(results['always_up_directional_accuracy']):>11}",
        ]
        ratio = model["rmse"] / persistence["rmse"] if persistence["rmse"] else math.nan
        if model["rmse"] < persistence["rmse"]:
            verdict = f"the model beats persistence: RMSE {ratio:.3f} of the baseline's"
        else:
            verdict = f"persistence wins: the model's RMSE is {ratio:.3f} times the baseline's"
        lines.append(f"  {verdict}")
        return lines

    def validation_warning(self, results: dict[str, Any]) -> str | None:
        """A line when the model does not beat persistence on the validation windows."""
        model, persistence = results["model"]["rmse"], results["persistence"]["rmse"]
        if model < persistence:
            return None
        return (
            f"warning: the model does not beat persistence on validation (RMSE {figure(model)} "
            f"against {figure(persistence)}): trust its test figures less than persistence's"
        )


# ----------------------------------------------------------------------------- classify, tag


class _TextTask(Task):
    """Shared by classify and tag: files or a seeded split, vocabulary, labels."""

    def _read(self, path: str | os.PathLike[str], lowercase: bool) -> tuple[list, list]:
        """``(token lists, labels-or-tag-lists)`` of a file in the task's format."""
        raise NotImplementedError

    def _labels(self, gold: Sequence[Any]) -> list[Any]:
        """Every label (classify) or tag (tag) in `gold`, to fit the label encoder."""
        raise NotImplementedError

    def _encode_gold(self, labels: LabelEncoder, gold: Any, source: str) -> Any:
        raise NotImplementedError

    def _fit_baseline(self, words: list[list[str]], gold: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        words, gold = self._read_limited(data.path, data.lowercase, data.limit)
        parts = _split_examples(
            len(words), data.val_fraction if not data.val_path else 0.0,
            data.test_fraction if not data.test_path else 0.0, data.path,
        )  # fmt: skip
        train_idx, val_idx, test_idx = parts
        train_words = [words[i] for i in train_idx]
        train_gold = [gold[i] for i in train_idx]
        vocab = Vocabulary.build(
            train_words, min_freq=data.min_freq, max_size=data.max_vocab or None
        )
        labels = LabelEncoder.fit(self._labels(train_gold))
        chars = None
        if config.model.char_hidden_size:
            chars = Vocabulary.build([list(w) for sentence in train_words for w in sentence])
        transform = TextTransform(vocab, labels, data.lowercase, chars)
        if len(labels) < 2:
            raise DataError(
                data.path,
                f"expected at least two distinct labels in the training part, got {labels.classes}",
            )

        def make(idx: Sequence[int] | None, path: str, source: str) -> SequenceDataset | None:
            if path:
                part_words, part_gold = self._read_limited(path, transform.lowercase, data.limit)
                return self._dataset(transform, part_words, part_gold, path)
            if not idx:
                return None
            return self._dataset(transform, [words[i] for i in idx], [gold[i] for i in idx], source)

        train = self._dataset(transform, train_words, train_gold, data.path)
        val = make(val_idx, data.val_path, data.path)
        test = make(test_idx, data.test_path, data.path)
        model_config = config.model.to_model_config(self.name, **self.model_sizes(transform))
        description = [
            f"data: {data.path}: {_count(len(train), 'example')} train"
            + (f", {len(val):,} validation" if val is not None else ", no validation")
            + (f", {len(test):,} test" if test is not None else ", no test"),
            f"  vocabulary {len(vocab):,} entries (<pad>, <unk> included), "
            f"{len(labels)} {'labels' if self.name == 'classify' else 'tags'}"
            + ("" if chars is None else f", {len(chars) - 2} distinct characters"),
        ]
        return TaskData(
            train=train,
            val=val,
            test=test,
            collate_fn=self.collate_fn(transform),
            model_config=model_config,
            transform=transform,
            baseline=self._fit_baseline(train_words, train_gold),
            description=description,
        )

    def transform_from_dict(self, state: dict[str, Any]) -> TextTransform:
        return TextTransform.from_dict(state)

    def model_sizes(self, transform: TextTransform) -> dict[str, int]:
        if transform.labels is None:
            raise ValueError(f"a transform without labels cannot be of task {self.name!r}")
        sizes = {"vocab_size": len(transform.vocab), "num_outputs": len(transform.labels)}
        if transform.chars is not None:
            sizes["char_vocab_size"] = len(transform.chars)
        return sizes

    def dataset(
        self, config: RunConfig, transform: TextTransform, path: str | os.PathLike[str]
    ) -> SequenceDataset:
        words, gold = self._read(path, transform.lowercase)
        return self._dataset(transform, words, gold, os.fspath(path))

    def _read_limited(self, path: str, lowercase: bool, limit: int) -> tuple[list, list]:
        words, gold = self._read(path, lowercase)
        return (words[:limit], gold[:limit]) if limit else (words, gold)

    def _dataset(
        self, transform: TextTransform, words: list[list[str]], gold: list[Any], source: str
    ) -> SequenceDataset:
        items = [
            (transform.encode(w), self._encode_gold(transform.labels, g, source))
            for w, g in zip(words, gold, strict=True)
        ]
        return SequenceDataset(items, words, gold)


def _unknown_label(source: str, what: str, value: Any, known: Sequence[Any]) -> DataError:
    shown = ", ".join(repr(k) for k in known[:20]) + (", ..." if len(known) > 20 else "")
    return DataError(source, f"expected a {what} seen in training ({shown}), got {value!r}")


class ClassifyTask(_TextTask):
    """One label per text: ``label<TAB or space>text`` files."""

    name = "classify"

    def _read(self, path, lowercase):
        tokens, labels = read_label_text(path, lowercase=lowercase)
        return tokens, labels

    def _labels(self, gold):
        return gold

    def _encode_gold(self, labels, gold, source):
        try:
            return labels.encode([gold])[0]
        except ValueError:
            raise _unknown_label(source, "label", gold, labels.classes) from None

    def _fit_baseline(self, words, gold):
        return {"majority": majority_label(gold)}

    def collate_fn(self, transform):
        return collate_classification

    def score(self, model, dataset, transform, baseline):
        results, predicted = score_labels(model, dataset, transform.labels, baseline)
        frame = pd.DataFrame(
            {"text": [" ".join(w) for w in dataset.words], "label": dataset.gold,
             "predicted": predicted}
        )  # fmt: skip
        return results, frame

    def predict(self, model, transform, path):
        texts = _lines(path)
        words = [transform.words(tokenize(text)) for text in texts]
        predicted, probability = predict_labels(model, [transform.encode(w) for w in words],
                                                transform.labels)  # fmt: skip
        return pd.DataFrame({"text": texts, "predicted": predicted, "probability": probability})

    def report(self, results):
        return report_labels(results, _count(results["examples"], "example"))


class TagTask(_TextTask):
    """A tag per word: the UPOS column of CoNLL-U files."""

    name = "tag"

    def check_baseline(self, transform: TextTransform, baseline: dict[str, Any]) -> None:
        if not isinstance(baseline.get("word_tags", {}), dict):
            raise ValueError("word_tags is not a JSON object of word -> tag")

    def _read(self, path, lowercase):
        sentences = read_conllu(path)
        words = [[form.lower() if lowercase else form for form, _ in s] for s in sentences]
        tags = [[tag for _, tag in s] for s in sentences]
        return words, tags

    def _labels(self, gold):
        return [tag for tags in gold for tag in tags]

    def _encode_gold(self, labels, gold, source):
        try:
            return labels.encode(gold)
        except ValueError:
            unknown = next(tag for tag in gold if tag not in labels.classes)
            raise _unknown_label(source, "tag", unknown, labels.classes) from None

    def _fit_baseline(self, words, gold):
        counts: dict[str, Counter[str]] = {}
        overall: Counter[str] = Counter()
        for sentence, tags in zip(words, gold, strict=True):
            for word, tag in zip(sentence, tags, strict=True):
                counts.setdefault(word, Counter())[tag] += 1
                overall[tag] += 1
        return {
            "default": overall.most_common(1)[0][0],
            "word_tags": {word: c.most_common(1)[0][0] for word, c in counts.items()},
        }

    def collate_fn(self, transform):
        return collate_tagging

    def score(self, model, dataset, transform, baseline):
        correct = total = 0
        predicted_tags: list[list[Any]] = []
        collate = self.collate_fn(transform)
        for batch, outputs in _batches(model, dataset, collate):
            predicted = outputs.argmax(dim=-1)  # (batch, max_len)
            scored = batch.targets != -100
            correct += int(((predicted == batch.targets) & scored).sum())
            total += int(scored.sum())
            for row, length in zip(predicted, batch.lengths.tolist(), strict=True):
                predicted_tags.append(transform.labels.decode(row[:length]))
        word_tags, default = baseline.get("word_tags", {}), baseline.get("default")
        baseline_correct = sum(
            word_tags.get(word, default) == tag
            for words, tags in zip(dataset.words, dataset.gold, strict=True)
            for word, tag in zip(words, tags, strict=True)
        )
        results = {
            "sentences": len(dataset),
            "words": total,
            "model": {"accuracy": correct / total if total else math.nan},
            "most_frequent_tag": {"accuracy": baseline_correct / total if total else math.nan},
        }
        rows = [
            (i + 1, j + 1, word, tag, guess)
            for i, (words, tags, guesses) in enumerate(
                zip(dataset.words, dataset.gold, predicted_tags, strict=True)
            )
            for j, (word, tag, guess) in enumerate(zip(words, tags, guesses, strict=True))
        ]
        frame = pd.DataFrame(rows, columns=["sentence", "position", "word", "tag", "predicted"])
        return results, frame

    def predict(self, model, transform, path):
        sentences = [tokenize(text) for text in _lines(path)]
        dataset = [(transform.encode(transform.words(s)), [0] * len(s)) for s in sentences]
        tags: list[list[Any]] = []
        for batch, outputs in _batches(model, dataset, self.collate_fn(transform)):
            predicted = outputs.argmax(dim=-1)  # (batch, max_len)
            tags += [
                transform.labels.decode(row[:length])
                for row, length in zip(predicted, batch.lengths.tolist(), strict=True)
            ]
        records = [
            (i + 1, j + 1, word, tag)
            for i, (words, guesses) in enumerate(zip(sentences, tags, strict=True))
            for j, (word, tag) in enumerate(zip(words, guesses, strict=True))
        ]
        return pd.DataFrame(records, columns=["sentence", "position", "word", "predicted"])

    def report(self, results):
        return [
            f"{_count(results['sentences'], 'sentence')}, {results['words']:,} words:",
            f"  accuracy {_percent(results['model']['accuracy'])} (each word's most frequent "
            f"training tag: {_percent(results['most_frequent_tag']['accuracy'])})",
        ]


# ----------------------------------------------------------------------------- language model


class LanguageModelTask(Task):
    """The next character of plain text; generates text one character at a time."""

    name = "language-model"

    def check_baseline(self, transform: TextTransform, baseline: dict[str, Any]) -> None:
        probs = baseline.get("unigram_log_probs")
        if not isinstance(probs, list) or len(probs) != len(transform.vocab):
            raise ValueError(
                f"unigram_log_probs is not a list of {len(transform.vocab)} numbers, one per "
                "vocabulary entry"
            )
        if not all(p is None or is_real(p) for p in probs):
            raise ValueError("unigram_log_probs holds something other than numbers")

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        text = read_text(data.path)[: data.limit or None]
        n = len(text)
        test_chars, val_chars = _held_out_sizes(
            n, 0.0 if data.val_path else data.val_fraction,
            0.0 if data.test_path else data.test_fraction, data.path, "characters",
        )  # fmt: skip
        train_text = text[: n - test_chars - val_chars]
        val_text = text[n - test_chars - val_chars : n - test_chars]
        test_text = text[n - test_chars :]
        vocab = Vocabulary.build([train_text])
        transform = TextTransform(vocab, None)
        lookback = _text_lookback(data.lookback)
        train = self._chunks(vocab, train_text, lookback, data.path, "training part")

        def held_out(part: str, path: str, what: str) -> TensorDataset | None:
            if path:
                part_text = read_text(path)[: data.limit or None]
                return self._chunks(vocab, part_text, lookback, path, "file")
            if not part:
                return None
            return self._chunks(vocab, part, lookback, data.path, what)

        val = held_out(val_text, data.val_path, "validation part")
        test = held_out(test_text, data.test_path, "test part")
        model_config = config.model.to_model_config(self.name, **self.model_sizes(transform))
        counts = Counter(train_text)
        total = len(train_text) + len(vocab) - 2  # add-one smoothing over the real characters
        unigram = [
            math.log((counts.get(token, 0) + 1) / total) if i >= 2 else None
            for i, token in enumerate(vocab.tokens)
        ]
        description = [
            f"data: {data.path}: {len(train_text):,} characters train, {len(val_text):,} "
            f"validation, {len(test_text):,} test; {len(vocab) - 2} distinct characters",
            f"  chunks of {lookback} characters: {len(train):,} train",
        ]
        return TaskData(
            train=train,
            val=val,
            test=test,
            collate_fn=None,
            model_config=model_config,
            transform=transform,
            baseline={"unigram_log_probs": unigram},
            description=description,
            derived={"data.lookback": lookback} if data.lookback == "auto" else {},
        )

    def transform_from_dict(self, state: dict[str, Any]) -> TextTransform:
        return TextTransform.from_dict(state)

    def model_sizes(self, transform: TextTransform) -> dict[str, int]:
        if transform.labels is not None or transform.chars is not None:
            raise ValueError("a language model's transform has no labels and no characters")
        return {"vocab_size": len(transform.vocab), "num_outputs": len(transform.vocab)}

    def dataset(self, config, transform, path):
        return self._chunks(
            transform.vocab,
            read_text(path),
            _text_lookback(config.data.lookback),
            os.fspath(path),
            "file",
        )

    @staticmethod
    def _chunks(vocab: Vocabulary, text: str, length: int, source: str, what: str):
        if len(text) < length + 1:
            raise DataError(
                source,
                f"expected more than data.lookback = {length} characters in the {what}, "
                f"got {len(text)}",
            )
        inputs, targets = chunk(vocab.encode(text), length)  # (batch, length) each
        return TensorDataset(inputs, targets)

    def score(self, model, dataset, transform, baseline):
        loss_sum = correct = count = 0.0
        unigram = torch.tensor(
            [math.nan if p is None else p for p in baseline["unigram_log_probs"]],
            dtype=torch.float64,
        )
        baseline_sum = 0.0
        for (_, targets), logits in _batches(model, dataset, None):
            flat = targets.reshape(-1)
            loss_sum += float(
                nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)).double(), flat, reduction="sum"
                )
            )
            correct += int((logits.argmax(dim=-1) == targets).sum())
            count += flat.numel()
            # <unk> (an unseen character) has no unigram probability: score it as the rarest.
            log_probs = unigram[flat]
            baseline_sum -= float(torch.nan_to_num(log_probs, nan=float(unigram[2:].min())).sum())
        loss = loss_sum / count
        results = {
            "characters": int(count),
            "model": {
                "loss": loss,
                "perplexity": math.exp(loss),
                "accuracy": correct / count,
            },
            "unigram": {"loss": baseline_sum / count, "perplexity": math.exp(baseline_sum / count)},
        }
        return results, None

    def predict(self, model, transform, path):
        raise ValueError(
            "task 'language-model' predicts no file: rnnkit generate RUN_DIR writes text"
        )

    def report(self, results):
        model, unigram = results["model"], results["unigram"]
        return [
            f"{results['characters']:,} characters:",
            f"  loss {model['loss']:.3f} nats/char, perplexity {model['perplexity']:.2f}, "
            f"next-character accuracy {_percent(model['accuracy'])}",
            f"  (character frequencies alone: loss {unigram['loss']:.3f}, "
            f"perplexity {unigram['perplexity']:.2f})",
        ]

    def encode_prompt(self, transform: TextTransform, prompt: str) -> list[int]:
        """Character ids of `prompt`; characters never seen in training are refused.

        Raises:
            ValueError: `prompt` is empty or holds unseen characters.
        """
        if not prompt:
            raise ValueError("Received an invalid value for --prompt, expected text, got ''")
        unseen = sorted({c for c in prompt if c not in transform.vocab})
        if unseen:
            raise ValueError(
                f"Received an invalid value for --prompt, expected characters of the training "
                f"text, got unseen {''.join(unseen)!r}"
            )
        return transform.vocab.encode(prompt)

    def default_prompt(self, transform: TextTransform) -> str:
        """A newline if the text has one (the start of a paragraph), else its commonest char."""
        return "\n" if "\n" in transform.vocab else transform.vocab.tokens[2]


# ----------------------------------------------------------------------------- running models


# What an input of (batch, window, *step) holds, by (len(step), floating point).
_STEP_MEANINGS = {
    (0, False): "(batch, max_len) token ids",
    (1, False): "(batch, max_len, 1 + chars) word ids, then their characters",
    (1, True): "(batch, window, features)",
}


def _text_lookback(lookback: int | str) -> int:
    """Characters per language-model chunk: "auto" is the forecast's default of 100."""
    return DEFAULT_LOOKBACK if lookback == "auto" else lookback


def shape_trace(model: nn.Module, batch: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """Run one real batch through ``model.encoder`` and ``model.head``, recording the shapes.

    Args:
        model: A toolkit model (an ``encoder`` and a ``head``).
        batch: A collated batch ``(*inputs, target)``.

    Returns:
        ``(what, shape, meaning)`` rows: the input, the recurrent layer's output
        and ``h_n`` (and an LSTM's ``c_n``), the head's output.

    Example:
        >>> trace = shape_trace(model, (torch.randn(30, 100, 4), torch.randn(30, 1)))
        >>> [shape for _, shape, _ in trace]
        [(30, 100, 4), (30, 100, 64), (1, 30, 64), (30, 1)]
    """
    inputs = tuple(batch[:-1])
    x = inputs[0]
    if isinstance(x, PackedSequence):
        lengths = inputs[1] if len(inputs) > 1 else None
        step = tuple(x.data.shape[1:])  # () token ids, (features,) or (1 + chars,) per step
        shown = (len(lengths), int(lengths.max()), *step) if lengths is not None else x.data.shape
        meaning = _STEP_MEANINGS[(len(step), x.data.dtype.is_floating_point)]
        input_row = ("input", tuple(shown), f"{meaning}, packed: no step of padding")
    else:
        meaning = _STEP_MEANINGS[(x.dim() - 2, x.dtype.is_floating_point)]
        input_row = ("input", tuple(x.shape), meaning)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            encoded = model.encoder(*to_device(inputs, device))
            output = model.head(encoded)
    finally:
        model.train(was_training)
    out_meaning = (
        "(batch, outputs)" if output.dim() == 2 else "(batch, window, outputs)"
    )  # many-to-one or one per step
    layer = type(model.encoder.rnn).__name__  # RNN, LSTM or GRU
    state = "(directions * layers, batch, hidden)"
    states = [(f"{layer} h_n", tuple(encoded.h_n.shape), state)]
    if encoded.c_n is not None:  # an LSTM's
        states.append((f"{layer} c_n", tuple(encoded.c_n.shape), f"{state}: the cell state"))
    return [
        input_row,
        (f"{layer} output", tuple(encoded.output.shape), "(batch, window, directions * hidden)"),
        *states,
        ("head output", tuple(output.shape), out_meaning),
    ]


def first_batch(dataset: Dataset, collate_fn: Callable | None, batch_size: int) -> Any:
    """The first `batch_size` examples of `dataset`, collated."""
    items = [dataset[i] for i in range(min(batch_size, len(dataset)))]
    return (collate_fn or default_collate)(items)


def _batches(model: nn.Module, dataset: Any, collate_fn: Callable | None):
    """Yield ``(batch, outputs)`` for `dataset` in order, in eval mode, outputs on the CPU."""
    collate = collate_fn or default_collate
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), EVAL_BATCH_SIZE):
                stop = min(start + EVAL_BATCH_SIZE, len(dataset))
                batch = collate([dataset[i] for i in range(start, stop)])
                inputs = to_device(tuple(batch[:-1]), device)
                yield batch, model(*inputs).cpu()
    finally:
        model.train(was_training)


def _forward_all(model: nn.Module, dataset: Any, collate_fn: Callable | None) -> Tensor:
    """Outputs of every example, concatenated: ``(examples, outputs)``."""
    return torch.cat([outputs for _, outputs in _batches(model, dataset, collate_fn)])


# ----------------------------------------------------------------------------- small helpers


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


def read_transform(task: Task, document: dict[str, Any], source: Path) -> tuple[Any, dict]:
    """The fitted transform and baseline statistics from a ``transform.json`` document."""
    if document.get("format") != TRANSFORM_FORMAT or document.get("task") != task.name:
        raise ValueError(
            f"{source}: expected an {TRANSFORM_FORMAT} file of task {task.name!r}, got "
            f"format {document.get('format')!r}, task {document.get('task')!r}"
        )
    try:
        state = document["transform"]
        if not isinstance(state, dict):
            raise TypeError(f"expected a JSON object, got {type(state).__name__}")
        transform = task.transform_from_dict(state)
        task.model_sizes(transform)  # a transform of another task has no sizes for this one
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{source}: malformed transform ({error})") from None
    baseline = document.get("baseline", {})
    try:
        if not isinstance(baseline, dict):
            raise ValueError(f"expected a JSON object, got {type(baseline).__name__}")
        task.check_baseline(transform, baseline)
    except ValueError as error:
        raise ValueError(f"{source}: malformed baseline ({error})") from None
    return transform, baseline


def check_model_fits(task: Task, transform: Any, model_config: Any, source: Path) -> None:
    """Refuse a model whose sizes are not the ones the run's transform decides.

    Args:
        task: The run's task.
        transform: Its fitted transform, read from `source` by :func:`read_transform`.
        model_config: The loaded model's :class:`~rnnkit.toolkit.models.ModelConfig`.
        source: ``transform.json``, for the message.

    Raises:
        CheckpointError: One line naming `source`, the field and both values
            (e.g. a vocabulary of 12 entries for a model of ``vocab_size`` 11).
    """
    from rnnkit.toolkit.model_loading import check_fields_match

    implied = {"task": _model_task(task.name), **task.model_sizes(transform)}
    check_fields_match(implied, model_config, "the fitted transform", source)
