"""The ``forecast`` run task: the next value of a series, e.g. a daily closing price.

A CSV is cut into sliding windows ``(batch, window, features)`` of its feature
columns, scaled with training statistics and read by a ``ManyToOneModel``; the
forecasts are scored in original units against persistence (``y[t+1] = y[t]``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.data import (
    DataError,
    SeriesTransform,
    WindowedSeries,
    goog_csv_path,
    load_series,
    read_csv_series,
)
from rnnkit.toolkit.data.tables import index_label, unique_names
from rnnkit.toolkit.forecast_defaults import choose_lookback, few_windows_warning, figure
from rnnkit.toolkit.metrics import mae, rmse
from rnnkit.toolkit.tasks.base import Task, TaskData
from rnnkit.toolkit.tasks.common import _count, _percent, _share
from rnnkit.toolkit.tasks.running import _forward_all

__all__ = ["ForecastTask", "SeriesDataset"]


class SeriesDataset(Dataset):
    """Windows of a series as ``(inputs, target)`` pairs; ``windows`` keeps dates and prices."""

    def __init__(self, windows: WindowedSeries) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.windows.inputs[i], self.windows.targets[i]  # (window, features), (1,)


class ForecastTask(Task):
    """Next value of a series from the last ``lookback`` rows of its feature columns."""

    name = "forecast"

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        path = data.path or goog_csv_path()
        # Read once: "auto" and the few-windows warning need the row count first.
        frame = read_csv_series(path, unique_names([*data.features, data.target]))
        rows = len(frame)
        lookback = data.lookback
        derived = {}
        if lookback == "auto":
            lookback = derived["data.lookback"] = choose_lookback(rows, data.horizon)
        splits = load_series(
            frame,
            source_name=os.fspath(path),
            target_column=data.target,
            lookback=lookback,
            horizon=data.horizon,
            feature_columns=list(data.features),
            train_fraction=1 - data.val_fraction - data.test_fraction,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            target_transform=data.target_transform,
        )
        model_config = config.model.to_model_config(
            "forecast", **self.model_sizes(splits.transform)
        )
        name = "bundled GOOG.csv" if not data.path else str(path)
        description = [
            f"data: {name}: {_count(len(splits.train), 'window')} train, "
            f"{len(splits.val):,} validation, {len(splits.test):,} test "
            f"(lookback {lookback}{' from the data' if derived else ''}, "
            f"horizon {data.horizon})",
        ]
        warning = few_windows_warning(
            len(splits.train), len(splits.val), len(splits.test), lookback, rows, data.horizon
        )
        for label, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
            if len(part):
                description.append(
                    f"  {label:<5} targets {index_label(part.target_index[0])} .. "
                    f"{index_label(part.target_index[-1])}"
                )
        return TaskData(
            train=SeriesDataset(splits.train),
            val=SeriesDataset(splits.val) if len(splits.val) else None,
            test=SeriesDataset(splits.test) if len(splits.test) else None,
            collate_fn=None,
            model_config=model_config,
            transform=splits.transform,
            description=description,
            derived=derived,
            warnings=[] if warning is None else [warning],
        )

    def transform_from_dict(self, state: dict[str, Any]) -> SeriesTransform:
        return SeriesTransform.from_dict(state)

    def model_sizes(self, transform: SeriesTransform) -> dict[str, int]:
        return {"input_size": len(transform.feature_columns), "num_outputs": 1}

    def dataset(
        self, config: RunConfig, transform: SeriesTransform, path: str | os.PathLike[str]
    ) -> SeriesDataset:
        frame = read_csv_series(
            path, unique_names([*transform.feature_columns, transform.target_column])
        )
        return SeriesDataset(transform.windows(frame, source=os.fspath(path)))

    def score(
        self,
        model: nn.Module,
        dataset: SeriesDataset,
        transform: SeriesTransform,
        baseline: dict[str, Any],
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        windows = dataset.windows
        outputs = _forward_all(model, dataset, None)  # (windows, 1), scaled
        predicted = transform.to_target_values(outputs, windows.baseline).double()
        actual = windows.target_values.double()  # (windows, 1), original units
        last = windows.baseline.double()  # persistence: y[t]
        moved = actual != last  # days without a change have no direction
        up = (actual > last)[moved]
        results = {
            "windows": len(windows),
            "first_target": index_label(windows.target_index[0]),
            "last_target": index_label(windows.target_index[-1]),
            "target": transform.target_column,
            "model": {
                "rmse": float(rmse(predicted, actual)),
                "mae": float(mae(predicted, actual)),
                "directional_accuracy": _share((predicted > last)[moved] == up),
            },
            "persistence": {"rmse": float(rmse(last, actual)), "mae": float(mae(last, actual))},
            # The direction a forecaster gets right by always saying "up".
            "always_up_directional_accuracy": _share(up),
        }
        # float32, as the model computes: a CSV then shows 616.05, not 616.0499877929688.
        frame = pd.DataFrame(
            {
                "date": windows.target_index,
                "actual": windows.target_values[:, 0].numpy(),
                "predicted": predicted[:, 0].float().numpy(),
                "persistence": windows.baseline[:, 0].numpy(),
            }
        )
        return results, frame

    def predict(
        self, model: nn.Module, transform: SeriesTransform, path: str | os.PathLike[str]
    ) -> pd.DataFrame:
        """A forecast for every window of the file, including those past its last row.

        Each row is one window: ``date`` is its last observed row, ``target_date``
        the row it forecasts (empty past the end of the file), ``predicted``
        the forecast in original units, ``actual`` the value where the file
        has it, ``persistence`` the last observed value.
        """
        source = os.fspath(path)
        columns = unique_names([*transform.feature_columns, transform.target_column])
        frame = read_csv_series(path, columns)
        lookback, horizon = transform.lookback, transform.horizon
        rows = len(frame)
        if rows < lookback:
            raise DataError(source, f"expected at least lookback = {lookback} rows, got {rows}")
        features = frame[list(transform.feature_columns)].to_numpy(
            np.float64, copy=True
        )  # (rows, features)
        target = frame[transform.target_column].to_numpy(np.float64, copy=True)  # (rows,)
        scaled = transform.feature_scaler.transform(features).astype(np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(scaled, lookback, axis=0)
        inputs = torch.from_numpy(np.ascontiguousarray(windows.transpose(0, 2, 1)))
        # inputs: (batch, window, features), one window ending at each row t >= lookback - 1
        last = torch.from_numpy(target[lookback - 1 :, None])  # (batch, 1), y[t]
        dataset = TensorDataset(inputs, torch.zeros(len(inputs), 1))
        outputs = _forward_all(model, dataset, None)  # (batch, 1), scaled
        predicted = transform.to_target_values(outputs, last.float()).double()
        ahead = np.arange(lookback - 1, rows) + horizon  # row t + horizon
        inside = ahead < rows
        target_dates = pd.Series(frame.index[np.minimum(ahead, rows - 1)]).where(inside)
        actual = np.where(inside, target[np.minimum(ahead, rows - 1)], np.nan)
        return pd.DataFrame(
            {
                "date": frame.index[lookback - 1 :],
                "target_date": target_dates.to_numpy(),
                "predicted": predicted[:, 0].float().numpy(),  # float32, as the model computes
                "actual": actual,
                "persistence": last[:, 0].numpy(),
            }
        )

    def report(self, results: dict[str, Any]) -> list[str]:
        model, persistence = results["model"], results["persistence"]
        target = results["target"]
        lines = [
            f"{_count(results['windows'], 'forecast')} of {target}, "
            f"{results['first_target']} .. {results['last_target']}, in original units:",
            f"  {'':<24}{'RMSE':>10}{'MAE':>10}{'direction':>11}",
            f"  {'model':<24}{figure(model['rmse']):>10}{figure(model['mae']):>10}"
            f"{_percent(model['directional_accuracy']):>11}",
            f"  {'persistence (y[t+1]=y[t])':<24}{figure(persistence['rmse']):>10}"
            f"{figure(persistence['mae']):>10}{'-':>11}",
            f"  {'always up':<24}{'-':>10}{'-':>10}"
            f"{_percent(results['always_up_directional_accuracy']):>11}",
        ]
        ratio = model["rmse"] / persistence["rmse"] if persistence["rmse"] else math.nan
        if model["rmse"] < persistence["rmse"]:
            verdict = f"the model beats persistence: RMSE {ratio:.3f} of the baseline's"
        else:
            verdict = f"persistence wins: the model's RMSE is {ratio:.3f} times the baseline's"
        lines.append(f"  {verdict}")
        return lines

    def validation_warning(self, results: dict[str, Any]) -> str | None:
        """A line when the model does not beat persistence on the validation windows."""
        model, persistence = results["model"]["rmse"], results["persistence"]["rmse"]
        if model < persistence:
            return None
        return (
            f"warning: the model does not beat persistence on validation (RMSE {figure(model)} "
            f"against {figure(persistence)}): trust its test figures less than persistence's"
        )
