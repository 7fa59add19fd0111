"""Sliding windows, chronological splits, scaling without leakage, log-returns, baselines.

The hand-made series has 10 rows, x = 1..10 and y = 10 x, dated 2024-01-01 .. 2024-01-10.
With lookback 3 and horizon 1, window i reads rows i, i+1, i+2 and targets y at row i+3:
7 windows, split 0.7/0.15/0.15 as round(4.9) = 5 train, round(5.95) - 5 = 1 val, 1 test.
"""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from rnnkit.toolkit.data import (
    DataError,
    SeriesTransform,
    StandardScaler,
    load_series,
    log_returns_to_prices,
)

DATES = [f"2024-01-{day:02d}" for day in range(1, 11)]


def series_csv(tmp_path, y=None, name="series.csv"):
    y = [10 * (i + 1) for i in range(10)] if y is None else y
    lines = ["Date,x,y"] + [
        f"{d},{i + 1},{v}" for i, (d, v) in enumerate(zip(DATES, y, strict=True))
    ]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load(path, **kwargs):
    kwargs = {"target_column": "y", "lookback": 3, "feature_columns": ["x", "y"], **kwargs}
    return load_series(path, **kwargs)


def test_windows_targets_and_dates_exact(tmp_path):
    splits = load(series_csv(tmp_path), scale=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5, 1, 1)
    train = splits.train
    assert train.inputs.shape == (5, 3, 2)  # (batch, window, features)
    assert train.inputs.dtype == torch.float32 and train.targets.shape == (5, 1)
    torch.testing.assert_close(
        train.inputs[0], torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    )
    torch.testing.assert_close(
        train.inputs[4], torch.tensor([[5.0, 50.0], [6.0, 60.0], [7.0, 70.0]])
    )
    torch.testing.assert_close(train.targets[:, 0], torch.tensor([40.0, 50.0, 60.0, 70.0, 80.0]))
    torch.testing.assert_close(splits.val.targets, torch.tensor([[90.0]]))
    torch.testing.assert_close(splits.test.targets, torch.tensor([[100.0]]))
    torch.testing.assert_close(
        splits.test.inputs[0], torch.tensor([[7.0, 70.0], [8.0, 80.0], [9.0, 90.0]])
    )
    assert [str(d.date()) for d in train.target_index] == DATES[3:8]
    assert str(splits.val.target_index[0].date()) == "2024-01-09"
    assert str(splits.test.target_index[0].date()) == "2024-01-10"


def test_windows_are_a_view_of_the_rows_not_a_copy_per_window(tmp_path):
    # A run's lookback (set by whoever wrote its transform.json) must not multiply memory.
    rows = 400
    frame = pd.DataFrame(
        {"x": np.arange(rows, dtype=float), "y": np.arange(rows, dtype=float) * 2},
        index=pd.date_range("2020-01-01", periods=rows),
    )
    splits = load_series(frame, target_column="y", lookback=150)
    inputs = splits.train.inputs  # (windows, 150 steps, 2 features)
    assert inputs.shape[1:] == (150, 2) and len(inputs) > 50
    assert inputs.untyped_storage().nbytes() <= rows * 2 * 4
    scaled = splits.transform.feature_scaler.transform(frame.to_numpy()).astype(np.float32)
    for i in (0, 7, len(inputs) - 1):
        torch.testing.assert_close(inputs[i], torch.from_numpy(scaled[i : i + 150]))


def test_horizon_two_targets_two_rows_after_the_window(tmp_path):
    splits = load(series_csv(tmp_path), horizon=2, scale=False, val_fraction=0, test_fraction=0.3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 0, 2)
    assert splits.val.inputs.shape == (0, 3, 2)
    torch.testing.assert_close(splits.train.targets[:, 0], torch.tensor([50.0, 60.0, 70.0, 80.0]))
    torch.testing.assert_close(splits.train.baseline[:, 0], torch.tensor([30.0, 40.0, 50.0, 60.0]))
    torch.testing.assert_close(splits.test.targets[:, 0], torch.tensor([90.0, 100.0]))


def test_persistence_baseline_is_the_target_at_the_last_window_row(tmp_path):
    splits = load(series_csv(tmp_path))
    torch.testing.assert_close(
        splits.train.baseline[:, 0], torch.tensor([30.0, 40.0, 50.0, 60.0, 70.0])
    )
    torch.testing.assert_close(splits.val.baseline, torch.tensor([[80.0]]))
    torch.testing.assert_close(splits.test.baseline, torch.tensor([[90.0]]))
    # In original units whatever the scaling: what predictions are scored against.
    torch.testing.assert_close(splits.test.target_values, torch.tensor([[100.0]]))


