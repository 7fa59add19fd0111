"""Sentence pairs for translation: reading them, splitting them, batching them.

Two layouts are read:

- two files, one sentence per line, line k of the target file translating line k
  of the source file (Multi30k's ``train.de.gz`` / ``train.en.gz``);
- one tab-separated file of pairs with a column for each side (Tatoeba's
  ``English<TAB>Korean<TAB>attribution``).

Either may be gzip-compressed. Every line must hold a sentence: an empty line
usually means the two files have slipped against each other, so it is refused
with its line number rather than skipped.

A batch is ``(source, source_lengths, target_in, target_out)``:

    source       (batch, S)  source subword ids, padded with 0
    source_lengths (batch,)  real source steps
    target_in    (batch, T)  BOS + target ids, padded with 0 (the decoder's input)
    target_out   (batch, T)  target ids + EOS, padded with -100 (what is scored)
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from rnnkit.toolkit.data.batching import IGNORE_INDEX
from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.files import read_text
from rnnkit.toolkit.translation.subwords import BOS, EOS, PAD, SubwordVocabulary

__all__ = [
    "SentencePairs",
    "TranslationBatch",
    "TranslationDataset",
    "collate_translation",
    "read_pairs",
    "read_parallel",
    "read_sentences",
    "split_by_target",
    "split_lines",
]


class SentencePairs(NamedTuple):
    """Sentences and their translations, in file order."""

    sources: list[str]
    targets: list[str]

    def subset(self, indices: Sequence[int]) -> SentencePairs:
        """The pairs at `indices`, in that order."""
        return SentencePairs([self.sources[i] for i in indices],
                             [self.targets[i] for i in indices])  # fmt: skip


class TranslationBatch(NamedTuple):
    """A collated batch; see the module docstring for shapes."""

    source: Tensor
    source_lengths: Tensor
    target_in: Tensor
    target_out: Tensor


def read_parallel(
    source_path: str | os.PathLike[str], target_path: str | os.PathLike[str], *, limit: int = 0
) -> SentencePairs:
    """Read line-aligned source and target files.

    Args:
        source_path, target_path: Files of one sentence per line (plain or gzip).
        limit: Keep the first `limit` pairs; 0 keeps all.

    Raises:
        DataError: A file is missing, empty, not UTF-8 or holds an empty line, or the
            two files have different numbers of lines.
    """
    sources = read_sentences(source_path)
    targets = read_sentences(target_path)
    if len(sources) != len(targets):
        raise DataError(
            source_path,
            f"expected as many lines as {os.fspath(target_path)} (line k translates line k), "
            f"got {len(sources):,} against {len(targets):,}",
        )
    return SentencePairs(sources[: limit or None], targets[: limit or None])


def read_pairs(
    path: str | os.PathLike[str], columns: Sequence[int] = (0, 1), *, limit: int = 0
) -> SentencePairs:
    """Read a tab-separated file of pairs.

    Args:
        path: One pair per line, fields separated by tabs (plain or gzip).
        columns: The (source, target) column numbers, from 0.
        limit: Keep the first `limit` pairs; 0 keeps all.

    Raises:
        DataError: The file is missing, empty or not UTF-8, or a line has too few
            columns or an empty sentence in one of them.
    """
    source_column, target_column = columns
    needed = max(columns) + 1
    sources, targets = [], []
    for number, line in enumerate(split_lines(read_text(path)), start=1):
        fields = line.split("\t")
        if len(fields) < needed:
            raise DataError(
                path,
                f"expected at least {needed} tab-separated columns (data.columns = "
                f"{list(columns)}), got {len(fields)}",
                line=number,
            )
        source, target = fields[source_column].strip(), fields[target_column].strip()
        if not source or not target:
            column = source_column if not source else target_column
            raise DataError(path, f"expected a sentence in column {column}, got none", line=number)
        sources.append(source)
        targets.append(target)
    return SentencePairs(sources[: limit or None], targets[: limit or None])


def split_lines(text: str) -> list[str]:
    """The lines of a file's text, ended by \\n, \\r\\n or \\r (universal newlines):
    not ``str.splitlines``, which also splits at U+2028, NEL and form feeds inside a
    sentence and so shifts every later pair against its translation."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines[-1] == "" else lines  # the newline that ends the last line


