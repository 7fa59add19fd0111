"""The translation model: a recurrent encoder-decoder with attention.

    encoder   the source's subword ids -> embedding -> rnnkit layer (bidirectional by
              default: it may read the whole source) -> memory m_s, (source, D * H)
    bridge    the encoder's last states -> the decoder's first: tanh(W [h_fwd; h_bwd] + b),
              per layer
    decoder   the target so far -> embedding -> rnnkit layer (one direction: it must not
              see the future) -> q_t, (target, H)
    attention context_t over the memory, masked on padding (rnnkit.toolkit.translation.attention)
    head      tanh(W_c [q_t; context_t]) -> dropout -> logits over the target subwords
              (the output weights optionally tied to the target embedding)

Attention reads the decoder's outputs after its layer (Luong et al. 2015), so in
training the decoder runs over the whole teacher-forced target in one call of
our engine instead of one call per step; generating runs it one step at a time
(:meth:`TranslationModel.step`) under greedy or beam search.

Shapes: ``S`` source steps, ``T`` target steps, ``H`` hidden_size, ``D``
directions of the encoder, ``E`` embedding_dim, ``V`` target subwords.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.toolkit.cells import layer_options_of, recurrent_layer
from rnnkit.toolkit.models import ModelConfig, RecurrentEncoder, _valid_steps
from rnnkit.toolkit.translation.attention import Attention
from rnnkit.toolkit.translation.search import Hypotheses, beam_search, greedy_search
from rnnkit.toolkit.translation.subwords import BOS, EOS, PAD

__all__ = ["DecoderState", "TranslationModel", "max_output_lengths"]

# Longest output allowed per sentence, in subwords: room for a target that runs longer
# than its source (German -> English runs about 1.0x; Korean -> English about 1.3x).
MAX_LENGTH_RATIO = 2.0
MAX_LENGTH_EXTRA = 10


class DecoderState(NamedTuple):
    """What a decoder step reads: its recurrent state and the encoded source."""

    hidden: Tensor | tuple[Tensor, Tensor]  # (layers, rows, H), an LSTM's (h, c) pair
    keys: Tensor  # (rows, S, K): the attention's projection of the memory
    memory: Tensor  # (rows, S, D * H): the encoder's outputs
    mask: Tensor  # (rows, S): True on real source steps


def max_output_lengths(source_lengths: Tensor) -> Tensor:
    """Most subwords (EOS included) generated per sentence: ``2 * source + 10``."""
    return (source_lengths.double() * MAX_LENGTH_RATIO).ceil().long() + MAX_LENGTH_EXTRA


class TranslationModel(nn.Module):
    """Encoder-decoder with attention; see the module docstring.

    Args:
        config: A :class:`~rnnkit.toolkit.models.ModelConfig` of task "translation":
            ``vocab_size`` source subwords, ``num_outputs`` target subwords,
            ``attention``, ``tie_embeddings``, and the recurrent layers' settings
            (``cell``, ``hidden_size``, ``num_layers``, ``bidirectional`` for the encoder,
            ``dropout``, ``input_dropout`` on embeddings, ``output_dropout`` before the head).

    Shape:
        - forward(source, source_lengths, target_in): source ``(batch, S)`` ids padded
          with 0, source_lengths ``(batch,)``, target_in ``(batch, T)`` = BOS + target,
          padded with 0 -> logits ``(tokens, V)`` for target + EOS at the real steps
          only (``target_in != 0``, in row-major order: the order of
          ``target_out[target_out != -100]``). Padding makes up half of a batch's
          steps, and the output layer is the costliest part of a step.
        - translate(source, source_lengths) -> :class:`Hypotheses` (token ids per sentence).

    Example:
        >>> config = ModelConfig(task="translation", vocab_size=50, num_outputs=40,
        ...                      hidden_size=16, bidirectional=True)
        >>> model = TranslationModel(config)
        >>> source, lengths = torch.randint(4, 50, (3, 7)), torch.tensor([7, 5, 2])
        >>> target_in = torch.tensor([[2, 5, 6, 7], [2, 8, 0, 0], [2, 9, 9, 0]])
        >>> model(source, lengths, target_in).shape  # (real target steps, V)
        torch.Size([9, 40])
        >>> len(model.translate(source, lengths, beam_size=4).tokens)  # one per sentence
        3
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.task != "translation":
            raise ValueError(
                "Received an invalid value for argument `config`, expected a ModelConfig of "
                f"task 'translation', got task {config.task!r}"
            )
        self.config = config
        hidden, embedding = config.hidden_size, config.embedding_dim
        self.encoder = RecurrentEncoder(
            hidden, vocab_size=config.vocab_size, embedding_dim=embedding, padding_idx=PAD,
            num_layers=config.num_layers, cell=config.cell, nonlinearity=config.nonlinearity,
            bidirectional=config.bidirectional, dropout=config.dropout,
            input_dropout=config.input_dropout, layer_options=layer_options_of(config),
        )  # fmt: skip
        memory_size = self.encoder.output_size  # D * H
        self.bridge = nn.Linear(memory_size, hidden)
        self.cell_bridge = nn.Linear(memory_size, hidden) if config.cell == "lstm" else None
        self.target_embedding = nn.Embedding(config.num_outputs, embedding, padding_idx=PAD)
        self.embedding_dropout = nn.Dropout(config.input_dropout)
        self.decoder = recurrent_layer(
            config.cell, embedding, hidden, num_layers=config.num_layers,
            nonlinearity=config.nonlinearity, dropout=config.dropout,
            layer_options=layer_options_of(config),
        )  # fmt: skip
        self.attention = Attention(config.attention, hidden, memory_size, hidden)
        combined = embedding if config.tie_embeddings else hidden
        self.combine = nn.Linear(hidden + memory_size, combined)
        self.output_dropout = nn.Dropout(config.output_dropout)
        self.head = nn.Linear(combined, config.num_outputs)
        if config.tie_embeddings:
            self.head.weight = self.target_embedding.weight

    def forward(self, source: Tensor, source_lengths: Tensor, target_in: Tensor) -> Tensor:
        """Teacher-forced logits; see the class Shape section."""
        state = self.encode(source, source_lengths)
        embedded = self.embedding_dropout(self.target_embedding(target_in))  # (batch, T, E)
        # Padding at the end of a short target runs through the decoder too; its logits
        # are never scored, and a one-direction layer lets it change no earlier step.
        queries, _ = self.decoder(embedded, state.hidden)  # (batch, T, H)
        real = target_in != PAD  # (batch, T)
        return self._read(queries, state, real)[0]  # (tokens, V)

    def encode(self, source: Tensor, source_lengths: Tensor) -> DecoderState:
        """Run the encoder once per sentence: the decoder's first state and the memory."""
        encoded = self.encoder(source, source_lengths)
        lengths = encoded.lengths
        if lengths is None:
            lengths = torch.full((source.size(0),), source.size(1), dtype=torch.long)
        mask = _valid_steps(lengths, source.size(1), source.device)  # (batch, S)
        hidden = self._bridged(encoded.h_n, self.bridge)  # (layers, batch, H)
        if self.cell_bridge is not None:
            hidden = (hidden, self._bridged(encoded.c_n, self.cell_bridge))
        memory = encoded.output  # (batch, S, D * H), zeros on padding
        return DecoderState(hidden, self.attention.keys(memory), memory, mask)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState, Tensor]:
        """One generated token per row: ``tokens (rows,)`` -> log-probabilities
        ``(rows, V)``, the next state, and the attention weights ``(rows, S)``."""
        embedded = self.target_embedding(tokens.to(state.memory.device)).unsqueeze(1)
        query, hidden = self.decoder(embedded, state.hidden)  # (rows, 1, H)
        logits, weights = self._read(query, state)  # (rows, 1, V)
        log_probs = torch.log_softmax(logits.squeeze(1).float(), dim=-1)  # (rows, V)
        return log_probs, state._replace(hidden=hidden), weights.squeeze(1)

    @torch.no_grad()
    def translate(
        self,
        source: Tensor,
        source_lengths: Tensor,
        *,
        beam_size: int = 1,
        length_penalty: float = 1.0,
    ) -> Hypotheses:
        """Generate each sentence's translation: greedy (beam_size 1) or beam search.

        Args:
            source: ``(batch, S)`` source ids padded with 0.
            source_lengths: ``(batch,)`` real steps per sentence.
            beam_size: Hypotheses kept per sentence; 1 is greedy search.
            length_penalty: See :func:`~rnnkit.toolkit.translation.search.beam_search`.

        Returns:
            :class:`Hypotheses`: target ids without BOS/EOS, their log-probabilities
            and attention weights ``(generated + 1, S)`` per sentence.
        """
        was_training = self.training
        self.eval()
        try:
            state = self.encode(source, source_lengths)
            limits = max_output_lengths(torch.as_tensor(source_lengths).cpu())
            if beam_size == 1:
                return greedy_search(self.step, state, limits, bos=BOS, eos=EOS)
            return beam_search(
                self.step, state, _reorder, limits, bos=BOS, eos=EOS, beam_size=beam_size,
                length_penalty=length_penalty,
            )  # fmt: skip
        finally:
            self.train(was_training)

    def _read(
        self, queries: Tensor, state: DecoderState, real: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend, combine and project: logits ``(batch, T, V)``, or ``(tokens, V)`` for the
        steps where ``real`` ``(batch, T)`` is True, and weights ``(batch, T, S)``."""
        context, weights = self.attention(queries, state.keys, state.memory, state.mask)
        combined = torch.tanh(self.combine(torch.cat([queries, context], dim=-1)))
        if real is not None:
            combined = combined[real]  # (tokens, C)
        return self.head(self.output_dropout(combined)), weights

    def _bridged(self, final: Tensor, bridge: nn.Linear) -> Tensor:
        """``(D * layers, batch, H)`` encoder states -> ``(layers, batch, H)`` decoder states."""
        directions = self.encoder.num_directions
        layers, batch = final.size(0) // directions, final.size(1)
        per_layer = final.view(layers, directions, batch, -1).permute(0, 2, 1, 3)
        return torch.tanh(bridge(per_layer.reshape(layers, batch, -1)))  # (layers, batch, H)

    @torch.no_grad()
    def shape_trace(
        self, source: Tensor, source_lengths: Tensor, target_in: Tensor
    ) -> list[tuple[str, tuple[int, ...], str]]:
        """One batch through the model, its shapes as ``(what, shape, meaning)`` rows (what
        ``rnnkit train`` prints)."""
        was_training = self.training
        self.eval()
        try:
            encoded = self.encoder(source, source_lengths)
            state = self.encode(source, source_lengths)
            embedded = self.target_embedding(target_in)
            queries, _ = self.decoder(embedded, state.hidden)
            logits, weights = self._read(queries, state, target_in != PAD)
        finally:
            self.train(was_training)
        encoder, decoder = type(self.encoder.rnn).__name__, type(self.decoder).__name__
        hidden = state.hidden[0] if isinstance(state.hidden, tuple) else state.hidden
        return [
            ("source", tuple(source.shape), "(batch, source steps) subword ids, padded"),
            (f"encoder {encoder} output", tuple(encoded.output.shape),
             "(batch, source steps, directions * hidden): the memory"),
            (f"encoder {encoder} h_n", tuple(encoded.h_n.shape),
             "(directions * layers, batch, hidden)"),
            ("decoder h_0", tuple(hidden.shape), "(layers, batch, hidden): bridged from h_n"),
            ("target in", tuple(target_in.shape), "(batch, target steps): BOS + target"),
            (f"decoder {decoder} output", tuple(queries.shape),
             "(batch, target steps, hidden): one direction"),
            ("attention", tuple(weights.shape), "(batch, target steps, source steps)"),
            ("head output", tuple(logits.shape), "(real target steps, target subwords)"),
        ]  # fmt: skip

    def parameter_count(self) -> int:
        """Trainable parameters, a tied weight counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _reorder(state: DecoderState, rows: Tensor) -> DecoderState:
    """The decoder state of rows ``rows`` (beam search copies and reorders hypotheses)."""
    rows = rows.to(state.memory.device)
    hidden = state.hidden
    if isinstance(hidden, tuple):
        hidden = tuple(h.index_select(1, rows) for h in hidden)
    else:
        hidden = hidden.index_select(1, rows)
    return DecoderState(
        hidden, state.keys.index_select(0, rows), state.memory.index_select(0, rows),
        state.mask.index_select(0, rows),
    )  # fmt: skip
