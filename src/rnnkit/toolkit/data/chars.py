"""Character-level language modelling: a held-out tail and fixed-length chunks.

The model reads ``length`` characters and predicts each next one: chunk ``k``
is ``ids[k*length : (k+1)*length]`` with targets shifted by one character,
``ids[k*length + 1 : (k+1)*length + 1]``. Chunks do not overlap, so every
character is a target at most once per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch


class Chunks(NamedTuple):
    """Inputs and their next-character targets."""

    inputs: torch.Tensor  # (batch, length) int64 character indices
    targets: torch.Tensor  # (batch, length) int64, inputs shifted by one character


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Hold out the last `val_fraction` of `text` for validation.

    Args:
        text: The whole corpus, e.g. tinyshakespeare's ``input.txt``.
        val_fraction: The share of characters, at the end, held out.

    Returns:
        ``(train, val)``, with ``train + val == text``.

    Example:
        >>> split_text("abcdefghij", 0.1)
        ('abcdefghi', 'j')
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not math.isfinite(val_fraction)
        or not 0 < val_fraction < 1
    ):
        raise ValueError(
            "Received an invalid value for argument `val_fraction`, expected a number in "
            f"(0, 1), got {val_fraction!r}"
        )
    held_out = round(len(text) * val_fraction)
    if held_out == 0 or held_out == len(text):
        raise ValueError(
            f"Received an invalid value for argument `text`, expected enough characters for "
            f"val_fraction={val_fraction} to leave both parts non-empty, got {len(text)}"
        )
    cut = len(text) - held_out
    return text[:cut], text[cut:]


def chunk(ids: Sequence[int] | torch.Tensor, length: int) -> Chunks:
    """Cut encoded text into non-overlapping chunks with next-character targets.

    The tail that does not fill a whole chunk is dropped.

    Args:
        ids: The encoded text, e.g. ``Vocabulary.encode(train_text)``.
        length: Characters per chunk.

    Returns:
        ``(inputs, targets)``, ``(len(ids) - 1) // length`` chunks.

    Shape:
        ids: ``(num_chars,)``; inputs, targets: ``(batch, length)``.

    Example:
        >>> chunk([0, 1, 2, 3, 4, 5, 6], 3).inputs  # (batch, length) = (2, 3)
        tensor([[0, 1, 2],
                [3, 4, 5]])
    """
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(
            f"Received an invalid value for argument `length`, expected a positive integer, "
            f"got {length!r}"
        )
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if ids.dim() != 1:
        raise ValueError(
            f"Received an invalid value for argument `ids`, expected one dimension, "
            f"got shape {tuple(ids.shape)}"
        )
    num_chunks = (ids.numel() - 1) // length
    if num_chunks < 1:
        raise ValueError(
            f"Received an invalid value for argument `ids`, expected at least length + 1 = "
            f"{length + 1} characters, got {ids.numel()}"
        )
    used = num_chunks * length
    inputs = ids[:used].view(num_chunks, length)  # (batch, length)
    targets = ids[1 : used + 1].view(num_chunks, length)  # (batch, length)
    return Chunks(inputs, targets)
