"""Time series to model windows: sliding windows, chronological splits, scaling, baselines.

Window ``i`` of a series with rows ``0 .. n-1`` reads the rows
``i .. i + lookback - 1`` (its *last observed row* is ``t = i + lookback - 1``)
and predicts the target column at row ``t + horizon``; ``horizon=1`` is the
row right after the window. A series of ``n`` rows gives
``n - lookback - horizon + 1`` windows.

Splitting goes by window, in time order, so each split's targets are a
contiguous run of rows and no target row belongs to two splits: the first
``train_fraction`` of the windows train, the next ``val_fraction`` validate,
the next ``test_fraction`` test. Validation and test windows may read rows
that are training targets as their input history, as a forecaster in
production would.

Scaling is fitted on training data only: the feature scaler on the rows that
training windows read (``0 .. last training window's t``), the target scaler
on the training targets. Two target transforms:

- ``"none"``: the target is the value ``y[t + horizon]``.
- ``"log_return"``: the target is ``log(y[t + horizon] / y[t])``; a prediction
  ``r`` becomes the value ``y[t] * exp(r)`` (:func:`log_returns_to_prices`).

Every window also carries the naive persistence forecast ("tomorrow = today"),
``y[t]`` in original units, the baseline a model has to beat.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from rnnkit.toolkit.arguments import invalid_argument, is_int
from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.scaling import StandardScaler
from rnnkit.toolkit.data.tables import (
    FRAME_SOURCE,
    frame_values,
    index_label,
    read_csv_series,
    unique_names,
)

logger = logging.getLogger(__name__)

TARGET_TRANSFORMS = ("none", "log_return")


def log_returns_to_prices(log_returns: torch.Tensor, last_close: torch.Tensor) -> torch.Tensor:
    """Turn predicted log-returns into prices: ``last_close * exp(log_returns)``.

    Args:
        log_returns: Log-returns in original (unscaled) units,
            ``log(close[t + horizon] / close[t])``.
        last_close: The last observed close ``close[t]`` of each window.

    Returns:
        The predicted prices ``close[t + horizon]``.

    Shape:
        log_returns: ``(batch, 1)``; last_close: broadcastable to it, e.g.
        ``(batch, 1)``; output: ``(batch, 1)``.
    """
    return last_close * torch.exp(log_returns)


@dataclass(frozen=True, eq=False)
class WindowedSeries:
    """The windows of one split, as float32 tensors ready for a batch-first model.

    Attributes:
        inputs: Scaled feature windows.
        targets: Scaled model targets (values or log-returns).
        target_index: Date (or label) of each window's target row.
        target_values: The target column at the target row, in original units:
            what predictions are scored against.
        baseline: The persistence forecast, the target column at the window's
            last observed row in original units; also the ``last_close`` that
            log-return predictions are converted with.

    Shape:
        inputs: ``(batch, window, features)`` = ``(num_windows, lookback, num_features)``;
        targets, target_values, baseline: ``(num_windows, 1)``;
        target_index: ``(num_windows,)``.
    """

    inputs: torch.Tensor  # (batch, window, features), scaled
    targets: torch.Tensor  # (batch, 1), scaled model target
    target_index: pd.Index  # (batch,) date or label of each target row
    target_values: torch.Tensor  # (batch, 1), target column at t + horizon, original units
    baseline: torch.Tensor  # (batch, 1), target column at t: persistence forecast, original units

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def select(self, start: int, stop: int) -> WindowedSeries:
        """The windows ``start .. stop - 1`` (views, not copies)."""
        return WindowedSeries(
            inputs=self.inputs[start:stop],
            targets=self.targets[start:stop],
            target_index=self.target_index[start:stop],
            target_values=self.target_values[start:stop],
            baseline=self.baseline[start:stop],
        )


@dataclass(frozen=True)
class SeriesTransform:
    """Everything that turns a frame into windows and predictions back into values.

    Fitted by :func:`load_series`; a checkpoint carries :meth:`to_dict` so the
    same windows and scaling can be rebuilt for new data.

    Args:
        feature_columns: Model input columns, in the order of the features axis.
        target_column: The column to forecast.
        lookback: Rows per input window.
        horizon: Steps ahead of the window's last row that the target lies.
        target_transform: ``"none"`` or ``"log_return"``.
        feature_scaler: Fitted on the rows training windows read.
        target_scaler: Fitted on the training targets (after `target_transform`).
    """

    feature_columns: tuple[str, ...]  # model inputs, in order of the features axis
    target_column: str  # the column forecast
    lookback: int  # rows per input window
    horizon: int  # target row = window's last row + horizon
    target_transform: str  # "none": predict the value; "log_return": log(y[t+h] / y[t])
    feature_scaler: StandardScaler  # fitted on the rows training windows read
    target_scaler: StandardScaler  # fitted on the (transformed) training targets

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_columns", tuple(self.feature_columns))
        _check_positive_int("lookback", self.lookback)
        _check_positive_int("horizon", self.horizon)
        _check_target_transform(self.target_transform)
        if self.feature_scaler.columns != tuple(str(c) for c in self.feature_columns):
            raise ValueError(
                f"Received an invalid value for argument `feature_scaler`, expected columns "
                f"{list(self.feature_columns)!r}, got {list(self.feature_scaler.columns)!r}"
            )
        if self.target_scaler.columns != (str(self.target_column),):
            raise ValueError(
                f"Received an invalid value for argument `target_scaler`, expected columns "
                f"[{self.target_column!r}], got {list(self.target_scaler.columns)!r}"
            )

    def windows(self, frame: pd.DataFrame, *, source: str = FRAME_SOURCE) -> WindowedSeries:
        """All windows of `frame` that have a target, scaled with the fitted scalers.

        Args:
            frame: Rows in time order holding the feature and target columns.
            source: How error messages name the frame.

        Returns:
            ``len(frame) - lookback - horizon + 1`` windows.

        Raises:
            DataError: A column is missing, a cell is not a finite number, the
                frame has fewer than ``lookback + horizon`` rows, or (for
                log-returns) a target value is not positive.
        """
        features, target = _columns(frame, self.feature_columns, self.target_column, source)
        return self._windows(features, target, frame.index, source)

    def inverse_transform_target(self, predictions: torch.Tensor) -> torch.Tensor:
        """Undo the target scaling: model outputs to values or log-returns in original units.

        Shape:
            predictions: ``(batch, 1)``; output the same.
        """
        return self.target_scaler.inverse_transform(predictions)

    def to_target_values(
        self, predictions: torch.Tensor, last_observed: torch.Tensor
    ) -> torch.Tensor:
        """Model outputs to predicted values of the target column, in original units.

        Args:
            predictions: Scaled model outputs, as trained against ``targets``.
            last_observed: Each window's last observed target value (its
                ``baseline``); used by ``"log_return"`` only.

        Returns:
            Predicted ``y[t + horizon]``, comparable with ``target_values``.

        Shape:
            predictions, last_observed: ``(batch, 1)``; output ``(batch, 1)``.
        """
        values = self.inverse_transform_target(predictions)
        if self.target_transform == "log_return":
            return log_returns_to_prices(values, last_observed.to(values))
        return values

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` rebuilds this transform from."""
        return {
            "feature_columns": list(self.feature_columns),
            "target_column": self.target_column,
            "lookback": self.lookback,
            "horizon": self.horizon,
            "target_transform": self.target_transform,
            "feature_scaler": self.feature_scaler.to_dict(),
            "target_scaler": self.target_scaler.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> SeriesTransform:
        """Rebuild a transform from :meth:`to_dict`'s output."""
        keys = (
            "feature_columns",
            "target_column",
            "lookback",
            "horizon",
            "target_transform",
            "feature_scaler",
            "target_scaler",
        )
        if any(key not in state for key in keys):
            raise ValueError(
                f"Received an invalid value for argument `state`, expected keys {list(keys)!r}, "
                f"got {sorted(state)!r}"
            )
        return cls(
            feature_columns=tuple(state["feature_columns"]),
            target_column=state["target_column"],
            lookback=state["lookback"],
            horizon=state["horizon"],
            target_transform=state["target_transform"],
            feature_scaler=StandardScaler.from_dict(state["feature_scaler"]),
            target_scaler=StandardScaler.from_dict(state["target_scaler"]),
        )

    def _windows(
        self, features: np.ndarray, target: np.ndarray, index: pd.Index, source: str
    ) -> WindowedSeries:
        num_windows = _num_windows(len(target), self.lookback, self.horizon, source)
        last = slice(self.lookback - 1, self.lookback - 1 + num_windows)  # row t of each window
        ahead = slice(last.start + self.horizon, last.stop + self.horizon)  # row t + horizon
        raw = _raw_targets(
            target, last, ahead, self.target_transform, self.target_column, index, source
        )
        scaled = self.feature_scaler.transform(features).astype(np.float32)  # (rows, features)
        rows = torch.from_numpy(np.ascontiguousarray(scaled))
        width = rows.shape[1]
        # Overlapping windows as a strided view of the rows, not a copy: memory stays that
        # of the data whatever the lookback (which a shared run's transform.json sets).
        windows = rows.as_strided((num_windows, self.lookback, width), (width, width, 1))
        targets = self.target_scaler.transform(raw[:, None])  # (batch, 1)
        return WindowedSeries(
            inputs=windows,  # (batch, window, features)
            targets=torch.from_numpy(targets.astype(np.float32)),
            target_index=index[ahead],
            target_values=torch.from_numpy(target[ahead, None].astype(np.float32)),
            baseline=torch.from_numpy(target[last, None].astype(np.float32)),
        )


@dataclass(frozen=True, eq=False)
class SeriesSplits:
    """Chronological train / validation / test windows and the transform fitted on train.

    Attributes:
        train, val, test: The windows of each split, in time order.
        transform: Columns, window sizes and the scalers fitted on ``train``.
    """

    train: WindowedSeries
    val: WindowedSeries
    test: WindowedSeries
    transform: SeriesTransform

    def inverse_transform_target(self, predictions: torch.Tensor) -> torch.Tensor:
        """See :meth:`SeriesTransform.inverse_transform_target`."""
        return self.transform.inverse_transform_target(predictions)

    def to_target_values(self, predictions: torch.Tensor, part: WindowedSeries) -> torch.Tensor:
        """Predictions for the windows of `part` as values of the target column.

        Args:
            predictions: Scaled model outputs for every window of `part`, in order.
            part: ``train``, ``val`` or ``test``.

        Returns:
            Predicted values in original units, comparable with
            ``part.target_values`` and ``part.baseline``.

        Shape:
            predictions: ``(len(part), 1)``; output the same.
        """
        return self.transform.to_target_values(predictions, part.baseline)


def load_series(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    target_column: str,
    lookback: int,
    horizon: int = 1,
    feature_columns: Sequence[str] | None = None,
    train_fraction: float = 0.7,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    target_transform: str = "none",
    scale: bool = True,
    index_column: int | str | None = 0,
    source_name: str = FRAME_SOURCE,
) -> SeriesSplits:
    """Read a series and cut it into scaled, chronologically split windows.

    Args:
        source: A CSV file (read with :func:`read_csv_series`) or a frame with
            rows in time order.
        target_column: The column to forecast, e.g. ``"Close"``.
        lookback: Rows per input window.
        horizon: The target is `horizon` rows after the window's last row.
        feature_columns: Input columns; ``None`` takes every column (of a CSV,
            every column but the index column).
        train_fraction, val_fraction, test_fraction: Shares of the windows, in
            this time order; they must sum to at most 1 (windows beyond the sum
            are left out) and each non-zero share must get a window.
        target_transform: ``"none"`` to predict the value, ``"log_return"`` to
            predict ``log(y[t + horizon] / y[t])``.
        scale: Standardise features and target with statistics of the
            training part; ``False`` leaves them in original units.
        index_column: For a CSV `source`, the column of dates or labels.
        source_name: For a frame `source`, how errors name it (e.g. the file it
            was read from).

    Returns:
        The three splits and the fitted transform.

    Raises:
        ValueError: An argument is invalid.
        DataError: The data are missing, malformed or too short.

    Example:
        >>> from rnnkit.toolkit.data import goog_csv_path
        >>> splits = load_series(goog_csv_path(), target_column="Close", lookback=30)
        >>> splits.train.inputs.shape  # (batch, window, features)
        torch.Size([1483, 30, 5])
        >>> splits.train.targets.shape  # (batch, 1)
        torch.Size([1483, 1])
    """
    _check_positive_int("lookback", lookback)
    _check_positive_int("horizon", horizon)
    _check_target_transform(target_transform)
    fractions = _check_fractions(train_fraction, val_fraction, test_fraction)
    if isinstance(feature_columns, str):
        raise ValueError(
            "Received an invalid value for argument `feature_columns`, expected a sequence of "
            f"column names, got the string {feature_columns!r}"
        )

    if isinstance(source, pd.DataFrame):
        frame, name = source, source_name
        if feature_columns is None:
            feature_columns = list(frame.columns)
    else:
        name = os.fspath(source)
        wanted = None if feature_columns is None else [*feature_columns, target_column]
        frame = read_csv_series(
            source, None if wanted is None else unique_names(wanted), index_column=index_column
        )
        if feature_columns is None:
            feature_columns = list(frame.columns)
    if not feature_columns:
        raise ValueError(
            "Received an invalid value for argument `feature_columns`, expected at least one "
            "column, got none"
        )
    features, target = _columns(frame, tuple(feature_columns), target_column, name)
    num_windows = _num_windows(len(target), lookback, horizon, name)
    bounds = _split_bounds(num_windows, fractions, name, len(target), lookback, horizon)

    num_train = bounds[1]
    last = slice(lookback - 1, lookback - 1 + num_train)
    ahead = slice(last.start + horizon, last.stop + horizon)
    if scale:
        # Only what training windows read: rows 0 .. last training window's last row.
        feature_scaler = StandardScaler.fit(features[: last.stop], feature_columns)
        train_targets = _raw_targets(
            target, last, ahead, target_transform, target_column, frame.index, name
        )
        target_scaler = StandardScaler.fit(train_targets[:, None], [target_column])
    else:
        feature_scaler = StandardScaler.identity(feature_columns)
        target_scaler = StandardScaler.identity([target_column])
    transform = SeriesTransform(
        feature_columns=tuple(feature_columns),
        target_column=target_column,
        lookback=lookback,
        horizon=horizon,
        target_transform=target_transform,
        feature_scaler=feature_scaler,
        target_scaler=target_scaler,
    )
    windows = transform._windows(features, target, frame.index, name)
    train, val, test = (windows.select(bounds[k], bounds[k + 1]) for k in range(3))
    logger.info(
        "%s: %d rows -> %d windows (lookback %d, horizon %d): train %d, val %d, test %d",
        name,
        len(target),
        num_windows,
        lookback,
        horizon,
        len(train),
        len(val),
        len(test),
    )
    return SeriesSplits(train=train, val=val, test=test, transform=transform)


def _columns(
    frame: pd.DataFrame, feature_columns: Sequence[str], target_column: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    names = unique_names([*feature_columns, target_column])
    values = frame_values(frame, names, source=source)
    features = values[:, [names.index(c) for c in feature_columns]]  # (rows, features)
    target = values[:, names.index(target_column)]  # (rows,)
    return features, target


def _raw_targets(
    target: np.ndarray,
    last: slice,
    ahead: slice,
    target_transform: str,
    target_column: str,
    index: pd.Index,
    source: str,
) -> np.ndarray:
    if target_transform == "none":
        return target[ahead]
    bad = np.flatnonzero(target[last.start : ahead.stop] <= 0)
    if bad.size:
        i = last.start + int(bad[0])
        raise DataError(
            source,
            f"expected positive values for target_transform='log_return', got {float(target[i])!r} "
            f"at row position {i} (index {index_label(index[i])})",
            column=target_column,
        )
    return np.log(target[ahead] / target[last])


def _num_windows(rows: int, lookback: int, horizon: int, source: str) -> int:
    needed = lookback + horizon
    if rows < needed:
        raise DataError(
            source,
            f"expected at least lookback + horizon = {lookback} + {horizon} = {needed} rows, "
            f"got {rows}",
        )
    return rows - needed + 1


def _split_bounds(
    num_windows: int,
    fractions: tuple[float, float, float],
    source: str,
    rows: int,
    lookback: int,
    horizon: int,
) -> tuple[int, int, int, int]:
    # Round the cumulative shares so that fractions summing to 1 use every window.
    cumulative = np.cumsum(fractions)
    stops = [min(num_windows, round(num_windows * float(c))) for c in cumulative]
    bounds = (0, *stops)
    for k, split in enumerate(("train", "val", "test")):
        if fractions[k] > 0 and bounds[k + 1] == bounds[k]:
            raise DataError(
                source,
                f"expected at least one {split} window, got none: {rows} rows give {num_windows} "
                f"windows (lookback {lookback}, horizon {horizon}) and "
                f"{split}_fraction={fractions[k]} of them rounds to 0",
            )
    return bounds


def _check_positive_int(name: str, value: object) -> None:
    if not is_int(value) or value <= 0:
        raise invalid_argument(name, "a positive integer", value)


def _check_target_transform(value: object) -> None:
    if value not in TARGET_TRANSFORMS:
        raise ValueError(
            f"Received an invalid value for argument `target_transform`, expected one of "
            f"{list(TARGET_TRANSFORMS)!r}, got {value!r}"
        )


def _check_fractions(train: float, val: float, test: float) -> tuple[float, float, float]:
    values = {"train_fraction": train, "val_fraction": val, "test_fraction": test}
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 <= value <= 1
        ):
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected a number in "
                f"[0, 1], got {value!r}"
            )
    if train == 0:
        raise ValueError(
            "Received an invalid value for argument `train_fraction`, expected a number in "
            "(0, 1], got 0"
        )
    total = train + val + test
    if total > 1 + 1e-9:
        raise ValueError(
            "Received invalid values for arguments `train_fraction`, `val_fraction`, "
            f"`test_fraction`, expected a sum of at most 1, got {train} + {val} + {test} = "
            f"{total:g}"
        )
    return float(train), float(val), float(test)
