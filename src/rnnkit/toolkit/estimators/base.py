"""What every estimator shares: scikit-learn's conventions, training, saving.

- Hyper-parameters are the constructor's keyword arguments, stored as given;
  :meth:`Estimator.get_params` and :meth:`Estimator.set_params` read them from
  the constructor's signature, so scikit-learn's ``clone`` and grid searches
  work (scikit-learn itself is not needed). Values are checked in ``fit``.
- What ``fit`` learns lives in attributes ending in ``_`` (``model_``,
  ``history_``, ...); ``fit`` starts by removing them, so a failed fit never
  leaves a model beside the encoders of another one.
- Training goes through :class:`~rnnkit.toolkit.trainer.Trainer`, with the
  model seeded by ``seed``. The Trainer reseeds the global generators every
  epoch; fit puts Python's, NumPy's and torch's (CPU) back as the caller had them.
- ``save(path)`` writes a checkpoint directory (:mod:`rnnkit.toolkit.checkpoint`):
  the weights in ``model.safetensors``, and in ``checkpoint.json`` the model
  config plus, under the trainer state's ``"estimator"`` key, the class, the
  hyper-parameters, the encoders (vocabulary, labels, target scaler) and the
  history. No pickle: ``load`` runs no code from the file, and
  :func:`rnnkit.toolkit.checkpoint.load_model` reads the same directory as a
  bare torch model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from rnnkit.toolkit.arguments import invalid_argument, is_int
from rnnkit.toolkit.checkpoint import (
    CHECKPOINT_JSON,
    MODEL_FILE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from rnnkit.toolkit.data.batching import pad_sequences
from rnnkit.toolkit.devices import resolve_device
from rnnkit.toolkit.metrics import loss_for_task, metrics_for_task
from rnnkit.toolkit.model_loading import build_saved_model, check_fields_match
from rnnkit.toolkit.models import ModelConfig, build_model
from rnnkit.toolkit.trainer import Callback, TrainConfig, Trainer

STATE_KEY = "estimator"  # the key of the estimator's state in the checkpoint's trainer state
STATE_VERSION = 1

__all__ = ["Estimator", "NotFittedError"]

EstimatorT = TypeVar("EstimatorT", bound="Estimator")


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (scikit-learn's exception of the same name).

    A ``ValueError`` and an ``AttributeError``, as scikit-learn's is, so
    ``hasattr(estimator, "classes_")`` is False before fit.
    """


