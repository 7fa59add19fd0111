"""`SequenceRegressor`: one or more real values per sequence."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.data.batching import SequenceBatch
from rnnkit.toolkit.data.scaling import StandardScaler
from rnnkit.toolkit.estimators.base import pack
from rnnkit.toolkit.estimators.inputs import Sequences, check_length, invalid
from rnnkit.toolkit.estimators.sequence import ManyToOneEstimator

__all__ = ["SequenceRegressor", "collate_regression", "r2_score"]


def collate_regression(batch: list[tuple[Tensor, Tensor]]) -> SequenceBatch:
    """Collate ``(sequence, target)`` pairs with float targets ``(num_outputs,)``.

    Returns:
        Packed inputs, lengths ``(batch,)`` and targets ``(batch, num_outputs)``.
    """
    packed, lengths = pack([sequence for sequence, _ in batch])
    targets = torch.stack([target for _, target in batch])  # (batch, num_outputs)
    return SequenceBatch(packed, lengths, targets)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The coefficient of determination, averaged over outputs (scikit-learn's default).

    ``R^2 = 1 - sum((y - y_hat)^2) / sum((y - mean(y))^2)`` per output column;
    a constant column scores 1 if predicted exactly, else 0.

    Shape:
        y_true, y_pred: ``(N, num_outputs)``.
    """
    residual = ((y_true - y_pred) ** 2).sum(axis=0)  # (num_outputs,)
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)  # (num_outputs,)
    constant = np.where(residual == 0, 1.0, 0.0)
    per_output = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), constant)
    return float(per_output.mean())


