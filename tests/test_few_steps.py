"""Inference of few steps on the compiled loops once they are loaded (rnnkit.engine.few_steps,
rnnkit.compiled.stack_inference): against torch's layer holding the same weights, over random
configurations; when the path runs and when it must not; and that it never compiles a kernel
of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gated_oracle import assert_same, make_inputs, make_pair, run
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.compiled import gated_kernels, warmup
from rnnkit.compiled import stack_inference as stack_inference_module
from rnnkit.engine import few_steps
from rnnkit.engine.few_steps import (
    MAX_PROJECTION_BYTES,
    MAX_STEPS,
    MIN_STEPS,
    MULTI_THREAD_MAX_STEP,
)
from rnnkit.engine.native import max_native_steps

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN:UserWarning"
)
LAYOUTS = ("batched", "unbatched", "packed_sorted", "packed_unsorted")


@pytest.fixture
def short_calls(monkeypatch) -> Iterator[list]:
    """Counts the stacks run on the short path; engine "auto", one thread (past one, its
    rules are narrower: tested apart), the kernels loaded (the session's fixture loads
    them: asserted, so a test cannot pass by never taking it)."""
    for dtype in warmup.DTYPES:
        for cell in few_steps.CELLS:
            assert warmup.loaded(dtype, cell)
    calls = []
    run_stack = stack_inference_module.stack_inference

    def counted(cell, data, *args, **kwargs):
        calls.append((cell, tuple(data.shape)))
        return run_stack(cell, data, *args, **kwargs)

    monkeypatch.setattr(stack_inference_module, "stack_inference", counted)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield calls
    finally:
        torch.set_num_threads(threads)


@st.composite
def short_cases(draw):
    """A module pair and an input of few steps that the short path takes."""
    kind = draw(st.sampled_from(("LSTM", "GRU", "RNN")))
    hidden = draw(st.integers(1, 6))
    kwargs = dict(
        input_size=draw(st.integers(1, 5)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        dtype=draw(st.sampled_from([torch.float64, torch.float32])),
    )
    if kind == "LSTM" and hidden > 1 and draw(st.booleans()):
        kwargs["proj_size"] = draw(st.integers(1, hidden - 1))
    if kind == "RNN":
        kwargs["nonlinearity"] = draw(st.sampled_from(("tanh", "relu")))
    layout = draw(st.sampled_from(LAYOUTS))
    # past MAX_STEPS too (these projections are far below MAX_PROJECTION_BYTES), but for
    # an LSTM that oneDNN runs (float32 without a projection: dense input, or packed of
    # equal lengths)
    onednn = kind == "LSTM" and kwargs["dtype"] == torch.float32 and "proj_size" not in kwargs
    steps = draw(st.integers(MIN_STEPS[kind.lower()], MAX_STEPS if onednn else 3 * MAX_STEPS))
    batch = 1 if layout == "unbatched" else draw(st.integers(1, 5))
    lengths = None
    if layout.startswith("packed"):  # the longest sequence sets the steps
        lengths = [steps, *draw(st.lists(st.integers(1, steps), min_size=batch - 1,
                                         max_size=batch - 1))]  # fmt: skip
        lengths = draw(st.permutations(lengths))
        if layout == "packed_sorted":
            lengths = sorted(lengths, reverse=True)
    with_states, seed = draw(st.booleans()), draw(st.integers(0, 99))
    return kind, kwargs, layout, steps, batch, lengths, with_states, seed


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=short_cases(), inference_mode=st.booleans())
def test_short_inference_matches_torch(case, inference_mode, short_calls):
    """Outputs, final states and a packed output's indices: float64 at 1e-10, float32 at
    torch's tolerances; the module in training mode too (no dropout: nothing to draw)."""
    kind, kwargs, layout, steps, batch, lengths, with_states, seed = case
    theirs, ours = make_pair(kind, seed=seed, **kwargs)
    ours.train(seed % 2 == 0)
    inputs = make_inputs(theirs, layout, steps, batch, seed=seed, with_states=with_states,
                         lengths=lengths)  # fmt: skip
    before = len(short_calls)
    context = torch.inference_mode() if inference_mode else torch.no_grad()
    with context:
        got = run(ours, inputs, backward=False)
    assert len(short_calls) == before + 1, "the short path did not run"
    assert_same(got, run(theirs, inputs, backward=False))