def test_feature_columns_default_to_all_and_dataframe_gives_the_same(tmp_path):
    from_csv = load_series(series_csv(tmp_path), target_column="y", lookback=3)
    assert from_csv.transform.feature_columns == ("x", "y")
    frame = pd.DataFrame(
        {"x": np.arange(1.0, 11.0), "y": np.arange(10.0, 101.0, 10.0)},
        index=pd.DatetimeIndex(DATES),
    )
    from_frame = load_series(frame, target_column="y", lookback=3)
    for part in ("train", "val", "test"):
        a, b = getattr(from_csv, part), getattr(from_frame, part)
        torch.testing.assert_close(a.inputs, b.inputs)
        torch.testing.assert_close(a.targets, b.targets)
        assert list(a.target_index) == list(b.target_index)
    only_x = load_series(frame, target_column="y", lookback=3, feature_columns=["x"])
    assert only_x.train.inputs.shape == (5, 3, 1)


def test_scaler_fitted_on_training_rows_only(tmp_path):
    splits = load(series_csv(tmp_path))
    # 5 training windows read rows 0..6: x = 1..7 (mean 4, std 2), y = 10 x.
    features = splits.transform.feature_scaler
    np.testing.assert_allclose(features.mean, [4.0, 40.0])
    np.testing.assert_allclose(features.std, [2.0, 20.0])
    # Training targets are y at rows 3..7 = 40..80.
    targets = splits.transform.target_scaler
    np.testing.assert_allclose(targets.mean, [60.0])
    np.testing.assert_allclose(targets.std, [np.std([40, 50, 60, 70, 80])])
    torch.testing.assert_close(
        splits.train.inputs[0], torch.tensor([[-1.5, -1.5], [-1.0, -1.0], [-0.5, -0.5]])
    )
    torch.testing.assert_close(
        splits.test.targets,
        torch.tensor([[40.0 / np.std([40, 50, 60, 70, 80])]], dtype=torch.float32),
    )


def test_changing_later_values_does_not_change_the_scaler(tmp_path):
    base = load(series_csv(tmp_path)).transform
    y = [10 * (i + 1) for i in range(10)]
    for row in (8, 9):  # the validation and test targets
        changed = load(series_csv(tmp_path, [*y[:row], 1e6, *y[row + 1 :]], f"{row}.csv"))
        assert changed.transform == base
    # Row 7 is a training target, not read by any training window's inputs.
    changed = load(series_csv(tmp_path, [*y[:7], 1e6, *y[8:]], "7.csv")).transform
    assert changed.feature_scaler == base.feature_scaler
    assert changed.target_scaler != base.target_scaler


def test_inverse_transform_target_round_trip(tmp_path):
    splits = load(series_csv(tmp_path))
    for part in (splits.train, splits.val, splits.test):
        torch.testing.assert_close(
            splits.inverse_transform_target(part.targets), part.target_values
        )
        torch.testing.assert_close(splits.to_target_values(part.targets, part), part.target_values)


def test_log_return_targets_and_round_trip_to_prices(tmp_path):
    splits = load(series_csv(tmp_path), target_transform="log_return", scale=False)
    expected = torch.tensor([math.log((i + 4) / (i + 3)) for i in range(5)])
    torch.testing.assert_close(splits.train.targets[:, 0], expected)
    scaled = load(series_csv(tmp_path), target_transform="log_return")
    for part in (scaled.train, scaled.val, scaled.test):
        torch.testing.assert_close(scaled.to_target_values(part.targets, part), part.target_values)
    log_returns = scaled.inverse_transform_target(scaled.test.targets)
    torch.testing.assert_close(log_returns, torch.tensor([[math.log(100 / 90)]]))
    torch.testing.assert_close(
        log_returns_to_prices(log_returns, scaled.test.baseline), torch.tensor([[100.0]])
    )
    # A zero log-return is the persistence forecast.
    zero = torch.zeros(3, 1)
    torch.testing.assert_close(log_returns_to_prices(zero, torch.full((3, 1), 7.0)), zero + 7)