class SequenceRegressor(ManyToOneEstimator):
    """Predict real values from a sequence: a recurrent encoder, pooling, a linear head.

    The targets are standardised on the training data (``target_scaler_``),
    the model learns the standardised values with the mean squared error, and
    predictions come back in the original units. ``history_`` holds the
    training losses and RMSE/MAE in standardised units.

    Args:
        cell: The encoder's recurrent layer: "rnn" (:class:`rnnkit.RNN`, the
            default), "lstm" (:class:`rnnkit.LSTM`) or "gru" (:class:`rnnkit.GRU`).
        hidden_size, num_layers, nonlinearity, bidirectional, dropout: The
            encoder, as in :class:`rnnkit.RNN` (nonlinearity: the "rnn" cell only).
        embedding_dim: Width of the token embedding (token input only); None
            means hidden_size.
        min_freq: Tokens seen fewer times in training map to ``<unk>``.
        pooling: ``"mean"`` over steps (the default), ``"max"``, or the ``"last"``
            hidden state.
        scaling, patch_size, max_steps, validation_fraction: Derived from the
            data when "auto"; see :class:`~rnnkit.toolkit.estimators.sequence.ManyToOneEstimator`.
        epochs: None trains for ``max_steps`` optimiser steps; a number trains
            that many passes instead (and carves no validation part on "auto").
        batch_size, lr, weight_decay, grad_clip, early_stopping_patience, seed,
            device: Training, as in :class:`~rnnkit.toolkit.trainer.TrainConfig`
            (AdamW; the best epoch's weights are kept).
        verbose: A progress bar per epoch; None shows it when stderr is a terminal.

    Attributes:
        model_: The trained :class:`~rnnkit.toolkit.models.ManyToOneModel`.
        inputs_: What fit saw of X: kind, features per step or vocabulary.
        target_scaler_: The target standardisation, fitted on the training targets.
        target_shape_: Shape of one target: ``()`` for y of shape (N,), ``(k,)`` for (N, k).
        fitted_settings_: What fit chose from the data (scaling, patch size, steps,
            validation sequences, the epoch kept), also logged and saved.
        history_: One dict of losses and metrics per epoch.

    Shape:
        X: ``(N, L, C)``, N arrays ``(L_i, C)`` or N token lists; y: ``(N,)``
        or ``(N, k)``; predict returns the shape of y.

    Example:
        >>> X = np.random.randn(200, 10, 1)  # (sequences, steps, features)
        >>> y = X.sum(axis=(1, 2))  # (sequences,)
        >>> model = SequenceRegressor(hidden_size=16, epochs=20, lr=0.01).fit(X, y)
        >>> model.predict(X[:3]).shape  # (sequences,), in the units of y
        (3,)
        >>> model.score(X, y)  # R^2
    """

    _task = "regression"
    _estimator_type = "regressor"
    _collate = staticmethod(collate_regression)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values, in the units of the training targets.

        Returns:
            ``(N,)`` or ``(N, k)`` float64, as y was in fit.
        """
        return self._predict(self._sequences(X, "predict"), "predict")

    def score(self, X: Any, y: Any) -> float:
        """The coefficient of determination R^2 of the predictions (1 is perfect).

        Averaged over outputs when y has several columns; see :func:`r2_score`.
        """
        sequences = self._sequences(X, "score")
        targets = self._check_targets(y, sequences, "X", "y")
        predicted = self._predict(sequences, "score")
        n = len(targets)
        return r2_score(targets.reshape(n, -1), predicted.reshape(n, -1))

    def _predict(self, sequences: Sequences, method: str) -> np.ndarray:
        standardised = torch.stack(self._outputs(sequences, method))  # (N, num_outputs)
        values = self.target_scaler_.inverse_transform(standardised.double().numpy())
        return values.reshape(len(values), *self.target_shape_)

    def _check_targets(self, y: Any, sequences: Sequences, x_name: str, y_name: str) -> np.ndarray:
        values = y.detach().cpu().numpy() if isinstance(y, Tensor) else y
        try:
            targets = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise invalid(y_name, "numbers of shape (N,) or (N, k)", type(y).__name__) from None
        if targets.ndim not in (1, 2):
            raise invalid(y_name, "numbers of shape (N,) or (N, k)", f"shape {targets.shape}")
        check_length(targets, sequences, x_name, y_name)
        outputs = targets.reshape(len(targets), -1).shape[1]
        if hasattr(self, "target_scaler_") and outputs != len(self.target_scaler_.columns):
            expected = len(self.target_scaler_.columns)
            raise invalid(y_name, f"{expected} values per sequence (as in fit)", str(outputs))
        bad = np.argwhere(~np.isfinite(targets))
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            where = "".join(f"[{i}]" for i in index)
            raise invalid(y_name, "finite values", f"{targets[index]} at {y_name}{where}")
        return targets

    def _fit_targets(self, targets: np.ndarray) -> int:
        matrix = targets.reshape(len(targets), -1)  # (N, num_outputs)
        columns = [f"y{j}" for j in range(matrix.shape[1])]
        self.target_scaler_ = StandardScaler.fit(matrix, columns)
        self.target_shape_ = tuple(targets.shape[1:])
        return matrix.shape[1]

    def _encode_targets(self, targets: np.ndarray) -> list[Tensor]:
        standardised = self.target_scaler_.transform(targets.reshape(len(targets), -1))
        return list(torch.from_numpy(standardised.astype(np.float32)).unbind(0))

    def _fitted_state(self) -> dict[str, Any]:
        return super()._fitted_state() | {
            "target_scaler": self.target_scaler_.to_dict(),
            "target_shape": list(self.target_shape_),
        }

    def _restore_fitted(self, state: dict[str, Any]) -> None:
        super()._restore_fitted(state)
        self.target_scaler_ = StandardScaler.from_dict(state["target_scaler"])
        self.target_shape_ = tuple(state["target_shape"])
        outputs = len(self.target_scaler_.columns)
        # fit keeps y's shape after the first axis: () for y of shape (N,), (k,) for (N, k).
        if self.target_shape_ != (outputs,) and not (self.target_shape_ == () and outputs == 1):
            raise ValueError(
                f"target_shape {list(self.target_shape_)} does not fit the target scaler's "
                f"{outputs} columns"
            )

    def _implied_model_fields(self) -> dict[str, Any]:
        return super()._implied_model_fields() | {"num_outputs": len(self.target_scaler_.columns)}
