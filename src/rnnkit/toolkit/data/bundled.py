"""Data files that ship inside the package (see ``GOOG.md`` beside them for provenance)."""

from __future__ import annotations

import atexit
import contextlib
import functools
from importlib import resources
from pathlib import Path

# Holds the extraction of resources from a zipped install open until exit; on a
# normal install as_file returns the file's own path and extracts nothing.
_resources = contextlib.ExitStack()
atexit.register(_resources.close)


@functools.cache
def goog_csv_path() -> Path:
    """Path of the bundled GOOG.csv: Google daily prices, 2004-08-19 to 2013-03-01.

    2,148 rows; a date index in the unnamed first column, then ``Open``,
    ``High``, ``Low``, ``Close``, ``Volume``. Copied byte for byte from the
    ``backtesting==0.6.6`` package (``backtesting/test/GOOG.csv``).

    Returns:
        A path to a real file.

    Example:
        >>> from rnnkit.toolkit.data import load_series
        >>> splits = load_series(goog_csv_path(), target_column="Close", lookback=30)
        >>> splits.test.target_index[-1].date()  # the bundled series ends on 2013-03-01
        datetime.date(2013, 3, 1)
    """
    resource = resources.files("rnnkit.toolkit.data").joinpath("GOOG.csv")
    return _resources.enter_context(resources.as_file(resource))
