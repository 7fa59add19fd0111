"""What the three sequence estimators share: `X` to a packed dataset, batched inference.

``fit`` checks the training hyper-parameters, `X` and `y`, fits the input
encoding (:class:`~rnnkit.toolkit.estimators.inputs.InputSpec`: features per
step, or a vocabulary) and the target encoding (a subclass's), builds
``(input, target)`` pairs, and trains on them through the Trainer with a
collate function that packs each batch. Inference packs batches of
``batch_size`` sequences the same way, so no step of padding is ever computed.
"""

from __future__ import annotations

import dataclasses
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
from rnnkit.toolkit.ensemble import EnsembleModel
from rnnkit.toolkit.estimators.base import Estimator, EstimatorT, check_positive_int, pack
from rnnkit.toolkit.estimators.input_scaling import SCALINGS
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
    VALIDATION_SHARE,
    check_auto_int,
    check_validation_fraction,
    choose_ensemble_size,
    choose_hidden_size,
    choose_patch_size,
    member_splits,
    patience_epochs,
    step_budget,
)
from rnnkit.toolkit.seeding import derive_seed
from rnnkit.toolkit.trainer import Callback, shows_progress

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
        cell: str = "rnn",
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
        self.cell = cell
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
        inputs = InputSpec.fit(sequences, self.min_freq, plan.scaling, plan.patch_size)
        examples = self._dataset(inputs, sequences, targets, "X")
        given_val = None
        if pair is not None:
            val_sequences = as_sequences(pair[0], X_VAL)
            val_targets = self._check_targets(pair[1], val_sequences, X_VAL, Y_VAL)
            given_val = self._dataset(inputs, val_sequences, val_targets, X_VAL)
        config = self._model_config(
            self._task, num_outputs=num_outputs, **inputs.model_fields(), **self._head_fields(),
            **plan.model_fields,
        )  # fmt: skip
        first_train, first_val = plan.splits[0]
        settings = plan.settings | {
            "scaling": "none" if inputs.scaling is None else inputs.scaling.describe(),
            "ensemble_size": len(plan.splits),
            "train_sequences": len(first_train),
            "validation_sequences": len(given_val or first_val),
            "epochs": train_config.epochs,
            "early_stopping_patience": train_config.early_stopping_patience,
        }
        self._announce(settings)
        members, histories = [], []
        steps = sum(math.ceil(len(train) / self.batch_size) for train, _ in plan.splits)
        progress = _StepProgress(steps * train_config.epochs, train_config.progress)
        # One bar over every model's steps replaces the trainer's bar per epoch.
        member_config = dataclasses.replace(train_config, progress=False)
        for k, (train_indices, val_indices) in enumerate(plan.splits):
            train = [examples[i] for i in train_indices]
            val = given_val if pair is not None else [examples[i] for i in val_indices] or None
            # member 0 is the model a single fit trains; the others draw seeds from it
            seed = train_config.seed if k == 0 else derive_seed(train_config.seed, k)
            progress.bar.set_description(f"model {k + 1}/{len(plan.splits)}")
            model, history = self._train_model(
                config, dataclasses.replace(member_config, seed=seed), train, val,
                type(self)._collate, callbacks=[progress],
            )  # fmt: skip
            members.append(model)
            histories.append(history)
        progress.bar.close()
        if len(members) > 1:
            config = dataclasses.replace(config, ensemble_size=len(members))
            self.model_ = EnsembleModel(config, members).eval()
        else:
            self.model_ = members[0]
        self.history_ = histories[0]
        self.inputs_ = inputs
        self.fitted_settings_ = settings | _outcome(histories, train_config.batch_size, plan)
        return self

    def _plan(self, sequences: Sequences, targets: Any, has_validation: bool) -> FitPlan:
        """The settings fit derives from the data; here, the hyper-parameters as given."""
        every = list(range(len(sequences)))
        return FitPlan([(every, [])], "none", 1, {}, {}, {})

    def _announce(self, settings: dict[str, Any]) -> None:
        """One line of what fit chose: logged, and shown with the progress bars."""
        line = f"{type(self).__name__}.fit: " + ", ".join(
            f"{key} {value}" for key, value in settings.items()
        )
        logger.info(line)
        if shows_progress(self.verbose):
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
        device = next(model.parameters()).device
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

    def _implied_model_fields(self) -> dict[str, Any]:
        return {"task": self._task, **self.inputs_.model_fields()}


