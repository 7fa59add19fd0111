"""label<TAB or space>text files: parsing, tokenisation, errors; the SST-2 files if present."""

import re
from pathlib import Path

import pytest

from rnnkit.toolkit.data import DataError, read_label_text, tokenize

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SST2 = SHARED_DATA / "sst2"


def write(tmp_path, text, name="reviews.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_space_and_tab_separators_labels_kept_as_strings(tmp_path):
    path = write(tmp_path, "1 A stirring , funny film\n\n0\tDull  and\tlong .\r\npos ok\n")
    tokens, labels = read_label_text(path)
    assert labels == ["1", "0", "pos"]
    assert tokens == [["A", "stirring", ",", "funny", "film"], ["Dull", "and", "long", "."], ["ok"]]
    assert read_label_text(path, lowercase=True).tokens[0][0] == "a"


def test_tokenize():
    assert tokenize("  Hello   World\t!\n") == ["Hello", "World", "!"]
    assert tokenize("Hello", lowercase=True) == ["hello"]
    assert tokenize("   ") == []


def test_line_without_separator(tmp_path):
    path = write(tmp_path, "1 good\n0\n")
    message = f"{path}: line 2: expected 'label<TAB or space>text', got '0'"
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        read_label_text(path)


def test_only_blank_lines(tmp_path):
    path = write(tmp_path, "\n  \n")
    message = f"{path}: expected 'label<TAB or space>text' lines, got only blank lines"
    with pytest.raises(DataError, match="^" + re.escape(message) + "$"):
        read_label_text(path)


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match=re.escape("expected an existing file")):
        read_label_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match=re.escape("expected text, got an empty file")):
        read_label_text(write(tmp_path, ""))
    path = tmp_path / "bad.txt"
    path.write_bytes(b"1 good\n0 caf\xe9\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2: expected UTF-8 text")):
        read_label_text(path)


@pytest.mark.skipif(not SST2.is_dir(), reason=f"shared data not found at {SST2}")
def test_sst2_files():
    tokens, labels = read_label_text(SST2 / "stsa.binary.train")
    assert len(labels) == 6920 and set(labels) == {"0", "1"}
    assert labels[0] == "1" and tokens[0][:3] == ["a", "stirring", ","]
    assert len(read_label_text(SST2 / "stsa.binary.dev").labels) == 872
    assert len(read_label_text(SST2 / "stsa.binary.test").labels) == 1821
