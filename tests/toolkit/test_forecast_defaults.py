"""Forecast settings from the series: lookback, few-window warnings, figures at any scale."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.toolkit.config import load_config
from rnnkit.toolkit.forecast_defaults import (
    DEFAULT_LOOKBACK,
    choose_lookback,
    few_windows_warning,
    figure,
)
from rnnkit.toolkit.rundir import CONFIG_FILE, RESULTS_FILE, read_json
from rnnkit.toolkit.tasks import get_task

TRAIN = ["--set", "train.epochs=2", "--set", "model.hidden_size=8", "--set", 'train.device="cpu"']


def write_series(path: Path, rows: int, level: float, step: float, seed: int = 0) -> Path:
    """One column `Close`: a random walk around `level` with steps of size `step`."""
    rng = np.random.default_rng(seed)
    close = level + np.cumsum(rng.normal(0, step, rows))
    dates = np.datetime64("2000-01-01") + np.arange(rows)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["", "Close"])
        writer.writerows([date, f"{c:.6f}"] for date, c in zip(dates, close, strict=True))
    return path


def train(capsys, path: Path, out: Path, *extra: str) -> tuple[int, str]:
    argv = ["train", "--set", f"data.path={path}", "--set", 'data.features=["Close"]',
            "--set", 'data.target_transform="none"', *TRAIN, *extra, "--out", str(out)]  # fmt: skip
    code = main(argv)
    return code, capsys.readouterr().out


def test_lookback_is_100_on_long_series_and_a_tenth_of_the_rows_on_short_ones():
    assert choose_lookback(2148, 1) == DEFAULT_LOOKBACK
    assert choose_lookback(156, 1) == 15
    assert choose_lookback(156, 12) == 14
    assert choose_lookback(5, 1) == 1


def test_few_windows_warning_names_the_small_splits_and_a_better_lookback():
    assert few_windows_warning(1483, 318, 318, 100, 2148, 1) is None
    message = few_windows_warning(39, 8, 8, 100, 156, 1)
    assert message == (
        "warning: lookback 100 leaves 39 training, 8 validation and 8 test windows of 156 rows; "
        'figures on so few windows are unreliable (data.lookback = 15 or "auto" would leave more)'
    )
    assert few_windows_warning(40, 0, 25, 10, 140, 1).startswith(
        "warning: lookback 10 leaves 40 training windows of 140 rows"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [(8.31249, "8.312"), (0.00123456, "0.001235"), (12345.6, "12346"), (1.5e-7, "0.0000001500"),
     (0.0, "0"), (float("nan"), "nan")],
)  # fmt: skip
def test_figures_keep_four_significant_digits_at_any_scale(value, shown):
    assert figure(value) == shown


def test_validation_warning_only_when_persistence_wins():
    task = get_task("forecast")
    loses = {"model": {"rmse": 0.0021}, "persistence": {"rmse": 0.0020}}
    wins = {"model": {"rmse": 0.0019}, "persistence": {"rmse": 0.0020}}
    assert task.validation_warning(loses) == (
        "warning: the model does not beat persistence on validation (RMSE 0.002100 against "
        "0.002000): trust its test figures less than persistence's"
    )
    assert task.validation_warning(wins) is None


def test_a_short_monthly_series_gets_a_shorter_lookback_recorded_in_the_run(tmp_path, capsys):
    data = write_series(tmp_path / "monthly.csv", rows=156, level=500, step=10)
    code, out = train(capsys, data, tmp_path / "auto")
    assert code == 0
    assert "data.lookback = 15: chosen from the data" in out
    assert "(lookback 15 from the data, horizon 1)" in out
    assert "warning: lookback" not in out
    assert load_config(tmp_path / "auto" / CONFIG_FILE).data.lookback == 15
    code, out = train(capsys, data, tmp_path / "explicit", "--set", "data.lookback=100")
    assert code == 0
    assert "warning: lookback 100 leaves 39 training, 9 validation and 8 test windows" in out
    assert "chosen from the data" not in out
    assert load_config(tmp_path / "explicit" / CONFIG_FILE).data.lookback == 100


def test_tiny_scale_errors_are_shown_with_four_significant_digits(tmp_path, capsys):
    data = write_series(tmp_path / "fx.csv", rows=400, level=1.1, step=0.0005)
    code, out = train(capsys, data, tmp_path / "fx")
    assert code == 0
    results = read_json(tmp_path / "fx" / RESULTS_FILE)
    for split in ("val", "test"):
        for who in ("model", "persistence"):
            assert figure(results[split][who]["rmse"]) in out
    assert figure(results["test"]["persistence"]["rmse"]) != "0.001"
    val = results["val"]
    loses = val["model"]["rmse"] >= val["persistence"]["rmse"]
    assert ("does not beat persistence on validation" in out) == loses
    if loses:  # the warning comes before the test figures
        assert out.index("on validation (RMSE") < out.index("test: ")


def test_resume_takes_the_run_directory_as_its_argument(tmp_path, capsys):
    data = write_series(tmp_path / "walk.csv", rows=200, level=100, step=1)
    assert train(capsys, data, tmp_path / "run")[0] == 0
    code = main(["train", "--resume", str(tmp_path / "run"), "--set", "train.epochs=3"])
    out = capsys.readouterr().out
    assert code == 0 and "(resumed)" in out
    assert len(read_json(tmp_path / "run" / RESULTS_FILE)["val"]) > 0
    assert load_config(tmp_path / "run" / CONFIG_FILE).train.epochs == 3


def test_resume_of_a_missing_run_directory_is_one_line(tmp_path, capsys):
    code = main(["train", "--resume", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--resume {tmp_path / 'nowhere'}: no such run directory" in err
