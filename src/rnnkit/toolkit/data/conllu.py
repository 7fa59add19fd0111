"""CoNLL-U files (Universal Dependencies): sentences of (word form, UPOS) pairs.

Each word line has ten tab-separated fields; the ones read here are ``ID``
(1), ``FORM`` (2) and ``UPOS`` (4). Comment lines (``#``) are skipped, a blank
line ends a sentence, and two kinds of line that are not syntactic words are
skipped: multiword token ranges (``ID`` like ``3-4``, the surface token
``don't`` over the words ``do`` and ``n't``) and empty nodes (``ID`` like
``8.1``). What remains is what UPOS taggers are trained and scored on.
"""

from __future__ import annotations

import logging
import os
import re

from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.files import read_text

logger = logging.getLogger(__name__)

NUM_FIELDS = 10
_WORD_ID = re.compile(r"[1-9][0-9]*")
_SKIPPED_ID = re.compile(r"[0-9]+-[0-9]+|[0-9]+\.[1-9][0-9]*")  # multiword range, empty node


def read_conllu(path: str | os.PathLike[str]) -> list[list[tuple[str, str]]]:
    """Read the words and UPOS tags of every sentence of a CoNLL-U file.

    Args:
        path: The file, UTF-8.

    Returns:
        One list per sentence of ``(form, upos)`` pairs, in file order.

    Raises:
        DataError: The file is missing, a directory, empty, not UTF-8, a line
            does not have ten tab-separated fields, its ID is not a word ID, a
            range or an empty node, or the file holds no sentence.

    Example:
        >>> sentences = read_conllu("en_ewt-ud-dev.conllu")  # doctest: +SKIP
        >>> sentences[0][:2]  # doctest: +SKIP
        [('From', 'ADP'), ('the', 'DET')]
    """
    text = read_text(path)
    sentences: list[list[tuple[str, str]]] = []
    sentence: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if sentence:
                sentences.append(sentence)
                sentence = []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != NUM_FIELDS:
            raise DataError(
                path,
                f"expected {NUM_FIELDS} tab-separated fields, got {len(fields)} in {line!r}",
                line=number,
            )
        word_id = fields[0]
        if _SKIPPED_ID.fullmatch(word_id):
            continue
        if not _WORD_ID.fullmatch(word_id):
            raise DataError(
                path,
                f"expected an ID like 1, 3-4 or 8.1, got {word_id!r}",
                line=number,
                column="ID",
            )
        sentence.append((fields[1], fields[3]))
    if sentence:
        sentences.append(sentence)
    if not sentences:
        raise DataError(path, "expected at least one sentence, got none")
    logger.info("read %s: %d sentences, %d words", path, len(sentences), sum(map(len, sentences)))
    return sentences
