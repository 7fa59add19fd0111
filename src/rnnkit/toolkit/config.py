"""Run configuration: TOML files and ``--set section.key=value`` overrides, to frozen dataclasses.

A configuration file has a top-level ``task`` and three sections::

    task = "forecast"            # "forecast", "classify", "tag" or "language-model"

    [data]                       # DataConfig: files, columns, windows, splits
    path = ""                    # "" = the bundled GOOG.csv
    features = ["Open", "High", "Low", "Close"]

    [model]                      # ModelSection -> models.ModelConfig
    hidden_size = 64

    [train]                      # TrainSection -> trainer.TrainConfig
    epochs = 12

Every key is optional; a missing key keeps its default, so an empty file (or
no file) is the main job: next-day close of the bundled Google prices from 100
days of Open/High/Low/Close. ``configs/goog_forecast.toml`` spells the
defaults out.

TOML has no ``None``, so settings that can be switched off use a value that
means "off", documented beside the field: ``grad_clip = 0``,
``early_stopping_patience = 0``, ``monitor = ""``, ``embedding_dim = 0``.

Relative paths in ``[data]`` are relative to the current directory; a run
stores them resolved (:meth:`RunConfig.resolve_paths`).

Errors are :class:`ConfigError`, one line naming the file (or ``--set``), the
key, what was expected and what was received::

    run.toml: invalid value for key `train.lr`, expected a positive number, got 0
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from rnnkit.recurrent import PROBABILITY_OPTIONS
from rnnkit.toolkit.arguments import is_int, is_real
from rnnkit.toolkit.cells import CELLS
from rnnkit.toolkit.data.series_archive import is_aeon_source
from rnnkit.toolkit.data.timeseries import TARGET_TRANSFORMS
from rnnkit.toolkit.models import ATTENTIONS, MANY_TO_ONE_TASKS, NONLINEARITIES, POOLINGS
from rnnkit.toolkit.trainer import LR_SCHEDULES, OPTIMIZERS

TASKS = ("forecast", "classify", "classify-series", "tag", "language-model", "translate")
# The ModelConfig task each run task trains.
MODEL_TASKS = {
    "forecast": "regression",
    "classify": "classification",
    "classify-series": "classification",
    "tag": "tagging",
    "language-model": "language_model",
    "translate": "translation",
}
# Metric names each task's trainer logs (besides "loss"), for checking train.monitor.
TASK_METRICS = {
    "forecast": ("rmse", "mae"),
    "classify": ("accuracy",),
    "classify-series": ("accuracy",),
    "tag": ("accuracy",),
    "language-model": ("accuracy", "perplexity"),
    "translate": ("accuracy",),
}
SECTIONS = ("data", "model", "train")
SET_SOURCE = "--set"  # how errors name values given on the command line

__all__ = [
    "TASKS",
    "ConfigError",
    "DataConfig",
    "ModelSection",
    "RunConfig",
    "TrainSection",
    "dumps_toml",
    "load_config",
    "parse_override",
]


class ConfigError(ValueError):
    """A configuration value, key or file is invalid.

    Args:
        message: What was expected and what was received.
        key: The dotted key at fault (``"train.lr"``), if there is one.
        source: The file or ``"--set"`` the value came from, if known; it
            prefixes the message.

    Attributes:
        key, source, detail: As given (``detail`` is `message`).
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.key = key
        self.source = source
        self.detail = message
        text = f"{source}: {message}" if source else message
        super().__init__(text.replace("\n", "\\n"))  # one line, always


def _invalid(key: str, expected: str, got: object) -> ConfigError:
    return ConfigError(f"invalid value for key `{key}`, expected {expected}, got {got!r}", key=key)


def _check_int(key: str, value: object, minimum: int, note: str = "") -> None:
    if not is_int(value) or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise _invalid(key, what + note, value)


def _check_real(
    key: str, value: object, low: float, high: float, what: str, *, high_open: bool = False
) -> None:
    # low / high are inclusive bounds (high exclusive with `high_open`); `what` says them in
    # words for the message.
    if not is_real(value) or not low <= value <= high or (high_open and value == high):
        raise _invalid(key, what, value)


