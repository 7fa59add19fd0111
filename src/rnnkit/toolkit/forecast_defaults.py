"""What the forecast task derives from the series: the lookback, warnings, readable figures.

- :func:`choose_lookback`: ``data.lookback = "auto"`` takes :data:`DEFAULT_LOOKBACK`
  rows, shortened on short series to a tenth of their rows, so that the
  training, validation and test parts keep enough windows;
- :func:`few_windows_warning`: the one line shown when the splits are too small
  to trust (an explicit lookback is used as given, with this warning);
- :func:`figure`: a number with four significant digits at any scale, so that
  errors of 0.0012 and 1,234 read alike.
"""

from __future__ import annotations

import math

DEFAULT_LOOKBACK = 100  # rows per window on series long enough for it
ROWS_PER_LOOKBACK = 10  # a short series gets a lookback of a tenth of its rows
MIN_TRAIN_WINDOWS = 50  # fewer training windows than this: warn
MIN_HELD_OUT_WINDOWS = 10  # fewer validation or test windows than this: warn

__all__ = ["choose_lookback", "few_windows_warning", "figure"]


def choose_lookback(rows: int, horizon: int) -> int:
    """Rows per input window for a series of `rows` rows.

    Example:
        >>> choose_lookback(2148, 1), choose_lookback(156, 1)  # daily GOOG; 13 years monthly
        (100, 15)
    """
    return max(1, min(DEFAULT_LOOKBACK, (rows - horizon) // ROWS_PER_LOOKBACK))


def few_windows_warning(
    train: int, val: int, test: int, lookback: int, rows: int, horizon: int
) -> str | None:
    """A warning when a split has too few windows to learn from or to judge by, else None.

    Args:
        train, val, test: Windows per split (0 where a split is not held out of the series).
        lookback: The lookback in use.
        rows: Rows in the series.
        horizon: Rows between a window's last row and its target.
    """
    small = []
    if train < MIN_TRAIN_WINDOWS:
        small.append(f"{train} training")
    small += [f"{n} {name}" for n, name in ((val, "validation"), (test, "test"))
              if 0 < n < MIN_HELD_OUT_WINDOWS]  # fmt: skip
    if not small:
        return None
    listed = small[0] if len(small) == 1 else f"{', '.join(small[:-1])} and {small[-1]}"
    message = (
        f"warning: lookback {lookback} leaves {listed} windows of {rows} rows; figures on so "
        "few windows are unreliable"
    )
    suggested = choose_lookback(rows, horizon)
    if suggested < lookback:
        message += f' (data.lookback = {suggested} or "auto" would leave more)'
    return message


def figure(value: float) -> str:
    """`value` with four significant digits, in fixed notation.

    Example:
        >>> figure(8.31249), figure(0.00123456), figure(12345.6)
        ('8.312', '0.001235', '12346')
    """
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"
