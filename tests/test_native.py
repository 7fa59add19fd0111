"""While an LSTM's or GRU's compiled kernels are prepared, "auto" runs inference on
torch's own layer (rnnkit.engine.gated_stack.native_stack), and a call of few steps always
(rnnkit.engine.native), dense or packed: when it does, and that its results are torch's bit
for bit."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import gated
from rnnkit.compiled import warmup
from rnnkit.engine import gated_stack, native, resolve_engine, stack
from rnnkit.engine.native import NATIVE_MAX_STEPS, max_native_steps, native_fit
from rnnkit.engine.onednn import ALWAYS, UNTIL_COMPILED

# More steps than any cell's call of few steps: these run on our loops once they are ready.
LONG = max(max_native_steps(cell) for cell in NATIVE_MAX_STEPS) + 4


@pytest.fixture(autouse=True)
def torch_s_paths_only(monkeypatch):
    """These tests pin torch's paths: the short path, which takes inference of few steps
    once the compiled kernels are loaded (as the session's fixture loads them), is left
    to test_few_steps.py."""
    monkeypatch.setattr(warmup, "loaded", lambda dtype, cell="rnn": False)


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


def _pair(cell, dtype=torch.float32, hidden=16, **kwargs):
    torch.manual_seed(0)
    ours = getattr(rnnkit, cell)(5, hidden, **kwargs).to(dtype)
    theirs = getattr(torch.nn, cell)(5, hidden, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _states(module, batch, dtype):
    rows = module.num_layers * (2 if module.bidirectional else 1)
    hidden = module.hidden_size
    h0 = torch.randn(rows, batch, module.proj_size or hidden, dtype=dtype)
    return (h0, torch.randn(rows, batch, hidden, dtype=dtype)) if module.mode == "LSTM" else h0


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
    x = torch.randn(4, LONG, 5) if kwargs.get("batch_first") else torch.randn(LONG, 4, 5)
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
    packed = pack_padded_sequence(torch.randn(LONG, 3, 5), [2, LONG, 5], enforce_sorted=False)
    hx = _states(ours, 3, torch.float32)
    for x in (packed, torch.randn(LONG, 3, 5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ours must not warn
            mine = _inferred(ours, x, hx)
        for a, b in zip(mine, _inferred(theirs, x, hx), strict=True):
            assert torch.equal(a, b)
    # A dense float32 LSTM without projection runs on oneDNN, not here.
    dense_here = cell == "GRU" or bool(kwargs.get("proj_size"))
    packed_rows, dense_rows = (LONG + 7, 5), (LONG * 3, 5)
    assert native_calls == [(cell.lower(), packed_rows)] + dense_here * [(cell.lower(), dense_rows)]


def test_training_while_the_kernels_compile_stays_on_torch_ops(native_calls):
    """In training our torch-ops loops are mostly the faster; gradients match torch's."""
    for cell in ("GRU", "LSTM"):
        ours, theirs = _pair(cell, num_layers=2, dtype=torch.float64)
        x = torch.randn(LONG, 4, 5, dtype=torch.float64)
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
    x = torch.randn(LONG, 4, 5)
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


def _matches_torch(ours, theirs, steps: int, on_torch: tuple[bool, bool]) -> None:
    """Inference and training of ``steps`` steps from random states, against torch: bit
    for bit where the call runs on torch's layer (``on_torch``: inference, training), else
    at tolerance (ours)."""
    x = torch.randn(steps, 4, 5, dtype=torch.float64)
    hx = _states(ours, 4, torch.float64)
    same = torch.equal if on_torch[0] else _close
    pairs = zip(_inferred(ours, x, hx), _inferred(theirs, x, hx), strict=True)
    assert all(same(a, b) for a, b in pairs)
    grads = []
    for module in (ours, theirs):
        x_ = x.clone().requires_grad_()
        out, _ = module(x_, hx)
        out.pow(2).sum().backward()
        grads.append([x_.grad] + [p.grad for p in module.parameters()])
        module.zero_grad()
    same = torch.equal if on_torch[1] else _close
    assert all(same(a, b) for a, b in zip(*grads, strict=True))


# The hidden sizes of an Elman or GRU layer whose steps at batch 4 are small (N * H**2 at
# most native.SMALL_STEP: dense inference keeps torch's layer for more steps) and not.
SMALL_HIDDEN, HIDDEN = 16, 65


def _step_counts(cell: str, hidden: int = SMALL_HIDDEN) -> list[tuple[int, tuple[bool, bool]]]:
    """Step counts around a dense call's limits at batch 4, with where each runs
    (inference, training): one step, each limit, and one step past the larger."""
    inference, training = NATIVE_MAX_STEPS[cell][0]
    if cell in native.SMALL_STEP_CELLS and 4 * hidden**2 <= native.SMALL_STEP:
        inference = native.NATIVE_MAX_STEPS_SMALL_DENSE_INFERENCE
    counts = sorted({1, training, training + 1, inference, inference + 1})
    return [(steps, (steps <= inference, steps <= training)) for steps in counts]


@pytest.mark.parametrize("hidden", [SMALL_HIDDEN, HIDDEN])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
def test_a_gru_call_of_few_steps_runs_on_torch_s_layer_training_included(
    native_calls, monkeypatch, kwargs, hidden
):
    """A step-by-step decoder's call, or a short sequence's: torch's layer beats our loops
    there, with the kernels ready too; past the limits the calls stay ours."""
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    ours, theirs = _pair("GRU", dtype=torch.float64, hidden=hidden, **kwargs)
    expected = []
    for steps, on_torch in _step_counts("gru", hidden):
        _matches_torch(ours, theirs, steps, on_torch)
        expected += [("gru", (steps, 4, 5))] * sum(on_torch)
    assert native_calls == expected
    # unbatched: as a batch of one, to the same layer
    x, hx = torch.randn(1, 5, dtype=torch.float64), _states(ours, 1, torch.float64)[:, 0]
    pairs = zip(_inferred(ours, x, hx), _inferred(theirs, x, hx), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert native_calls[len(expected) :] == [("gru", (1, 1, 5))]


def test_an_lstm_call_of_few_dense_steps_stays_on_onednn_s_rules(native_calls, monkeypatch):
    """A dense float32 LSTM goes where oneDNN's rules send it (oneDNN itself, torch's own
    call, or our loops), never to the per-step layer."""
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    ours, theirs = _pair("LSTM", num_layers=2, bidirectional=True)
    for steps in (2, 3):
        x = torch.randn(steps, 4, 5)
        for a, b in zip(_inferred(ours, x, None), _inferred(theirs, x, None), strict=True):
            torch.testing.assert_close(a, b)
    assert native_calls == []


@pytest.mark.parametrize("kwargs", [{"proj_size": 3}, {"num_layers": 2, "bidirectional": True}])
def test_an_lstm_call_of_few_steps_that_onednn_cannot_run_runs_on_torch_s_layer(
    monkeypatch, kwargs
):
    """float64, or a projection: torch runs those on its per-step layer, and so do we for
    few steps, bit for bit; a float32 projected call without our warning."""
    calls = []

    def counted(x, *args):
        calls.append(tuple(x.shape))
        return direct(x, *args)

    direct = gated.native_lstm
    monkeypatch.setattr(gated, "native_lstm", counted)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    ours, theirs = _pair("LSTM", dtype=torch.float64, **kwargs)
    expected = []
    for steps, on_torch in _step_counts("lstm"):
        _matches_torch(ours, theirs, steps, on_torch)
        expected += [(steps, 4, 5)] * sum(on_torch)
    assert calls == expected
    if not kwargs.get("proj_size"):  # float32 without projection: oneDNN's
        return
    ours, theirs = _pair("LSTM", **kwargs)
    x = torch.randn(2, 4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ours must not warn
        mine = _inferred(ours, x, None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", native.PROJECTION_WARNING)  # torch's does
        pairs = zip(mine, _inferred(theirs, x, None), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    assert calls[len(expected) :] == [(2, 4, 5)]


@pytest.mark.parametrize("hidden", [SMALL_HIDDEN, HIDDEN])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
def test_an_elman_call_of_few_steps_runs_on_torch_s_layer(
    monkeypatch, nonlinearity, kwargs, hidden
):
    calls = []
    op = stack.NATIVE_RNN[nonlinearity]

    def counted(x, *args):
        calls.append((nonlinearity, tuple(x.shape)))
        return op(x, *args)

    monkeypatch.setitem(stack.NATIVE_RNN, nonlinearity, counted)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    ours, theirs = _pair("RNN", torch.float64, hidden, nonlinearity=nonlinearity, **kwargs)
    expected = []
    for steps, on_torch in _step_counts("rnn", hidden):
        _matches_torch(ours, theirs, steps, on_torch)
        expected += [(nonlinearity, (steps, 4, 5))] * sum(on_torch)
    assert calls == expected
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")  # an explicit engine stays ours
    monkeypatch.setattr(warmup, "wait", lambda dtype, cell="rnn": None)
    with torch.no_grad():
        ours(torch.randn(1, 4, 5, dtype=torch.float64))
    assert len(calls) == len(expected)


def test_the_step_limits_follow_the_cell_the_input_and_an_elman_step_s_size():
    assert native_fit("gru", 6, 4, 128, False, packed=False) == ALWAYS
    assert native_fit("gru", 7, 4, 128, False, packed=False) is None
    assert native_fit("gru", 8, 4, 16, False, packed=True) == ALWAYS
    assert native_fit("gru", 4, 4, 16, True, packed=False) is None
    assert native_fit("lstm", 3, 4, 16, True, packed=True) == ALWAYS
    # An Elman step's product of 2**18 or more: our loops from 3 steps of inference,
    # except dense inference of at most 8 sequences; and from 3 steps of training
    assert native_fit("rnn", 6, 8, 128, False, packed=False) == ALWAYS
    assert native_fit("rnn", 6, 8, 256, False, packed=False) == ALWAYS
    assert native_fit("rnn", 3, 9, 256, False, packed=False) is None
    assert native_fit("rnn", 3, 16, 128, False, packed=False) is None
    assert native_fit("rnn", 2, 16, 128, False, packed=False) == ALWAYS
    assert native_fit("rnn", 3, 16, 127, False, packed=False) == ALWAYS
    assert native_fit("rnn", 6, 4, 256, False, packed=False) == ALWAYS
    assert native_fit("rnn", 7, 4, 256, False, packed=False) is None
    assert native_fit("rnn", 3, 4, 256, True, packed=False) is None
    assert native_fit("rnn", 5, 4, 256, False, packed=True) is None
    # Dense inference of an Elman or GRU step of at most 2**13 (N * H**2): up to 8 steps
    for cell in ("rnn", "gru"):
        assert native_fit(cell, 8, 2, 64, False, packed=False) == ALWAYS
        assert native_fit(cell, 9, 2, 64, False, packed=False) is None
        assert native_fit(cell, 7, 2, 65, False, packed=False) is None
        assert native_fit(cell, 4, 1, 16, True, packed=False) is None  # training: 3
    assert native_fit("lstm", 7, 1, 16, False, packed=False) is None
    assert native.max_native_steps("rnn") == native.max_native_steps("gru") == 8


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


PACKED_CASES = [
    ("RNN", {}),
    ("RNN", {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    ("GRU", {}),
    ("GRU", {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"proj_size": 3, "batch_first": True}),
]


@pytest.mark.parametrize("cell, kwargs", PACKED_CASES)
def test_a_packed_input_of_few_steps_runs_on_torch_s_packed_layer(monkeypatch, cell, kwargs):
    """Unsorted sequences of up to 3 steps (sorted_indices reorder the states): torch's
    packed call, with torch's output rows, final states and gradients bit for bit, from
    zeros and from given states, without a warning of ours; one step past the packed
    inference limit, and an explicit engine, stay ours."""
    calls = []
    owner, name = (stack.NATIVE_RNN, "tanh") if cell == "RNN" else (gated, f"native_{cell.lower()}")
    op = owner[name] if cell == "RNN" else getattr(owner, name)

    def counted(data, *args):
        calls.append(tuple(data.shape))
        return op(data, *args)

    if cell == "RNN":
        monkeypatch.setitem(owner, name, counted)
    else:
        monkeypatch.setattr(owner, name, counted)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    ours, theirs = _pair(cell, dtype=torch.float64, **kwargs)
    batch_first = kwargs.get("batch_first", False)

    def packed_input(steps: int):
        x = torch.randn(4, steps, 5, dtype=torch.float64)  # (N, L, H_in)
        lengths = [steps, 1, max(1, steps - 1), steps]
        x = x if batch_first else x.transpose(0, 1)
        return pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)

    packed, hx = packed_input(3), _states(ours, 4, torch.float64)
    for state in (None, hx):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ours must not warn
            mine = _inferred(ours, packed, state)
        pairs = zip(mine, _inferred(theirs, packed, state), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    grads = []
    for module in (ours, theirs):
        data = packed.data.clone().requires_grad_()
        out, finals = module(packed._replace(data=data), hx)
        h_n = finals[0] if isinstance(finals, tuple) else finals
        (out.data.pow(2).sum() + h_n.sum()).backward()
        grads.append([data.grad] + [p.grad for p in module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert calls == [tuple(packed.data.shape)] * 3
    longer = packed_input(NATIVE_MAX_STEPS[cell.lower()][1][0] + 1)
    pairs = zip(_inferred(ours, longer, hx), _inferred(theirs, longer, hx), strict=True)
    assert all(_close(a, b) for a, b in pairs)
    monkeypatch.setenv("RNNKIT_ENGINE", "fused")
    pairs = zip(_inferred(ours, packed, hx), _inferred(theirs, packed, hx), strict=True)
    assert all(_close(a, b) for a, b in pairs)
    assert len(calls) == 3


def test_a_malformed_packed_input_of_few_steps_gets_the_general_path_s_error():
    """Sizes that do not sum to the rows: refused, as on the general path, not run."""
    ours = rnnkit.GRU(5, 16)
    packed = torch.nn.utils.rnn.PackedSequence(torch.randn(5, 5), torch.tensor([3, 1]))
    with pytest.raises(RuntimeError, match="batch_sizes, expected non-negative"):
        ours(packed)


def _unbatched_states(module, dtype):
    """Random initial states of an unbatched call: ``h0`` or ``(h0, c0)``, each 2-D."""
    states = _states(module, 1, dtype)
    if isinstance(states, tuple):
        return tuple(state[:, 0] for state in states)
    return states[:, 0]


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_an_unbatched_call_runs_as_a_batch_of_one_on_torch_s_layer(monkeypatch, cell, batch_first):
    """An unbatched input of few steps (and an LSTM's, which oneDNN runs) takes the direct
    call of a batch of one, as torch.nn's layer makes it: torch's results bit for bit,
    gradients included, from zeros and from given 2-D states; a long Elman or GRU call
    stays on our loops."""
    calls = []

    def counting(op):
        def counted(x, *args):
            calls.append(tuple(x.shape))
            return op(x, *args)

        return counted

    for name in ("native_gru", "native_lstm"):
        monkeypatch.setattr(gated, name, counting(getattr(gated, name)))
    monkeypatch.setattr(gated, "onednn_lstm", counting(gated.onednn_lstm))
    monkeypatch.setitem(stack.NATIVE_RNN, "tanh", counting(stack.NATIVE_RNN["tanh"]))
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    dtype = torch.float32 if cell == "LSTM" else torch.float64  # the LSTM's on oneDNN
    ours, theirs = _pair(cell, dtype, batch_first=batch_first)
    batched = (1, 2, 5) if batch_first else (2, 1, 5)
    for hx in (None, _unbatched_states(ours, dtype)):
        x = torch.randn(2, 5, dtype=dtype)
        pairs = zip(_inferred(ours, x, hx), _inferred(theirs, x, hx), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
        grads = []
        for module in (ours, theirs):
            x_ = x.clone().requires_grad_()
            out, state = module(x_, hx)
            h_n = state[0] if isinstance(state, tuple) else state
            assert out.shape == (2, 16) and h_n.shape == (1, 16)
            (out.sin().sum() + h_n.cos().sum()).backward()
            grads.append([x_.grad] + [p.grad for p in module.parameters()])
            module.zero_grad()
        assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert calls == [batched] * 4
    if cell != "LSTM":
        x = torch.randn(LONG, 5, dtype=dtype)
        pairs = zip(_inferred(ours, x, None), _inferred(theirs, x, None), strict=True)
        assert all(_close(a, b) for a, b in pairs)
        assert len(calls) == 4
