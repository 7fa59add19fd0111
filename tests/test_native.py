"""While an LSTM's or GRU's compiled kernels are prepared, "auto" runs inference on
torch's own layer (rnnkit.engine.gated_stack.native_stack), and a GRU's or Elman layer's
call of one step always: when it does, and that its results are torch's bit for bit."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import gated
from rnnkit.compiled import warmup
from rnnkit.engine import gated_stack, resolve_engine, stack
from rnnkit.engine.onednn import ALWAYS, UNTIL_COMPILED


@pytest.fixture
def native_calls(monkeypatch) -> list:
    """Counts the stacks run on torch's layers; kernels reported not ready, engine "auto"."""
    calls = []
    run = gated_stack.native_stack

    def counted(cell, x, *args):
        calls.append((cell, tuple(x.shape)))
        return run(cell, x, *args)

    def counted_gru(x, *args):
        calls.append(("gru", tuple(x.shape)))
        return direct_gru(x, *args)

    # Both ways in: the general path's packed rows, and a GRU step's batched tensor input.
    monkeypatch.setattr(gated_stack, "native_stack", counted)
    direct_gru = gated.native_gru
    monkeypatch.setattr(gated, "native_gru", counted_gru)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": False)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    return calls


def test_auto_picks_torch_s_layer_only_while_the_kernels_are_not_ready(monkeypatch):
    x = torch.zeros(6, 4)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": False)
    assert resolve_engine("auto", x, 3, 8, "gru", native=UNTIL_COMPILED) == "native"
    assert resolve_engine("auto", x, 3, 8, "gru") == "fused"
    assert resolve_engine("auto", x, 3, 8, "lstm", UNTIL_COMPILED, UNTIL_COMPILED) == "onednn"
    assert resolve_engine("fused", x, 3, 8, "gru", native=UNTIL_COMPILED) == "fused"
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    assert resolve_engine("auto", x, 3, 8, "gru", native=UNTIL_COMPILED) == "compiled"
    assert resolve_engine("compiled", x, 3, 8, "lstm", native=UNTIL_COMPILED) == "compiled"
    assert resolve_engine("auto", x, 3, 8, "gru", native=ALWAYS) == "native"
    for engine in ("fused", "compiled"):
        assert resolve_engine(engine, x, 3, 8, "gru", native=ALWAYS) == engine


