"""Inference on the compiled loops projects the input a chunk of steps at a time
(rnnkit.engine.walk.dense_chunks): the chunks' bounds, and that chunked runs of the
LSTM and GRU give torch's results."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.engine import walk
from rnnkit.engine.walk import dense_chunks


def test_chunks_cover_the_rows_in_the_directions_order():
    # 10 steps of 3 rows, 100 bytes a row: 4 steps fill 1200 of a 1300-byte chunk.
    chunks = dense_chunks(10, 3, 100, False, chunk_bytes=1300, chunked_min=0)
    assert chunks == [(0, 12), (12, 24), (24, 30)]
    assert dense_chunks(10, 3, 100, True, chunk_bytes=1300, chunked_min=0) == chunks[::-1]
    # A projection no larger than chunked_min is one chunk; a step larger than a chunk, one step.
    assert dense_chunks(10, 3, 100, False, chunk_bytes=1300, chunked_min=3000) == [(0, 30)]
    assert dense_chunks(2, 3, 1000, False, chunk_bytes=1300, chunked_min=0) == [(0, 3), (3, 6)]


# torch's own layer warns that it leaves oneDNN for a projection.
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")
@pytest.mark.parametrize(
    "cell, kwargs",
    [
        ("GRU", {}),
        ("GRU", {"num_layers": 2, "bidirectional": True, "bias": False}),
        ("LSTM", {"num_layers": 2, "bidirectional": True}),
        ("LSTM", {"proj_size": 5, "bidirectional": True}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_inference_is_torchs(monkeypatch, cell, kwargs, dtype):
    """Chunks of 3 steps (the last one shorter), from given states: outputs and final
    states agree with torch's layer on the same weights."""
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    seen = []
    chunks = walk.dense_chunks

    def three_steps(steps, batch, row_bytes, reverse):
        result = chunks(steps, batch, row_bytes, reverse, 3 * batch * row_bytes, 0)
        seen.append(len(result))
        return result

    monkeypatch.setattr(rnnkit.engine.gru, "dense_chunks", three_steps)
    monkeypatch.setattr(rnnkit.engine.lstm, "dense_chunks", three_steps)
    torch.manual_seed(0)
    ours = getattr(rnnkit, cell)(4, 8, **kwargs).to(dtype)
    theirs = getattr(torch.nn, cell)(4, 8, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(11, 3, 4, dtype=dtype)
    rows = ours.num_layers * (2 if ours.bidirectional else 1)
    h0 = torch.randn(rows, 3, ours.proj_size or 8, dtype=dtype)
    hx = (h0, torch.randn(rows, 3, 8, dtype=dtype)) if cell == "LSTM" else h0
    with torch.no_grad():
        out, state = ours(x, hx)
        expected_out, expected_state = theirs(x, hx)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(out, expected_out, **tolerance)
    for a, b in zip(torch.utils._pytree.tree_leaves(state),
                    torch.utils._pytree.tree_leaves(expected_state), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, **tolerance)
    assert seen and all(count == 4 for count in seen)  # 11 steps: 3 + 3 + 3 + 2
