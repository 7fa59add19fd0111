r"""Sequence models: a recurrent encoder (the feature extractor) and the heads that read it.

Every model is an ``encoder`` (:class:`RecurrentEncoder`: an :class:`rnnkit.RNN`,
:class:`rnnkit.LSTM` or :class:`rnnkit.GRU`, chosen by ``cell``, with
``batch_first=True`` and, for token input, an ``nn.Embedding``) followed by a
``head`` (the estimator):

==================  ===================  ==========================================
model               head                 output
==================  ===================  ==========================================
``ManyToOneModel``  ``ManyToOneHead``    ``(batch, num_outputs)``: one per sequence
``TaggingModel``    ``TaggingHead``      ``(batch, window, num_outputs)``: one per step
``LanguageModel``   ``TaggingHead``      ``(batch, window, vocab_size)``: next-token logits
==================  ===================  ==========================================

Shapes are spelled out: ``batch`` sequences of ``window`` steps with
``features`` values per step (real-valued input), or ``(batch, window)``
integer token ids (token input); ``hidden`` = hidden_size and ``directions`` =
2 if bidirectional else 1.

Variable-length batches come either as a padded tensor with ``lengths`` or as
a ``PackedSequence``. Both run through the RNN packed, so no step of padding is
ever computed, and ``h_n`` holds each sequence's state at its own last step.

Every model carries its :class:`ModelConfig` as ``config``;
``build_model(dataclasses.asdict(model.config))`` builds the same architecture
again, which is how checkpoints rebuild a model before loading its weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.recurrent import PROBABILITY_OPTIONS
from rnnkit.toolkit.arguments import invalid_argument, is_int, is_real
from rnnkit.toolkit.cells import check_cell, layer_options_of, recurrent_layer
from rnnkit.toolkit.ensemble import EnsembleModel
from rnnkit.toolkit.word_embedding import WordCharEmbedding

TASKS = ("regression", "classification", "tagging", "language_model", "translation")
MANY_TO_ONE_TASKS = ("regression", "classification")
POOLINGS = ("last", "mean", "max")
NONLINEARITIES = ("tanh", "relu")
ATTENTIONS = ("additive", "multiplicative")  # rnnkit.toolkit.translation.attention's

__all__ = [
    "POOLINGS",
    "TASKS",
    "EncoderOutput",
    "LanguageModel",
    "ManyToOneHead",
    "ManyToOneModel",
    "ModelConfig",
    "RecurrentEncoder",
    "TaggingHead",
    "TaggingModel",
    "build_model",
]


def _check_int(name: str, value: object, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise invalid_argument(name, what + (" or None" if optional else ""), value)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a sequence model; ``build_model(config)`` builds it.

    Give exactly one of ``input_size`` (real-valued input) and ``vocab_size``
    (token input). Defaults left as None are resolved here and stored, so
    ``ModelConfig(**dataclasses.asdict(config)) == config``.

    Example:
        >>> config = ModelConfig(task="classification", vocab_size=100, num_outputs=2)
        >>> config.embedding_dim  # resolved to hidden_size
        64
    """

    # What is predicted: "regression" or "classification" of a whole sequence
    # (many-to-one), "tagging" (a class per step) or "language_model" (the next token).
    task: str = "regression"
    # Features per step of real-valued input; None for token input.
    input_size: int | None = None
    # Number of token ids, padding included; None for real-valued input.
    vocab_size: int | None = None
    # Width of the token embedding; None means hidden_size. Token input only.
    embedding_dim: int | None = None
    # Token id of padding: embedded as zeros and never generated; None if there is none.
    padding_idx: int | None = 0
    # Features of each recurrent layer's hidden state.
    hidden_size: int = 64
    # Stacked recurrent layers; layer k > 0 reads every step of layer k - 1.
    num_layers: int = 1
    # The recurrent layer: "rnn" (rnnkit.RNN, Elman), "lstm" (rnnkit.LSTM) or "gru" (rnnkit.GRU).
    cell: str = "rnn"
    # "tanh" or "relu", as in torch.nn.RNN; "rnn" cell only (lstm and gru take "tanh").
    nonlinearity: str = "tanh"
    # Also read every sequence backwards and concatenate both directions' features.
    bidirectional: bool = False
    # Dropout probability between recurrent layers in training (needs num_layers > 1).
    dropout: float = 0.0
    # DropConnect on the recurrent weights in training, one mask per forward call
    # (rnnkit's weight_drop option; AWD-LSTM); 0 is off.
    weight_drop: float = 0.0
    # Variational dropout on the state the recurrent product reads, one mask per sequence
    # (rnnkit's recurrent_dropout option; Gal & Ghahramani 2016); 0 is off.
    recurrent_dropout: float = 0.0
    # In training each state unit keeps its previous value with this probability (rnnkit's
    # zoneout option; Krueger et al. 2017); 0 is off.
    zoneout: float = 0.0
    # Layer normalisation of each gate's recurrent product (rnnkit's layer_norm option).
    layer_norm: bool = False
    # Values per prediction: targets per sequence for regression (None means 1), classes
    # for classification and tagging, vocab_size for language_model (None means vocab_size).
    num_outputs: int | None = None
    # How a many-to-one model summarises a sequence: the "last" hidden state of both
    # directions, or the "mean" or "max" of the top layer's outputs over valid steps.
    pooling: str = "last"
    # Dropout probability on the encoder's input (the embedded tokens or the features) and
    # on the features the head reads, in training. Regularises small data sets.
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    # Token input only: character ids (0 = padding) for a bidirectional character RNN
    # per word (see rnnkit.toolkit.word_embedding); None means word ids alone.
    char_vocab_size: int | None = None
    # Width of the character embedding; None means char_hidden_size.
    char_embedding_dim: int | None = None
    # Hidden features per direction of the character RNN (needs char_vocab_size).
    char_hidden_size: int | None = None
    # Many-to-one tasks: this many models of this architecture, their outputs averaged
    # (rnnkit.toolkit.ensemble); 1 is a single model.
    ensemble_size: int = 1
    # Translation only: how the decoder scores source steps, "multiplicative" (Luong) or
    # "additive" (Bahdanau); see rnnkit.toolkit.translation.attention. Multiplicative
    # trains a 128-sentence Multi30k batch in about 0.7 s against 1.3 s on one CPU core.
    attention: str = "multiplicative"
    # Translation only: the output layer shares the target embedding's weights.
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise invalid_argument("task", f"one of {TASKS}", self.task)
        if (self.input_size is None) == (self.vocab_size is None):
            raise ValueError(
                "Received invalid values for arguments `input_size` and `vocab_size`, expected "
                "exactly one of them (input_size for real-valued input, vocab_size for token "
                f"ids), got input_size={self.input_size!r} and vocab_size={self.vocab_size!r}"
            )
        _check_int("input_size", self.input_size, 1, optional=True)
        _check_int("vocab_size", self.vocab_size, 1, optional=True)
        if self.vocab_size is None:
            if self.embedding_dim is not None:
                raise invalid_argument(
                    "embedding_dim", "None for real-valued input", self.embedding_dim
                )
        else:
            _check_int("embedding_dim", self.embedding_dim, 1, optional=True)
            if self.padding_idx is not None and (
                not is_int(self.padding_idx) or not 0 <= self.padding_idx < self.vocab_size
            ):
                raise invalid_argument(
                    "padding_idx",
                    f"None or a token id in [0, vocab_size={self.vocab_size})",
                    self.padding_idx,
                )
            if self.embedding_dim is None:
                object.__setattr__(self, "embedding_dim", self.hidden_size)
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("num_layers", self.num_layers, 1)
        if self.nonlinearity not in NONLINEARITIES:
            raise invalid_argument("nonlinearity", f"one of {NONLINEARITIES}", self.nonlinearity)
        check_cell(self.cell, self.nonlinearity)
        if not isinstance(self.bidirectional, bool):
            raise invalid_argument("bidirectional", "a bool", self.bidirectional)
        if not is_real(self.dropout) or not 0 <= self.dropout <= 1:
            raise invalid_argument("dropout", "a number in [0, 1]", self.dropout)
        for name in PROBABILITY_OPTIONS:
            value = getattr(self, name)
            if not is_real(value) or not 0 <= value < 1:
                raise invalid_argument(name, "a number in [0, 1)", value)
        if not isinstance(self.layer_norm, bool):
            raise invalid_argument("layer_norm", "a bool", self.layer_norm)
        if self.pooling not in POOLINGS:
            raise invalid_argument("pooling", f"one of {POOLINGS}", self.pooling)
        for name in ("input_dropout", "output_dropout"):
            value = getattr(self, name)
            if not is_real(value) or not 0 <= value < 1:
                raise invalid_argument(name, "a number in [0, 1)", value)
        self._check_chars()
        _check_int("ensemble_size", self.ensemble_size, 1)
        if self.ensemble_size > 1 and self.task not in MANY_TO_ONE_TASKS:
            raise invalid_argument(
                "ensemble_size", f"1 for task {self.task!r} (ensembles are many-to-one)",
                self.ensemble_size,
            )  # fmt: skip
        if self.task not in MANY_TO_ONE_TASKS and self.pooling != "last":
            raise invalid_argument(
                "pooling", f"the default 'last' for task {self.task!r} (it predicts every step)",
                self.pooling,
            )  # fmt: skip
        self._check_translation()
        if self.task == "language_model":
            self._check_language_model()
        elif self.num_outputs is None and self.task == "regression":
            object.__setattr__(self, "num_outputs", 1)
        elif self.task == "regression":
            _check_int("num_outputs", self.num_outputs, 1)
        elif not is_int(self.num_outputs) or self.num_outputs < 2:
            raise invalid_argument(
                "num_outputs", f"the number of classes (an integer >= 2) for task {self.task!r}",
                self.num_outputs,
            )  # fmt: skip

    def _check_chars(self) -> None:
        if self.char_vocab_size is None:
            for name in ("char_embedding_dim", "char_hidden_size"):
                if getattr(self, name) is not None:
                    raise invalid_argument(
                        name, "None without char_vocab_size", getattr(self, name)
                    )
            return
        if self.vocab_size is None:
            raise invalid_argument(
                "char_vocab_size", "None for real-valued input", self.char_vocab_size
            )
        _check_int("char_vocab_size", self.char_vocab_size, 2)
        _check_int("char_hidden_size", self.char_hidden_size, 1)
        _check_int("char_embedding_dim", self.char_embedding_dim, 1, optional=True)
        if self.char_embedding_dim is None:
            object.__setattr__(self, "char_embedding_dim", self.char_hidden_size)

    def _check_translation(self) -> None:
        if self.attention not in ATTENTIONS:
            raise invalid_argument("attention", f"one of {ATTENTIONS}", self.attention)
        if not isinstance(self.tie_embeddings, bool):
            raise invalid_argument("tie_embeddings", "a bool", self.tie_embeddings)
        if self.task != "translation":
            for name, default in (("attention", "multiplicative"), ("tie_embeddings", False)):
                if getattr(self, name) != default:
                    raise invalid_argument(
                        name, f"the default {default!r} for task {self.task!r} (translation "
                        "only)", getattr(self, name),
                    )  # fmt: skip
            return
        if self.vocab_size is None or self.char_vocab_size is not None:
            raise invalid_argument(
                "vocab_size", "the source's subword count, and no char_vocab_size, for task "
                "'translation'", self.vocab_size,
            )  # fmt: skip

    def _check_language_model(self) -> None:
        if self.vocab_size is None:
            raise invalid_argument(
                "vocab_size", "a positive integer for task 'language_model'", None
            )
        if self.char_vocab_size is not None:
            raise invalid_argument(
                "char_vocab_size", "None for task 'language_model' (its tokens are characters)",
                self.char_vocab_size,
            )  # fmt: skip
        if self.bidirectional:
            raise ValueError(
                "Received an invalid value for argument `bidirectional`, expected False for "
                "task 'language_model', got True: a bidirectional model sees the future, so "
                "it cannot generate autoregressively"
            )
        if self.num_outputs is None:
            object.__setattr__(self, "num_outputs", self.vocab_size)
        elif self.num_outputs != self.vocab_size:
            raise invalid_argument(
                "num_outputs",
                f"None or vocab_size={self.vocab_size} for task 'language_model'",
                self.num_outputs,
            )

    @property
    def num_directions(self) -> int:
        """2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1


class EncoderOutput(NamedTuple):
    """What :class:`RecurrentEncoder` returns.

    Padded steps of ``output`` are zeros; ``lengths`` is None when every
    sequence fills the window. ``h_n`` is the hidden state whatever the cell;
    an LSTM's cell state comes beside it in ``c_n``, and ``state`` is what to
    hand back as ``hx`` to carry on from the last step.
    """

    output: Tensor  # (batch, window, directions * hidden): the top layer at every step
    h_n: Tensor  # (directions * num_layers, batch, hidden): each sequence's last state
    lengths: Tensor | None  # (batch,) int64 on the CPU: valid steps per sequence
    c_n: Tensor | None = None  # like h_n: the LSTM's last cell state; None for rnn and gru

    @property
    def state(self) -> Tensor | tuple[Tensor, Tensor]:
        """The encoder's ``hx`` that continues these sequences: ``(h_n, c_n)`` or ``h_n``."""
        return self.h_n if self.c_n is None else (self.h_n, self.c_n)


