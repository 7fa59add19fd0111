"""`SequenceClassifier`: one label per sequence."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.data.batching import collate_classification
from rnnkit.toolkit.data.vocab import LabelEncoder
from rnnkit.toolkit.estimators.inputs import Sequences, as_list, check_length
from rnnkit.toolkit.estimators.sequence import (
    ManyToOneEstimator,
    check_labels,
    fit_labels,
    label_array,
)

__all__ = ["SequenceClassifier"]


class SequenceClassifier(ManyToOneEstimator):
    """Predict a label from a sequence: a recurrent encoder, pooling, a linear head.

    Labels may be strings or integers, in any mix (``"1"`` and ``1`` are
    different labels); predict returns them as given. They map to class
    indices in sorted order (integers first), as ``classes_`` lists them.

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
        classes_: The labels, in the order of predict_proba's columns.
        label_encoder_: The :class:`~rnnkit.toolkit.data.LabelEncoder` behind classes_.
        fitted_settings_: What fit chose from the data (scaling, patch size, steps,
            validation sequences, the epoch kept), also logged and saved.
        history_: One dict of losses and accuracies per epoch.

    Shape:
        X: ``(N, L, C)``, N arrays ``(L_i, C)`` or N token lists; y: ``(N,)``;
        predict returns ``(N,)``, predict_proba ``(N, len(classes_))``.

    Example:
        >>> X = [["a", "great", "film"], ["dull", "and", "long"], ["great", "fun"]]
        >>> model = SequenceClassifier(epochs=30, lr=0.01).fit(X, ["pos", "neg", "pos"])
        >>> model.predict([["great", "unseen-word"]])  # unknown tokens read as <unk>
        array(['pos'], dtype='<U3')
        >>> model.predict_proba([["dull"]]).shape  # (sequences, classes)
        (1, 2)
    """

    _task = "classification"
    _estimator_type = "classifier"
    _stratified = True
    _collate = staticmethod(collate_classification)

    def predict(self, X: Any) -> np.ndarray:
        """The most likely label of every sequence, as the labels were given to fit.

        Returns:
            ``(N,)``: a str, int or (mixed labels) object array.
        """
        logits = self._logits(self._sequences(X, "predict"), "predict")
        return label_array(self.label_encoder_.decode(logits.argmax(dim=-1)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of every sequence.

        Returns:
            ``(N, len(classes_))`` float64, each row summing to 1.
        """
        logits = self._logits(self._sequences(X, "predict_proba"), "predict_proba")
        return torch.softmax(logits.double(), dim=-1).numpy()

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the share of sequences whose predicted label equals y's."""
        sequences = self._sequences(X, "score")
        labels = self._check_targets(y, sequences, "X", "y")
        predicted = self.label_encoder_.decode(self._logits(sequences, "score").argmax(dim=-1))
        return float(np.mean([p == t for p, t in zip(predicted, labels, strict=True)]))

    def _logits(self, sequences: Sequences, method: str) -> Tensor:
        return torch.stack(self._outputs(sequences, method))  # (N, classes)

    def _check_targets(self, y: Any, sequences: Sequences, x_name: str, y_name: str) -> list[Any]:
        labels = as_list(y, y_name)
        check_length(labels, sequences, x_name, y_name)
        check_labels(labels, y_name)
        return labels

    def _fit_targets(self, labels: list[Any]) -> int:
        self.label_encoder_ = fit_labels(labels, "y")
        self.classes_ = label_array(self.label_encoder_.classes)
        return len(self.label_encoder_)

    def _encode_targets(self, labels: list[Any]) -> list[int]:
        return self.label_encoder_.encode(labels)

    def _fitted_state(self) -> dict[str, Any]:
        return super()._fitted_state() | {"labels": self.label_encoder_.to_dict()}

    def _restore_fitted(self, state: dict[str, Any]) -> None:
        super()._restore_fitted(state)
        self.label_encoder_ = LabelEncoder.from_dict(state["labels"])
        self.classes_ = label_array(self.label_encoder_.classes)

    def _implied_model_fields(self) -> dict[str, Any]:
        return super()._implied_model_fields() | {"num_outputs": len(self.label_encoder_)}