def _check_str(key: str, value: object) -> None:
    if not isinstance(value, str):
        raise _invalid(key, "a string", value)


def _check_choice(key: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise _invalid(key, "one of " + ", ".join(repr(c) for c in choices), value)


def _check_bool(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _invalid(key, "true or false", value)


def _as_float(section: Any, name: str) -> None:
    # TOML writes 1 for 1.0; store floats as floats so equal configs compare equal.
    value = getattr(section, name)
    if is_real(value):
        object.__setattr__(section, name, float(value))


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: where the examples come from and how they are cut and split.

    Example:
        >>> DataConfig(lookback=30).features
        ('Open', 'High', 'Low', 'Close')
    """

    # Training data: a CSV with a date column first (forecast), `label text` lines (classify),
    # a .ts file or "aeon:NAME:train" (classify-series), CoNLL-U (tag) or plain text
    # (language-model). "" means the bundled GOOG.csv (forecast).
    path: str = ""
    # Validation file in the same format (classify, tag, language-model); "" holds out
    # val_fraction of `path` instead.
    val_path: str = ""
    # Test file in the same format (classify, tag, language-model); "" holds out
    # test_fraction of `path` instead.
    test_path: str = ""
    # Share held out for validation: the windows after the training ones (forecast), a seeded
    # random share of the examples (classify, tag) or the text before the test tail.
    val_fraction: float = 0.15
    # Share held out for testing: the last windows (forecast), a seeded random share of the
    # examples (classify, tag) or the tail of the text (language-model).
    test_fraction: float = 0.15
    # Forecast: the input columns, in the order of the features axis.
    features: tuple[str, ...] = ("Open", "High", "Low", "Close")
    # Forecast: the column predicted.
    target: str = "Close"
    # Forecast: rows per input window; "auto" takes 100, shortened on short series so that
    # the splits keep enough windows (rnnkit.toolkit.forecast_defaults). Language-model:
    # characters per training chunk; "auto" is 100. The run's config records the number used.
    lookback: int | str = "auto"
    # Forecast: the target is this many rows after the window's last row.
    horizon: int = 1
    # Forecast: "log_return" predicts log(y[t + horizon] / y[t]) (turned back into a price
    # for scoring), "none" the value itself. On GOOG's validation windows log-returns beat
    # persistence in RMSE and MAE for three seeds out of three; values lost in MAE.
    target_transform: str = "log_return"
    # Classify, tag: lowercase the words before looking them up.
    lowercase: bool = False
    # Classify, tag: keep words seen at least this often in training; the rest are <unk>.
    min_freq: int = 1
    # Classify, tag: most entries of the vocabulary (with <pad> and <unk>); 0 means no limit.
    # Translate: subwords per language; 0 chooses half the training side's distinct words,
    # within [100, 8000], with room for every distinct character.
    max_vocab: int = 0
    # Translate: the target-side files, line k translating line k of path, val_path and
    # test_path (plain or gzip). "" beside `path`: `path` is one tab-separated file of pairs.
    target_path: str = ""
    val_target_path: str = ""
    test_target_path: str = ""
    # Translate, a tab-separated `path`: the (source, target) column numbers, from 0.
    columns: tuple[int, ...] = (0, 1)
    # Keep only the first `limit` examples of each file (characters for language-model; not
    # for forecast), for quick smoke runs; 0 means everything.
    limit: int = 0

    def __post_init__(self) -> None:
        for name in ("path", "val_path", "test_path", "target", "target_transform", "target_path",
                     "val_target_path", "test_target_path"):  # fmt: skip
            _check_str(f"data.{name}", getattr(self, name))
        for name in ("val_fraction", "test_fraction"):
            _check_real(
                f"data.{name}", getattr(self, name), 0.0, 1.0, "a number in [0, 1)", high_open=True
            )
            _as_float(self, name)
        if self.val_fraction + self.test_fraction >= 1:
            raise _invalid(
                "data.test_fraction",
                f"a share that leaves training data next to val_fraction={self.val_fraction} "
                "(a sum below 1)",
                self.test_fraction,
            )
        features = self.features
        if (
            isinstance(features, str)
            or not isinstance(features, Sequence)
            or not features
            or not all(isinstance(name, str) and name for name in features)
        ):
            raise _invalid("data.features", "a non-empty list of column names", features)
        object.__setattr__(self, "features", tuple(features))
        if len(set(self.features)) != len(self.features):
            raise _invalid("data.features", "distinct column names", list(self.features))
        if not self.target:
            raise _invalid("data.target", "a column name", self.target)
        if self.lookback != "auto":
            _check_int("data.lookback", self.lookback, 1, ' or "auto"')
        _check_int("data.horizon", self.horizon, 1)
        _check_choice("data.target_transform", self.target_transform, TARGET_TRANSFORMS)
        _check_bool("data.lowercase", self.lowercase)
        _check_int("data.min_freq", self.min_freq, 1)
        if not is_int(self.max_vocab) or self.max_vocab == 1 or self.max_vocab < 0:
            raise _invalid(
                "data.max_vocab", "0 (no limit) or an integer >= 2 (<pad> and <unk>)",
                self.max_vocab,
            )  # fmt: skip
        _check_int("data.limit", self.limit, 0, " (0 means no limit)")
        columns = self.columns
        if (
            isinstance(columns, str)
            or not isinstance(columns, Sequence)
            or len(columns) != 2
            or not all(is_int(c) and c >= 0 for c in columns)
            or columns[0] == columns[1]
        ):
            raise _invalid(
                "data.columns", "two distinct column numbers [source, target], from 0", columns
            )
        object.__setattr__(self, "columns", tuple(columns))


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: the encoder and its head, for :class:`~rnnkit.toolkit.models.ModelConfig`.

    The input and output sizes come from the data (features, vocabulary,
    classes), so they are not set here.
    """

    # Features of each recurrent layer's hidden state.
    hidden_size: int = 64
    # Stacked recurrent layers.
    num_layers: int = 1
    # The recurrent layer: "rnn" (Elman, rnnkit.RNN), "lstm" (rnnkit.LSTM) or "gru" (rnnkit.GRU).
    cell: str = "rnn"
    # "tanh" or "relu", as in torch.nn.RNN; the "rnn" cell's only (lstm and gru take "tanh").
    nonlinearity: str = "tanh"
    # Also read every sequence backwards (not for language-model: it must not see the future).
    bidirectional: bool = False
    # Dropout probability between recurrent layers in training (needs num_layers > 1).
    dropout: float = 0.0
    # DropConnect on the recurrent weights in training, one mask per forward call
    # (AWD-LSTM's weight drop; rnnkit's weight_drop option); 0 is off.
    weight_drop: float = 0.0
    # Variational dropout on the state the recurrent product reads, one mask per sequence
    # and layer (rnnkit's recurrent_dropout option); 0 is off.
    recurrent_dropout: float = 0.0
    # Zoneout: in training each state unit keeps its previous value with this probability
    # (rnnkit's zoneout option); 0 is off.
    zoneout: float = 0.0
    # Layer normalisation of each gate's recurrent product (rnnkit's layer_norm option).
    layer_norm: bool = False
    # Width of the word or character embedding (classify, tag, language-model); 0 means
    # hidden_size.
    embedding_dim: int = 0
    # Classify and forecast: how a sequence is summarised for the head: "last" state, "mean"
    # or "max" of the outputs over the steps.
    pooling: str = "last"
    # Dropout probability, in training, on the RNN's input (embedded tokens or features) and
    # on the features the linear head reads.
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    # Classify, tag: hidden features per direction of a bidirectional character RNN that
    # reads each word's spelling, next to its word embedding; 0 means word ids alone.
    char_hidden_size: int = 0
    # Width of the character embedding; 0 means char_hidden_size.
    char_embedding_dim: int = 0
    # Classify, classify-series, forecast: this many models of this architecture, trained one
    # after another (the first with train.seed, each other with a seed derived from it) and
    # their outputs averaged (rnnkit.toolkit.ensemble); 1 is a single model.
    ensemble_size: int = 1
    # Translate: how the decoder scores source steps, "multiplicative" (Luong; the decoder
    # then runs over a whole target in one call in training) or "additive" (Bahdanau).
    attention: str = "multiplicative"
    # Translate: the output layer shares the target embedding's weights.
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        _check_int("model.hidden_size", self.hidden_size, 1)
        _check_int("model.num_layers", self.num_layers, 1)
        _check_choice("model.cell", self.cell, tuple(CELLS))
        _check_choice("model.nonlinearity", self.nonlinearity, NONLINEARITIES)
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise _invalid(
                "model.nonlinearity",
                f"\"tanh\" with model.cell = {self.cell!r} (only the 'rnn' cell has a choice)",
                self.nonlinearity,
            )
        _check_bool("model.bidirectional", self.bidirectional)
        _check_real("model.dropout", self.dropout, 0.0, 1.0, "a number in [0, 1]")
        _as_float(self, "dropout")
        for name in PROBABILITY_OPTIONS:
            _check_real(f"model.{name}", getattr(self, name), 0.0, 1.0, "a number in [0, 1)",
                        high_open=True)  # fmt: skip
            _as_float(self, name)
        _check_bool("model.layer_norm", self.layer_norm)
        _check_int("model.embedding_dim", self.embedding_dim, 0, " (0 means hidden_size)")
        _check_choice("model.pooling", self.pooling, POOLINGS)
        for name in ("input_dropout", "output_dropout"):
            _check_real(f"model.{name}", getattr(self, name), 0.0, 1.0, "a number in [0, 1)",
                        high_open=True)  # fmt: skip
            _as_float(self, name)
        _check_int("model.char_hidden_size", self.char_hidden_size, 0, " (0 means none)")
        _check_int(
            "model.char_embedding_dim", self.char_embedding_dim, 0, " (0 means char_hidden_size)"
        )
        _check_int("model.ensemble_size", self.ensemble_size, 1)
        _check_choice("model.attention", self.attention, ATTENTIONS)
        _check_bool("model.tie_embeddings", self.tie_embeddings)

    def to_model_config(self, task: str, **sizes: int) -> Any:
        """The :class:`~rnnkit.toolkit.models.ModelConfig` of this section for a run task.

        Args:
            task: A run task, e.g. ``"forecast"``.
            sizes: What the data decide: ``input_size`` or ``vocab_size``, and
                ``num_outputs``; ``char_vocab_size`` with a character RNN.
        """
        from rnnkit.toolkit.models import ModelConfig

        values = dataclasses.asdict(self)
        for name in ("attention", "tie_embeddings"):  # the translation model's alone
            if task != "translate":
                values.pop(name)
        embedding_dim = values.pop("embedding_dim") or None
        char_hidden_size = values.pop("char_hidden_size") or None
        char_embedding_dim = values.pop("char_embedding_dim") or None
        if "vocab_size" in sizes:
            values["embedding_dim"] = embedding_dim
        if "char_vocab_size" in sizes:
            values["char_hidden_size"] = char_hidden_size
            values["char_embedding_dim"] = char_embedding_dim
        return ModelConfig(task=MODEL_TASKS[task], **values, **sizes)


@dataclass(frozen=True)
class TrainSection:
    """``[train]``: the optimisation (see :class:`~rnnkit.toolkit.trainer.TrainConfig`)."""

    # Passes over the training set. The default trains the main job in about a minute on
    # two CPU cores (about 0.25 s an epoch); the epoch with the best validation loss is kept.
    epochs: int = 200
    # Sequences per optimizer step.
    batch_size: int = 30
    # Learning rate (the starting value of "cosine").
    lr: float = 1e-3
    # Weight decay: decoupled for "adamw", an L2 term for "adam" and "sgd".
    weight_decay: float = 0.0
    # "adamw", "adam" or "sgd".
    optimizer: str = "adamw"
    # Momentum of "sgd".
    momentum: float = 0.9
    # "constant", "cosine" (lr to min_lr over the epochs) or "plateau" (multiply by
    # plateau_factor after plateau_patience epochs without improvement of monitor).
    lr_schedule: str = "constant"
    # Final learning rate of "cosine".
    min_lr: float = 0.0
    # Factor applied to the learning rate by "plateau", in (0, 1).
    plateau_factor: float = 0.5
    # Epochs without improvement before "plateau" lowers the learning rate.
    plateau_patience: int = 2
    # Cross-entropy tasks: the target is 1 - label_smoothing on the true class, the rest
    # spread evenly over the others (0 is none; translate's configs take 0.1).
    label_smoothing: float = 0.0
    # Clip the gradient's global L2 norm to this before each step; 0 turns clipping off.
    grad_clip: float = 1.0
    # Stop after this many epochs without improvement of monitor; 0 trains every epoch.
    early_stopping_patience: int = 0
    # Smallest change of monitor that counts as an improvement.
    early_stopping_min_delta: float = 0.0
    # History key watched by early stopping, "plateau" and restore_best, e.g. "val_accuracy";
    # "" means "val_loss".
    monitor: str = ""
    # At the end, keep the weights of the epoch with the best monitor value (on validation).
    restore_best: bool = True
    # Seed of the weights' initialisation and every random draw in training.
    seed: int = 0
    # Reshuffle the training set every epoch.
    shuffle: bool = True
    # "auto" (a GPU if there is one), "cpu", "cuda", "cuda:N" or "mps".
    device: str = "auto"
    # Write a checkpoint every this many epochs (and at the end); 0 only at the end.
    checkpoint_every: int = 1
    # How many of the latest checkpoints to keep.
    keep_checkpoints: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "plateau_patience", "keep_checkpoints"):
            _check_int(f"train.{name}", getattr(self, name), 1)
        for name in ("seed", "checkpoint_every"):
            _check_int(f"train.{name}", getattr(self, name), 0)
        _check_int("train.early_stopping_patience", self.early_stopping_patience, 0, " (0 is off)")
        if not is_real(self.lr) or self.lr <= 0:
            raise _invalid("train.lr", "a positive number", self.lr)
        for name in ("weight_decay", "min_lr", "early_stopping_min_delta"):
            value = getattr(self, name)
            if not is_real(value) or value < 0:
                raise _invalid(f"train.{name}", "a non-negative number", value)
        if not is_real(self.grad_clip) or self.grad_clip < 0:
            raise _invalid("train.grad_clip", "a positive number, or 0 for no clipping",
                           self.grad_clip)  # fmt: skip
        _check_real("train.label_smoothing", self.label_smoothing, 0.0, 1.0, "a number in [0, 1)",
                    high_open=True)  # fmt: skip
        if not is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise _invalid("train.momentum", "a number in [0, 1)", self.momentum)
        if not is_real(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise _invalid("train.plateau_factor", "a number in (0, 1)", self.plateau_factor)
        for name in ("lr", "weight_decay", "momentum", "min_lr", "plateau_factor", "grad_clip",
                     "early_stopping_min_delta", "label_smoothing"):  # fmt: skip
            _as_float(self, name)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_str("train.monitor", self.monitor)
        for name in ("restore_best", "shuffle"):
            _check_bool(f"train.{name}", getattr(self, name))
        _check_str("train.device", self.device)
        from rnnkit.toolkit.devices import parses_as_device  # imports torch: only when checked

        if not parses_as_device(self.device):
            raise _invalid("train.device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", self.device)

    def to_train_config(self, **extra: Any) -> Any:
        """The :class:`~rnnkit.toolkit.trainer.TrainConfig` of this section.

        Args:
            extra: TrainConfig fields not set from a file, e.g. ``progress``.
        """
        from rnnkit.toolkit.trainer import TrainConfig

        values = dataclasses.asdict(self)
        values.pop("label_smoothing")  # the task's loss takes it, not the trainer
        values["grad_clip"] = self.grad_clip or None
        values["early_stopping_patience"] = self.early_stopping_patience or None
        values["monitor"] = self.monitor or None
        return TrainConfig(**values, **extra)


@dataclass(frozen=True)
class RunConfig:
    """A whole run: the task and its ``[data]``, ``[model]`` and ``[train]`` sections.

    ``RunConfig()`` is the main job. Checks that involve two sections (a path
    a task needs, a monitor the task logs) happen here.

    Example:
        >>> config = load_config(overrides=["train.epochs=3", "model.bidirectional=true"])
        >>> config.train.epochs, config.model.bidirectional
        (3, True)
    """

    # "forecast" (regression of the next value of a series), "classify" (a label per text),
    # "tag" (a label per word, CoNLL-U UPOS), "language-model" (the next character) or
    # "translate" (a sentence per sentence).
    task: str = "forecast"
    # Files, columns, windows and splits.
    data: DataConfig = field(default_factory=DataConfig)
    # The recurrent encoder and its head.
    model: ModelSection = field(default_factory=ModelSection)
    # The optimisation.
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        for name, kind in (("data", DataConfig), ("model", ModelSection), ("train", TrainSection)):
            if not isinstance(getattr(self, name), kind):
                raise _invalid(name, f"a {kind.__name__}", getattr(self, name))
        data, model, train = self.data, self.model, self.train
        if self.task == "forecast":
            for name in ("val_path", "test_path"):
                if getattr(data, name):
                    raise _invalid(
                        f"data.{name}",
                        "\"\" for task 'forecast' (one series is split in time order by "
                        "val_fraction and test_fraction)",
                        getattr(data, name),
                    )
        elif not data.path:
            raise _invalid("data.path", f"the training file of task {self.task!r}", data.path)
        self._check_translate_paths()
        if self.task in ("forecast", "classify-series") and model.embedding_dim:
            raise _invalid(
                "model.embedding_dim", f"0 for task {self.task!r} (its inputs are numbers)",
                model.embedding_dim,
            )  # fmt: skip
        if self.task == "forecast" and train.label_smoothing:
            raise _invalid("train.label_smoothing", "0 for task 'forecast' (it has no classes)",
                           train.label_smoothing)  # fmt: skip
        if self.task == "forecast" and data.limit:
            raise _invalid(
                "data.limit", "0 for task 'forecast' (windows are cut from one series)", data.limit
            )
        if model.char_hidden_size and self.task not in ("classify", "tag"):
            raise _invalid(
                "model.char_hidden_size",
                f"0 for task {self.task!r} (a character RNN reads words: classify and tag)",
                model.char_hidden_size,
            )
        if model.char_embedding_dim and not model.char_hidden_size:
            raise _invalid(
                "model.char_embedding_dim",
                "0 without a character RNN (set model.char_hidden_size for one)",
                model.char_embedding_dim,
            )
        if model.ensemble_size > 1 and MODEL_TASKS[self.task] not in MANY_TO_ONE_TASKS:
            raise _invalid(
                "model.ensemble_size",
                f"1 for task {self.task!r} (ensembles average one prediction per sequence: "
                "classify, classify-series and forecast)",
                model.ensemble_size,
            )
        if self.task != "translate":
            for name, default in (("attention", "multiplicative"), ("tie_embeddings", False)):
                if getattr(model, name) != default:
                    raise _invalid(f"model.{name}", f"{default!r} for task {self.task!r} "
                                   "(translate only)", getattr(model, name))  # fmt: skip
        if self.task in ("tag", "language-model") and model.pooling != "last":
            raise _invalid(
                "model.pooling", f"'last' for task {self.task!r} (it predicts every step)",
                model.pooling,
            )  # fmt: skip
        if self.task == "language-model" and model.bidirectional:
            raise _invalid(
                "model.bidirectional",
                "false for task 'language-model' (a backward pass would read the characters "
                "it has to predict)",
                True,
            )
        if train.monitor:
            names = ("loss", *TASK_METRICS[self.task])
            known = [f"{stage}_{name}" for stage in ("val", "train") for name in names]
            if train.monitor not in known:
                raise _invalid(
                    "train.monitor", f'"" or one of {", ".join(known)} for task {self.task!r}',
                    train.monitor,
                )  # fmt: skip

    def _check_translate_paths(self) -> None:
        """Target-side files for translate only; with separate files, each held-out source
        file has its target file (with a tab-separated ``path``, held-out files are too)."""
        data = self.data
        for name in ("target_path", "val_target_path", "test_target_path"):
            source_name = name.replace("target_", "")
            value = getattr(data, name)
            if value and self.task != "translate":
                raise _invalid(f"data.{name}", f'"" for task {self.task!r} (translate only)',
                               value)  # fmt: skip
            if self.task != "translate" or name == "target_path":
                continue
            wanted = bool(data.target_path and getattr(data, source_name))
            if bool(value) != wanted:
                raise _invalid(
                    f"data.{name}",
                    f"a target-side file exactly when data.target_path and data.{source_name} "
                    "are given (tab-separated pairs otherwise)",
                    value,
                )

    @property
    def model_task(self) -> str:
        """The :class:`~rnnkit.toolkit.models.ModelConfig` task of this run's task."""
        return MODEL_TASKS[self.task]

    def replace(self, **sections: Any) -> RunConfig:
        """A copy with some fields replaced, e.g. ``replace(train=...)``."""
        return dataclasses.replace(self, **sections)

    def resolve_paths(self, base: str | os.PathLike[str] | None = None) -> RunConfig:
        """A copy whose non-empty data paths are absolute (relative to `base`, default cwd)."""
        base = Path.cwd() if base is None else Path(base)
        paths = {
            name: str((base / getattr(self.data, name)).resolve())
            for name in (
                "path",
                "val_path",
                "test_path",
                "target_path",
                "val_target_path",
                "test_target_path",
            )
            if getattr(self.data, name) and not is_aeon_source(getattr(self.data, name))
        }
        return self.replace(data=dataclasses.replace(self.data, **paths))

    def to_dict(self) -> dict[str, Any]:
        """Plain values: ``{"task": ..., "data": {...}, "model": {...}, "train": {...}}``."""
        result: dict[str, Any] = {"task": self.task}
        for name in SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            result[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        return result

    def to_toml(self) -> str:
        """The whole configuration as TOML, every key written; :func:`load_config` reads it."""
        return dumps_toml(self.to_dict())


SECTION_TYPES: dict[str, type] = {"data": DataConfig, "model": ModelSection, "train": TrainSection}


def _field_names(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTION_TYPES[section])]


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value`` into the dotted key and the value.

    The value is read as a TOML literal (``3``, ``1e-3``, ``true``,
    ``["Open", "Close"]``, ``"text"``); text that is not one stays a string,
    so ``data.path=prices.csv`` needs no quotes.

    Raises:
        ConfigError: There is no ``=`` or no key before it.

    Example:
        >>> parse_override('data.features=["Open","Close"]')
        ('data.features', ['Open', 'Close'])
        >>> parse_override("data.path=prices.csv")
        ('data.path', 'prices.csv')
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"expected section.key=value (e.g. train.epochs=5), got {text!r}", source=SET_SOURCE
        )
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> RunConfig:
    """Read a TOML configuration (or the defaults) and apply ``section.key=value`` overrides.

    Args:
        path: A TOML file; None starts from the defaults.
        overrides: ``--set`` values, applied in order after the file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing or not TOML, a section or key is
            unknown, or a value has the wrong type or is out of range; the
            message names the file or ``--set`` and the key.
    """
    source = None if path is None else os.fspath(path)
    raw: dict[str, Any] = {} if source is None else _read_toml(source)
    origins: dict[str, str] = {}  # dotted key -> the file or --set that gave its value
    tables: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key == "task":
            tables.setdefault("", {})["task"] = value
            origins["task"] = source
            continue
        if key not in SECTIONS:
            raise _unknown_section(key, source)
        if not isinstance(value, dict):
            raise ConfigError(
                f"invalid value for key `{key}`, expected a table [{key}], got {value!r}",
                key=key, source=source,
            )  # fmt: skip
        for name, item in value.items():
            _check_known(key, name, source)
            tables.setdefault(key, {})[name] = item
            origins[f"{key}.{name}"] = source
    for text in overrides:
        dotted, value = parse_override(text)
        section, _, name = dotted.rpartition(".")
        if not section:
            if name != "task":
                raise _unknown_section(name, SET_SOURCE, dotted=True)
        elif section not in SECTIONS:
            raise _unknown_section(section, SET_SOURCE)
        else:
            _check_known(section, name, SET_SOURCE)
        expected = _field_type(section, name)
        if expected is str and not isinstance(value, str):
            value = text.partition("=")[2].strip()  # "--set data.target=2020" names a column
        tables.setdefault(section, {})[name] = value
        origins[dotted] = SET_SOURCE
    fallback = source or (SET_SOURCE if overrides else None)
    try:
        sections = {
            name: SECTION_TYPES[name](**_normalise(tables.get(name, {}))) for name in SECTIONS
        }
        return RunConfig(task=tables.get("", {}).get("task", "forecast"), **sections)
    except ConfigError as error:
        where = origins.get(error.key or "", fallback)
        raise ConfigError(error.detail, key=error.key, source=where) from None


def _normalise(values: Mapping[str, Any]) -> dict[str, Any]:
    # TOML arrays become tuples, as the frozen dataclasses hold them.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _field_type(section: str, name: str) -> type | None:
    if not section:
        return str  # task
    value = next(f for f in dataclasses.fields(SECTION_TYPES[section]) if f.name == name).default
    return None if value == "auto" else type(value)  # "auto" or a number: kept as parsed


def _read_toml(path: str) -> dict[str, Any]:
    file = Path(path)
    if file.is_dir():
        raise ConfigError("expected a TOML file, got a directory", source=path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError("expected a TOML file, got no file at this path", source=path) from None
    except OSError as error:
        raise ConfigError(f"cannot be read ({error.strerror})", source=path) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"expected UTF-8 text, got byte 0x{data[error.start]:02x} at offset {error.start}",
            source=path,
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"expected TOML, got a syntax error ({error})", source=path) from None


def _unknown_section(name: str, source: str | None, *, dotted: bool = False) -> ConfigError:
    sections = ", ".join(f"[{s}]" for s in SECTIONS)
    if dotted:
        message = f"unknown key `{name}`, expected section.key (sections {sections}) or `task`"
    else:
        message = f"unknown section [{name}], expected {sections} or the top-level key `task`"
        close = difflib.get_close_matches(name, SECTIONS, n=1)
        if close:
            message += f" (did you mean [{close[0]}]?)"
    return ConfigError(message, key=name, source=source)


def _check_known(section: str, name: str, source: str | None) -> None:
    names = _field_names(section)
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean `{section}.{close[0]}`?)" if close else ""
    raise ConfigError(
        f"unknown key `{section}.{name}`{hint}, expected one of [{section}] keys: "
        + ", ".join(names),
        key=f"{section}.{name}",
        source=source,
    )


def dumps_toml(document: Mapping[str, Any]) -> str:
    """Write a mapping of scalars and one level of tables as TOML.

    Values may be strings, booleans, integers, finite floats and lists of
    those; tables (mappings) come after the top-level keys.
    """
    lines = [f"{key} = {_toml_value(value)}" for key, value in document.items()
             if not isinstance(value, Mapping)]  # fmt: skip
    for name, table in document.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the non-finite float {value} to a run's TOML")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as a TOML value")
