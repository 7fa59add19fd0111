"""Collate functions: padding, lengths, packing without sorting, tags padded with -100."""

import re

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from rnnkit.toolkit.data import (
    IGNORE_INDEX,
    collate_classification,
    collate_tagging,
    pad_sequences,
)


def test_pad_sequences():
    padded, lengths = pad_sequences([[5, 6, 7], torch.tensor([8])], padding_value=0)
    assert padded.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert lengths.tolist() == [3, 1] and lengths.dtype == torch.int64
    features, lengths = pad_sequences([torch.ones(2, 4), torch.ones(3, 4)])
    assert features.shape == (2, 3, 4)  # (batch, max_len, features)
    assert features[0, 2].tolist() == [0, 0, 0, 0] and lengths.tolist() == [2, 3]


def test_classification_batch_is_packed_in_batch_order():
    batch = collate_classification([([5, 6], 1), ([7, 8, 9, 4], 0), ([3], 1)])
    assert isinstance(batch.inputs, PackedSequence)
    assert batch.lengths.tolist() == [2, 4, 1]
    assert batch.targets.tolist() == [1, 0, 1]
    assert batch.inputs.batch_sizes.tolist() == [3, 2, 1, 1]
    assert batch.inputs.data.numel() == 7  # no padding inside a packed batch
    padded, lengths = pad_packed_sequence(batch.inputs, batch_first=True)
    assert padded.tolist() == [[5, 6, 0, 0], [7, 8, 9, 4], [3, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1]


def test_classification_batch_padded():
    batch = collate_classification([([5, 6], 1), ([7], 0)], packed=False, padding_index=0)
    assert batch.inputs.tolist() == [[5, 6], [7, 0]]
    assert batch.lengths.tolist() == [2, 1]


def test_packed_batch_gives_each_sequence_its_own_final_state():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(10, 3)
    # torch's RNN (rnnkit.RNN is its drop-in): this tests the batch, not the engine.
    rnn = torch.nn.RNN(3, 4, batch_first=True)
    sequences = [[5, 6], [7, 8, 9, 4], [3]]
    batch = collate_classification([(s, 0) for s in sequences])
    packed = batch.inputs
    embedded = PackedSequence(
        embedding(packed.data), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    _, h_n = rnn(embedded)  # (1, batch, hidden)
    for i, sequence in enumerate(sequences):
        _, alone = rnn(embedding(torch.tensor([sequence])))
        torch.testing.assert_close(h_n[:, i], alone[:, 0])


def test_tagging_pads_tags_with_ignore_index():
    batch = collate_tagging([([5, 6, 7], [1, 2, 1]), ([8], [3])])
    assert IGNORE_INDEX == -100
    assert batch.targets.tolist() == [[1, 2, 1], [3, -100, -100]]
    assert batch.lengths.tolist() == [3, 1]
    assert batch.inputs.batch_sizes.tolist() == [2, 1, 1]
    # The padded tags line up with the unpacked output, and the loss skips the padding.
    logits = torch.randn(2, 3, 4)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets)
    manual = torch.nn.functional.cross_entropy(
        torch.cat([logits[0], logits[1, :1]]), torch.tensor([1, 2, 1, 3])
    )
    torch.testing.assert_close(loss, manual)


def test_invalid_batches():
    with pytest.raises(ValueError, match=re.escape("batch element 1, expected a non-empty")):
        collate_classification([([1], 0), ([], 1)])
    with pytest.raises(ValueError, match=re.escape("batch element 0, expected 2 tags (one per")):
        collate_tagging([([1, 2], [0])])
    with pytest.raises(ValueError, match=re.escape("argument `sequences`, expected at least one")):
        pad_sequences([])