class Estimator:
    """The base of the estimators: parameters, training through the Trainer, save and load.

    Subclasses define ``__init__`` with keyword-only hyper-parameters that it
    only stores, ``fit``, ``predict`` and ``score``, and :meth:`_fitted_state`
    / :meth:`_restore_fitted` for what ``fit`` learned besides the weights.
    """

    # What scikit-learn's is_regressor / is_classifier look for.
    _estimator_type: str = ""

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters, as given to the constructor or :meth:`set_params`.

        Args:
            deep: Accepted for scikit-learn; there are no nested estimators.

        Returns:
            ``{name: value}`` in the constructor's order.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: EstimatorT, **params: Any) -> EstimatorT:
        """Set hyper-parameters; they take effect at the next ``fit`` (or predict, for
        ``device`` and ``batch_size``).

        Returns:
            The estimator itself.

        Example:
            >>> SequenceClassifier().set_params(hidden_size=32, epochs=5)
            SequenceClassifier(hidden_size=32, epochs=5)
        """
        names = self._param_names()
        unknown = [name for name in params if name not in names]
        if unknown:
            raise ValueError(
                f"Received an invalid parameter `{unknown[0]}` for {type(self).__name__}, "
                f"expected one of {names}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    @classmethod
    def _param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.kind == p.KEYWORD_ONLY]

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not (type(value) is type(defaults[name]) and value == defaults[name])
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted estimator to a checkpoint directory (replaced if it exists).

        Args:
            path: The directory, e.g. ``"models/sentiment"``.

        Returns:
            The directory.

        Example:
            >>> classifier.save("models/sentiment")
            >>> SequenceClassifier.load("models/sentiment").predict([["a", "fine", "film"]])
        """
        self._check_fitted("save")
        state = {
            "class": type(self).__name__,
            "version": STATE_VERSION,
            "params": self.get_params(),
            "fitted": self._fitted_state(),
            "history": self.history_,
        }
        return save_checkpoint(
            path, model_state=self.model_.state_dict(),
            model_config=dataclasses.asdict(self.model_.config), trainer_state={STATE_KEY: state},
        )  # fmt: skip

    @classmethod
    def load(cls: type[EstimatorT], path: str | os.PathLike[str]) -> EstimatorT:
        """Read an estimator written by :meth:`save`; the model is on the CPU until predict
        moves it to the ``device`` hyper-parameter.

        Raises:
            CheckpointError: A file is missing, altered or malformed, or it holds
                another kind of estimator; the message names the file.
        """
        checkpoint = load_checkpoint(path)
        source = checkpoint.path / CHECKPOINT_JSON
        state = checkpoint.trainer_state.get(STATE_KEY)
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{source}: holds no estimator (rnnkit.toolkit.checkpoint.load_model reads a bare "
                "model)"
            )
        if state.get("class") != cls.__name__:
            raise CheckpointError(f"{source}: holds a {state.get('class')}, not a {cls.__name__}")
        if state.get("version") != STATE_VERSION:
            raise CheckpointError(
                f"{source}: estimator state version {state.get('version')!r}, this rnnkit reads "
                f"{STATE_VERSION}"
            )
        try:
            estimator = cls(**state["params"])
            estimator._restore_fitted(state["fitted"])
            history = [dict(row) for row in state["history"]]
            implied = estimator._implied_model_fields()
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: malformed estimator state ({error})") from None
        if checkpoint.model_config is None:
            raise CheckpointError(f"{source}: has no model config to rebuild the model from")
        # Before the model is built: a vocabulary or label list that the config does not
        # fit is named here, not met later as a shape error in predict.
        check_fields_match(implied, checkpoint.model_config, "the estimator's fitted state", source)
        model = build_saved_model(
            checkpoint.model_config, checkpoint.model_state, checkpoint.path / MODEL_FILE, source
        )
        estimator.model_ = model.eval()
        estimator.history_ = history
        return estimator

    def _fitted_state(self) -> dict[str, Any]:
        """JSON-able state of what fit learned besides the weights and the history."""
        raise NotImplementedError

    def _restore_fitted(self, state: Mapping[str, Any]) -> None:
        """Set the attributes :meth:`_fitted_state` describes."""
        raise NotImplementedError

    def _implied_model_fields(self) -> dict[str, Any]:
        """The model config fields that the restored fitted state implies (the task, the
        vocabulary's and the labels' sizes), which the saved model must have."""
        raise NotImplementedError

    def _reset(self) -> None:
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: call fit before {method}"
            )

    def _train_config(self, **derived: Any) -> TrainConfig:
        """The training hyper-parameters, checked (TrainConfig names a bad one).

        Args:
            derived: TrainConfig fields that fit chose in place of the estimator's
                own (``epochs``, ``early_stopping_patience``, ``lr_schedule``).
        """
        if self.verbose is not None and not isinstance(self.verbose, bool):
            raise invalid_argument("verbose", "a bool or None", self.verbose)
        fields = {
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
            "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
            "early_stopping_patience": self.early_stopping_patience, "seed": self.seed,
            "device": self.device, "progress": self.verbose,
        }  # fmt: skip
        return TrainConfig(**(fields | derived))

    def _model_config(self, task: str, **fields: Any) -> ModelConfig:
        """The architecture hyper-parameters and `fields` (which win: sizes from the data,
        settings fit chose), checked (ModelConfig names a bad one)."""
        parameters = {
            "hidden_size": self.hidden_size, "num_layers": self.num_layers, "cell": self.cell,
            "nonlinearity": self.nonlinearity, "bidirectional": self.bidirectional,
            "dropout": self.dropout, "embedding_dim": self.embedding_dim,
        }  # fmt: skip
        return ModelConfig(task=task, **(parameters | fields))

    def _train_model(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        train: Sequence[Any],
        val: Sequence[Any] | None,
        collate_fn: Callable[[list[Any]], Any],
        callbacks: Sequence[Callback] = (),
        label_smoothing: float = 0.0,
    ) -> tuple[nn.Module, list[dict[str, float]]]:
        """A model built from ``train_config.seed`` and trained; returns it (in eval mode)
        and its history."""
        with _global_generators_kept():
            torch.manual_seed(train_config.seed)
            model = build_model(model_config)
            trainer = Trainer(
                train_config, model, train, val,
                loss_fn=loss_for_task(model_config.task, label_smoothing),
                metrics=metrics_for_task(model_config.task), collate_fn=collate_fn,
                callbacks=callbacks,
            )  # fmt: skip
            history = trainer.fit()
        return model.eval(), history

    def _inference_model(self, method: str) -> nn.Module:
        """The fitted model in eval mode, on the ``device`` hyper-parameter's device."""
        self._check_fitted(method)
        check_positive_int("batch_size", self.batch_size)
        return self.model_.to(resolve_device(self.device)).eval()


@contextlib.contextmanager
def _global_generators_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU) global generators on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def check_positive_int(name: str, value: object) -> None:
    if not is_int(value) or value < 1:
        raise invalid_argument(name, "a positive integer", value)


def pack(sequences: Sequence[torch.Tensor]) -> tuple[PackedSequence, torch.Tensor]:
    """Pad and pack sequences in their order, as the data layer's collate functions do.

    Shape:
        sequences: ``(length, features)`` floats or ``(length,)`` ids each;
        returns the PackedSequence and lengths ``(batch,)``.
    """
    padded, lengths = pad_sequences(sequences)  # (batch, max_len[, features])
    return pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False), lengths
