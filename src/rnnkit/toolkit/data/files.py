"""Reading a data file as text: the checks every loader shares.

Each loader reads its whole file through :func:`read_text`, which turns the
usual ways a path can be wrong (missing, a directory, empty, not UTF-8) into a
one-line :class:`~rnnkit.toolkit.data.errors.DataError`.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import os
import zlib
from pathlib import Path

from rnnkit.toolkit.data.errors import DataError

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file


def check_file(path: str | os.PathLike[str]) -> Path:
    """Return `path` as a `Path` after checking that it names a regular file.

    Args:
        path: The file to read.

    Returns:
        ``Path(path)``.

    Raises:
        DataError: Nothing exists at `path`, or it is a directory.
    """
    file = Path(path)
    if file.is_dir():
        raise DataError(file, "expected a file, got a directory")
    if not file.is_file():
        raise DataError(file, "expected an existing file, got no file at this path")
    return file


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a whole UTF-8 file, plain or gzip-compressed (a leading byte-order mark is dropped).

    Args:
        path: The file to read.

    Returns:
        The decoded text, line endings as in the file.

    Raises:
        DataError: The path is missing or a directory, the file is empty, a gzip
            file is damaged, or its bytes are not UTF-8 (the message gives the line
            and byte offset, in the decompressed text for a gzip file).
    """
    file = check_file(path)
    data = file.read_bytes()
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(file, f"expected a readable gzip file, got {error}") from None
    if not data:
        raise DataError(file, "expected text, got an empty file (0 bytes)")
    # Spreadsheets often save a byte-order mark, which would glue onto the first header.
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start  # in the file, not in the decoded slice
        line = data.count(b"\n", 0, offset) + 1
        bad = data[offset : start + error.end].hex()
        raise DataError(
            file,
            f"expected UTF-8 text, got byte(s) 0x{bad} at byte offset {offset}",
            line=line,
        ) from None
    logger.debug("read %s: %d bytes", file, len(data))
    return text
