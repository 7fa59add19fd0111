"""Words embedded by id and by spelling: a character-level recurrent layer per word.

A word-id embedding knows nothing of a word it never saw in training; its
spelling still tells a lot (``-ly``, ``-ing``, a capital, digits). Each token
is therefore given as a row ``[word id, char id 1, ..., char id C]`` (char ids
padded with 0), and :class:`WordCharEmbedding` returns the word's embedding
next to the last states of a bidirectional character RNN that read its spelling
forwards and backwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.toolkit.cells import final_hidden, recurrent_layer

# Characters kept per word: longer words keep their first and last MAX_WORD_CHARS // 2
# characters, where prefixes and suffixes (the parts that tell a word class) are.
MAX_WORD_CHARS = 20

__all__ = ["MAX_WORD_CHARS", "WordCharEmbedding", "spell"]


def spell(word_id: int, char_ids: Sequence[int], width: int = MAX_WORD_CHARS) -> list[int]:
    """One token row: ``[word_id, char ids...]`` cut or padded to ``1 + width`` entries.

    Example:
        >>> spell(7, [3, 4, 5], width=4)
        [7, 3, 4, 5, 0]
        >>> spell(7, [1, 2, 3, 4, 5, 6], width=4)  # first two and last two characters
        [7, 1, 2, 5, 6]
    """
    chars = list(char_ids)
    if len(chars) > width:
        chars = chars[: width // 2] + chars[len(chars) - (width - width // 2) :]
    return [word_id, *chars, *[0] * (width - len(chars))]


class WordCharEmbedding(nn.Module):
    """Word-id embedding concatenated with a bidirectional character RNN's summary.

    Args:
        vocab_size: Word ids (``<pad>`` = `padding_idx` included).
        embedding_dim: Width of the word-id embedding.
        char_vocab_size: Character ids, 0 = padding.
        char_embedding_dim: Width of the character embedding.
        char_hidden_size: Hidden features per direction of the character RNN.
        padding_idx: Word id embedded as zeros.
        cell: The character layer: "rnn" (:class:`rnnkit.RNN`, tanh), "lstm" or "gru".

    Shape:
        - ids: ``(..., 1 + chars)`` int64: the word id, then its character ids.
        - returns ``(..., embedding_dim + 2 * char_hidden_size)``; rows without
          characters (padding) get zeros for the spelling part.

    Example:
        >>> embed = WordCharEmbedding(100, 32, 60, 16, 24)
        >>> ids = torch.tensor([[spell(5, [7, 8, 9]), spell(6, [10])]])  # (batch 1, 2 words, 21)
        >>> embed(ids).shape  # (batch, words, 32 + 2 * 24)
        torch.Size([1, 2, 80])
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        char_vocab_size: int,
        char_embedding_dim: int,
        char_hidden_size: int,
        padding_idx: int | None = 0,
        cell: str = "rnn",
    ) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.chars = nn.Embedding(char_vocab_size, char_embedding_dim, padding_idx=0)
        self.char_rnn = recurrent_layer(cell, char_embedding_dim, char_hidden_size,
                                        bidirectional=True)  # fmt: skip
        self.embedding_dim = embedding_dim + 2 * char_hidden_size

    def forward(self, ids: Tensor) -> Tensor:
        if (
            ids.dim() < 2
            or ids.size(-1) < 2
            or ids.dtype.is_floating_point
            or ids.dtype.is_complex
            or ids.dtype == torch.bool
        ):
            raise ValueError(
                "Received an invalid value for argument `ids`, expected integer rows "
                f"(..., 1 + chars) of a word id and its character ids, got a {ids.dtype} "
                f"tensor of shape {tuple(ids.shape)}"
            )
        rows = ids.reshape(-1, ids.size(-1))  # (tokens, 1 + chars)
        words = self.words(rows[:, 0])  # (tokens, embedding_dim)
        chars = rows[:, 1:]  # (tokens, chars)
        lengths = (chars != 0).sum(dim=1)  # (tokens,)
        spelled = words.new_zeros(rows.size(0), 2 * self.char_rnn.hidden_size)
        spelt = (lengths > 0).nonzero().squeeze(1)  # tokens with characters
        if spelt.numel():
            packed = pack_padded_sequence(
                self.chars(chars[spelt]), lengths[spelt].cpu(), batch_first=True,
                enforce_sorted=False,
            )  # fmt: skip
            _, state = self.char_rnn(packed)
            h_n = final_hidden(state)  # (2, spelt, char_hidden): forward, backward
            spelled = spelled.index_copy(0, spelt, torch.cat([h_n[0], h_n[1]], dim=-1))
        out = torch.cat([words, spelled], dim=-1)  # (tokens, embedding_dim + 2 * char_hidden)
        return out.reshape(*ids.shape[:-1], self.embedding_dim)
