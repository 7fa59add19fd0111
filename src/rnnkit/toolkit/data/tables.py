"""Numeric tables: a CSV file or a pandas DataFrame, checked cell by cell.

Both readers return float64 values for the columns asked for, or raise a
one-line :class:`~rnnkit.toolkit.data.errors.DataError` naming the place of the
first bad cell: a line and column of the file, or a column, row position and
index label of the frame.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.files import read_text

logger = logging.getLogger(__name__)

FRAME_SOURCE = "DataFrame"  # how errors name in-memory data


def read_csv_series(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    *,
    index_column: int | str | None = 0,
) -> pd.DataFrame:
    """Read numeric columns of a CSV file with a header line, checking every cell.

    Blank lines are skipped. The index column is parsed as dates when every
    value is ISO 8601 (``2004-08-19``), and then must increase strictly from
    row to row; otherwise it is kept as strings.

    Args:
        path: The CSV file (UTF-8, comma-separated, first line the header).
        columns: The columns to read, in this order; ``None`` reads every
            column except the index column. Other columns are not checked.
        index_column: Position or name of the column holding each row's date
            or label (the bundled GOOG.csv has dates in an unnamed first
            column); ``None`` numbers the rows 0, 1, 2, ...

    Returns:
        A frame with one float64 column per requested column, indexed by the
        index column.

    Raises:
        DataError: The file is missing, empty, not UTF-8, has only a header,
            lacks a requested column (the message lists the columns found), a
            row has the wrong number of fields, a cell is empty, not a number,
            NaN or infinite, or the dates do not increase.

    Example:
        >>> from rnnkit.toolkit.data import goog_csv_path
        >>> frame = read_csv_series(goog_csv_path(), ["Close"])
        >>> frame.shape  # (rows, columns)
        (2148, 1)
    """
    records = _records(path, read_text(path))
    header_line, header = next(records, (0, None))
    if header is None:
        raise DataError(path, "expected a header line, got only blank lines")
    header = [name.strip() for name in header]

    index_position = _index_position(path, header, header_line, index_column)
    names = (
        [name for i, name in enumerate(header) if i != index_position]
        if columns is None
        else list(columns)
    )
    for name in names:
        if name not in header:
            raise DataError(
                path, f"expected a column named {name!r}, got columns {header!r}", line=header_line
            )
        if header.count(name) > 1:
            raise DataError(
                path,
                f"expected one column named {name!r}, got {header.count(name)}",
                line=header_line,
            )
    positions = [header.index(name) for name in names]

    rows: list[list[float]] = []
    labels: list[str] = []
    lines: list[int] = []
    for line, record in records:
        if len(record) != len(header):
            raise DataError(
                path,
                f"expected {len(header)} fields as in the header, got {len(record)}",
                line=line,
            )
        rows.append(
            [
                _parse_number(path, line, name, record[p])
                for name, p in zip(names, positions, strict=True)
            ]
        )
        labels.append(record[index_position].strip() if index_position is not None else "")
        lines.append(line)
    if not rows:
        raise DataError(
            path, "expected data rows after the header, got the header only", line=header_line
        )

    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    if index_position is None:
        index = pd.RangeIndex(len(rows))
    else:
        index = _parse_index(path, labels, lines, header[index_position])
    logger.info("read %s: %d rows, columns %s", path, len(rows), names)
    return pd.DataFrame(values, index=index, columns=names)


def frame_values(
    frame: pd.DataFrame, columns: Sequence[str], *, source: str = FRAME_SOURCE
) -> np.ndarray:
    """Return the named columns of `frame` as float64, checking every cell.

    Args:
        frame: Rows in chronological order; a DatetimeIndex must increase.
        columns: The columns to take, in this order.
        source: How error messages name the frame.

    Returns:
        The values.

    Shape:
        Output: ``(rows, len(columns))``.

    Raises:
        TypeError: `frame` is not a pandas DataFrame.
        DataError: A column is missing (the message lists those found), the
            frame has no rows, a cell is not a number, NaN or infinite, or the
            dates do not increase.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame should be a pandas DataFrame, got: {type(frame).__name__}")
    found = list(frame.columns)
    for name in columns:
        if name not in found:
            raise DataError(source, f"expected a column named {name!r}, got columns {found!r}")
    if len(frame) == 0:
        raise DataError(source, "expected at least one row, got none")
    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        column = frame[name]
        if isinstance(column, pd.DataFrame):
            raise DataError(source, f"expected one column named {name!r}, got {column.shape[1]}")
        numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(numeric))
        if bad.size:
            i = int(bad[0])
            value = column.iloc[i]
            expected = "a finite number" if np.isinf(numeric[i]) else "a number"
            raise DataError(
                source,
                f"expected {expected} at row position {i} (index {index_label(frame.index[i])}), "
                f"got {_describe(value)}",
                column=str(name),
            )
        values[:, j] = numeric
    if isinstance(frame.index, pd.DatetimeIndex):
        steps = np.flatnonzero(np.diff(frame.index.asi8) <= 0)
        if steps.size:
            i = int(steps[0]) + 1
            raise DataError(
                source,
                f"expected increasing dates, got {index_label(frame.index[i])} at row position "
                f"{i} after {index_label(frame.index[i - 1])}",
            )
    return values


def _records(path: str | os.PathLike[str], text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` of each non-blank CSV record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(
                path, f"expected CSV fields, got a malformed line ({error})", line=reader.line_num
            ) from None
        if len(record) > 1 or (record and record[0].strip()):
            yield reader.line_num, record


def _index_position(
    path: str | os.PathLike[str], header: list[str], line: int, index_column: int | str | None
) -> int | None:
    if index_column is None:
        return None
    if isinstance(index_column, str):
        if index_column not in header:
            raise DataError(
                path,
                f"expected an index column named {index_column!r}, got columns {header!r}",
                line=line,
            )
        return header.index(index_column)
    if isinstance(index_column, bool) or not isinstance(index_column, int):
        raise TypeError(
            f"index_column should be of type int, str or None, got: {type(index_column).__name__}"
        )
    if not 0 <= index_column < len(header):
        raise DataError(
            path,
            f"expected an index column at position {index_column}, "
            f"got {len(header)} columns {header!r}",
            line=line,
        )
    return index_column


def _parse_number(path: str | os.PathLike[str], line: int, column: str, cell: str) -> float:
    text = cell.strip()
    if not text:
        raise DataError(path, "expected a number, got an empty cell", line=line, column=column)
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            path, f"expected a number, got {cell!r}", line=line, column=column
        ) from None
    if not math.isfinite(value):
        raise DataError(path, f"expected a finite number, got {cell!r}", line=line, column=column)
    return value


def _parse_index(
    path: str | os.PathLike[str], labels: list[str], lines: list[int], name: str
) -> pd.Index:
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(labels, format="ISO8601"), name=name or None)
    except (ValueError, TypeError):
        return pd.Index(labels, name=name or None)
    steps = np.flatnonzero(np.diff(dates.asi8) <= 0)
    if steps.size:
        i = int(steps[0]) + 1
        raise DataError(
            path,
            f"expected increasing dates, got {labels[i]!r} after {labels[i - 1]!r}",
            line=lines[i],
            column=name or None,
        )
    return dates


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` without repeats, in first-seen order (a column may be both feature and target)."""
    return list(dict.fromkeys(names))


def index_label(value: object) -> str:
    """An index value for a message: dates at midnight as ``2024-01-02``."""
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return str(value.date())
    return str(value)


def _describe(value: object) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return "a missing value (NaN)"
    return repr(value)