def _pair(cell, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    ours = getattr(rnnkit, cell)(5, 16, **kwargs).to(dtype)
    theirs = getattr(torch.nn, cell)(5, 16, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _states(module, batch, dtype):
    rows = module.num_layers * (2 if module.bidirectional else 1)
    h0 = torch.randn(rows, batch, module.proj_size or 16, dtype=dtype)
    return (h0, torch.randn(rows, batch, 16, dtype=dtype)) if module.mode == "LSTM" else h0


def _inferred(module, x, hx):
    torch.manual_seed(1)  # the same dropout masks for both (the modules are in training mode)
    with torch.no_grad():
        out, state = module(x, hx)
    out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    return [out, *(state if isinstance(state, tuple) else (state,))]


CASES = [
    ("GRU", {}),
    ("GRU", {"num_layers": 2, "bidirectional": True, "dropout": 0.5}),
    ("GRU", {"bias": False, "batch_first": True}),
    ("GRU", {"dtype": torch.float64}),
    ("LSTM", {"dtype": torch.float64, "num_layers": 2, "bidirectional": True}),
]


@pytest.mark.parametrize("cell, kwargs", CASES)
def test_inference_while_the_kernels_compile_is_torch_s_bit_for_bit(native_calls, cell, kwargs):
    ours, theirs = _pair(cell, **kwargs)
    dtype = kwargs.get("dtype", torch.float32)
    x = torch.randn(4, 7, 5) if kwargs.get("batch_first") else torch.randn(7, 4, 5)
    x, hx = x.to(dtype), _states(ours, 4, dtype)
    for a, b in zip(_inferred(ours, x, hx), _inferred(theirs, x, hx), strict=True):
        assert torch.equal(a, b)
    assert len(native_calls) == 1  # the whole stack in one call


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(
    "cell, kwargs",
    [("GRU", {"num_layers": 2, "bidirectional": True}), ("LSTM", {}), ("LSTM", {"proj_size": 8})],
)
def test_packed_and_projected_inference_is_torch_s_bit_for_bit(native_calls, cell, kwargs):
    """torch's own layer warns about the projection (filtered here, for it); ours must not."""
    ours, theirs = _pair(cell, **kwargs)
    packed = pack_padded_sequence(torch.randn(7, 3, 5), [2, 7, 5], enforce_sorted=False)
    hx = _states(ours, 3, torch.float32)
    for x in (packed, torch.randn(7, 3, 5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ours must not warn
            mine = _inferred(ours, x, hx)
        for a, b in zip(mine, _inferred(theirs, x, hx), strict=True):
            assert torch.equal(a, b)
    # A dense float32 LSTM without projection runs on oneDNN, not here.
    dense_here = cell == "GRU" or bool(kwargs.get("proj_size"))
    assert native_calls == [(cell.lower(), (14, 5))] + dense_here * [(cell.lower(), (21, 5))]


def test_training_while_the_kernels_compile_stays_on_torch_ops(native_calls):
    """In training our torch-ops loops are mostly the faster; gradients match torch's."""
    for cell in ("GRU", "LSTM"):
        ours, theirs = _pair(cell, num_layers=2, dtype=torch.float64)
        x = torch.randn(7, 4, 5, dtype=torch.float64)
        grads = []
        for module in (ours, theirs):
            x_ = x.clone().requires_grad_()
            out, state = module(x_)
            h_n = state[0] if isinstance(state, tuple) else state
            (out.sin().sum() + h_n.cos().sum()).backward()
            grads.append([out, h_n, x_.grad] + [p.grad for p in module.parameters()])
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b)
    assert native_calls == []


def test_ready_kernels_and_explicit_engines_do_not_run_torch_s_layer(native_calls, monkeypatch):
    ours, _ = _pair("GRU")
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


def _one_and_two_steps_match_torch(ours, theirs, on_torch_at_one_step: bool) -> None:
    """Inference and training of one step and of two, from random states, against torch:
    bit for bit where the step runs on torch's layer, else at tolerance (ours)."""
    for steps in (1, 2):
        x = torch.randn(steps, 4, 5, dtype=torch.float64)
        hx = _states(ours, 4, torch.float64)
        same = torch.equal if on_torch_at_one_step and steps == 1 else _close
        pairs = zip(_inferred(ours, x, hx), _inferred(theirs, x, hx), strict=True)
        assert all(same(a, b) for a, b in pairs)
        grads = []
        for module in (ours, theirs):
            x_ = x.clone().requires_grad_()
            out, _ = module(x_, hx)
            out.pow(2).sum().backward()
            grads.append([x_.grad] + [p.grad for p in module.parameters()])
            module.zero_grad()
        assert all(same(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
def test_a_gru_call_of_one_step_runs_on_torch_s_layer_training_included(
    native_calls, monkeypatch, kwargs
):
    """A step-by-step decoder's call: torch's layer beats our loops there, with the kernels
    ready too; two steps, and an LSTM's step, stay ours."""
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    for cell in ("GRU", "LSTM"):
        ours, theirs = _pair(cell, dtype=torch.float64, **kwargs)
        _one_and_two_steps_match_torch(ours, theirs, cell == "GRU")
    # inference and training of the one step, straight to torch's layer
    assert native_calls == [("gru", (1, 4, 5))] * 2
    # unbatched: through the general path (packed rows), to the same layer
    ours, theirs = _pair("GRU", dtype=torch.float64, **kwargs)
    x, hx = torch.randn(1, 5, dtype=torch.float64), _states(ours, 1, torch.float64)[:, 0]
    pairs = zip(_inferred(ours, x, hx), _inferred(theirs, x, hx), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert native_calls[2:] == [("gru", (1, 5))]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
def test_an_elman_call_of_one_step_runs_on_torch_s_layer(monkeypatch, nonlinearity, kwargs):
    calls = []
    op = stack.NATIVE_RNN[nonlinearity]

    def counted(x, *args):
        calls.append((nonlinearity, tuple(x.shape)))
        return op(x, *args)

    monkeypatch.setitem(stack.NATIVE_RNN, nonlinearity, counted)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    ours, theirs = _pair("RNN", dtype=torch.float64, nonlinearity=nonlinearity, **kwargs)
    _one_and_two_steps_match_torch(ours, theirs, True)
    assert calls == [(nonlinearity, (1, 4, 5))] * 2
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")  # an explicit engine stays ours
    monkeypatch.setattr(warmup, "wait", lambda dtype, cell="rnn": None)
    with torch.no_grad():
        ours(torch.randn(1, 4, 5, dtype=torch.float64))
    assert len(calls) == 2


def _close(a, b) -> bool:
    return torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
@pytest.mark.parametrize("cell", ["GRU", "RNN"])
def test_a_packed_input_of_one_step_runs_as_the_batched_tensor_would(
    monkeypatch, cell, kwargs, batch_first
):
    """A PackedSequence whose sequences all have one step (unsorted: its sorted_indices
    reorder the states) takes the batched step's direct call to torch's layer: torch's
    output rows and final states bit for bit, in inference and training."""
    calls = []
    direct = stack.NATIVE_RNN["tanh"] if cell == "RNN" else gated.native_gru

    def counted(x, *args):
        calls.append(tuple(x.shape))
        return direct(x, *args)

    if cell == "RNN":
        monkeypatch.setitem(stack.NATIVE_RNN, "tanh", counted)
    else:
        monkeypatch.setattr(gated, "native_gru", counted)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    ours, theirs = _pair(cell, dtype=torch.float64, batch_first=batch_first, **kwargs)
    x = torch.randn(4, 1, 5, dtype=torch.float64)  # 4 sequences of one step
    packed = pack_padded_sequence(x, torch.ones(4, dtype=torch.int64), batch_first=True,
                                  enforce_sorted=False)  # fmt: skip
    packed = packed._replace(sorted_indices=torch.tensor([2, 0, 3, 1]),
                             unsorted_indices=torch.tensor([1, 3, 0, 2]))  # fmt: skip
    hx = _states(ours, 4, torch.float64)
    for state in (None, hx):
        pairs = zip(_inferred(ours, packed, state), _inferred(theirs, packed, state), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    grads = []
    for module in (ours, theirs):
        data = packed.data.clone().requires_grad_()
        out, h_n = module(packed._replace(data=data), hx)
        (out.data.pow(2).sum() + h_n.sum()).backward()
        grads.append([data.grad] + [p.grad for p in module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    step = (4, 1, 5) if batch_first else (1, 4, 5)
    assert calls == [step] * 3


def test_a_packed_lstm_step_runs_as_the_batched_tensor_would(monkeypatch):
    """The LSTM's step takes its direct call too (oneDNN below the one-step size rule),
    with torch's results at tolerance: torch runs packed input on its per-step path."""
    calls = []
    direct = gated.onednn_lstm

    def counted(x, *args):
        calls.append(tuple(x.shape))
        return direct(x, *args)

    monkeypatch.setattr(gated, "onednn_lstm", counted)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    ours, theirs = _pair("LSTM", num_layers=2, bidirectional=True)
    x = torch.randn(4, 1, 5)
    packed = pack_padded_sequence(x, torch.ones(4, dtype=torch.int64), batch_first=True,
                                  enforce_sorted=False)  # fmt: skip
    packed = packed._replace(sorted_indices=torch.tensor([2, 0, 3, 1]),
                             unsorted_indices=torch.tensor([1, 3, 0, 2]))  # fmt: skip
    hx = _states(ours, 4, torch.float32)
    for got, expected in zip(_inferred(ours, packed, hx), _inferred(theirs, packed, hx),
                             strict=True):  # fmt: skip
        torch.testing.assert_close(got, expected)
    assert calls == [(1, 4, 5)] if torch.backends.mkldnn.is_available() else calls == []