def test_transform_serialises_to_json_and_rebuilds_the_windows(tmp_path):
    splits = load(series_csv(tmp_path), target_transform="log_return")
    state = json.loads(json.dumps(splits.transform.to_dict()))
    transform = SeriesTransform.from_dict(state)
    assert transform == splits.transform
    frame = pd.DataFrame({"x": np.arange(1.0, 11.0), "y": np.arange(10.0, 101.0, 10.0)})
    windows = transform.windows(frame)
    assert len(windows) == 7
    torch.testing.assert_close(windows.inputs[5:6], splits.val.inputs)
    torch.testing.assert_close(windows.targets[6:], splits.test.targets)


def test_transform_rejects_scalers_for_other_columns():
    scaler = StandardScaler.identity(["x"])
    with pytest.raises(ValueError, match=re.escape("argument `feature_scaler`, expected columns")):
        SeriesTransform(("x", "y"), "y", 3, 1, "none", scaler, StandardScaler.identity(["y"]))
    with pytest.raises(ValueError, match=re.escape("argument `target_scaler`, expected columns")):
        SeriesTransform(("x",), "y", 3, 1, "none", scaler, scaler)
    with pytest.raises(ValueError, match=re.escape("argument `state`, expected keys")):
        SeriesTransform.from_dict({"lookback": 3})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookback": 0}, "argument `lookback`, expected a positive integer, got 0"),
        ({"lookback": 2.5}, "argument `lookback`, expected a positive integer, got 2.5"),
        ({"lookback": True}, "argument `lookback`, expected a positive integer, got True"),
        ({"horizon": -1}, "argument `horizon`, expected a positive integer, got -1"),
        (
            {"train_fraction": 0.8, "val_fraction": 0.2, "test_fraction": 0.15},
            "expected a sum of at most 1, got 0.8 + 0.2 + 0.15 = 1.15",
        ),
        ({"val_fraction": -0.1}, "argument `val_fraction`, expected a number in [0, 1], got -0.1"),
        ({"train_fraction": 0}, "argument `train_fraction`, expected a number in (0, 1], got 0"),
        (
            {"feature_columns": "x"},
            "argument `feature_columns`, expected a sequence of column names, got the string 'x'",
        ),
        ({"feature_columns": []}, "argument `feature_columns`, expected at least one column"),
        (
            {"target_transform": "log"},
            "argument `target_transform`, expected one of ['none', 'log_return'], got 'log'",
        ),
    ],
)
def test_invalid_arguments_name_the_argument(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load(series_csv(tmp_path), **kwargs)
    assert not isinstance(info.value, DataError)


def test_series_shorter_than_lookback_plus_horizon(tmp_path):
    path = series_csv(tmp_path)
    message = f"{path}: expected at least lookback + horizon = 10 + 1 = 11 rows, got 10"
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        load(path, lookback=10)


def test_split_without_a_window(tmp_path):
    path = series_csv(tmp_path)
    message = (
        f"{path}: expected at least one test window, got none: 10 rows give 2 windows "
        "(lookback 8, horizon 1) and test_fraction=0.15 of them rounds to 0"
    )
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        load(path, lookback=8)


def test_log_return_needs_positive_values(tmp_path):
    y = [10 * (i + 1) for i in range(10)]
    path = series_csv(tmp_path, [*y[:5], 0, *y[6:]])
    message = (
        f"{path}: column 'y': expected positive values for target_transform='log_return', "
        "got 0.0 at row position 5 (index 2024-01-06)"
    )
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        load(path, target_transform="log_return")


def test_data_errors_name_file_line_and_column(tmp_path):
    path = series_csv(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"{path}: expected a column named 'Close', got")):
        load_series(path, target_column="Close", lookback=3)
    with pytest.raises(DataError, match=re.escape(f"{path}: line 1: expected a column named 'z'")):
        load(path, feature_columns=["x", "z"])
    path.write_text(path.read_text().replace("2024-01-05,5,50", "2024-01-05,5,n/a"))
    message = f"{path}: line 6, column 'y': expected a number, got 'n/a'"
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        load(path)
    frame = pd.DataFrame({"x": [1.0, 2.0, None, 4.0, 5.0], "y": [1.0, 2, 3, 4, 5]})
    message = "DataFrame: column 'x': expected a number at row position 2 (index 2), got a missing"
    with pytest.raises(DataError, match=re.escape(message)):
        load_series(frame, target_column="y", lookback=2)
