"""`SequenceTagger`: one label (tag) per step, e.g. part-of-speech tagging."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.data.batching import collate_tagging
from rnnkit.toolkit.data.vocab import LabelEncoder
from rnnkit.toolkit.estimators.inputs import Sequences, as_list, check_length
from rnnkit.toolkit.estimators.sequence import (
    SequenceEstimator,
    check_labels,
    fit_labels,
    label_array,
)

__all__ = ["SequenceTagger"]


class SequenceTagger(SequenceEstimator):
    """Predict a tag at every step: a recurrent encoder and a linear head per step.

    A bidirectional encoder (``bidirectional=True``) reads both sides of each
    step, which most tagging tasks want. Tags may be strings or integers, as
    in :class:`~rnnkit.toolkit.estimators.SequenceClassifier`.

    Args:
        cell: The encoder's recurrent layer: "rnn" (:class:`rnnkit.RNN`, the
            default), "lstm" (:class:`rnnkit.LSTM`) or "gru" (:class:`rnnkit.GRU`).
        hidden_size, num_layers, nonlinearity, bidirectional, dropout: The
            encoder, as in :class:`rnnkit.RNN` (nonlinearity: the "rnn" cell only).
        embedding_dim: Width of the token embedding (token input only); None
            means hidden_size.
        min_freq: Tokens seen fewer times in training map to ``<unk>``.
        epochs, batch_size, lr, weight_decay, grad_clip, early_stopping_patience,
            seed, device: Training, as in :class:`~rnnkit.toolkit.trainer.TrainConfig`
            (AdamW, cross-entropy per step; the best epoch's weights are kept).
        verbose: A progress bar per epoch; None shows it when stderr is a terminal.

    Attributes:
        model_: The trained :class:`~rnnkit.toolkit.models.TaggingModel`.
        inputs_: What fit saw of X: kind, features per step or vocabulary.
        classes_: The tags, in the order of predict_proba's columns.
        label_encoder_: The :class:`~rnnkit.toolkit.data.LabelEncoder` behind classes_.
        history_: One dict of losses and token accuracies per epoch.

    Shape:
        X: N token lists (or arrays ``(L_i, C)``); y: N tag lists, ``len(y[i]) ==
        len(X[i])``; predict returns N tag lists, predict_proba N arrays
        ``(L_i, len(classes_))``.

    Example:
        >>> X = [["in", "1999", "we", "won", "3", "cups"], ["call", "911"]]
        >>> y = [[0, 1, 0, 0, 1, 0], [0, 1]]  # 1 where the token is a number
        >>> tagger = SequenceTagger(bidirectional=True, epochs=30, lr=0.01).fit(X, y)
        >>> tagger.predict([["we", "won", "3"]])
        [[0, 0, 1]]
    """

    _task = "tagging"
    _collate = staticmethod(collate_tagging)

    def predict(self, X: Any) -> list[list[Any]]:
        """The most likely tag at every step, as the tags were given to fit.

        Returns:
            One tag list per sequence, as long as the sequence.
        """
        outputs = self._outputs(self._sequences(X, "predict"), "predict")
        return [self.label_encoder_.decode(logits.argmax(dim=-1)) for logits in outputs]

    def predict_proba(self, X: Any) -> list[np.ndarray]:
        """Tag probabilities at every step.

        Returns:
            One float64 array ``(L_i, len(classes_))`` per sequence, rows summing to 1.
        """
        outputs = self._outputs(self._sequences(X, "predict_proba"), "predict_proba")
        return [torch.softmax(logits.double(), dim=-1).numpy() for logits in outputs]

    def score(self, X: Any, y: Any) -> float:
        """Token accuracy: the share of steps, over all sequences, tagged as in y."""
        sequences = self._sequences(X, "score")
        tag_lists = self._check_targets(y, sequences, "X", "y")
        outputs: list[Tensor] = self._outputs(sequences, "score")
        correct = total = 0
        for logits, tags in zip(outputs, tag_lists, strict=True):
            predicted = self.label_encoder_.decode(logits.argmax(dim=-1))
            correct += sum(p == t for p, t in zip(predicted, tags, strict=True))
            total += len(tags)
        return correct / total

    def _check_targets(
        self, y: Any, sequences: Sequences, x_name: str, y_name: str
    ) -> list[list[Any]]:
        tag_lists = as_list(y, y_name)
        check_length(tag_lists, sequences, x_name, y_name)
        checked = []
        for i, (tags, length) in enumerate(zip(tag_lists, sequences.lengths, strict=True)):
            tags = as_list(tags, f"{y_name}[{i}]")
            if len(tags) != length:
                raise ValueError(
                    f"Received invalid values for arguments `{x_name}` and `{y_name}`, expected "
                    f"one tag per step, got {length} steps in {x_name}[{i}] and {len(tags)} tags "
                    f"in {y_name}[{i}]"
                )
            check_labels(tags, f"{y_name}[{i}]")
            checked.append(tags)
        return checked

    def _fit_targets(self, tag_lists: list[list[Any]]) -> int:
        self.label_encoder_ = fit_labels(list(itertools.chain.from_iterable(tag_lists)), "y")
        self.classes_ = label_array(self.label_encoder_.classes)
        return len(self.label_encoder_)

    def _encode_targets(self, tag_lists: list[list[Any]]) -> list[list[int]]:
        return [self.label_encoder_.encode(tags) for tags in tag_lists]

    def _fitted_state(self) -> dict[str, Any]:
        return super()._fitted_state() | {"labels": self.label_encoder_.to_dict()}

    def _restore_fitted(self, state: dict[str, Any]) -> None:
        super()._restore_fitted(state)
        self.label_encoder_ = LabelEncoder.from_dict(state["labels"])
        self.classes_ = label_array(self.label_encoder_.classes)

    def _implied_model_fields(self) -> dict[str, Any]:
        return super()._implied_model_fields() | {"num_outputs": len(self.label_encoder_)}
