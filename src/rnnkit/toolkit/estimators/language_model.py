"""`CharLanguageModel`: a character-level language model that scores and writes text."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.toolkit.data.batching import collate_tagging
from rnnkit.toolkit.data.vocab import PAD, UNK, Vocabulary
from rnnkit.toolkit.estimators.base import Estimator, check_positive_int
from rnnkit.toolkit.estimators.inputs import invalid

__all__ = ["CharLanguageModel"]

# What a generated <unk> reads as. No training character maps to <unk>, so the
# model learns to give it almost no probability, but sampling may still draw it.
UNKNOWN_CHAR = "\ufffd"
# Characters per forward pass when scoring; the hidden state carries across
# segments, so every character is scored with all the text before it.
SCORE_SEGMENT = 1024


class CharLanguageModel(Estimator):
    """Predict the next character of a text; generate text one character at a time.

    Training cuts every text into pieces of ``seq_length`` characters, each
    with the targets shifted by one character (the last piece of a text may
    be shorter; no character is dropped), and the model learns them with the
    cross-entropy, in packed batches of ``batch_size`` pieces. The vocabulary
    is the training characters plus ``<pad>`` and ``<unk>``: characters not seen
    in training read as ``<unk>``.

    A bidirectional model would see the future, so ``bidirectional=True`` is
    refused by fit.

    Args:
        seq_length: Characters per training piece (backpropagation through time).
        cell: The encoder's recurrent layer: "rnn" (:class:`rnnkit.RNN`, the
            default), "lstm" (:class:`rnnkit.LSTM`) or "gru" (:class:`rnnkit.GRU`).
        hidden_size, num_layers, nonlinearity, bidirectional, dropout: The
            encoder, as in :class:`rnnkit.RNN` (nonlinearity: the "rnn" cell only).
        embedding_dim: Width of the character embedding; None means hidden_size.
        epochs, batch_size, lr, weight_decay, grad_clip, early_stopping_patience,
            seed, device: Training, as in :class:`~rnnkit.toolkit.trainer.TrainConfig`
            (AdamW; the best epoch's weights are kept).
        verbose: A progress bar per epoch; None shows it when stderr is a terminal.

    Attributes:
        model_: The trained :class:`~rnnkit.toolkit.models.LanguageModel`.
        vocabulary_: The character :class:`~rnnkit.toolkit.data.Vocabulary`.
        history_: One dict of losses, accuracies and perplexities per epoch.

    Example:
        >>> lm = CharLanguageModel(seq_length=32, epochs=5, lr=0.01).fit("abcabc" * 200)
        >>> lm.generate("ab", length=7, top_k=1)  # greedy: the likeliest continuation
        'cabcabc'
        >>> lm.score("abcabcabc")  # mean log-likelihood per character, in nats (0 is best)
        >>> lm.perplexity("abcabcabc")  # exp(-score): 1 is best
    """

    _task = "language_model"

    def __init__(
        self,
        *,
        seq_length: int = 64,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "rnn",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        embedding_dim: int | None = None,
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
        self.seq_length = seq_length
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.embedding_dim = embedding_dim
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
        self, X: str | list[str], y: None = None, validation_data: str | list[str] | None = None
    ) -> CharLanguageModel:
        """Learn the characters of `X`; every earlier fit is forgotten.

        Args:
            X: A text, or a list of texts (each read on its own: no piece
                crosses from one text into the next).
            y: None: the targets are the next characters of X.
            validation_data: A text or list of texts scored after every epoch.

        Returns:
            The estimator itself, fitted.
        """
        self._reset()
        if y is not None:
            raise invalid(
                "y", "None (a language model's targets are the next characters of X)",
                type(y).__name__,
            )  # fmt: skip
        train_config = self._train_config()
        check_positive_int("seq_length", self.seq_length)
        texts = _as_texts(X, "X")
        vocabulary = Vocabulary.build(texts)
        train = self._pieces(vocabulary, texts, "X")
        val = None
        if validation_data is not None:
            val_texts = _as_texts(validation_data, "validation_data")
            val = self._pieces(vocabulary, val_texts, "validation_data")
        config = self._model_config(
            self._task, vocab_size=len(vocabulary), padding_idx=Vocabulary.pad_index
        )
        self.model_, self.history_ = self._train_model(
            config, train_config, train, val, collate_tagging
        )
        self.vocabulary_ = vocabulary
        return self

    def predict(self, X: str | list[str]) -> str | list[str]:
        """The likeliest next character after each prompt.

        Returns:
            One character for a str `X`, a list of them for a list of prompts.
        """
        model = self._inference_model("predict")
        prompts = _as_texts(X, "X")
        next_chars = []
        with torch.no_grad():
            for i, prompt in enumerate(prompts):
                if not prompt:
                    raise invalid("X", "non-empty prompts", f"an empty one at X[{i}]")
                ids = self._encode(prompt, model)  # (length,)
                logits = model(ids.unsqueeze(0))[0, -1]  # (vocab_size,)
                logits[Vocabulary.pad_index] = -math.inf  # as generate: padding is never produced
                next_chars.append(self._decode([int(logits.argmax())]))
        return next_chars[0] if isinstance(X, str) else next_chars

    def score(self, X: str | list[str], y: None = None) -> float:
        """Mean log-likelihood per character of `X`, in nats: minus the cross-entropy.

        Higher is better (0 would be certainty), as scikit-learn's scores are;
        :meth:`perplexity` is ``exp(-score)``. Every character after the first of
        each text is scored, with all the text before it as context.
        """
        if y is not None:
            raise invalid("y", "None (the targets are the next characters of X)", type(y).__name__)
        model = self._inference_model("score")
        total, count = self._cross_entropy(model, _as_texts(X, "X"))
        return -total / count

    def perplexity(self, X: str | list[str]) -> float:
        """``exp`` of the mean cross-entropy per character: 1 is perfect, len(vocabulary_)
        is a uniform guess."""
        model = self._inference_model("perplexity")
        total, count = self._cross_entropy(model, _as_texts(X, "X"))
        return math.exp(total / count)

    def generate(
        self,
        prompt: str,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """Sample `length` characters after `prompt`.

        Args:
            prompt: At least one character; unseen characters read as ``<unk>``.
            length: Characters to generate (>= 0).
            temperature: Divides the logits: below 1 sharpens, above 1 flattens.
            top_k: Sample only among the k likeliest characters; 1 is greedy.
            seed: Equal seeds give equal text (the global generator is not touched);
                None draws a fresh seed.

        Returns:
            The new characters only (not the prompt).

        Example:
            >>> lm.generate("ROMEO:", length=200, temperature=0.8, seed=0)
        """
        model = self._inference_model("generate")
        if not isinstance(prompt, str) or not prompt:
            raise invalid("prompt", "a non-empty str", repr(prompt))
        ids = model.generate(self._encode(prompt, model), length, temperature, top_k, seed)
        return self._decode(ids)

    def _pieces(
        self, vocabulary: Vocabulary, texts: list[str], name: str
    ) -> list[tuple[Tensor, Tensor]]:
        """``(inputs, next characters)`` pieces of at most seq_length characters."""
        pieces = []
        for text in texts:
            ids = torch.tensor(vocabulary.encode(text), dtype=torch.int64)  # (length,)
            last = len(ids) - 1  # the last character is a target only
            for start in range(0, last, self.seq_length):
                stop = min(start + self.seq_length, last)
                pieces.append((ids[start:stop], ids[start + 1 : stop + 1]))
        if not pieces:
            raise invalid(name, "a text of at least 2 characters", f"lengths {_lengths(texts)}")
        return pieces

    @torch.no_grad()
    def _cross_entropy(self, model: nn.Module, texts: list[str]) -> tuple[float, int]:
        """Summed cross-entropy (nats) of every character after the first, and their count."""
        total, count = 0.0, 0
        for text in texts:
            ids = self._encode(text, model)  # (length,)
            state = None
            for start in range(0, len(text) - 1, SCORE_SEGMENT):
                stop = min(start + SCORE_SEGMENT, len(text) - 1)
                encoded = model.encoder(ids[start:stop].unsqueeze(0), hx=state)
                logits = model.head(encoded)[0]  # (segment, vocab_size)
                targets = ids[start + 1 : stop + 1]  # (segment,)
                total += F.cross_entropy(logits.double(), targets, reduction="sum").item()
                count += stop - start
                state = encoded.state  # h_n (num_layers, 1, hidden), and c_n for an LSTM
        if count == 0:
            raise invalid("X", "a text of at least 2 characters", f"lengths {_lengths(texts)}")
        return total, count

    def _encode(self, text: str, model: nn.Module) -> Tensor:
        device = model.head.linear.weight.device
        return torch.tensor(self.vocabulary_.encode(text), dtype=torch.int64, device=device)

    def _decode(self, ids: list[int]) -> str:
        tokens = self.vocabulary_.decode(ids)
        return "".join(UNKNOWN_CHAR if token in (PAD, UNK) else token for token in tokens)

    def _fitted_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary_.to_dict()}

    def _restore_fitted(self, state: dict[str, Any]) -> None:
        self.vocabulary_ = Vocabulary.from_dict(state["vocabulary"])

    def _implied_model_fields(self) -> dict[str, Any]:
        return {"task": self._task, "vocab_size": len(self.vocabulary_)}


def _as_texts(X: Any, name: str) -> list[str]:
    if isinstance(X, str):
        return [X]
    if not isinstance(X, (list, tuple)) or not X:
        got = type(X).__name__ if not isinstance(X, (list, tuple)) else "an empty list"
        raise invalid(name, "a str or a non-empty list of str", got)
    for i, text in enumerate(X):
        if not isinstance(text, str):
            raise invalid(name, "a str or a list of str", f"{type(text).__name__} at {name}[{i}]")
    return list(X)


def _lengths(texts: list[str]) -> list[int] | str:
    lengths = [len(text) for text in texts]
    return lengths if len(lengths) <= 10 else f"{lengths[:10]} ..."
