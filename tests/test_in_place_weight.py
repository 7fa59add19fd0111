"""GRU inference at batch 1, and of a single step at any batch, reads the recurrent weight
in place, without a transposed copy (rnnkit.engine.gru.reads_in_place): its results are
torch's, and only those calls take that path."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnkit
from rnnkit.compiled import blas
from rnnkit.compiled import gated as compiled_gated
from rnnkit.engine import gru as gru_engine


@pytest.fixture
def in_place_calls(monkeypatch):
    """The compiled GRU loop's ``w_in_place`` of every call, on the compiled engine."""
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    seen = []
    forward = compiled_gated.gru_forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("w_in_place", args[12] if len(args) > 12 else False))
        return forward(*args, **kwargs)

    monkeypatch.setattr(compiled_gated, "gru_forward", spy)
    return seen


def _pair(dtype, **kwargs):
    torch.manual_seed(0)
    ours = rnnkit.GRU(5, 7, **kwargs).to(dtype)
    theirs = torch.nn.GRU(5, 7, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_layers": 2, "bidirectional": True}, {"bias": False, "batch_first": True}],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_one_inference_is_torchs(in_place_calls, kwargs, dtype):
    ours, theirs = _pair(dtype, **kwargs)
    rows = ours.num_layers * (2 if ours.bidirectional else 1)
    x = torch.randn(9, 5, dtype=dtype)  # unbatched, then as a batch of 1
    h0 = torch.randn(rows, 1, 7, dtype=dtype)
    tolerance = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {}
    with torch.no_grad():
        for args in [(x,), (x.unsqueeze(0 if ours.batch_first else 1), h0)]:
            out, h_n = ours(*args)
            expected_out, expected_h_n = theirs(*args)
            torch.testing.assert_close(out, expected_out, **tolerance)
            torch.testing.assert_close(h_n, expected_h_n, **tolerance)
    assert in_place_calls and all(in_place_calls)


def test_a_packed_single_sequence_reads_in_place_too(in_place_calls):
    ours, theirs = _pair(torch.float64, bidirectional=True)
    packed = pack_sequence([torch.randn(6, 5, dtype=torch.float64)])
    with torch.no_grad():
        out, h_n = ours(packed)
        expected_out, expected_h_n = theirs(packed)
    torch.testing.assert_close(out.data, expected_out.data, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n, expected_h_n, atol=1e-12, rtol=0)
    assert in_place_calls == [True, True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_at_any_batch_reads_in_place(in_place_calls, dtype):
    """A step-by-step decoder's call: the copy would cost more than the step."""
    ours, theirs = _pair(dtype, num_layers=2)
    x, h0 = torch.randn(1, 6, 5, dtype=dtype), torch.randn(2, 6, 7, dtype=dtype)
    tolerance = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {}
    with torch.no_grad():
        for result, expected in zip(ours(x, h0), theirs(x, h0), strict=True):
            torch.testing.assert_close(result, expected, **tolerance)
    assert in_place_calls == [True, True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_at_batch_one_with_a_wide_weight_is_torchs(in_place_calls, dtype):
    """3H above blas.ONE_ROW_WIDE columns: the in-place product goes to the large library."""
    hidden = blas.ONE_ROW_WIDE // 3 + 1
    torch.manual_seed(0)
    ours = rnnkit.GRU(5, hidden).to(dtype)
    theirs = torch.nn.GRU(5, hidden).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    x, h0 = torch.randn(1, 1, 5, dtype=dtype), torch.randn(1, 1, hidden, dtype=dtype)
    tolerance = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {}
    with torch.no_grad():
        for result, expected in zip(ours(x, h0), theirs(x, h0), strict=True):
            torch.testing.assert_close(result, expected, **tolerance)
    assert in_place_calls == [True]


def test_batch_one_with_products_for_brgemm_uses_the_copy(in_place_calls):
    """At batch 1 from BRGEMM_MIN multiply-adds a step (H = 512 here) the copy's products
    run on brgemm, 2-5x faster than reading in place over 16 steps or more."""
    assert gru_engine.BRGEMM_MIN == blas.BRGEMM_MIN
    ours = rnnkit.GRU(5, 296)  # 3 * 296**2 >= 2**18
    with torch.no_grad():
        ours(torch.randn(3, 1, 5))
        ours(torch.randn(1, 1, 5))
    assert in_place_calls == [False, True]


def test_larger_batches_and_training_use_the_transposed_copy(in_place_calls):
    ours, theirs = _pair(torch.float64)
    with torch.no_grad():
        out, _ = ours(torch.randn(4, 2, 5, dtype=torch.float64))
    assert in_place_calls == [False]
    x = torch.randn(4, 1, 5, dtype=torch.float64, requires_grad=True)  # training
    out, _ = ours(x)
    out.sum().backward()
    assert in_place_calls == [False, False]
    expected_x = x.detach().clone().requires_grad_()
    theirs(expected_x)[0].sum().backward()
    torch.testing.assert_close(x.grad, expected_x.grad, atol=1e-12, rtol=0)
