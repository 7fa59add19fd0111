"""`SequenceTranslator`: an encoder-decoder with attention that translates sentences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rnnkit.toolkit.estimators.base import Estimator, check_positive_int
from rnnkit.toolkit.estimators.inputs import invalid
from rnnkit.toolkit.translation.data import (
    SentencePairs,
    TranslationDataset,
    collate_translation,
    split_by_target,
)
from rnnkit.toolkit.translation.scores import corpus_scores
from rnnkit.toolkit.translation.subwords import SubwordVocabulary, choose_vocab_size

__all__ = ["SequenceTranslator"]


class SequenceTranslator(Estimator):
    """Translate sentences: subwords, a bidirectional encoder, a decoder with attention.

    ``fit`` trains a sentencepiece subword vocabulary per language on the
    training pairs, holds out ``validation_fraction`` of them by distinct
    target sentence (the best validation epoch's weights are kept), and trains
    a :class:`~rnnkit.toolkit.translation.model.TranslationModel` with teacher
    forcing and label smoothing. ``predict`` decodes with beam search
    (``beam_size``; 1 is greedy).

    Args:
        cell: The recurrent layers: "gru" (the default), "lstm" or "rnn" (Elman).
        hidden_size, num_layers, nonlinearity, dropout: The encoder's and the
            decoder's layers, as in :class:`rnnkit.RNN`.
        bidirectional: The encoder reads each source both ways (the decoder never does).
        embedding_dim: Width of the subword embeddings; None means hidden_size.
        attention: "multiplicative" (Luong) or "additive" (Bahdanau).
        tie_embeddings: The output layer shares the target embedding's weights.
        input_dropout, output_dropout: Dropout on the embeddings and before the output.
        label_smoothing: Of the training loss (0 is none).
        vocab_size: Subwords per language; 0 takes half of each side's distinct words,
            within [100, 8000], with room for every distinct character.
        validation_fraction: Share of the distinct target sentences held out to pick
            the best epoch; 0 trains on all of them and keeps the last epoch.
        beam_size: Hypotheses kept per sentence by predict; 1 is greedy search.
        epochs, batch_size, lr, weight_decay, grad_clip, early_stopping_patience,
            seed, device: Training, as in :class:`~rnnkit.toolkit.trainer.TrainConfig`.
        verbose: A progress bar per epoch; None shows it when stderr is a terminal.

    Attributes:
        model_: The trained :class:`~rnnkit.toolkit.translation.model.TranslationModel`.
        source_vocabulary_, target_vocabulary_: The subword vocabularies.
        history_: One dict of losses and accuracies per epoch.

    Example:
        >>> translator = SequenceTranslator(epochs=20).fit(german, english)
        >>> translator.predict(["Ein Mann fährt Fahrrad."])
        ['A man is riding a bike.']
        >>> translator.score(german_test, english_test)  # corpus BLEU, 0-100
    """

    _task = "translation"

    def __init__(
        self,
        *,
        cell: str = "gru",
        hidden_size: int = 256,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bidirectional: bool = True,
        dropout: float = 0.0,
        embedding_dim: int | None = None,
        attention: str = "multiplicative",
        tie_embeddings: bool = False,
        input_dropout: float = 0.3,
        output_dropout: float = 0.3,
        label_smoothing: float = 0.1,
        vocab_size: int = 0,
        validation_fraction: float = 0.1,
        beam_size: int = 5,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        grad_clip: float | None = 1.0,
        early_stopping_patience: int | None = None,
        seed: int = 0,
        device: str = "auto",
        verbose: bool | None = None,
    ) -> None:
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.embedding_dim = embedding_dim
        self.attention = attention
        self.tie_embeddings = tie_embeddings
        self.input_dropout = input_dropout
        self.output_dropout = output_dropout
        self.label_smoothing = label_smoothing
        self.vocab_size = vocab_size
        self.validation_fraction = validation_fraction
        self.beam_size = beam_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.early_stopping_patience = early_stopping_patience
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def fit(self, X: Sequence[str], y: Sequence[str]) -> SequenceTranslator:
        """Learn to translate each sentence of `X` into the sentence of `y` at its index.

        Args:
            X: Source sentences.
            y: Their translations, as many as `X`.

        Returns:
            The estimator itself, fitted.
        """
        self._reset()
        pairs = SentencePairs(_sentences(X, "X"), _sentences(y, "y"))
        if len(pairs.sources) != len(pairs.targets):
            raise invalid(
                "y", f"one translation per sentence of X ({len(pairs.sources)})",
                f"{len(pairs.targets)} sentences",
            )  # fmt: skip
        fraction = self.validation_fraction
        if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise invalid("validation_fraction", "a number in [0, 1)", fraction)
        if (
            isinstance(self.vocab_size, bool)
            or not isinstance(self.vocab_size, int)
            or (0 < self.vocab_size < 8 or self.vocab_size < 0)
        ):
            raise invalid("vocab_size", "0 (from the data) or an integer >= 8", self.vocab_size)
        check_positive_int("beam_size", self.beam_size)
        train_config = self._train_config()
        train_i, val_i, _ = split_by_target(pairs, fraction, 0.0, seed=self.seed)
        if not train_i:
            raise invalid("X", "pairs left for training after validation_fraction", len(X))
        train = pairs.subset(train_i)
        sizes = [self.vocab_size or choose_vocab_size(side) for side in train]
        source_vocab = SubwordVocabulary.train(train.sources, sizes[0])
        target_vocab = SubwordVocabulary.train(train.targets, sizes[1])
        val = None
        if val_i:
            val = TranslationDataset(pairs.subset(val_i), source_vocab, target_vocab)
        config = self._model_config(
            self._task, vocab_size=len(source_vocab), num_outputs=len(target_vocab),
            attention=self.attention, tie_embeddings=self.tie_embeddings,
            input_dropout=self.input_dropout, output_dropout=self.output_dropout,
        )  # fmt: skip
        self.model_, self.history_ = self._train_model(
            config, train_config, TranslationDataset(train, source_vocab, target_vocab), val,
            collate_translation, label_smoothing=self.label_smoothing,
        )  # fmt: skip
        self.source_vocabulary_, self.target_vocabulary_ = source_vocab, target_vocab
        return self

    def predict(self, X: Sequence[str]) -> list[str]:
        """One translation per sentence of `X` (beam search with ``beam_size``)."""
        from rnnkit.toolkit.tasks.translate import TranslationTransform, translate_sentences

        model = self._inference_model("predict")
        check_positive_int("beam_size", self.beam_size)
        transform = TranslationTransform(self.source_vocabulary_, self.target_vocabulary_)
        return translate_sentences(model, transform, _sentences(X, "X"), beam_size=self.beam_size)

    def score(self, X: Sequence[str], y: Sequence[str]) -> float:
        """Corpus BLEU (sacreBLEU, cased, 0-100) of the translations of `X` against `y`."""
        hypotheses = self.predict(X)
        references = _sentences(y, "y")
        if len(references) != len(hypotheses):
            raise invalid("y", f"one reference per sentence of X ({len(hypotheses)})",
                          f"{len(references)} sentences")  # fmt: skip
        return corpus_scores(hypotheses, references)["bleu"]

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "source": self.source_vocabulary_.to_dict(),
            "target": self.target_vocabulary_.to_dict(),
        }

    def _restore_fitted(self, state: Mapping[str, Any]) -> None:
        self.source_vocabulary_ = SubwordVocabulary.from_dict(state["source"])
        self.target_vocabulary_ = SubwordVocabulary.from_dict(state["target"])

    def _implied_model_fields(self) -> dict[str, Any]:
        return {
            "task": self._task,
            "vocab_size": len(self.source_vocabulary_),
            "num_outputs": len(self.target_vocabulary_),
        }


def _sentences(values: Any, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise invalid(name, "a non-empty list of sentences", type(values).__name__)
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise invalid(name, "non-empty sentences (str)", f"{value!r} at {name}[{i}]")
    return [value.strip() for value in values]
