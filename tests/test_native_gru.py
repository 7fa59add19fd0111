"""While a GRU's compiled kernels are prepared, "auto" runs the stack on torch's own GRU
(rnnkit.engine.gated_stack.native_gru_stack): when it does, and that its results are
torch's bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.compiled import warmup
from rnnkit.engine import gated_stack, resolve_engine


@pytest.fixture
def native_calls(monkeypatch) -> list:
    """Counts the stacks run on torch's GRU; kernels reported not ready, engine "auto"."""
    calls = []
    run = gated_stack.native_gru_stack

    def counted(*args):
        calls.append(tuple(args[0].shape))
        return run(*args)

    monkeypatch.setattr(gated_stack, "native_gru_stack", counted)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": False)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    return calls


def test_auto_picks_torch_s_gru_only_while_the_kernels_are_not_ready(monkeypatch):
    x = torch.zeros(6, 4)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": False)
    assert resolve_engine("auto", x, 3, 8, "gru", native=True) == "native"
    assert resolve_engine("auto", x, 3, 8, "gru") == "fused"
    assert resolve_engine("fused", x, 3, 8, "gru", native=True) == "fused"
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    assert resolve_engine("auto", x, 3, 8, "gru", native=True) == "compiled"
    assert resolve_engine("compiled", x, 3, 8, "gru", native=True) == "compiled"


def _pair(dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    ours = rnnkit.GRU(5, 16, **kwargs).to(dtype)
    theirs = torch.nn.GRU(5, 16, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _inferred(module, x, h0):
    torch.manual_seed(1)  # the same dropout masks for both (the modules are in training mode)
    with torch.no_grad():
        return module(x, h0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_layers": 2, "bidirectional": True, "dropout": 0.5},
        {"bias": False, "batch_first": True},
        {"dtype": torch.float64},
    ],
)
def test_inference_while_the_kernels_compile_is_torch_s_bit_for_bit(native_calls, kwargs):
    ours, theirs = _pair(**kwargs)
    dtype = kwargs.get("dtype", torch.float32)
    x = torch.randn(4, 7, 5) if kwargs.get("batch_first") else torch.randn(7, 4, 5)
    h0 = torch.randn(ours.num_layers * (2 if ours.bidirectional else 1), 4, 16)
    x, h0 = x.to(dtype), h0.to(dtype)
    for a, b in zip(_inferred(ours, x, h0), _inferred(theirs, x, h0), strict=True):
        assert torch.equal(a, b)
    assert len(native_calls) == 1  # the whole stack in one call


def test_training_while_the_kernels_compile_stays_on_torch_ops(native_calls):
    """In training our torch-ops GRU is mostly the faster; gradients match torch's."""
    ours, theirs = _pair(num_layers=2)
    x = torch.randn(7, 4, 5)
    grads = []
    for module in (ours, theirs):
        x_ = x.clone().requires_grad_()
        out, h_n = module(x_)
        (out.sin().sum() + h_n.cos().sum()).backward()
        grads.append([out, h_n, x_.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    assert native_calls == []


def test_packed_input_while_the_kernels_compile_is_torch_s_bit_for_bit(native_calls):
    ours, theirs = _pair(num_layers=2, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(7, 3, 5), [2, 7, 5], enforce_sorted=False)
    h0 = torch.randn(4, 3, 16)
    with torch.no_grad():
        out, h_n = ours(packed, h0)
        expected_out, expected_h_n = theirs(packed, h0)
    assert torch.equal(out.data, expected_out.data) and torch.equal(h_n, expected_h_n)
    assert native_calls == [(14, 5)]


def test_ready_kernels_and_explicit_engines_do_not_run_torch_s_gru(native_calls, monkeypatch):
    ours, _ = _pair()
    x = torch.randn(7, 4, 5)
    with monkeypatch.context() as patched:
        patched.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
        ours(x)
    for engine in ("fused", "compiled", "reference"):
        monkeypatch.setenv("RNNKIT_ENGINE", engine)
        if engine == "compiled":
            monkeypatch.setattr(warmup, "wait", lambda dtype, cell="rnn": None)
            monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
        ours(x)
    assert native_calls == []