def read_sentences(path: str | os.PathLike[str]) -> list[str]:
    """The sentences of a file of one per line (plain or gzip), stripped.

    Raises:
        DataError: The file is missing, empty or not UTF-8, or a line is empty.
    """
    lines = split_lines(read_text(path))
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(path, "expected a sentence on every line, got an empty line",
                            line=number)  # fmt: skip
    return [line.strip() for line in lines]


def split_by_target(
    pairs: SentencePairs, val_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Pair indices for train, validation and test, split by distinct target sentence.

    One target sentence can have several source sentences (Tatoeba's English
    sentences have several Korean translations): all of them go to the same part,
    so that no test target is seen in training.

    Args:
        pairs: The pairs to split.
        val_fraction, test_fraction: Shares of the distinct target sentences.
        seed: The shuffle's seed.

    Returns:
        ``(train, val, test)`` lists of indices into `pairs`, each in file order.
    """
    groups: dict[str, list[int]] = {}
    for index, target in enumerate(pairs.targets):
        groups.setdefault(target, []).append(index)
    distinct = list(groups)
    random.Random(seed).shuffle(distinct)
    n_test = round(len(distinct) * test_fraction)
    n_val = round(len(distinct) * val_fraction)
    parts = (distinct[n_test + n_val :], distinct[n_test : n_test + n_val], distinct[:n_test])
    train, val, test = ([i for target in part for i in groups[target]] for part in parts)
    return sorted(train), sorted(val), sorted(test)


class TranslationDataset(Dataset):
    """Sentence pairs as subword ids.

    Args:
        pairs: The sentences, kept for scoring (the references) and for showing.
        source_vocab, target_vocab: The two sides' subword vocabularies.

    Attributes:
        pairs: As given.
        items: ``(source ids, target ids)`` per pair, without BOS/EOS.
    """

    def __init__(
        self,
        pairs: SentencePairs,
        source_vocab: SubwordVocabulary,
        target_vocab: SubwordVocabulary,
    ) -> None:
        self.pairs = pairs
        self.items = [
            (source_vocab.encode(source), target_vocab.encode(target))
            for source, target in zip(pairs.sources, pairs.targets, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.items[i]


def collate_translation(items: Sequence[tuple[Sequence[int], Sequence[int]]]) -> TranslationBatch:
    """Pad a list of ``(source ids, target ids)`` into a :class:`TranslationBatch`.

    Example:
        >>> batch = collate_translation([([5, 6, 7], [8, 9]), ([5], [10])])
        >>> batch.source, batch.source_lengths  # (batch, S), (batch,)
        (tensor([[5, 6, 7],
                [5, 0, 0]]), tensor([3, 1]))
        >>> batch.target_in, batch.target_out  # BOS + target; target + EOS, -100 on padding
        (tensor([[ 2,  8,  9],
                [ 2, 10,  0]]), tensor([[   8,    9,    3],
                [  10,    3, -100]]))
    """
    # An empty source (a line of only what the subword model drops) still gets one step.
    sources = [list(source) or [EOS] for source, _ in items]
    lengths = torch.tensor([len(source) for source in sources])
    source = torch.full((len(items), int(lengths.max())), PAD, dtype=torch.long)
    longest = max(len(target) for _, target in items) + 1
    target_in = torch.full((len(items), longest), PAD, dtype=torch.long)
    target_out = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, (_, target)) in enumerate(zip(sources, items, strict=True)):
        source[row, : len(ids)] = torch.tensor(ids)
        target_in[row, : len(target) + 1] = torch.tensor([BOS, *target])
        target_out[row, : len(target) + 1] = torch.tensor([*target, EOS])
    return TranslationBatch(source, lengths, target_in, target_out)
