"""The task protocol and what the tasks share: :class:`Task`, :class:`TaskData`,
:class:`TextTransform`, :class:`SequenceDataset` and the ``transform.json`` document.

Each run task subclasses :class:`Task` in a module of its own (the table in
:mod:`rnnkit.toolkit.tasks`). :meth:`TaskData.transform_document` writes what was
fitted on the training data into ``transform.json``; :func:`read_transform` reads it
back for ``evaluate`` and ``predict``, and :func:`check_model_fits` refuses a model
whose sizes are not the ones that transform decides.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.data import LabelEncoder, Vocabulary
from rnnkit.toolkit.metrics import loss_for_task, metrics_for_task
from rnnkit.toolkit.word_embedding import MAX_WORD_CHARS, spell

TRANSFORM_FORMAT = "rnnkit-transform"
TRANSFORM_VERSION = 1

__all__ = [
    "TRANSFORM_FORMAT",
    "TRANSFORM_VERSION",
    "SequenceDataset",
    "Task",
    "TaskData",
    "TextTransform",
    "check_model_fits",
    "read_transform",
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

    def loss_fn(self, label_smoothing: float = 0.0) -> Callable[[Any, Any], Tensor]:
        return loss_for_task(_model_task(self.name), label_smoothing)

    def metrics(self) -> tuple[Any, ...]:
        return metrics_for_task(_model_task(self.name))


def _model_task(task: str) -> str:
    from rnnkit.toolkit.config import MODEL_TASKS

    return MODEL_TASKS[task]


# ----------------------------------------------------------------------------- transform.json


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