def _lstm_and_input(**kwargs):
    torch.manual_seed(0)
    return rnnkit.LSTM(3, 8, **kwargs), torch.randn(4, 2, 3)


def test_calls_that_record_gradients_or_draw_dropout_do_not_take_it(short_calls):
    lstm, x = _lstm_and_input(num_layers=2, dropout=0.5)
    lstm(x)  # autograd records it
    with torch.no_grad():
        lstm(x)  # training mode: dropout between the layers is drawn
        assert not short_calls
        lstm.eval()
        lstm(x)
    assert len(short_calls) == 1


def test_an_lstm_call_with_a_state_that_needs_a_gradient_does_not_take_it(short_calls):
    lstm, x = _lstm_and_input()
    lstm.requires_grad_(False)
    h0 = torch.zeros(1, 2, 8, requires_grad=True)
    lstm(x, (h0, torch.zeros(1, 2, 8)))
    assert not short_calls
    lstm(x)
    assert len(short_calls) == 1  # nothing needs a gradient: inference


def test_calls_outside_the_limits_do_not_take_it(short_calls):
    """A GRU's call of fewer than its steps (torch's layer); past ``MAX_STEPS``, a call whose
    input projections exceed ``MAX_PROJECTION_BYTES`` (the general path)."""
    hidden, batch = 8, 2
    gru = rnnkit.GRU(3, hidden)
    fitting = MAX_PROJECTION_BYTES // (3 * hidden * 4 * batch)  # float32 steps that fit
    assert fitting > MAX_STEPS
    with torch.no_grad():
        gru(torch.randn(MIN_STEPS["gru"] - 1, batch, 3))
        gru(torch.randn(fitting + 1, batch, 3))
        longer = torch.tensor([fitting + 1, fitting + 1])
        gru(pack_padded_sequence(torch.randn(fitting + 1, batch, 3), longer))
        assert not short_calls
        gru(torch.randn(fitting, batch, 3))
        packed = pack_padded_sequence(torch.randn(fitting, batch, 3), torch.tensor([fitting, 5]))
        torch.testing.assert_close(gru(packed)[1], _torch_s(gru)(packed)[1])
    assert len(short_calls) == 2


def test_an_elman_call_takes_it_only_past_torch_s_step_limits(short_calls):
    """torch's Elman step costs least: a call of at most the most steps torch's layer ever
    takes (``max_native_steps("rnn")``) stays there or on the general path, a large step's
    too; a longer small call takes the short path, dense and packed, with torch's results."""
    limit = max_native_steps("rnn")
    assert MIN_STEPS["rnn"] == limit + 1
    torch.manual_seed(0)
    rnn, wide = rnnkit.RNN(3, 8), rnnkit.RNN(3, 128)
    with torch.no_grad():
        rnn(torch.randn(limit, 2, 3))
        rnn(pack_padded_sequence(torch.randn(limit, 2, 3), torch.tensor([limit, 5])))
        wide(torch.randn(3, 16, 3))  # N * H**2 = 2**18: our loops from 3 steps, not this path
        assert not short_calls
        x = torch.randn(limit + 1, 2, 3)
        torch.testing.assert_close(rnn(x), _torch_s(rnn)(x))
        packed = pack_padded_sequence(x, torch.tensor([limit + 1, 5]))
        torch.testing.assert_close(rnn(packed)[1], _torch_s(rnn)(packed)[1])
    assert [cell for cell, _ in short_calls] == ["rnn", "rnn"]


