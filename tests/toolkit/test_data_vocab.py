"""Vocabulary and LabelEncoder: ordering, cut-offs, unknowns, JSON round trips."""

import json
import re

import numpy as np
import pytest
import torch

from rnnkit.toolkit.data import PAD, UNK, LabelEncoder, Vocabulary

SENTENCES = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "cat"]]


def test_build_orders_by_count_then_first_appearance():
    vocab = Vocabulary.build(SENTENCES)
    assert vocab.tokens == [PAD, UNK, "the", "cat", "sat", "dog", "a"]
    assert (vocab.pad_index, vocab.unk_index) == (0, 1)
    assert vocab.encode(["the", "cow", "a"]) == [2, 1, 6]
    assert vocab.decode([2, 3, 0]) == ["the", "cat", PAD]
    assert vocab.decode(torch.tensor([4])) == ["sat"]
    assert vocab.index("cow") == 1 and "cat" in vocab and "cow" not in vocab


def test_min_freq_and_max_size():
    assert Vocabulary.build(SENTENCES, min_freq=2).tokens == [PAD, UNK, "the", "cat", "sat"]
    assert Vocabulary.build(SENTENCES, max_size=4).tokens == [PAD, UNK, "the", "cat"]
    assert Vocabulary.build(SENTENCES, max_size=2).tokens == [PAD, UNK]


def test_specials_in_the_data_are_not_duplicated():
    vocab = Vocabulary.build([[UNK, "x", PAD]])
    assert vocab.tokens == [PAD, UNK, "x"]


def test_json_round_trip():
    vocab = Vocabulary.build(SENTENCES)
    again = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.encode(["dog"]) == vocab.encode(["dog"])


def test_vocabulary_invalid_arguments():
    with pytest.raises(ValueError, match=re.escape("argument `min_freq`, expected a positive")):
        Vocabulary.build(SENTENCES, min_freq=0)
    with pytest.raises(
        ValueError, match=re.escape("argument `max_size`, expected an integer >= 2")
    ):
        Vocabulary.build(SENTENCES, max_size=1)
    with pytest.raises(ValueError, match=re.escape("expected it to start with ['<pad>', '<unk>']")):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match=re.escape("expected unique tokens, got 'a' at indices")):
        Vocabulary([PAD, UNK, "a", "a"])
    with pytest.raises(ValueError, match=re.escape("argument `state`, expected key 'tokens'")):
        Vocabulary.from_dict({})
    with pytest.raises(IndexError, match="index 9 is out of range for a vocabulary of size 3"):
        Vocabulary([PAD, UNK, "a"]).decode([9])


def test_label_encoder_sorts_and_round_trips():
    labels = LabelEncoder.fit(["1", "0", "1"])
    assert labels.classes == ["0", "1"] and len(labels) == 2
    assert labels.encode(["1", "0"]) == [1, 0]
    assert labels.decode(torch.tensor([0, 1])) == ["0", "1"]
    mixed = LabelEncoder.fit(["pos", 3, np.int64(1), "neg"])
    assert mixed.classes == [1, 3, "neg", "pos"]
    again = LabelEncoder.from_dict(json.loads(json.dumps(mixed.to_dict())))
    assert again == mixed and again.encode([3, "pos"]) == [1, 3]


def test_label_encoder_errors():
    labels = LabelEncoder.fit(["neg", "pos"])
    message = "Received an unknown label, expected one of ['neg', 'pos'], got 'meh'"
    with pytest.raises(ValueError, match=re.escape(message)):
        labels.encode(["pos", "meh"])
    with pytest.raises(ValueError, match=re.escape("got 1")):
        LabelEncoder.fit(["0", "1"]).encode([1])  # "1" and 1 are different labels
    with pytest.raises(TypeError, match="labels should be of type str or int, got: float"):
        LabelEncoder.fit([0.5])
    with pytest.raises(TypeError, match="labels should be of type str or int, got: bool"):
        LabelEncoder.fit([True])
    with pytest.raises(ValueError, match=re.escape("expected unique labels, got 'a' at indices")):
        LabelEncoder(["a", "a"])
    with pytest.raises(IndexError, match="class index 2 is out of range for 2 classes"):
        labels.decode([2])