class RecurrentEncoder(nn.Module):
    """An :class:`rnnkit.RNN`, LSTM or GRU over real-valued features or embedded token ids.

    Args:
        hidden_size: features of the hidden state.
        input_size: features per step of real-valued input (give this or vocab_size).
        vocab_size: number of token ids for token input (give this or input_size).
        embedding_dim: width of the token embedding; default hidden_size.
        padding_idx: token id embedded as zeros (``nn.Embedding``'s padding_idx).
        cell: the recurrent layer (:mod:`rnnkit.toolkit.cells`): "rnn"
            (:class:`rnnkit.RNN`), "lstm" (:class:`rnnkit.LSTM`) or "gru" (:class:`rnnkit.GRU`).
        num_layers, nonlinearity, bidirectional, dropout: as in :class:`rnnkit.RNN`;
            ``nonlinearity`` must stay "tanh" with a gated cell.
        layer_options: rnnkit's regularising options for the layer
            (:data:`rnnkit.toolkit.cells.LAYER_OPTIONS`: weight_drop, recurrent_dropout,
            zoneout, layer_norm); absent or off by default.
        input_dropout: dropout probability on the RNN's input in training.
        char_vocab_size, char_embedding_dim, char_hidden_size: give these to read
            each token as ``[word id, char ids...]`` through
            :class:`~rnnkit.toolkit.word_embedding.WordCharEmbedding` (whose
            character layer is of the same cell).

    Shape:
        - x: ``(batch, window, features)`` floats, ``(batch, window)`` token ids
          (``(batch, window, 1 + chars)`` with a character RNN), or a
          ``PackedSequence`` of either.
        - lengths: ``(batch,)`` valid steps per sequence of a padded ``x``; with a
          PackedSequence None or its own lengths.
        - hx: ``(directions * num_layers, batch, hidden)``, for "lstm" a pair
          ``(h_0, c_0)`` of that shape (an earlier ``EncoderOutput.state``), or
          None for zeros.
        - returns :class:`EncoderOutput` ``(output, h_n, lengths, c_n)``.

    Example:
        >>> encoder = RecurrentEncoder(16, input_size=4, bidirectional=True)
        >>> x = torch.randn(3, 10, 4)  # (batch, window, features)
        >>> out = encoder(x, lengths=torch.tensor([10, 7, 2]))
        >>> out.output.shape  # (batch, window, directions * hidden); zeros past each length
        torch.Size([3, 10, 32])
        >>> out.h_n.shape  # (directions * num_layers, batch, hidden)
        torch.Size([2, 3, 16])
        >>> lstm = RecurrentEncoder(16, input_size=4, cell="lstm")
        >>> lstm(x).c_n.shape  # the cell state beside h_n; lstm(x).state is (h_n, c_n)
        torch.Size([1, 3, 16])
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int | None = None,
        padding_idx: int | None = 0,
        num_layers: int = 1,
        cell: str = "rnn",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        layer_options: Mapping[str, Any] | None = None,
        char_vocab_size: int | None = None,
        char_embedding_dim: int | None = None,
        char_hidden_size: int | None = None,
    ) -> None:
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError(
                "Received invalid values for arguments `input_size` and `vocab_size`, expected "
                f"exactly one of them, got input_size={input_size!r} and "
                f"vocab_size={vocab_size!r}"
            )
        self.spelled = char_vocab_size is not None
        if vocab_size is None:
            self.embedding = None
            rnn_input_size = input_size
        else:
            embedding_dim = hidden_size if embedding_dim is None else embedding_dim
            if self.spelled:
                self.embedding = WordCharEmbedding(
                    vocab_size, embedding_dim, char_vocab_size,
                    char_embedding_dim or char_hidden_size, char_hidden_size, padding_idx,
                    cell=cell,
                )  # fmt: skip
                rnn_input_size = self.embedding.embedding_dim
            else:
                self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
                rnn_input_size = embedding_dim
        self.input_dropout = nn.Dropout(input_dropout)
        self.rnn = recurrent_layer(
            cell, rnn_input_size, hidden_size, num_layers=num_layers, nonlinearity=nonlinearity,
            dropout=dropout, bidirectional=bidirectional, layer_options=layer_options,
        )  # fmt: skip

    @classmethod
    def from_config(cls, config: ModelConfig) -> RecurrentEncoder:
        """The encoder that `config` describes."""
        return cls(
            config.hidden_size, input_size=config.input_size, vocab_size=config.vocab_size,
            embedding_dim=config.embedding_dim, padding_idx=config.padding_idx,
            num_layers=config.num_layers, cell=config.cell, nonlinearity=config.nonlinearity,
            bidirectional=config.bidirectional, dropout=config.dropout,
            input_dropout=config.input_dropout, layer_options=layer_options_of(config),
            char_vocab_size=config.char_vocab_size,
            char_embedding_dim=config.char_embedding_dim,
            char_hidden_size=config.char_hidden_size,
        )  # fmt: skip

    @property
    def num_directions(self) -> int:
        return 2 if self.rnn.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features per step of ``output``: directions * hidden."""
        return self.num_directions * self.rnn.hidden_size

    def forward(
        self,
        x: Tensor | PackedSequence,
        lengths: Tensor | Sequence[int] | None = None,
        hx: Tensor | tuple[Tensor, Tensor] | None = None,
    ) -> EncoderOutput:
        """Run the RNN over every valid step; see the class Shape section."""
        if isinstance(x, PackedSequence):
            packed_output, state = self.rnn(self._embed_packed(x), hx)
            output, own_lengths = pad_packed_sequence(packed_output, batch_first=True)
            # Collate functions hand over (packed, lengths, target): lengths may come
            # along, but must be the ones the PackedSequence carries.
            if lengths is not None and not torch.equal(
                torch.as_tensor(lengths).to("cpu", torch.int64), own_lengths
            ):
                raise invalid_argument(
                    "lengths",
                    f"None or the PackedSequence's own lengths {own_lengths.tolist()}",
                    torch.as_tensor(lengths).tolist(),
                )
            return _encoded(output, state, own_lengths)  # output: (batch, window, D * hidden)
        self._check_padded(x)
        batch, window = x.shape[:2]
        if lengths is not None:
            lengths = _check_lengths(lengths, batch, window)
            if bool((lengths < window).any()):
                packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                packed_output, state = self.rnn(self._embed_packed(packed), hx)
                output, _ = pad_packed_sequence(
                    packed_output, batch_first=True, total_length=window
                )  # (batch, window, directions * hidden), zeros past each length
                return _encoded(output, state, lengths)
        x = x if self.embedding is None else self.embedding(x)  # (batch, window, features)
        output, state = self.rnn(self.input_dropout(x), hx)  # (batch, window, D * hidden)
        return _encoded(output, state, lengths)

    def _embed_packed(self, packed: PackedSequence) -> PackedSequence:
        # Embedding the packed rows only: padded ids are never looked up.
        data = packed.data if self.embedding is None else self.embedding(packed.data)
        data = self.input_dropout(data)  # (rows, features)
        return PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                              packed.unsorted_indices)  # fmt: skip

    def _check_padded(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise invalid_argument("x", "a tensor or a PackedSequence", type(x).__name__)
        if self.embedding is not None:
            dims, shape = (2, "(batch, window)")
            if self.spelled:
                dims, shape = (3, "(batch, window, 1 + chars)")
            if x.dim() != dims or x.dtype.is_floating_point or x.dtype.is_complex:
                raise ValueError(
                    "Received an invalid value for argument `x`, expected integer token ids "
                    f"of shape {shape}, got a {x.dtype} tensor of shape {tuple(x.shape)}"
                )
        elif x.dim() != 3:
            raise ValueError(
                "Received an invalid value for argument `x`, expected a tensor of shape "
                f"(batch, window, features), got shape {tuple(x.shape)}"
            )


def _encoded(
    output: Tensor, state: Tensor | tuple[Tensor, Tensor], lengths: Tensor | None
) -> EncoderOutput:
    """The EncoderOutput of a layer's result: an LSTM's final state is ``(h_n, c_n)``, an
    RNN's or GRU's is ``h_n``."""
    if isinstance(state, tuple):
        h_n, c_n = state
        return EncoderOutput(output, h_n, lengths, c_n)
    return EncoderOutput(output, state, lengths)


def _check_lengths(lengths: Tensor | Sequence[int], batch: int, window: int) -> Tensor:
    """Lengths as an int64 CPU tensor (what pack_padded_sequence needs), checked."""
    lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise invalid_argument("lengths", "integer lengths", lengths)
    lengths = lengths.to("cpu", torch.int64)
    if lengths.shape != (batch,):
        raise ValueError(
            f"Received an invalid value for argument `lengths`, expected shape ({batch},) "
            f"(one length per sequence), got shape {tuple(lengths.shape)}"
        )
    if batch and not (int(lengths.min()) >= 1 and int(lengths.max()) <= window):
        raise ValueError(
            "Received an invalid value for argument `lengths`, expected every length in "
            f"[1, window={window}], got {lengths.tolist()}"
        )
    return lengths


def _valid_steps(lengths: Tensor, window: int, device: torch.device) -> Tensor:
    """``mask[b, t]`` is True where step t of sequence b is not padding."""
    steps = torch.arange(window, device=device)  # (window,)
    return steps.unsqueeze(0) < lengths.to(device).unsqueeze(1)  # (batch, window)


class ManyToOneHead(nn.Module):
    """Summarise each sequence into one vector (pooling), then a linear estimator.

    Pooling, over valid steps only:

    - ``"last"``: the top layer's final state; for a bidirectional encoder the
      forward direction's state at the last valid step concatenated with the
      backward direction's state after reading back to the first step
      (``h_n[-2]`` and ``h_n[-1]``).
    - ``"mean"`` / ``"max"``: mean / maximum of the top layer's outputs.

    Args:
        in_features: features of the encoder's output, directions * hidden.
        num_outputs: values per sequence (classes for classification).
        pooling: ``"last"``, ``"mean"`` or ``"max"``.
        num_directions: the encoder's directions, for ``"last"``.
        dropout: dropout probability on the pooled features in training.

    Shape:
        :class:`EncoderOutput` -> ``(batch, num_outputs)``.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        pooling: str = "last",
        num_directions: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise invalid_argument("pooling", f"one of {POOLINGS}", pooling)
        self.pooling = pooling
        self.num_directions = num_directions
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_outputs)

    def pool(self, encoded: EncoderOutput) -> Tensor:
        """One feature vector per sequence, ``(batch, directions * hidden)``."""
        output, h_n, lengths = encoded.output, encoded.h_n, encoded.lengths
        if self.pooling == "last":
            # Packing made h_n each sequence's own last state; top layer = last D rows.
            return torch.cat(list(h_n[-self.num_directions :]), dim=-1)  # (batch, D * hidden)
        if lengths is None:
            if self.pooling == "mean":
                return output.mean(dim=1)  # (batch, D * hidden)
            return output.amax(dim=1)
        valid = _valid_steps(lengths, output.size(1), output.device).unsqueeze(-1)
        if self.pooling == "mean":
            total = output.masked_fill(~valid, 0).sum(dim=1)  # (batch, D * hidden)
            return total / lengths.to(output.device, output.dtype).unsqueeze(1)
        return output.masked_fill(~valid, -math.inf).amax(dim=1)  # (batch, D * hidden)

    def forward(self, encoded: EncoderOutput) -> Tensor:
        return self.linear(self.dropout(self.pool(encoded)))  # (batch, num_outputs)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


class TaggingHead(nn.Module):
    """A linear estimator applied to every step.

    Predictions at padded steps exist (the encoder's output there is zero) but
    mean nothing: give those steps the target ``-100`` so losses and metrics
    ignore them.

    Args:
        in_features: features of the encoder's output, directions * hidden.
        num_outputs: classes per step.
        dropout: dropout probability on the encoder's output in training.

    Shape:
        :class:`EncoderOutput` -> ``(batch, window, num_outputs)``.
    """

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_outputs)

    def forward(self, encoded: EncoderOutput) -> Tensor:
        return self.linear(self.dropout(encoded.output))  # (batch, window, num_outputs)


def _check_task(config: ModelConfig, tasks: Sequence[str], model: str) -> None:
    if not isinstance(config, ModelConfig):
        raise invalid_argument("config", "a ModelConfig", type(config).__name__)
    if config.task not in tasks:
        raise invalid_argument("config.task", f"one of {tuple(tasks)} for {model}", config.task)


class ManyToOneModel(nn.Module):
    """One prediction per sequence: regression or classification.

    Args:
        config: a :class:`ModelConfig` with task ``"regression"`` or ``"classification"``.

    Shape:
        - x: ``(batch, window, features)``, ``(batch, window)`` token ids, or a PackedSequence.
        - lengths: ``(batch,)`` or None.
        - returns ``(batch, num_outputs)``: values, or class logits.

    Example:
        >>> model = ManyToOneModel(ModelConfig(input_size=4, hidden_size=64))
        >>> x = torch.randn(30, 100, 4)  # (batch, days, open/high/low/close)
        >>> model(x).shape  # (batch, num_outputs): next close
        torch.Size([30, 1])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _check_task(config, MANY_TO_ONE_TASKS, type(self).__name__)
        self.config = config
        self.encoder = RecurrentEncoder.from_config(config)
        self.head = ManyToOneHead(
            self.encoder.output_size, config.num_outputs, config.pooling, config.num_directions,
            config.output_dropout,
        )  # fmt: skip

    def features(self, x: Tensor | PackedSequence, lengths: Tensor | None = None) -> Tensor:
        """The pooled sequence summary the head reads, ``(batch, directions * hidden)``."""
        return self.head.pool(self.encoder(x, lengths))

    def forward(self, x: Tensor | PackedSequence, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.encoder(x, lengths))  # (batch, num_outputs)


class TaggingModel(nn.Module):
    """One prediction per step: sequence labelling, e.g. part-of-speech tagging.

    Shape:
        - x: ``(batch, window, features)``, ``(batch, window)`` token ids, or a PackedSequence.
        - returns ``(batch, window, num_outputs)`` class logits; for a
          PackedSequence ``window`` is the longest sequence.

    Example:
        >>> model = TaggingModel(ModelConfig(task="tagging", vocab_size=50, num_outputs=17,
        ...                                  bidirectional=True))
        >>> tokens = torch.randint(1, 50, (8, 12))  # (batch, window)
        >>> model(tokens, lengths=torch.full((8,), 12)).shape  # (batch, window, tags)
        torch.Size([8, 12, 17])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _check_task(config, ("tagging",), type(self).__name__)
        self.config = config
        self.encoder = RecurrentEncoder.from_config(config)
        self.head = TaggingHead(self.encoder.output_size, config.num_outputs, config.output_dropout)

    def forward(self, x: Tensor | PackedSequence, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.encoder(x, lengths))  # (batch, window, num_outputs)


class LanguageModel(nn.Module):
    """Next-token prediction over token ids; generates one token at a time.

    A bidirectional configuration is refused (:class:`ModelConfig` raises):
    generation reads only the past.

    Shape:
        - tokens: ``(batch, window)`` token ids, or a PackedSequence.
        - returns ``(batch, window, vocab_size)`` logits of the token after each step.

    Example:
        >>> model = LanguageModel(ModelConfig(task="language_model", vocab_size=65))
        >>> model(torch.randint(1, 65, (4, 32))).shape  # (batch, window, vocab_size)
        torch.Size([4, 32, 65])
        >>> len(model.generate([5, 6, 7], length=20, seed=0))  # 20 new token ids
        20
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _check_task(config, ("language_model",), type(self).__name__)
        self.config = config
        self.encoder = RecurrentEncoder.from_config(config)
        self.head = TaggingHead(self.encoder.output_size, config.vocab_size, config.output_dropout)

    def forward(self, tokens: Tensor | PackedSequence, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.encoder(tokens, lengths))  # (batch, window, vocab_size)

    def generate(
        self,
        prompt_ids: Sequence[int] | Tensor,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> list[int]:
        """Sample `length` tokens after `prompt_ids`; see :meth:`stream`.

        Returns:
            The new token ids (the prompt not included).
        """
        return list(self.stream(prompt_ids, length, temperature, top_k, seed))

    def stream(
        self,
        prompt_ids: Sequence[int] | Tensor,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> Iterator[int]:
        """Yield `length` sampled token ids, one step at a time, carrying the hidden state.

        The prompt is read once; then every step feeds back only the token just
        sampled with the hidden state, so a step costs the same at any position.
        The padding id is never sampled. The model is in eval mode (no dropout)
        while the stream runs, and back in its previous mode when it ends.

        Args:
            prompt_ids: at least one token id to start from.
            length: tokens to generate (>= 0).
            temperature: divides the logits: below 1 sharpens, above 1 flattens (> 0).
            top_k: sample only among the k most likely tokens; ``top_k=1`` is greedy.
            seed: seeds a local ``torch.Generator``, so equal seeds give equal
                tokens without touching the global RNG; None draws a fresh seed.

        Example:
            >>> for token in model.stream([5, 6, 7], length=3, top_k=1):  # greedy
            ...     print(token)
        """
        prompt = self._check_prompt(prompt_ids)
        _check_int("length", length, 0)
        if not is_real(temperature) or temperature <= 0:
            raise invalid_argument(
                "temperature", "a positive finite number (top_k=1 for greedy decoding)",
                temperature,
            )  # fmt: skip
        if top_k is not None and (not is_int(top_k) or not 1 <= top_k <= self.config.vocab_size):
            raise invalid_argument(
                "top_k", f"None or an integer in [1, vocab_size={self.config.vocab_size}]", top_k
            )
        if seed is not None and not is_int(seed):
            raise invalid_argument("seed", "None or an integer", seed)
        return self._stream(prompt, length, float(temperature), top_k, seed)

    @torch.no_grad()
    def _stream(
        self, prompt: Tensor, length: int, temperature: float, top_k: int | None, seed: int | None
    ) -> Iterator[int]:
        device = prompt.device
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        was_training = self.training
        self.eval()
        try:
            encoded = self.encoder(prompt.unsqueeze(0))  # output: (1, prompt, hidden)
            for _ in range(length):
                logits = self.head(encoded)[0, -1]  # (vocab_size,)
                token = self._sample(logits, temperature, top_k, generator)  # (1,)
                yield int(token)
                # one step; an LSTM carries its cell state beside h
                encoded = self.encoder(token.view(1, 1), hx=encoded.state)
        finally:
            self.train(was_training)

    def _sample(
        self, logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator
    ) -> Tensor:
        logits = logits / temperature  # (vocab_size,)
        if self.config.padding_idx is not None:
            logits[self.config.padding_idx] = -math.inf
        if top_k is not None:
            kth_largest = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth_largest, -math.inf)
        probabilities = torch.softmax(logits, dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator)  # (1,)

    def _check_prompt(self, prompt_ids: Sequence[int] | Tensor) -> Tensor:
        device = self.head.linear.weight.device
        try:
            prompt = torch.as_tensor(prompt_ids)
        except (TypeError, ValueError, RuntimeError):
            raise invalid_argument("prompt_ids", "a sequence of token ids", prompt_ids) from None
        vocab_size = self.config.vocab_size
        if (
            prompt.dim() != 1
            or prompt.numel() == 0
            or prompt.dtype.is_floating_point
            or prompt.dtype == torch.bool
            or int(prompt.min()) < 0
            or int(prompt.max()) >= vocab_size
        ):
            shown = prompt.tolist() if prompt.numel() <= 20 else f"tensor of shape {prompt.shape}"
            raise invalid_argument(
                "prompt_ids",
                f"a non-empty 1-D sequence of token ids in [0, vocab_size={vocab_size})",
                shown,
            )
        return prompt.to(device, torch.int64)  # (prompt,)


MODELS: dict[str, type[nn.Module]] = {
    "regression": ManyToOneModel,
    "classification": ManyToOneModel,
    "tagging": TaggingModel,
    "language_model": LanguageModel,
}


def _translation_model(config: ModelConfig) -> nn.Module:
    from rnnkit.toolkit.translation.model import TranslationModel  # it builds on this module

    return TranslationModel(config)


def build_model(config: ModelConfig | Mapping[str, Any]) -> nn.Module:
    """Build the model a config describes; accepts ``dataclasses.asdict(config)``.

    Args:
        config: a :class:`ModelConfig` or a mapping of its fields (e.g. read from JSON).

    Returns:
        A freshly initialised ``ManyToOneModel``, ``TaggingModel`` or ``LanguageModel``,
        or an :class:`~rnnkit.toolkit.ensemble.EnsembleModel` of ``ensemble_size`` of them.

    Example:
        >>> model = build_model({"task": "regression", "input_size": 4})
        >>> build_model(dataclasses.asdict(model.config)).config == model.config
        True
    """
    if isinstance(config, Mapping):
        fields = {field.name for field in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(
                f"Received an invalid value for argument `config`, expected only ModelConfig "
                f"fields {sorted(fields)}, got unknown {unknown}"
            )
        config = ModelConfig(**config)
    elif not isinstance(config, ModelConfig):
        raise invalid_argument(
            "config", "a ModelConfig or a mapping of its fields", type(config).__name__
        )
    if config.ensemble_size > 1:
        return EnsembleModel(config)
    if config.task == "translation":
        return _translation_model(config)
    return MODELS[config.task](config)