def _torch_s(module):
    """torch's layer holding ``module``'s weights."""
    theirs = getattr(torch.nn, type(module).__name__)(module.input_size, module.hidden_size)
    theirs.load_state_dict(module.state_dict())
    return theirs


def test_kernels_not_loaded_leave_the_call_on_torch_s_layer_without_loading_them(
    short_calls, monkeypatch
):
    asked = []
    monkeypatch.setattr(warmup, "loaded", lambda dtype, cell="rnn": False)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": asked.append(cell))
    lstm, x = _lstm_and_input()
    theirs = torch.nn.LSTM(3, 8)
    theirs.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        ours_out, _ = lstm(x)
        assert torch.equal(ours_out, theirs(x)[0])  # oneDNN's, bit for bit
    assert not short_calls and not asked


def test_other_engines_and_options_do_not_take_it(short_calls, monkeypatch):
    lstm, x = _lstm_and_input()
    with torch.no_grad():
        for engine in ("compiled", "fused"):
            monkeypatch.setenv("RNNKIT_ENGINE", engine)
            lstm(x)
        monkeypatch.setenv("RNNKIT_ENGINE", "auto")
        rnnkit.LSTM(3, 8, learn_initial_state=True)(x)
        rnnkit.GRU(3, 8, bidirectional=True, merge_mode="sum")(x)
        rnnkit.RNN(3, 8)(x)
    assert not short_calls


def test_a_weight_of_another_shape_gets_the_general_path_s_error(short_calls):
    """The kernels do not bounds-check: a replaced weight must never reach them."""
    gru = rnnkit.GRU(3, 8)
    gru.weight_hh_l0 = torch.nn.Parameter(torch.randn(24, 5))
    with torch.no_grad(), pytest.raises(RuntimeError):
        gru(torch.randn(4, 2, 3))
    assert not short_calls


def test_odd_layouts_run_without_compiling_a_kernel_of_their_own(short_calls):
    """Non-contiguous states, weights and batch sizes, float32 and float64: the arrays reach
    the kernels in the types they were compiled for, so their signatures stay as loaded."""
    kernels = (gated_kernels.lstm_forward_loop, gated_kernels.gru_forward_loop)
    before = [len(kernel.signatures) for kernel in kernels]
    for dtype in (torch.float32, torch.float64):
        for cell in ("LSTM", "GRU"):
            torch.manual_seed(0)
            module = getattr(rnnkit, cell)(3, 4, num_layers=2, bidirectional=True, dtype=dtype)
            theirs = getattr(torch.nn, cell)(3, 4, num_layers=2, bidirectional=True, dtype=dtype)
            theirs.load_state_dict(module.state_dict())
            with torch.no_grad():  # a weight read through a transposed view
                module.weight_hh_l0.set_(module.weight_hh_l0.t().contiguous().t())
            h0 = torch.randn(4, 4, 2, dtype=dtype).transpose(1, 2)  # (4, 2, 4), strided
            hx = (h0, torch.randn(4, 2, 8, dtype=dtype)[:, :, ::2]) if cell == "LSTM" else h0
            x = torch.randn(5, 2, 3, dtype=dtype)
            packed = pack_padded_sequence(x, torch.tensor([5, 3]))
            sizes = torch.tensor([2, 9, 2, 9, 2, 9, 1, 9, 1, 9])[::2]  # strided batch sizes
            strided = type(packed)(packed.data, sizes)  # (torch's layer misreads them)
            with torch.no_grad():
                torch.testing.assert_close(module(x, hx)[0], theirs(x, hx)[0])
                torch.testing.assert_close(module(strided, hx)[0].data, theirs(packed, hx)[0].data)
    assert len(short_calls) == 8
    assert [len(kernel.signatures) for kernel in kernels] == before


