"""Batches of variable-length sequences, packed so that models never compute on padding.

A batch element is a sequence of token indices (a list or a 1-D integer
tensor) or of feature vectors (a ``(length, features)`` float tensor), with
its target. The collate functions pad the sequences, record their lengths and,
by default, pack them into a :class:`~torch.nn.utils.rnn.PackedSequence`
(``enforce_sorted=False``: the batch keeps its order). A model embeds packed
indices row by row, ``PackedSequence(embedding(x.data), x.batch_sizes,
x.sorted_indices, x.unsorted_indices)``, and feeds the result to ``rnnkit.RNN``,
which runs packed batches natively.

Use them as a DataLoader's ``collate_fn``; bind options with
:func:`functools.partial`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_sequence

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


class SequenceBatch(NamedTuple):
    """A collated batch, in the order of the batch elements."""

    inputs: PackedSequence | torch.Tensor  # packed, or padded (batch, max_len[, features])
    lengths: torch.Tensor  # (batch,) int64 on the CPU, as pack_padded_sequence wants
    targets: torch.Tensor  # (batch,) class indices, or (batch, max_len) tags, IGNORE_INDEX at pads


def pad_sequences(
    sequences: Sequence[Sequence[int] | torch.Tensor], *, padding_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad sequences to the longest, batch first.

    Args:
        sequences: Token-index lists or tensors ``(length,)``, or feature
            tensors ``(length, features)``; none empty.
        padding_value: Value written after each sequence's end.

    Returns:
        ``(padded, lengths)``.

    Shape:
        padded: ``(batch, max_len)`` or ``(batch, max_len, features)``;
        lengths: ``(batch,)`` int64.

    Example:
        >>> padded, lengths = pad_sequences([[5, 6, 7], [8]])
        >>> padded  # (batch, max_len) = (2, 3)
        tensor([[5, 6, 7],
                [8, 0, 0]])
        >>> lengths
        tensor([3, 1])
    """
    if len(sequences) == 0:
        raise ValueError(
            "Received an invalid value for argument `sequences`, expected at least "
            "one sequence, got none"
        )
    tensors = [torch.as_tensor(sequence) for sequence in sequences]
    for i, tensor in enumerate(tensors):
        if tensor.dim() == 0 or tensor.shape[0] == 0:
            raise ValueError(
                f"Received an invalid value for batch element {i}, expected a non-empty "
                f"sequence, got shape {tuple(tensor.shape)}"
            )
    lengths = torch.tensor([tensor.shape[0] for tensor in tensors], dtype=torch.int64)
    padded = pad_sequence(tensors, batch_first=True, padding_value=padding_value)
    return padded, lengths


def collate_classification(
    batch: Sequence[tuple[Sequence[int] | torch.Tensor, int]],
    *,
    packed: bool = True,
    padding_index: int = 0,
) -> SequenceBatch:
    """Collate ``(sequence, class_index)`` pairs: one label per sequence.

    Args:
        batch: The elements, e.g. ``(vocab.encode(tokens), label_index)``.
        packed: Return inputs as a PackedSequence; ``False`` returns the
            padded tensor (use `lengths` to mask).
        padding_index: Value at padded positions (``Vocabulary.pad_index``).

    Returns:
        Inputs, lengths and targets ``(batch,)`` int64.

    Example:
        >>> batch = collate_classification([([5, 6, 7], 1), ([8], 0)])
        >>> batch.inputs.batch_sizes, batch.lengths, batch.targets
        (tensor([2, 1, 1]), tensor([3, 1]), tensor([1, 0]))
    """
    sequences = [sequence for sequence, _ in batch]
    padded, lengths = pad_sequences(sequences, padding_value=padding_index)
    targets = torch.tensor([int(label) for _, label in batch], dtype=torch.int64)  # (batch,)
    return SequenceBatch(_maybe_pack(padded, lengths, packed), lengths, targets)


def collate_tagging(
    batch: Sequence[tuple[Sequence[int] | torch.Tensor, Sequence[int] | torch.Tensor]],
    *,
    packed: bool = True,
    padding_index: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> SequenceBatch:
    """Collate ``(sequence, tags)`` pairs: one tag per position.

    Tags are padded with `ignore_index`, so ``CrossEntropyLoss(ignore_index=-100)``
    on the unpacked output skips the padding.

    Args:
        batch: The elements, e.g. ``(vocab.encode(words), tags.encode(upos))``;
            each tag list as long as its sequence.
        packed: Return inputs as a PackedSequence; ``False`` returns them padded.
        padding_index: Value at padded input positions.
        ignore_index: Value at padded target positions.

    Returns:
        Inputs, lengths and targets ``(batch, max_len)`` int64.

    Example:
        >>> batch = collate_tagging([([5, 6, 7], [1, 2, 1]), ([8], [3])])
        >>> batch.targets  # (batch, max_len) = (2, 3)
        tensor([[   1,    2,    1],
                [   3, -100, -100]])
    """
    sequences = [sequence for sequence, _ in batch]
    padded, lengths = pad_sequences(sequences, padding_value=padding_index)
    tags = [torch.as_tensor(tag, dtype=torch.int64) for _, tag in batch]
    for i, (tag, length) in enumerate(zip(tags, lengths.tolist(), strict=True)):
        if tag.dim() != 1 or tag.shape[0] != length:
            raise ValueError(
                f"Received an invalid value for batch element {i}, expected {length} tags "
                f"(one per position), got shape {tuple(tag.shape)}"
            )
    targets = pad_sequence(tags, batch_first=True, padding_value=ignore_index)  # (batch, max_len)
    return SequenceBatch(_maybe_pack(padded, lengths, packed), lengths, targets)


def _maybe_pack(
    padded: torch.Tensor, lengths: torch.Tensor, packed: bool
) -> PackedSequence | torch.Tensor:
    if not packed:
        return padded
    return pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
