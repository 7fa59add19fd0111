"""CSV files and data frames to checked float columns: parsing and every error path."""

import re

import numpy as np
import pandas as pd
import pytest

from rnnkit.toolkit.data import DataError, frame_values, read_csv_series

CSV = """\
Date,Open,Close,Ticker
2024-01-01,1.5,2,AAA
2024-01-02,2.5,3,AAA

2024-01-03,3.5,4e0,AAA
"""


def write(tmp_path, text, name="prices.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raises_at(path, place, message):
    """pytest.raises on the whole one-line message: file, place, expected vs received."""
    return pytest.raises(DataError, match="^" + re.escape(f"{path}: {place}{message}") + "$")


def test_reads_requested_columns_with_date_index_skipping_blank_lines(tmp_path):
    frame = read_csv_series(write(tmp_path, CSV), ["Close", "Open"])
    assert list(frame.columns) == ["Close", "Open"]
    np.testing.assert_array_equal(frame.to_numpy(), [[2, 1.5], [3, 2.5], [4, 3.5]])
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "Date"
    assert str(frame.index[-1].date()) == "2024-01-03"


def test_index_column_by_name_none_and_non_dates(tmp_path):
    path = write(tmp_path, "a,label\n1,x\n2,y\n")
    frame = read_csv_series(path, index_column="label")
    assert list(frame.index) == ["x", "y"] and list(frame.columns) == ["a"]
    frame = read_csv_series(write(tmp_path, "a,b\n1,2\n3,4\n", "plain.csv"), index_column=None)
    assert list(frame.index) == [0, 1] and list(frame.columns) == ["a", "b"]


def test_all_columns_must_be_numeric_when_none_are_named(tmp_path):
    path = write(tmp_path, CSV)
    with raises_at(path, "line 2, column 'Ticker': ", "expected a number, got 'AAA'"):
        read_csv_series(path)


def test_header_only(tmp_path):
    path = write(tmp_path, "Date,Close\n")
    with raises_at(path, "line 1: ", "expected data rows after the header, got the header only"):
        read_csv_series(path)


def test_blank_lines_only(tmp_path):
    path = write(tmp_path, "\n\n")
    with raises_at(path, "", "expected a header line, got only blank lines"):
        read_csv_series(path)


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write(tmp_path, CSV)
    message = "expected a column named 'Volume', got columns ['Date', 'Open', 'Close', 'Ticker']"
    with raises_at(path, "line 1: ", message):
        read_csv_series(path, ["Close", "Volume"])


def test_missing_index_column(tmp_path):
    path = write(tmp_path, CSV)
    message = (
        "expected an index column named 'When', got columns ['Date', 'Open', 'Close', 'Ticker']"
    )
    with raises_at(path, "line 1: ", message):
        read_csv_series(path, ["Close"], index_column="When")


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("abc", "expected a number, got 'abc'"),
        ("", "expected a number, got an empty cell"),
        ("  ", "expected a number, got an empty cell"),
        ("NaN", "expected a finite number, got 'NaN'"),
        ("inf", "expected a finite number, got 'inf'"),
    ],
)
def test_bad_cell_gives_line_column_and_value(tmp_path, cell, message):
    path = write(tmp_path, CSV.replace("3,AAA", f"{cell},AAA"))
    # Line 3 of the file, the second data row; the index column is not counted.
    with raises_at(path, "line 3, column 'Close': ", message):
        read_csv_series(path, ["Open", "Close"])


def test_wrong_number_of_fields(tmp_path):
    path = write(tmp_path, CSV.replace("2024-01-03,3.5,4e0,AAA", "2024-01-03,3.5,4e0"))
    with raises_at(path, "line 5: ", "expected 4 fields as in the header, got 3"):
        read_csv_series(path, ["Close"])


def test_dates_must_increase(tmp_path):
    path = write(tmp_path, CSV.replace("2024-01-03", "2024-01-02"))
    message = "expected increasing dates, got '2024-01-02' after '2024-01-02'"
    with raises_at(path, "line 5, column 'Date': ", message):
        read_csv_series(path, ["Close"])


def test_undecodable_csv(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes(b"Date,Close\n2024-01-01,1\n2024-01-02,\xff\n")
    with raises_at(path, "line 3: ", "expected UTF-8 text, got byte(s) 0xff at byte offset 35"):
        read_csv_series(path)


def test_frame_values_checks_every_cell():
    index = pd.date_range("2024-01-01", periods=3)
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1, 2, 3]}, index=index)
    np.testing.assert_array_equal(frame_values(frame, ["b", "a"]), [[1, 1], [2, 2], [3, 3]])

    with pytest.raises(DataError, match=re.escape("DataFrame: expected a column named 'c', got")):
        frame_values(frame, ["c"])
    with pytest.raises(
        DataError, match=re.escape("DataFrame: expected at least one row, got none")
    ):
        frame_values(frame.iloc[:0], ["a"])
    message = (
        "DataFrame: column 'a': expected a number at row position 1 (index 2024-01-02), "
        "got a missing value (NaN)"
    )
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        frame_values(frame.assign(a=[1.0, np.nan, 3.0]), ["a"])
    message = (
        "DataFrame: column 'a': expected a number at row position 2 (index 2024-01-03), got 'x'"
    )
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        frame_values(frame.assign(a=[1, 2, "x"]), ["a"])
    message = "DataFrame: column 'a': expected a finite number at row position 0"
    with pytest.raises(DataError, match=re.escape(message)):
        frame_values(frame.assign(a=[np.inf, 2, 3]), ["a"])
    message = (
        "DataFrame: expected increasing dates, got 2024-01-01 at row position 2 after 2024-01-02"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        frame_values(frame.set_axis(index[[0, 1, 0]]), ["a"])
    with pytest.raises(TypeError, match="frame should be a pandas DataFrame, got: dict"):
        frame_values({"a": [1]}, ["a"])