def test_at_two_threads_only_small_steps_take_it(short_calls):
    """torch's layer runs a large step's products on all its threads; our loops on one.
    (``MULTI_THREAD_MAX_STEP_UNEQUAL`` is far above these steps.)"""
    hidden = 32
    small_batch = MULTI_THREAD_MAX_STEP // hidden**2  # N * H**2 at the limit
    gru = rnnkit.GRU(3, hidden)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(2)
            gru(torch.randn(4, small_batch + 1, 3))
            assert not short_calls
            gru(torch.randn(4, small_batch, 3))
            assert len(short_calls) == 1
            # past MAX_STEPS, a batch of one only (the general path wins larger ones there)
            gru(torch.randn(MAX_STEPS + 1, 2, 3))
            assert len(short_calls) == 1
            gru(torch.randn(MAX_STEPS + 1, 1, 3))
            assert len(short_calls) == 2
            # sequences of unequal lengths (torch's slower packed path): larger steps, and
            # past MAX_STEPS any batch
            lengths = torch.tensor([4] + [3] * small_batch)
            gru(pack_padded_sequence(torch.randn(4, small_batch + 1, 3), lengths))
            gru(pack_padded_sequence(torch.randn(MAX_STEPS + 1, 2, 3),
                                     torch.tensor([MAX_STEPS + 1, 2])))  # fmt: skip
            assert len(short_calls) == 4
            torch.set_num_threads(1)
            gru(torch.randn(4, small_batch + 1, 3))  # one thread: any size
            gru(torch.randn(MAX_STEPS + 1, 2, 3))
            assert len(short_calls) == 6
    finally:
        torch.set_num_threads(threads)


def test_a_dense_float32_lstm_takes_it_from_onednn_for_few_steps_of_small_layers(short_calls):
    """oneDNN's steps win on larger layers and longer calls (see few_steps' doc)."""
    with torch.no_grad():
        rnnkit.LSTM(3, 8)(torch.randn(MAX_STEPS + 1, 2, 3))
        rnnkit.LSTM(3, 8)(pack_padded_sequence(torch.randn(MAX_STEPS + 1, 2, 3),
                                               torch.tensor([MAX_STEPS + 1] * 2)))  # fmt: skip
        rnnkit.LSTM(8, 128)(torch.randn(2, 2, 8))  # 4H * (H_in + H) = 2**17 weights
        assert not short_calls
        rnnkit.LSTM(3, 8)(torch.randn(MAX_STEPS, 2, 3))
        rnnkit.LSTM(8, 127)(torch.randn(2, 2, 8))
        rnnkit.LSTM(3, 8, dtype=torch.float64)(torch.randn(MAX_STEPS + 1, 2, 3).double())
    assert len(short_calls) == 3


@pytest.mark.parametrize(
    ("cell", "shape", "packed"),
    [("LSTM", (5, 17, 64, 300), True), ("GRU", (3, 1, 256, 520), False),
     ("LSTM", (6, 2, 300, 700), False), ("GRU", (20, 1, 16, 300), True)],
)  # fmt: skip
def test_large_steps_match_torch(short_calls, cell, shape, packed):
    """Steps large enough for the kernels' other products (brgemm from 2**18 multiply-adds,
    MKL for one row of more than 1200 columns), the weight read in place: float64 at
    1e-10, both directions."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(0)
    ours = getattr(rnnkit, cell)(input_size, hidden, bidirectional=True, dtype=torch.float64)
    theirs = getattr(torch.nn, cell)(input_size, hidden, bidirectional=True, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(steps, batch, input_size, dtype=torch.float64)
    if packed:
        lengths = torch.randint(1, steps + 1, (batch,))
        lengths[0] = steps
        x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        (out, finals), (want, want_finals) = ours(x), theirs(x)
    assert short_calls
    if packed:
        out, want = out.data, want.data
    if cell == "GRU":
        finals, want_finals = (finals,), (want_finals,)
    for got, expected in zip((out, *finals), (want, *want_finals), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
