"""DataError's one-line message, and the file checks every loader shares (files.read_text)."""

import pickle
import re

import pytest

from rnnkit.toolkit.data import DataError, read_text


def test_message_names_source_line_column_and_stays_one_line():
    error = DataError("prices.csv", "expected a number, got 'a\\nb'", line=5, column="Close")
    assert str(error) == "prices.csv: line 5, column 'Close': expected a number, got 'a\\nb'"
    assert (error.source, error.line, error.column) == ("prices.csv", 5, "Close")
    assert "\n" not in str(DataError("x.txt", "expected one line,\ngot two"))
    assert str(DataError("x.txt", "expected text")) == "x.txt: expected text"


def test_is_a_value_error_and_pickles():
    error = DataError("x.csv", "expected a number, got 'a'", line=2, column="A")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.line == 2 and copy.column == "A"


def test_read_text_decodes_utf8_and_drops_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfh\xc3\xa9llo\n")
    assert read_text(path) == "héllo\n"


def test_missing_file(tmp_path):
    path = tmp_path / "missing.csv"
    with pytest.raises(DataError, match=re.escape(f"{path}: expected an existing file, got no")):
        read_text(path)


def test_directory_given_as_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: expected a file, got a directory")):
        read_text(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{path}: expected text, got an empty file")):
        read_text(path)


def test_undecodable_bytes_give_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"first line\nsecond caf\xe9 line\n")
    message = f"{path}: line 2: expected UTF-8 text, got byte(s) 0xe9 at byte offset 21"
    with pytest.raises(DataError, match=re.escape(message)):
        read_text(path)


def test_byte_offset_counts_a_leading_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfab\n\xff")
    message = f"{path}: line 2: expected UTF-8 text, got byte(s) 0xff at byte offset 6"
    with pytest.raises(DataError, match=re.escape(message)):
        read_text(path)
