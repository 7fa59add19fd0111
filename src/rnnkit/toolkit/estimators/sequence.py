"""What the three sequence estimators share: `X` to a packed dataset, batched inference.

``fit`` checks the training hyper-parameters, `X` and `y`, fits the input
encoding (:class:`~rnnkit.toolkit.estimators.inputs.InputSpec`: features per
step, or a vocabulary) and the target encoding (a subclass's), builds
``(input, target)`` pairs, and trains on them through the Trainer with a
collate function that packs each batch. Inference packs batches of
``batch_size`` sequences the same way, so no step of padding is ever computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.arguments import is_int
from rnnkit.toolkit.data.vocab import LabelEncoder
from rnnkit.toolkit.estimators.base import Estimator, EstimatorT, check_positive_int, pack
from rnnkit.toolkit.estimators.inputs import (
    InputSpec,
    Sequences,
    as_sequences,
    as_validation_pair,
    invalid,
)

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
                ``early_stopping_patience`` it decides when to stop.

        Returns:
            The estimator itself, fitted.

        Raises:
            ValueError: A hyper-parameter, `X` or `y` is invalid; the message names it.
        """
        self._reset()
        train_config = self._train_config()
        check_positive_int("min_freq", self.min_freq)
        sequences = as_sequences(X, "X")
        targets = self._check_targets(y, sequences, "X", "y")
        inputs = InputSpec.fit(sequences, self.min_freq)
        num_outputs = self._fit_targets(targets)
        train = self._dataset(inputs, sequences, targets, "X")
        val = None
        pair = as_validation_pair(validation_data)
        if pair is not None:
            val_sequences = as_sequences(pair[0], X_VAL)
            val_targets = self._check_targets(pair[1], val_sequences, X_VAL, Y_VAL)
            val = self._dataset(inputs, val_sequences, val_targets, X_VAL)
        config = self._model_config(
            self._task, num_outputs=num_outputs, **inputs.model_fields(), **self._head_fields()
        )
        self._train(config, train_config, train, val, type(self)._collate)
        self.inputs_ = inputs
        return self

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
        return {"inputs": self.inputs_.to_dict()}

    def _restore_fitted(self, state: dict[str, Any]) -> None:
        self.inputs_ = InputSpec.from_dict(state["inputs"])


class ManyToOneEstimator(SequenceEstimator):
    """One prediction per sequence: the arguments of :class:`SequenceEstimator` and ``pooling``."""

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
        pooling: str = "last",
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
        super().__init__(
            hidden_size=hidden_size, num_layers=num_layers, nonlinearity=nonlinearity,
            bidirectional=bidirectional, dropout=dropout, embedding_dim=embedding_dim,
            min_freq=min_freq, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, grad_clip=grad_clip,
            early_stopping_patience=early_stopping_patience, seed=seed, device=device,
            verbose=verbose,
        )  # fmt: skip
        self.pooling = pooling

    def _head_fields(self) -> dict[str, Any]:
        return {"pooling": self.pooling}


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