class ManyToOneEstimator(SequenceEstimator):
    """One prediction per sequence, with settings derived from the data.

    The arguments of :class:`SequenceEstimator`, with other defaults (a
    bidirectional encoder, mean pooling, lr 3e-3 annealed by a cosine over the
    budget when training by steps), and these, each "auto" by default (see
    :mod:`rnnkit.toolkit.estimators.settings`):

    - ``hidden_size``: 32 below 1,000 training sequences, else 64;
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
      before stopping; "auto" is a quarter of the epochs, None never stops;
    - ``ensemble_size``: models trained and averaged, each with its own seed
      and validation part; "auto" is up to 10 (as many as 10,000 optimiser
      steps allow) below 1,000 training sequences when training by steps, else 1.
    """

    _stratified = False  # carve the validation part stratified by target (classifier)

    def __init__(
        self,
        *,
        hidden_size: int | str = AUTO,
        num_layers: int = 1,
        cell: str = "rnn",
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
        ensemble_size: int | str = AUTO,
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
            hidden_size=hidden_size, num_layers=num_layers, cell=cell, nonlinearity=nonlinearity,
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
        self.ensemble_size = ensemble_size

    def _head_fields(self) -> dict[str, Any]:
        return {"pooling": self.pooling}

    def _plan(self, sequences: Sequences, targets: Any, has_validation: bool) -> FitPlan:
        numeric = sequences.kind == NUMERIC
        if self.scaling not in SCALINGS:
            raise invalid_argument("scaling", f"one of {SCALINGS}", self.scaling)
        check_auto_int("patch_size", self.patch_size)
        check_auto_int("max_steps", self.max_steps)
        check_validation_fraction(self.validation_fraction)
        check_auto_int("ensemble_size", self.ensemble_size)
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
        train_indices, val_indices = member_splits(len(sequences), fraction, 1, self.seed,
                                                   labels)[0]  # fmt: skip
        per_epoch = math.ceil(len(train_indices) / self.batch_size)
        if by_steps:
            steps = self.max_steps
            if steps == AUTO:
                steps = step_budget(len(train_indices), self.batch_size)
            epochs = math.ceil(steps / per_epoch)
        else:
            epochs = self.epochs
            steps = epochs * per_epoch if is_int(epochs) else None  # TrainConfig names a bad one
        members = self.ensemble_size
        if members == AUTO:
            members = choose_ensemble_size(len(sequences), steps) if by_steps else 1
        splits = member_splits(len(sequences), fraction, members, self.seed, labels)
        patience = self.early_stopping_patience
        if patience == AUTO:
            validated = has_validation or bool(val_indices)
            patience = patience_epochs(epochs) if validated and is_int(epochs) else None
        patch_size = self.patch_size
        if patch_size == AUTO:
            patch_size = choose_patch_size(sequences.lengths) if numeric else 1
        scaling = self.scaling if numeric else "none"
        hidden_size = self.hidden_size
        if hidden_size == AUTO:
            hidden_size = choose_hidden_size(len(sequences))
        shown = {"patch_size": patch_size} if numeric else {}
        shown |= {"hidden_size": hidden_size, "max_steps": steps}
        train_fields = {"epochs": epochs, "early_stopping_patience": patience}
        if by_steps:  # annealed to zero over the budget: the last steps settle the weights
            train_fields["lr_schedule"] = "cosine"
        return FitPlan(splits, scaling, patch_size, train_fields, {"hidden_size": hidden_size},
                       shown)  # fmt: skip


class _StepProgress(Callback):
    """A tqdm bar over the optimiser steps of every model a fit trains."""

    def __init__(self, total: int, progress: bool | None) -> None:
        self.bar = tqdm(
            total=total, unit="step", disable=not shows_progress(progress), dynamic_ncols=True
        )

    def on_batch_end(self, trainer: Any, step: int, loss: float) -> None:
        self.bar.update()
        self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)


@dataclass(frozen=True)
class FitPlan:
    """What fit derived before training (see :meth:`SequenceEstimator._plan`)."""

    # Per model of the ensemble (one for a single model): the indices of the training
    # sequences it takes gradient steps on, and of those carved out to validate it.
    splits: list[tuple[list[int], list[int]]]
    scaling: str  # the mode of InputScaling.fit
    patch_size: int  # steps per input vector
    train_fields: dict[str, Any]  # TrainConfig fields chosen in place of the parameters
    model_fields: dict[str, Any]  # ModelConfig fields chosen in place of the parameters
    settings: dict[str, Any]  # what fitted_settings_ shows besides the above


def _outcome(
    histories: list[list[dict[str, float]]], batch_size: int, plan: FitPlan
) -> dict[str, Any]:
    """How training went, a list entry per model: epochs and steps run, the epoch kept."""
    outcome: dict[str, list[Any]] = {}
    for history, (train_indices, _) in zip(histories, plan.splits, strict=True):
        monitor = "val_loss" if history and "val_loss" in history[0] else "train_loss"
        losses = [row[monitor] for row in history]
        best = min(range(len(losses)), key=lambda i: (not math.isfinite(losses[i]), losses[i]))
        per_epoch = math.ceil(len(train_indices) / batch_size)
        outcome.setdefault("epochs_run", []).append(len(history))
        outcome.setdefault("steps_run", []).append(len(history) * per_epoch)
        outcome.setdefault("best_epoch", []).append(best + 1)
        outcome.setdefault(f"best_{monitor}", []).append(losses[best])
    return outcome


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
