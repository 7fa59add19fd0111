"""What the three sequence estimators share: `X` to a packed dataset, batched inference.

``fit`` checks the training hyper-parameters, `X` and `y`, fits the input
encoding (:class:`~rnnkit.toolkit.estimators.inputs.InputSpec`: features per
step, or a vocabulary) and the target encoding (a subclass's), builds
``(input, target)`` pairs, and trains on them through the Trainer with a
collate function that packs each batch. Inference packs batches of
``batch_size`` sequences the same way, so no step of padding is ever computed.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rnnkit.toolkit.arguments import invalid_argument, is_int
from rnnkit.toolkit.data.vocab import LabelEncoder
from rnnkit.toolkit.estimators.base import Estimator, EstimatorT, check_positive_int, pack
from rnnkit.toolkit.estimators.inputs import (
    NUMERIC,
    InputSpec,
    Sequences,
    as_sequences,
    as_validation_pair,
    invalid,
)
from rnnkit.toolkit.estimators.settings import (
    AUTO,
    MIN_TO_CARVE,
    SCALINGS,
    VALIDATION_SHARE,
    check_auto_int,
    check_validation_fraction,
    choose_patch_size,
    patience_epochs,
    step_budget,
    validation_split,
)

logger = logging.getLogger(__name__)

X_VAL, Y_VAL = "validation_data[0]", "validation_data[1]"


class SequenceEstimator(Estimator):
    """Sequences in, predictions out; see :mod:`rnnkit.toolkit.estimators` for the arguments.

    Subclasses set ``_task`` (a :class:`~rnnkit.toolkit.models.ModelConfig`
    task) and ``_collate`` and implement the target hooks: ``_check_targets``,
    ``_fit_targets``, ``_encode_targets``.
    """

    _task: str = ""
    _collate: Callable[[list[Any]], Any]

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        embedding_dim: int | None = None,
        min_freq: int = 1,
        epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        grad_clip: float | None = 1.0,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        device: str = "auto",
        verbose: bool | None = None,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self.min_freq = min_freq
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.early_stopping_patience = early_stopping_patience
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def fit(
        self: EstimatorT, X: Any, y: Any, validation_data: tuple[Any, Any] | None = None
    ) -> EstimatorT:
        """Learn to predict `y` from `X`; every earlier fit is forgotten.

        Args:
            X: The training sequences (see :mod:`rnnkit.toolkit.estimators.inputs`).
            y: The targets, one entry per sequence.
            validation_data: ``(X_val, y_val)``, scored after every epoch; with
                early stopping it decides when to stop. Without it, a many-to-one
                estimator carves its validation part out of `X` (``validation_fraction``).

        Returns:
            The estimator itself, fitted; ``fitted_settings_`` says what it chose.

        Raises:
            ValueError: A hyper-parameter, `X` or `y` is invalid; the message names it.
        """
        self._reset()
        check_positive_int("min_freq", self.min_freq)
        check_positive_int("batch_size", self.batch_size)
        sequences = as_sequences(X, "X")
        targets = self._check_targets(y, sequences, "X", "y")
        pair = as_validation_pair(validation_data)
        plan = self._plan(sequences, targets, has_validation=pair is not None)
        train_config = self._train_config(**plan.train_fields)
        num_outputs = self._fit_targets(targets)
        train_sequences = _take_sequences(sequences, plan.train_indices)
        train_targets = _take(targets, plan.train_indices)
        inputs = InputSpec.fit(train_sequences, self.min_freq, plan.scaling, plan.patch_size)
        train = self._dataset(inputs, train_sequences, train_targets, "X")
        val = None
        if pair is not None:
            val_sequences = as_sequences(pair[0], X_VAL)
            val_targets = self._check_targets(pair[1], val_sequences, X_VAL, Y_VAL)
            val = self._dataset(inputs, val_sequences, val_targets, X_VAL)
        elif plan.val_indices:
            val_sequences = _take_sequences(sequences, plan.val_indices)
            val = self._dataset(inputs, val_sequences, _take(targets, plan.val_indices), "X")
        config = self._model_config(
            self._task, num_outputs=num_outputs, **inputs.model_fields(), **self._head_fields()
        )
        settings = plan.settings | {
            "scaling": "none" if inputs.scaling is None else inputs.scaling.describe(),
            "train_sequences": len(train),
            "validation_sequences": 0 if val is None else len(val),
            "epochs": train_config.epochs,
            "early_stopping_patience": train_config.early_stopping_patience,
        }
        self._announce(settings)
        self._train(config, train_config, train, val, type(self)._collate)
        self.inputs_ = inputs
        self.fitted_settings_ = settings | _outcome(self.history_, len(train), self.batch_size)
        return self

    def _plan(self, sequences: Sequences, targets: Any, has_validation: bool) -> FitPlan:
        """The settings fit derives from the data; here, the hyper-parameters as given."""
        every = list(range(len(sequences)))
        return FitPlan(every, [], "none", 1, {}, {})

    def _announce(self, settings: dict[str, Any]) -> None:
        """One line of what fit chose: logged, and shown with the progress bars."""
        line = f"{type(self).__name__}.fit: " + ", ".join(
            f"{key} {value}" for key, value in settings.items()
        )
        logger.info(line)
        if sys.stderr.isatty() if self.verbose is None else self.verbose:
            tqdm.write(line, file=sys.stderr)

    def _check_targets(self, y: Any, sequences: Sequences, x_name: str, y_name: str) -> Any:
        """`y` checked against `sequences` and brought to one form."""
        raise NotImplementedError

    def _fit_targets(self, targets: Any) -> int:
        """Fit the target encoding (setting its attributes); returns the number of outputs."""
        raise NotImplementedError

    def _encode_targets(self, targets: Any) -> Sequence[Any]:
        """One training target per sequence, as the collate function takes it."""
        raise NotImplementedError

    def _head_fields(self) -> dict[str, Any]:
        return {}

    def _dataset(
        self, inputs: InputSpec, sequences: Sequences, targets: Any, name: str
    ) -> list[tuple[Tensor, Any]]:
        encoded = inputs.encode(sequences, name)
        return list(zip(encoded, self._encode_targets(targets), strict=True))

    def _sequences(self, X: Any, method: str) -> Sequences:
        """`X` checked, after checking that the estimator is fitted."""
        self._check_fitted(method)
        return as_sequences(X, "X")

    @torch.no_grad()
    def _outputs(self, sequences: Sequences, method: str) -> list[Tensor]:
        """The model's output for every sequence, on the CPU.

        Shape:
            ``(num_outputs,)`` per sequence for a many-to-one model,
            ``(length, num_outputs)`` for a tagger.
        """
        model = self._inference_model(method)
        device = model.head.linear.weight.device
        inputs = self.inputs_.encode(sequences)
        outputs: list[Tensor] = []
        for start in range(0, len(inputs), self.batch_size):
            packed, lengths = pack(inputs[start : start + self.batch_size])
            # (batch, num_outputs), or (batch, max_len, num_outputs) for a tagger
            output = model(packed.to(device), lengths).float().cpu()
            if output.dim() == 2:
                outputs.extend(output.unbind(0))
            else:
                outputs.extend(row[:n] for row, n in zip(output, lengths.tolist(), strict=True))
        return outputs

    def _fitted_state(self) -> dict[str, Any]:
        return {"inputs": self.inputs_.to_dict(), "settings": self.fitted_settings_}

    def _restore_fitted(self, state: dict[str, Any]) -> None:
        self.inputs_ = InputSpec.from_dict(state["inputs"])
        settings = state.get("settings", {})  # absent in estimators saved before it existed
        if not isinstance(settings, dict):
            raise ValueError(f"malformed settings {settings!r}")
        self.fitted_settings_ = dict(settings)


class ManyToOneEstimator(SequenceEstimator):
    """One prediction per sequence, with settings derived from the data.

    The arguments of :class:`SequenceEstimator`, with other defaults (a
    bidirectional encoder, mean pooling, lr 3e-3), and these, each "auto" by
    default (see :mod:`rnnkit.toolkit.estimators.settings`):

    - ``scaling``: numeric input: "auto" (per channel, log1p first on heavy-tailed
      non-negative channels), "standard" or "none";
    - ``patch_size``: numeric input: steps fed as one input vector; "auto" makes
      the median sequence about 32 steps long;
    - ``max_steps``: optimiser steps to train for, "auto" from the data's size;
      giving ``epochs`` trains that many passes instead;
    - ``validation_fraction``: the share of the training sequences carved out
      (stratified by label) for early stopping when no validation_data is given;
      "auto" carves 0.2 from 20 sequences up when training by steps;
    - ``early_stopping_patience``: epochs without a better validation loss
      before stopping; "auto" is a quarter of the epochs, None never stops.
    """

    _stratified = False  # carve the validation part stratified by target (classifier)

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = True,
        dropout: float = 0.0,
        embedding_dim: int | None = None,
        min_freq: int = 1,
        pooling: str = "mean",
        scaling: str = AUTO,
        patch_size: int | str = AUTO,
        max_steps: int | str = AUTO,
        epochs: int | None = None,
        validation_fraction: float | str = AUTO,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        grad_clip: float | None = 1.0,
        early_stopping_patience: int | str | None = AUTO,
        seed: int = 0,
        device: str = "auto",
        verbose: bool | None = None,
    ) -> None:
        super().__init__(
            hidden_size=hidden_size, num_layers=num_layers, nonlinearity=nonlinearity,
            bidirectional=bidirectional, dropout=dropout, embedding_dim=embedding_dim,
            min_freq=min_freq, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, grad_clip=grad_clip,
            early_stopping_patience=early_stopping_patience, seed=seed, device=device,
            verbose=verbose,
        )  # fmt: skip
        self.pooling = pooling
        self.scaling = scaling
        self.patch_size = patch_size
        self.max_steps = max_steps
        self.validation_fraction = validation_fraction

    def _head_fields(self) -> dict[str, Any]:
        return {"pooling": self.pooling}

    def _plan(self, sequences: Sequences, targets: Any, has_validation: bool) -> FitPlan:
        numeric = sequences.kind == NUMERIC
        if self.scaling not in SCALINGS:
            raise invalid_argument("scaling", f"one of {SCALINGS}", self.scaling)
        check_auto_int("patch_size", self.patch_size)
        check_auto_int("max_steps", self.max_steps)
        check_validation_fraction(self.validation_fraction)
        if self.epochs is not None and self.max_steps != AUTO:
            raise ValueError(
                "Received invalid values for arguments `epochs` and `max_steps`, expected at "
                f"most one of them, got epochs={self.epochs!r} and max_steps={self.max_steps!r}"
            )
        if not numeric and self.patch_size not in (AUTO, 1):
            raise invalid_argument("patch_size", "'auto' or 1 for token input", self.patch_size)
        by_steps = self.epochs is None
        fraction = self.validation_fraction
        if fraction == AUTO:
            carve = by_steps and not has_validation and len(sequences) >= MIN_TO_CARVE
            fraction = VALIDATION_SHARE if carve else 0.0
        elif has_validation and fraction > 0:
            raise invalid_argument(
                "validation_fraction", "0 or 'auto' when validation_data is given", fraction
            )
        labels = targets if self._stratified else None
        train_indices, val_indices = validation_split(len(sequences), fraction, self.seed, labels)
        per_epoch = math.ceil(len(train_indices) / self.batch_size)
        if by_steps:
            steps = self.max_steps
            if steps == AUTO:
                steps = step_budget(len(train_indices), self.batch_size)
            epochs = math.ceil(steps / per_epoch)
        else:
            epochs = self.epochs
            steps = epochs * per_epoch if is_int(epochs) else None  # TrainConfig names a bad one
        patience = self.early_stopping_patience
        if patience == AUTO:
            validated = has_validation or bool(val_indices)
            patience = patience_epochs(epochs) if validated and is_int(epochs) else None
        patch_size = self.patch_size
        if patch_size == AUTO:
            patch_size = choose_patch_size(sequences.lengths) if numeric else 1
        scaling = self.scaling if numeric else "none"
        shown = {"patch_size": patch_size, "max_steps": steps} if numeric else {"max_steps": steps}
        return FitPlan(
            train_indices, val_indices, scaling, patch_size,
            {"epochs": epochs, "early_stopping_patience": patience}, shown,
        )  # fmt: skip


@dataclass(frozen=True)
class FitPlan:
    """What fit derived before training (see :meth:`SequenceEstimator._plan`)."""

    train_indices: list[int]  # the training sequences used for gradient steps
    val_indices: list[int]  # those carved out for validation; empty for none
    scaling: str  # the mode of InputScaling.fit
    patch_size: int  # steps per input vector
    train_fields: dict[str, Any]  # TrainConfig fields chosen in place of the parameters
    settings: dict[str, Any]  # what fitted_settings_ shows besides the above


def _take(targets: Any, indices: list[int]) -> Any:
    if isinstance(targets, np.ndarray):
        return targets[indices]
    return [targets[i] for i in indices]


def _take_sequences(sequences: Sequences, indices: list[int]) -> Sequences:
    if len(indices) == len(sequences):
        return sequences
    return Sequences(sequences.kind, [sequences.items[i] for i in indices])


def _outcome(history: list[dict[str, float]], train_size: int, batch_size: int) -> dict[str, Any]:
    """How training went: epochs and steps run, the epoch whose weights were kept."""
    monitor = "val_loss" if history and "val_loss" in history[0] else "train_loss"
    losses = [row[monitor] for row in history]
    best = min(range(len(losses)), key=lambda i: (not math.isfinite(losses[i]), losses[i]))
    return {
        "epochs_run": len(history),
        "steps_run": len(history) * math.ceil(train_size / batch_size),
        "best_epoch": best + 1,
        f"best_{monitor}": losses[best],
    }


def check_labels(labels: Sequence[Any], name: str) -> None:
    """Labels are str or int (``"1"`` and ``1`` are different labels)."""
    for i, label in enumerate(labels):
        if not (isinstance(label, str) or is_int(label)):
            raise TypeError(
                f"Received an invalid value for argument `{name}`, expected labels of type str "
                f"or int, got {type(label).__name__} {label!r} at {name}[{i}]"
            )


def fit_labels(labels: Sequence[Any], name: str) -> LabelEncoder:
    """The label encoder of the training labels; at least two distinct ones."""
    encoder = LabelEncoder.fit(labels)
    if len(encoder) < 2:
        raise invalid(name, "at least 2 distinct labels", f"{len(encoder)}: {encoder.classes!r}")
    return encoder


def label_array(labels: Sequence[Any]) -> np.ndarray:
    """Labels as a 1-D array; an object array when str and int labels mix (no casting)."""
    mixed = len({type(label) for label in labels}) > 1
    return np.array(labels, dtype=object if mixed else None)
