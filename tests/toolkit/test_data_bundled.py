"""The bundled GOOG.csv: the rows, dates, columns and sha256 its provenance file states."""

import hashlib
import re

import pandas as pd

from rnnkit.toolkit.data import goog_csv_path, load_series, read_csv_series


def test_goog_csv_rows_dates_columns():
    frame = read_csv_series(goog_csv_path())
    assert len(frame) == 2148
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert frame.index[0] == pd.Timestamp("2004-08-19")
    assert frame.index[-1] == pd.Timestamp("2013-03-01")
    assert frame.loc["2013-03-01", "Close"] == 806.19


def test_goog_md_states_the_file_s_sha256():
    path = goog_csv_path()
    provenance = (path.parent / "GOOG.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert re.search(rf"\b{digest}\b", provenance)
    assert "backtesting" in provenance and "0.6.6" in provenance
    assert "2,148" in provenance


def test_goog_windows():
    splits = load_series(
        goog_csv_path(), target_column="Close", lookback=30, feature_columns=["Close"]
    )
    assert splits.train.inputs.shape == (1483, 30, 1)  # (batch, window, features)
    assert len(splits.val) == 317 and len(splits.test) == 318
    assert splits.test.target_index[-1] == pd.Timestamp("2013-03-01")
