"""Text classification files: one ``label<TAB or space>text`` example per line.

The SST-2 files (``stsa.binary.train``) are in this format: ``1 a stirring ,
funny and finally transporting ...``. The label is everything before the first
tab or space; the text, split on whitespace, is the rest. Blank lines are
skipped.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.files import read_text

logger = logging.getLogger(__name__)


class LabelledTokens(NamedTuple):
    """Examples of a classification file, in file order."""

    tokens: list[list[str]]  # one token list per example
    labels: list[str]  # one label per example, as written in the file


def tokenize(text: str, *, lowercase: bool = False) -> list[str]:
    """Split `text` on whitespace, optionally lowercasing it first.

    Args:
        text: The text to split.
        lowercase: Lowercase before splitting.

    Returns:
        The tokens; ``[]`` for blank text.

    Example:
        >>> tokenize("A stirring , funny film", lowercase=True)
        ['a', 'stirring', ',', 'funny', 'film']
    """
    return (text.lower() if lowercase else text).split()


def read_label_text(path: str | os.PathLike[str], *, lowercase: bool = False) -> LabelledTokens:
    """Read a ``label<TAB or space>text`` file.

    Args:
        path: The file, UTF-8.
        lowercase: Lowercase the text (not the labels).

    Returns:
        ``(tokens, labels)``: token lists and labels (strings as given), in
        file order.

    Raises:
        DataError: The file is missing, a directory, empty, not UTF-8, holds
            only blank lines, or a line lacks the separator or the text.

    Example:
        >>> tokens, labels = read_label_text("stsa.binary.train")  # doctest: +SKIP
        >>> labels[0], tokens[0][:3]  # doctest: +SKIP
        ('1', ['a', 'stirring', ','])
    """
    text = read_text(path)
    tokens: list[list[str]] = []
    labels: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(path, f"expected 'label<TAB or space>text', got {line!r}", line=number)
        labels.append(parts[0])
        tokens.append(tokenize(parts[1], lowercase=lowercase))
    if not labels:
        raise DataError(path, "expected 'label<TAB or space>text' lines, got only blank lines")
    logger.info("read %s: %d examples", path, len(labels))
    return LabelledTokens(tokens, labels)
