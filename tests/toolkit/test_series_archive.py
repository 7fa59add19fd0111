"""Labelled series from .ts files and aeon's archive: values, shapes, labels and every error."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit.toolkit.data import DataError
from rnnkit.toolkit.data.series_archive import is_aeon_source, read_labelled_series

pytest.importorskip("aeon")

HEADER = (
    "#A small multivariate problem written by the tests.\n"
    "@problemName Tiny\n"
    "@timeStamps false\n"
    "@missing {missing}\n"
    "@univariate false\n"
    "@dimensions 2\n"
    "@equalLength {equal}\n"
    "@classLabel true up down\n"
    "@data\n"
)


def write_ts(
    path: Path, cases: str, *, missing: str = "false", equal: str = "false", header: str = HEADER
) -> Path:
    path.write_text(header.format(missing=missing, equal=equal) + cases, encoding="utf-8")
    return path


# Two channels; 3 and 2 steps; one channel per ":"-separated field, the label last.
UNEQUAL = "1,2,3:4,5,6.5:up\n-3,2:1,0:down\n"


def assert_one_line(error: DataError, source: object, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text
    assert text.startswith(f"{source}: "), text
    for fragment in fragments:
        assert fragment in text, text


def test_unequal_length_multivariate_file(tmp_path):
    series, labels = read_labelled_series(write_ts(tmp_path / "tiny.ts", UNEQUAL))
    assert labels == ["up", "down"]
    assert all(isinstance(label, str) for label in labels)
    assert [s.shape for s in series] == [(3, 2), (2, 2)]  # (length, channels)
    assert all(s.dtype == np.float32 and s.flags.c_contiguous for s in series)
    np.testing.assert_array_equal(series[0], [[1, 4], [2, 5], [3, 6.5]])
    np.testing.assert_array_equal(series[1], [[-3, 1], [2, 0]])


def test_equal_length_file_is_transposed_the_same_way(tmp_path):
    path = write_ts(tmp_path / "eq.ts", "1,2:4,5:up\n3,2:1,0:down\n7,8:9,10:up\n", equal="true")
    series, labels = read_labelled_series(path)
    assert labels == ["up", "down", "up"]
    np.testing.assert_array_equal(np.stack(series), [[[1, 4], [2, 5]], [[3, 1], [2, 0]],
                                                    [[7, 9], [8, 10]]])  # fmt: skip


def test_numeric_labels_come_back_as_strings(tmp_path):
    header = HEADER.replace("@classLabel true up down", "@classLabel true 1 2")
    path = write_ts(tmp_path / "n.ts", "1,2:3,4:2\n5,6,7:8,9,0:1\n", header=header)
    assert read_labelled_series(path)[1] == ["2", "1"]


def test_a_str_path_works_like_a_path(tmp_path):
    path = write_ts(tmp_path / "tiny.ts", UNEQUAL)
    by_str, by_path = read_labelled_series(str(path)), read_labelled_series(path)
    assert by_str[1] == by_path[1]
    for a, b in zip(by_str[0], by_path[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_japanese_vowels_from_aeon():
    series, labels = read_labelled_series("aeon:JapaneseVowels:train")
    assert len(series) == len(labels) == 270
    assert {s.shape[1] for s in series} == {12}
    lengths = [s.shape[0] for s in series]
    assert min(lengths) == 7 and max(lengths) <= 29
    assert sorted(set(labels)) == [str(k) for k in range(1, 10)]
    assert all(labels.count(str(k)) == 30 for k in range(1, 10))  # 30 utterances per speaker
    assert series[0].shape == (20, 12) and labels[0] == "1"
    # The first value of the file's first line (channel 1, step 1), and the second step.
    np.testing.assert_allclose(series[0][:2, 0], [1.860936, 1.891651], rtol=1e-6)
    assert all(np.isfinite(s).all() and s.dtype == np.float32 for s in series)


def test_aeon_test_split():
    series, labels = read_labelled_series("aeon:JapaneseVowels:test")
    assert len(series) == len(labels) == 370
    assert max(s.shape[0] for s in series) <= 29
    assert set(labels) == {str(k) for k in range(1, 10)}


def test_is_aeon_source():
    assert is_aeon_source("aeon:JapaneseVowels:train")
    assert not is_aeon_source("JapaneseVowels_TRAIN.ts")
    assert not is_aeon_source(Path("aeon:x:train"))  # a path object is always a file


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.ts"
    with pytest.raises(DataError) as caught:
        read_labelled_series(missing)
    assert_one_line(caught.value, missing, "expected an existing file, got no file at this path")


def test_directory(tmp_path):
    with pytest.raises(DataError) as caught:
        read_labelled_series(tmp_path)
    assert_one_line(caught.value, tmp_path, "expected a file, got a directory")


@pytest.mark.parametrize(
    ("cases", "fragment"),
    [
        ("1,x,3:4,5,6:up\n", "expected a .ts file, got: ValueError: could not convert"),
        ("1,2,3:4,5,6:up\n3,2:down\n", "expected a .ts file, got: OSError: Inconsistent number"),
        ("1,2,3:4,5:up\n", "expected a .ts file, got: OSError:"),  # channels of unequal length
        ("", "expected at least one series, got none"),  # a header and no data
    ],
    ids=["not-a-number", "channels-differ", "channel-lengths-differ", "no-cases"],
)
def test_malformed_ts_file(tmp_path, cases, fragment):
    path = write_ts(tmp_path / "bad.ts", cases)
    with pytest.raises(DataError) as caught:
        read_labelled_series(path)
    assert_one_line(caught.value, path, fragment)


def test_a_file_that_is_not_ts_at_all(tmp_path):
    path = tmp_path / "notes.ts"
    path.write_text("hello\nworld\n")
    with pytest.raises(DataError) as caught:
        read_labelled_series(path)
    assert_one_line(caught.value, path)


@pytest.mark.parametrize(
    ("value", "missing"), [("?", "true"), ("NaN", "true"), ("inf", "false")]
)  # fmt: skip
def test_missing_or_infinite_values_are_refused(tmp_path, value, missing):
    path = write_ts(tmp_path / "gaps.ts", f"1,2,3:4,5,6:up\n3,{value}:1,0:down\n",
                    missing=missing)  # fmt: skip
    with pytest.raises(DataError) as caught:
        read_labelled_series(path)
    assert_one_line(caught.value, path, "series 2: expected finite values, got NaN or inf")


@pytest.mark.parametrize(
    "source",
    ["aeon:JapaneseVowels", "aeon:JapaneseVowels:valid", "aeon::train", "aeon:A:train:x",
     "aeon:JapaneseVowels:TRAIN"],
)  # fmt: skip
def test_bad_aeon_spec(source):
    with pytest.raises(DataError) as caught:
        read_labelled_series(source)
    assert_one_line(
        caught.value, source, "expected 'aeon:NAME:SPLIT' with SPLIT one of ('train', 'test')"
    )


def test_unknown_aeon_data_set_names_it(monkeypatch):
    import aeon.datasets

    def offline(name, split=None, **kwargs):
        raise ValueError(f"{name} is not a data set shipped with aeon\nand no network")

    # aeon would try to download a name it does not ship; the tests stay offline.
    monkeypatch.setattr(aeon.datasets, "load_classification", offline)
    with pytest.raises(DataError) as caught:
        read_labelled_series("aeon:NoSuchSet:train")
    assert_one_line(
        caught.value, "aeon:NoSuchSet:train",
        "aeon could not load 'NoSuchSet': ValueError: NoSuchSet is not a data set",
    )  # fmt: skip


@pytest.mark.parametrize("how", ["sys.modules", "__import__"])
@pytest.mark.parametrize("source", ["aeon:JapaneseVowels:train", "file"])
def test_without_aeon_the_message_says_how_to_install_it(tmp_path, monkeypatch, how, source):
    if source == "file":
        source = write_ts(tmp_path / "tiny.ts", UNEQUAL)
    if how == "sys.modules":
        monkeypatch.setitem(sys.modules, "aeon", None)
        monkeypatch.setitem(sys.modules, "aeon.datasets", None)
    else:
        real = builtins.__import__

        def no_aeon(name, *args, **kwargs):
            if name == "aeon" or name.startswith("aeon."):
                raise ImportError(f"No module named {name!r}")
            return real(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_aeon)
    with pytest.raises(DataError) as caught:
        read_labelled_series(source)
    assert_one_line(caught.value, source, "optional package aeon", "pip install")
