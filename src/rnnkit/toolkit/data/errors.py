"""`DataError`: a data file (or frame) does not hold what a loader expects.

The message is one line that names the source, the place in it (line, row or
column) and what was expected against what was received, e.g.::

    prices.csv: line 5, column 'Close': expected a number, got 'n/a'

Invalid *arguments* (a negative `lookback`, fractions summing to more than one)
raise a plain `ValueError` instead; `DataError` subclasses `ValueError`, so one
``except ValueError`` catches both.
"""

from __future__ import annotations

import os


class DataError(ValueError):
    """A data source does not hold what a loader expects.

    Args:
        source: The file path, or a short name such as ``"DataFrame"`` for
            in-memory data.
        message: What was expected and what was received, e.g.
            ``"expected a number, got 'n/a'"``.
        line: 1-based line number in the file, if the problem has one.
        column: Column name (or a row description for data frames), if any.

    Attributes:
        source, line, column: As given, for programs that want to point at
            the problem themselves.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.source = os.fspath(source)
        self.line = line
        self.column = column
        self.detail = message
        place = []
        if line is not None:
            place.append(f"line {line}")
        if column is not None:
            place.append(f"column {column!r}")
        prefix = f"{self.source}: " + (", ".join(place) + ": " if place else "")
        # One line, always, whatever a caller put into `message`.
        super().__init__((prefix + message).replace("\n", "\\n"))

    def __reduce__(self):
        # Keyword-only arguments: rebuild from the fields, not from self.args.
        return _rebuild, (self.source, self.detail, self.line, self.column)


def _rebuild(source: str, message: str, line: int | None, column: str | None) -> DataError:
    return DataError(source, message, line=line, column=column)
