"""Character-level language modelling: held-out tail, next-character chunks; tinyshakespeare."""

import re
from pathlib import Path

import pytest
import torch

from rnnkit.toolkit.data import DataError, Vocabulary, chunk, read_text, split_text

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHAKESPEARE = SHARED_DATA / "tinyshakespeare" / "input.txt"


def test_split_text_holds_out_the_tail():
    assert split_text("abcdefghij") == ("abcdefghi", "j")
    assert split_text("abcdefghij", 0.3) == ("abcdefg", "hij")


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), True])
def test_split_text_rejects_fractions_outside_0_1(fraction):
    message = f"argument `val_fraction`, expected a number in (0, 1), got {fraction!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        split_text("abcdefghij", fraction)


def test_split_text_needs_two_non_empty_parts():
    with pytest.raises(ValueError, match=re.escape("argument `text`, expected enough characters")):
        split_text("abc", 0.1)


def test_chunks_and_next_character_targets():
    inputs, targets = chunk(list(range(8)), 3)
    assert inputs.shape == targets.shape == (2, 3)  # (batch, length); the tail 6, 7 is dropped
    assert inputs.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert targets.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert inputs.dtype == torch.int64
    exact = chunk(torch.arange(7), 3)  # 7 ids: 2 chunks use all 6 inputs and all 6 targets
    assert exact.targets[-1].tolist() == [4, 5, 6]


def test_chunk_invalid_arguments():
    with pytest.raises(ValueError, match=re.escape("argument `length`, expected a positive")):
        chunk([1, 2, 3], 0)
    message = "argument `ids`, expected at least length + 1 = 4 characters, got 3"
    with pytest.raises(ValueError, match=re.escape(message)):
        chunk([1, 2, 3], 3)
    with pytest.raises(ValueError, match=re.escape("argument `ids`, expected one dimension")):
        chunk(torch.zeros(2, 5, dtype=torch.int64), 2)


def test_plain_text_file_to_chunks(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("to be or not to be\n", encoding="utf-8")
    train, _ = split_text(read_text(path), 0.25)
    vocab = Vocabulary.build([train])
    assert "".join(vocab.decode(vocab.encode(train))) == train
    inputs, targets = chunk(vocab.encode(train), 4)
    assert "".join(vocab.decode(inputs[0])) == "to b"
    assert "".join(vocab.decode(targets[0])) == "o be"
    assert vocab.encode("z") == [vocab.unk_index]
    with pytest.raises(DataError, match=re.escape("expected text, got an empty file")):
        path.write_text("")
        read_text(path)


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"shared data not found at {SHAKESPEARE}")
def test_tinyshakespeare():
    text = read_text(SHAKESPEARE)
    assert len(text) == 1_115_394
    train, val = split_text(text, 0.1)
    assert len(val) == 111_539 and train + val == text
    vocab = Vocabulary.build([train])
    assert len(vocab) == 2 + len(set(train))
    inputs, targets = chunk(vocab.encode(train), 256)
    assert inputs.shape == ((len(train) - 1) // 256, 256)
    torch.testing.assert_close(inputs[:, 1:], targets[:, :-1])
