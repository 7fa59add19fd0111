"""`Vocabulary` (tokens to indices) and `LabelEncoder` (labels to class indices).

Both are fitted on training data and round-trip through JSON-able dicts, so a
checkpoint can carry them and rebuild the exact index mapping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rnnkit.toolkit.arguments import is_int

PAD = "<pad>"
UNK = "<unk>"


class Vocabulary:
    """Token to index mapping with ``<pad>`` at 0 and ``<unk>`` at 1.

    Build it with :meth:`build` from training sequences: tokens are ordered by
    decreasing count, ties by first appearance. Tokens not in the vocabulary
    encode to ``<unk>``. A string is a sequence of characters, so
    ``Vocabulary.build([text])`` gives a character vocabulary.

    Args:
        tokens: Every token in index order, starting with ``"<pad>"``,
            ``"<unk>"``; no duplicates.

    Example:
        >>> vocab = Vocabulary.build([["the", "cat"], ["the", "dog"]])
        >>> len(vocab), vocab.encode(["the", "cow"])
        (5, [2, 1])
        >>> vocab.decode([2, 3])
        ['the', 'cat']
    """

    pad_index = 0
    unk_index = 1

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(
                f"Received an invalid value for argument `tokens`, expected it to start with "
                f"[{PAD!r}, {UNK!r}], got {tokens[:2]!r}"
            )
        index: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise TypeError(f"tokens should be of type str, got: {type(token).__name__}")
            if token in index:
                raise ValueError(
                    f"Received an invalid value for argument `tokens`, expected unique tokens, "
                    f"got {token!r} at indices {index[token]} and {i}"
                )
            index[token] = i
        self._tokens = tokens
        self._index = index

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Count the tokens of training sequences and keep the frequent ones.

        Args:
            sequences: Token sequences (lists of words, or strings for characters).
            min_freq: Keep tokens seen at least this many times.
            max_size: Keep at most this many entries, ``<pad>`` and ``<unk>``
                included (the size of an embedding table); ``None`` for no limit.

        Returns:
            The vocabulary.
        """
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(
                f"Received an invalid value for argument `min_freq`, expected a positive "
                f"integer, got {min_freq!r}"
            )
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2
        ):
            raise ValueError(
                f"Received an invalid value for argument `max_size`, expected an integer >= 2 "
                f"(room for {PAD!r} and {UNK!r}) or None, got {max_size!r}"
            )
        counts: Counter[str] = Counter()
        for sequence in sequences:
            counts.update(sequence)
        for special in (PAD, UNK):
            counts.pop(special, None)
        # most_common keeps first-appearance order among equal counts.
        kept = [token for token, count in counts.most_common() if count >= min_freq]
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    __hash__ = None  # mutable-looking container semantics: equal by content, not hashable

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """Every token, in index order (a copy)."""
        return list(self._tokens)

    def index(self, token: str) -> int:
        """The index of `token`, or ``unk_index`` if it is not in the vocabulary."""
        return self._index.get(token, self.unk_index)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Indices of `tokens`; unknown tokens map to ``unk_index``."""
        get = self._index.get
        return [get(token, self.unk_index) for token in tokens]

    def decode(self, indices: Iterable[int]) -> list[str]:
        """Tokens of `indices` (ints or a 1-D integer tensor)."""
        size = len(self._tokens)
        tokens = []
        for i in indices:
            i = int(i)
            if not 0 <= i < size:
                raise IndexError(f"index {i} is out of range for a vocabulary of size {size}")
            tokens.append(self._tokens[i])
        return tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"tokens": [...]}`` in index order."""
        return {"tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary from :meth:`to_dict`'s output."""
        if "tokens" not in state:
            raise ValueError(
                f"Received an invalid value for argument `state`, expected key 'tokens', "
                f"got {sorted(state)!r}"
            )
        return cls(state["tokens"])


class LabelEncoder:
    """Class labels (strings or integers) to indices ``0 .. num_classes - 1`` and back.

    Args:
        classes: The labels in index order; no duplicates. ``"1"`` and ``1``
            are different labels.

    Example:
        >>> labels = LabelEncoder.fit(["pos", "neg", "pos"])
        >>> labels.classes, labels.encode(["pos", "neg"])
        (['neg', 'pos'], [1, 0])
        >>> labels.decode([0])
        ['neg']
    """

    def __init__(self, classes: Sequence[str | int]) -> None:
        normalised = [_label(label) for label in classes]
        index: dict[str | int, int] = {}
        for i, label in enumerate(normalised):
            if label in index:
                raise ValueError(
                    f"Received an invalid value for argument `classes`, expected unique labels, "
                    f"got {label!r} at indices {index[label]} and {i}"
                )
            index[label] = i
        self._classes = normalised
        self._index = index

    @classmethod
    def fit(cls, labels: Iterable[str | int]) -> LabelEncoder:
        """The encoder of the distinct labels, sorted (integers first, then strings).

        Sorting makes the mapping independent of the order of the training
        file: SST-2's ``"0"``/``"1"`` map to 0/1.
        """
        distinct = {_label(label) for label in labels}
        return cls(sorted(distinct, key=lambda x: (isinstance(x, str), x)))

    @property
    def classes(self) -> list[str | int]:
        """The labels, in index order (a copy)."""
        return list(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelEncoder) and self._classes == other._classes

    __hash__ = None

    def __repr__(self) -> str:
        return f"LabelEncoder(classes={self._classes!r})"

    def encode(self, labels: Iterable[str | int]) -> list[int]:
        """Class indices of `labels`; a label not seen in :meth:`fit` is an error."""
        indices = []
        for label in labels:
            i = self._index.get(_label(label))
            if i is None:
                raise ValueError(
                    f"Received an unknown label, expected one of {self._classes!r}, got {label!r}"
                )
            indices.append(i)
        return indices

    def decode(self, indices: Iterable[int]) -> list[str | int]:
        """Labels of class `indices` (ints or a 1-D integer tensor)."""
        size = len(self._classes)
        labels = []
        for i in indices:
            i = int(i)
            if not 0 <= i < size:
                raise IndexError(f"class index {i} is out of range for {size} classes")
            labels.append(self._classes[i])
        return labels

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"classes": [...]}`` in index order."""
        return {"classes": list(self._classes)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> LabelEncoder:
        """Rebuild an encoder from :meth:`to_dict`'s output."""
        if "classes" not in state:
            raise ValueError(
                f"Received an invalid value for argument `state`, expected key 'classes', "
                f"got {sorted(state)!r}"
            )
        return cls(state["classes"])


def _label(label: object) -> str | int:
    """`label` as a JSON-able str or int (numpy integers become int)."""
    if isinstance(label, str):
        return label
    # bool is Integral too, but True would collide with 1 and not read back as a label.
    if is_int(label):
        return int(label)
    raise TypeError(f"labels should be of type str or int, got: {type(label).__name__}")
