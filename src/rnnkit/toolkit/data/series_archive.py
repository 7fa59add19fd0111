"""Labelled multivariate series: aeon's ``.ts`` files and the archive data sets aeon ships.

A source is either a path to a ``.ts`` file (the UCR/UEA archive format) or
``aeon:NAME:SPLIT``, e.g. ``aeon:JapaneseVowels:train``: a data set that the
``aeon`` package carries inside it, so it loads offline. aeon is an optional
dependency (``pip install aeon``), imported only here and only when used.

Each series comes back as a ``(length, channels)`` float32 array, ready to be
a batch element of :func:`~rnnkit.toolkit.data.batching.collate_classification`;
lengths may differ between series.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.files import check_file

AEON_PREFIX = "aeon:"
SPLITS = ("train", "test")

__all__ = ["AEON_PREFIX", "is_aeon_source", "read_labelled_series"]


def is_aeon_source(source: str | os.PathLike[str]) -> bool:
    """Whether `source` names a data set inside aeon (``aeon:NAME:SPLIT``), not a file."""
    return isinstance(source, str) and source.startswith(AEON_PREFIX)


def read_labelled_series(
    source: str | os.PathLike[str], *, labelled: bool = True
) -> tuple[list[np.ndarray], list[str]]:
    """Read labelled series from a ``.ts`` file or ``aeon:NAME:SPLIT``.

    Args:
        source: A ``.ts`` file path, or e.g. ``"aeon:JapaneseVowels:train"``.
        labelled: Require a label per series; False also accepts a file
            without labels (``@classLabel false``), for predictions.

    Returns:
        ``(series, labels)``: one float32 array per series, and one label
        string per series (none for an unlabelled file).

    Shape:
        series[i]: ``(length_i, channels)``; every series has the same channels.

    Raises:
        DataError: The file is missing or malformed, the data set or split is
            unknown, aeon is not installed, or a value is not finite.

    Example:
        >>> series, labels = read_labelled_series("aeon:JapaneseVowels:train")  # doctest: +SKIP
        >>> len(series), series[0].shape, labels[0]  # doctest: +SKIP
        (270, (20, 12), '1')
    """
    aeon = _import_aeon(source)
    if is_aeon_source(source):
        name, split = _parse_aeon_source(source)
        try:
            X, y = aeon.load_classification(name, split=split)
        except Exception as error:  # aeon raises ValueError, OSError, KeyError, ...
            raise DataError(source, f"aeon could not load {name!r}: {_first_line(error)}") from None
    else:
        path = check_file(source)
        try:
            X, y = aeon.load_from_ts_file(str(path))
        except Exception as error:  # malformed files raise IOError/ValueError/IndexError
            raise DataError(path, f"expected a .ts file, got: {_first_line(error)}") from None
    return _check_series(source, X, [] if y is None else y, labelled)


def _import_aeon(source: str | os.PathLike[str]) -> Any:
    try:
        import aeon.datasets  # optional dependency: imported only when used
    except ImportError:
        raise DataError(
            source, "reading series needs the optional package aeon: pip install 'aeon>=1.6'"
        ) from None
    return aeon.datasets


def _parse_aeon_source(source: str) -> tuple[str, str]:
    parts = source[len(AEON_PREFIX) :].split(":")
    if len(parts) != 2 or not parts[0] or parts[1] not in SPLITS:
        raise DataError(
            source, f"expected 'aeon:NAME:SPLIT' with SPLIT one of {SPLITS}, e.g. "
            "'aeon:JapaneseVowels:train'",
        )  # fmt: skip
    return parts[0], parts[1]


def _check_series(
    source: str | os.PathLike[str], X: Any, y: Any, labelled: bool
) -> tuple[list[np.ndarray], list[str]]:
    # aeon gives (cases, channels, length) for equal lengths, else a list of (channels, length).
    series = [np.ascontiguousarray(np.asarray(case, dtype=np.float32).T) for case in X]
    labels = [str(label) for label in y]
    if not series:
        raise DataError(source, "expected at least one series, got none")
    if len(series) != len(labels) and (labelled or labels):
        raise DataError(source, f"expected a label per series, got {len(series)} series and "
                                f"{len(labels)} labels")  # fmt: skip
    channels = series[0].shape[1]
    for i, case in enumerate(series):
        if case.ndim != 2 or case.shape[0] == 0 or case.shape[1] != channels:
            raise DataError(
                source, f"series {i + 1}: expected (length > 0, {channels} channels), got "
                f"shape {case.shape[::-1]} (channels, length)",
            )  # fmt: skip
        if not np.isfinite(case).all():
            raise DataError(source, f"series {i + 1}: expected finite values, got NaN or inf "
                                    "(missing values are not supported)")  # fmt: skip
    return series, labels


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
