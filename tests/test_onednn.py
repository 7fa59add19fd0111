"""When ``"auto"`` runs an LSTM layer on torch's oneDNN LSTM, and that it then
gives torch's results bit for bit (rnnkit.engine.onednn).

The conformance suite (test_gated_oracle.py) holds every engine to torch at
tolerance; here the choice itself is checked: which layers oneDNN may run, when
``"auto"`` picks it, and that the explicit engines are left alone.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit
from rnnkit import gated, recurrent
from rnnkit.compiled import warmup
from rnnkit.engine import gated_stack, native, onednn, resolve_engine
from rnnkit.engine.onednn import ALWAYS, OURS_PART_ROWS, UNTIL_COMPILED, onednn_fit

needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN"
)


@pytest.fixture(autouse=True)
def torch_s_paths_only(monkeypatch):
    """These tests pin torch's paths: the short path, which takes inference of few steps
    once the compiled kernels are loaded (as the session's fixture loads them), is left
    to test_few_steps.py."""
    monkeypatch.setattr(warmup, "loaded", lambda dtype, cell="rnn": False)


@pytest.fixture
def avx512(monkeypatch):
    """The rules measured with AVX-512, whatever this CPU has."""
    monkeypatch.setattr(onednn, "has_avx512", lambda: True)


@pytest.fixture
def avx2(monkeypatch):
    """The rules measured with AVX2 only, whatever this CPU has."""
    monkeypatch.setattr(onednn, "has_avx512", lambda: False)


def _fit(dtype=torch.float32, batch_sizes=(3, 3), directions=(False,), projected=False,
         grad=False, hidden=8):  # fmt: skip
    return onednn_fit(torch.zeros(6, 2, dtype=dtype), list(batch_sizes), directions, projected,
                      grad, hidden)  # fmt: skip


@needs_onednn
def test_fit_only_dense_float32_without_projection(monkeypatch, avx512):
    assert _fit() == ALWAYS
    assert _fit(grad=True) == ALWAYS  # one direction: oneDNN wins training too
    assert _fit(directions=(False, True)) == ALWAYS  # inference of both directions
    # Training a bidirectional layer: our compiled loops win once ready.
    assert _fit(directions=(False, True), grad=True) == UNTIL_COMPILED
    assert _fit(dtype=torch.float64) is None
    assert _fit(dtype=torch.bfloat16) is None
    assert _fit(batch_sizes=(3, 2, 1)) is None  # packed sequences of unequal lengths
    assert _fit(projected=True) is None
    # The switch alone (torch.backends.mkldnn.flags also resets TF32 settings, and warns).
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert _fit() is None


@needs_onednn
def test_one_direction_training_with_large_steps_goes_to_our_loops(avx512):
    """Above OURS_TRAIN_MIN (N * H**2) our loops beat oneDNN in training at one thread
    (per-step products on brgemm), and at two threads with OURS_PART_ROWS rows a thread
    (the batch split); with smaller parts, or more threads (not measured), oneDNN runs."""
    threads = torch.get_num_threads()
    large, at_limit, large_parts = (
        {"batch_sizes": (30, 30), "hidden": 256},
        {"batch_sizes": (64, 64), "hidden": 128},
        {"batch_sizes": (2 * OURS_PART_ROWS,) * 2, "hidden": 256},
    )
    try:
        torch.set_num_threads(1)
        assert _fit(grad=True, **large) == UNTIL_COMPILED
        assert _fit(grad=True, **at_limit) == ALWAYS  # 64 * 128**2 = 2**20: oneDNN wins
        assert _fit(grad=False, **large) == ALWAYS  # inference of two steps: oneDNN at every size
        torch.set_num_threads(2)
        assert _fit(grad=True, **large) == ALWAYS  # 15 rows a thread
        assert _fit(grad=True, **large_parts) == UNTIL_COMPILED
        assert _fit(grad=True, **at_limit) == ALWAYS
        assert _fit(grad=False, **large_parts) == ALWAYS
        torch.set_num_threads(4)
        assert _fit(grad=True, batch_sizes=(4 * OURS_PART_ROWS,) * 2, hidden=256) == ALWAYS
    finally:
        torch.set_num_threads(threads)


@needs_onednn
def test_inference_of_one_step_with_large_weights_goes_to_our_loops(avx512):
    """oneDNN reorders the weights on every call; one step of ours reads them in place,
    which wins up to a batch of ONE_STEP_MAX_BATCH."""
    per_layer = onednn.ONE_STEP_OURS_MIN // 4  # H * (H_in + H)
    hidden = 256
    features = per_layer // hidden - hidden  # exactly at the limit
    x = torch.zeros(1, 3, features)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for grad in (False, True):  # inference and training alike
            assert onednn_fit(x, [3], (False,), False, grad, hidden) == UNTIL_COMPILED
            assert onednn_fit(x[..., 1:], [3], (False,), False, grad, hidden) == ALWAYS  # below
            assert onednn_fit(x, [3, 3], (False,), False, grad, hidden) == ALWAYS  # two steps
            largest = onednn.ONE_STEP_MAX_BATCH
            assert onednn_fit(x, [largest], (False,), False, grad, hidden) == UNTIL_COMPILED
        # (training at that batch follows the rule of large steps)
        assert onednn_fit(x, [largest + 1], (False,), False, False, hidden) == ALWAYS
        assert onednn_fit(x, [3], (False, True), False, False, hidden) == UNTIL_COMPILED
    finally:
        torch.set_num_threads(threads)


@needs_onednn
def test_without_avx512_large_recurrent_weights_train_and_small_steps_infer_on_onednn(avx2):
    """With AVX2 only, training from AVX2_OURS_TRAIN_MAX_RECURRENT (4 * H**2) stays on
    oneDNN in both directions, and one step of inference needs AVX2_ONE_STEP_INFERENCE_MIN
    weights; training of one step keeps ONE_STEP_OURS_MIN."""
    threads = torch.get_num_threads()
    limit = 512  # 4 * 512**2 == AVX2_OURS_TRAIN_MAX_RECURRENT
    assert 4 * limit**2 == onednn.AVX2_OURS_TRAIN_MAX_RECURRENT
    try:
        torch.set_num_threads(1)
        both, steps = (False, True), (3,) * onednn.AVX2_BIDIRECTIONAL_MIN_STEPS
        assert _fit(grad=True, directions=both, batch_sizes=steps, hidden=limit - 1) == (
            UNTIL_COMPILED
        )
        assert _fit(grad=True, directions=both, batch_sizes=steps, hidden=limit) == ALWAYS
        long = (32,) * (onednn.AVX2_LONG_TRAIN_MIN_ROWS // 32)
        assert _fit(grad=True, batch_sizes=long, hidden=256) == UNTIL_COMPILED
        assert _fit(grad=True, batch_sizes=long, hidden=limit) == ALWAYS
        x = torch.zeros(1, 3, 256)  # 4 * 256 * (256 + 256) = 2**19 weights
        assert onednn_fit(x, [3], (False,), False, False, 256) == ALWAYS
        assert onednn_fit(x, [3], (False,), False, True, 256) == UNTIL_COMPILED
        x = torch.zeros(1, 3, 512)  # 2**21 = AVX2_ONE_STEP_INFERENCE_MIN
        assert onednn_fit(x, [3], (False,), False, False, 512) == UNTIL_COMPILED
        assert onednn_fit(x[..., 1:], [3], (False,), False, False, 512) == ALWAYS
    finally:
        torch.set_num_threads(threads)


@needs_onednn
def test_without_avx512_one_direction_training_needs_many_rows_of_a_fair_batch(avx2):
    """With AVX2 only, where the rule of large steps (OURS_TRAIN_MIN) gives our loops a
    recurrent weight of AVX2_LONG_TRAIN_RECURRENT (4 * H**2) or more, they take it only
    from AVX2_LONG_TRAIN_MIN_ROWS rows (L * N) of AVX2_LONG_TRAIN_MIN_BATCH sequences or
    more, and so do both directions below AVX2_BIDIRECTIONAL_MIN_STEPS; a smaller weight
    keeps the rule of large steps alone, and so does AVX-512."""
    rows, batch = onednn.AVX2_LONG_TRAIN_MIN_ROWS, onednn.AVX2_LONG_TRAIN_MIN_BATCH
    hidden = 182  # the smallest H with 4 * H**2 >= AVX2_LONG_TRAIN_RECURRENT
    assert 4 * hidden**2 >= onednn.AVX2_LONG_TRAIN_RECURRENT > 4 * (hidden - 1) ** 2
    fair = 48  # sequences enough for the rule of large steps at both sizes
    assert fair * (hidden - 1) ** 2 > onednn.OURS_TRAIN_MIN and rows % fair == 0
    steps = rows // fair
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _fit(grad=True, batch_sizes=(fair,) * steps, hidden=hidden) == UNTIL_COMPILED
        assert _fit(grad=True, batch_sizes=(fair,) * (steps - 1), hidden=hidden) == ALWAYS
        assert _fit(grad=True, batch_sizes=(fair,) * 2, hidden=hidden - 1) == UNTIL_COMPILED
        # 23 * 256**2 > OURS_TRAIN_MIN: only the batch rule keeps 23 sequences on oneDNN.
        assert _fit(grad=True, batch_sizes=(batch,) * 64, hidden=256) == UNTIL_COMPILED
        assert _fit(grad=True, batch_sizes=(batch - 1,) * 100, hidden=256) == ALWAYS
        both = (False, True)
        short = (fair,) * (onednn.AVX2_BIDIRECTIONAL_MIN_STEPS - 1)  # 1,392 rows
        assert _fit(grad=True, directions=both, batch_sizes=short, hidden=256) == ALWAYS
        wide = (64,) * (onednn.AVX2_BIDIRECTIONAL_MIN_STEPS - 1)  # 1,856 rows
        assert _fit(grad=True, directions=both, batch_sizes=wide, hidden=256) == UNTIL_COMPILED
        torch.set_num_threads(2)  # parts of OURS_PART_ROWS rows or more
        parts = 2 * OURS_PART_ROWS
        assert _fit(grad=True, batch_sizes=(parts,) * 24, hidden=256) == UNTIL_COMPILED
        assert _fit(grad=True, batch_sizes=(parts,) * 23, hidden=256) == ALWAYS
    finally:
        torch.set_num_threads(threads)


def _one_row_fit(
    steps, features=256, hidden=256, batch=1, grad=False, directions=(False,), num_layers=1
):
    x = torch.zeros(steps * batch, features)
    return onednn_fit(x, [batch] * steps, directions, False, grad, hidden, num_layers)


@needs_onednn
def test_without_avx512_a_batch_of_one_runs_on_our_loops_over_few_steps(monkeypatch, avx2):
    """With AVX2 only, one sequence runs on our loops from AVX2_ONE_ROW_MIN weights in the
    stack's largest layer (4H * (H_in + H)), inference and training, one direction or two:
    at one thread over at most a step per AVX2_ONE_ROW_WEIGHTS_A_STEP weights and
    AVX2_ONE_ROW_MAX_STEPS in all, at two over at most AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS.
    Two sequences, a smaller weight, more threads and AVX-512 keep oneDNN's other rules."""
    assert onednn.AVX2_ONE_ROW_MIN == 4 * 256 * (256 + 256)
    assert onednn.AVX2_ONE_ROW_MIN // onednn.AVX2_ONE_ROW_WEIGHTS_A_STEP == 8
    assert 4 * 512 * (512 + 512) // onednn.AVX2_ONE_ROW_WEIGHTS_A_STEP == 32
    longest = onednn.AVX2_ONE_ROW_MAX_STEPS
    longest_at_two = onednn.AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS
    threads = torch.get_num_threads()
    try:
        for grad in (False, True):
            torch.set_num_threads(1)
            assert _one_row_fit(8, grad=grad) == UNTIL_COMPILED
            both = (False, True)
            assert _one_row_fit(8, grad=grad, directions=both) == UNTIL_COMPILED
            assert _one_row_fit(9, grad=grad) == ALWAYS  # more steps than the weights pay for
            assert _one_row_fit(2, features=255, grad=grad) == ALWAYS  # a smaller weight
            # The largest layer's weights count: a layer above the first reads D * H.
            assert _one_row_fit(2, features=64, grad=grad, num_layers=2) == UNTIL_COMPILED
            assert _one_row_fit(8, features=64, grad=grad, num_layers=2) == UNTIL_COMPILED
            assert _one_row_fit(9, features=64, grad=grad, num_layers=2) == ALWAYS
            wide = {"features": 64, "hidden": 210, "grad": grad, "num_layers": 2}
            assert _one_row_fit(2, **wide, directions=both) == UNTIL_COMPILED  # 4 * 210 * 630
            assert _one_row_fit(2, **wide) == ALWAYS  # 4 * 210 * 420
            assert _one_row_fit(2, batch=2, grad=grad) == ALWAYS
            big = {"features": 512, "hidden": 512, "grad": grad}
            assert _one_row_fit(longest, **big) == UNTIL_COMPILED  # 32 by the weights
            assert _one_row_fit(longest + 1, **big) == ALWAYS
            torch.set_num_threads(2)
            assert _one_row_fit(longest_at_two, grad=grad) == UNTIL_COMPILED
            assert _one_row_fit(longest_at_two + 1, **big) == ALWAYS
            torch.set_num_threads(3)  # unmeasured
            assert _one_row_fit(2, **big) == ALWAYS
        torch.set_num_threads(1)
        monkeypatch.setattr(onednn, "has_avx512", lambda: True)
        assert _one_row_fit(2, grad=False) == ALWAYS
        assert _one_row_fit(2, grad=True) == ALWAYS
    finally:
        torch.set_num_threads(threads)


@needs_onednn
def test_with_avx512_one_direction_training_of_large_steps_needs_no_more_steps(avx512):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _fit(grad=True, batch_sizes=(40, 40), hidden=256) == UNTIL_COMPILED
    finally:
        torch.set_num_threads(threads)


@needs_onednn
def test_without_avx512_bidirectional_training_of_few_steps_stays_on_onednn(avx2):
    """With AVX2 only, bidirectional training runs on our loops from
    AVX2_BIDIRECTIONAL_MIN_STEPS steps; with AVX-512 from two."""
    both, fewest = (False, True), onednn.AVX2_BIDIRECTIONAL_MIN_STEPS
    assert _fit(grad=True, directions=both, batch_sizes=(3,) * fewest) == UNTIL_COMPILED
    assert _fit(grad=True, directions=both, batch_sizes=(3,) * (fewest - 1)) == ALWAYS
    assert _fit(grad=True, directions=both, batch_sizes=(3, 3)) == ALWAYS
    assert _fit(directions=both, batch_sizes=(3,) * fewest) == ALWAYS  # inference


@needs_onednn
def test_with_avx512_bidirectional_training_of_two_steps_runs_on_our_loops(avx512):
    assert _fit(grad=True, directions=(False, True), batch_sizes=(3, 3)) == UNTIL_COMPILED
    assert _fit(grad=True, directions=(False, True), batch_sizes=(3,)) == ALWAYS


@needs_onednn
def test_a_decoder_step_runs_on_our_loops_and_longer_calls_on_onednn(onednn_calls, avx512):
    """Through the layer's direct call: one step from ONE_STEP_OURS_MIN weights is ours
    (read in place), two steps are oneDNN's; both give torch's results."""
    torch.manual_seed(0)
    ours = rnnkit.LSTM(256, 256, num_layers=2)
    theirs = torch.nn.LSTM(256, 256, num_layers=2)
    theirs.load_state_dict(ours.state_dict())
    for steps, expected_calls in ((1, 0), (2, 1)):
        x = torch.randn(steps, 3, 256)
        with torch.no_grad():
            out, (h_n, c_n) = ours(x)
            expected_out, (expected_h_n, expected_c_n) = theirs(x)
        torch.testing.assert_close(out, expected_out)
        torch.testing.assert_close(h_n, expected_h_n)
        torch.testing.assert_close(c_n, expected_c_n)
        assert len(onednn_calls) == expected_calls


@needs_onednn
def test_with_avx2_one_sequence_of_few_steps_runs_on_our_loops(onednn_calls, avx2):
    """Through the layer's direct call, its packed input and in training: one sequence of 8
    steps by 2**19 weights is ours, 9 steps and two sequences are oneDNN's; each gives
    torch's outputs, states and gradients."""
    torch.manual_seed(0)
    ours, theirs = rnnkit.LSTM(256, 256), torch.nn.LSTM(256, 256)
    theirs.load_state_dict(ours.state_dict())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for steps, batch, on_onednn in ((8, 1, False), (9, 1, True), (8, 2, True)):
            del onednn_calls[:]
            x = torch.randn(steps, batch, 256)
            packed = pack_padded_sequence(x, [steps] * batch)
            with torch.no_grad():
                torch.testing.assert_close(ours(x), theirs(x))
                out, states = ours(packed)
                expected_out, expected_states = theirs(packed)
            torch.testing.assert_close(out.data, expected_out.data)
            torch.testing.assert_close(states, expected_states)
            x.requires_grad_()
            expected_x = x.detach().clone().requires_grad_()
            ours(x)[0].pow(2).sum().backward()
            theirs(expected_x)[0].pow(2).sum().backward()
            torch.testing.assert_close(x.grad, expected_x.grad)
            for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
                torch.testing.assert_close(p.grad, q.grad)
                p.grad = q.grad = None
            assert len(onednn_calls) == (3 if on_onednn else 0)
    finally:
        torch.set_num_threads(threads)


@needs_onednn
def test_two_threads_keep_onednn_where_the_loops_cannot_split(monkeypatch, avx512):
    """Without torch's GNU OpenMP team our loops run whole, and oneDNN's two threads win."""
    threads = torch.get_num_threads()
    large_parts = {"batch_sizes": (2 * OURS_PART_ROWS,) * 2, "hidden": 256}
    monkeypatch.setattr(onednn, "torch_openmp_library", lambda: None)
    try:
        torch.set_num_threads(2)
        assert _fit(grad=True, **large_parts) == ALWAYS
        assert _fit(grad=True, directions=(False, True), **large_parts) == UNTIL_COMPILED
    finally:
        torch.set_num_threads(threads)


def test_auto_picks_onednn_where_it_fits_and_explicit_engines_stay(monkeypatch):
    x = torch.zeros(6, 2)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    assert resolve_engine("auto", x, 3, 8, "lstm", ALWAYS) == "onednn"
    assert resolve_engine("auto", x, 3, 8, "lstm", UNTIL_COMPILED) == "compiled"
    assert resolve_engine("auto", x, 3, 8, "lstm", None) == "compiled"
    assert resolve_engine("fused", x, 3, 8, "lstm", ALWAYS) == "fused"
    assert resolve_engine("compiled", x, 3, 8, "lstm", ALWAYS) == "compiled"
    # While the compiled kernels are being prepared, oneDNN beats the torch-ops engine.
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": False)
    assert resolve_engine("auto", x, 3, 8, "lstm", UNTIL_COMPILED) == "onednn"
    assert resolve_engine("auto", x, 3, 8, "lstm", None) == "fused"


@pytest.fixture
def onednn_calls(monkeypatch) -> list:
    """Counts the stacks run on oneDNN; kernels reported ready, engine "auto"."""
    calls = []
    direct, stack, layer = onednn.onednn_lstm, gated_stack.native_stack, gated.native_lstm

    def counted_direct(*args):
        calls.append(tuple(args[0].shape))
        return direct(*args)

    def counted_stack(cell, x, *args):
        calls.append(tuple(x.shape))
        return stack(cell, x, *args)

    def counted_packed(data, *args):
        if isinstance(args[0], torch.Tensor):  # batch_sizes: torch's packed call
            calls.append(tuple(data.shape))
        return layer(data, *args)

    # Three ways in: a layer's batched tensor input, its packed input of equal lengths
    # (torch's packed call, as torch.nn.LSTM makes it), and the general path's packed rows.
    monkeypatch.setattr(gated, "onednn_lstm", counted_direct)
    monkeypatch.setattr(gated, "native_lstm", counted_packed)
    monkeypatch.setattr(gated_stack, "native_stack", counted_stack)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    return calls


def _pair(**kwargs):
    torch.manual_seed(0)
    ours = rnnkit.LSTM(5, 16, **kwargs)
    theirs = torch.nn.LSTM(5, 16, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _run(module, x, hx):
    x = x.clone().requires_grad_()
    hx = tuple(s.clone().requires_grad_() for s in hx)
    out, (h_n, c_n) = module(x, hx)
    (out.sin().sum() + h_n.cos().sum() + (c_n * c_n).sum()).backward()
    return [out, h_n, c_n, x.grad, *(s.grad for s in hx)] + [p.grad for p in module.parameters()]


@needs_onednn
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2}, {"bias": False}, {"batch_first": True}])
def test_dense_float32_training_is_torchs_bit_for_bit(onednn_calls, kwargs):
    ours, theirs = _pair(**kwargs)
    layers = kwargs.get("num_layers", 1)
    x = torch.randn(4, 7, 5) if kwargs.get("batch_first") else torch.randn(7, 4, 5)
    hx = (torch.randn(layers, 4, 16), torch.randn(layers, 4, 16))
    for a, b in zip(_run(ours, x, hx), _run(theirs, x, hx), strict=True):
        assert torch.equal(a, b)
    assert len(onednn_calls) == 1  # the whole stack in one call, as torch.nn.LSTM makes it


@needs_onednn
def test_inference_of_both_directions_is_torchs_bit_for_bit(onednn_calls):
    ours, theirs = _pair(bidirectional=True, num_layers=2)
    x = torch.randn(7, 4, 5)
    with torch.no_grad():
        for a, b in zip(ours(x)[1] + (ours(x)[0],), theirs(x)[1] + (theirs(x)[0],), strict=True):
            assert torch.equal(a, b)
    assert len(onednn_calls) == 2


@needs_onednn
def test_bidirectional_training_and_other_layers_stay_on_our_engine(
    onednn_calls, monkeypatch, avx512
):
    ours, _ = _pair(bidirectional=True)
    ours(torch.randn(7, 4, 5, requires_grad=True))[0].sum().backward()
    ours.double()(torch.randn(7, 4, 5, dtype=torch.float64))
    packed = pack_padded_sequence(torch.randn(7, 3, 5), [7, 5, 2])
    _pair()[0](packed)
    _pair(proj_size=8)[0](torch.randn(7, 4, 5))
    with monkeypatch.context() as switch:
        switch.setattr(torch.backends.mkldnn, "enabled", False)
        _pair()[0](torch.randn(7, 4, 5))
    assert torch.backends.mkldnn.enabled
    assert onednn_calls == []
    # A packed batch of equal lengths is dense: oneDNN runs it, by torch's packed call.
    _pair()[0](pack_padded_sequence(torch.randn(7, 3, 5), [7, 7, 7]))
    assert onednn_calls == [(21, 5)]


@needs_onednn
def test_without_avx512_the_direct_call_counts_the_steps_of_bidirectional_training(
    onednn_calls, avx2
):
    """The layer's direct call (dense input) gives onednn_fit the real number of steps:
    AVX2_BIDIRECTIONAL_MIN_STEPS steps train on our loops, one fewer on oneDNN."""
    ours, _ = _pair(bidirectional=True)
    fewest = onednn.AVX2_BIDIRECTIONAL_MIN_STEPS
    ours(torch.randn(fewest, 4, 5, requires_grad=True))[0].sum().backward()
    assert onednn_calls == []
    ours(torch.randn(fewest - 1, 4, 5, requires_grad=True))[0].sum().backward()
    assert onednn_calls == [(fewest - 1, 4, 5)]


@needs_onednn
def test_strided_input_and_states_are_torchs_bit_for_bit(onednn_calls):
    """A view with strides of its own (a slice of a wider tensor) and states given as
    transposed views go through unchanged."""
    ours, theirs = _pair(batch_first=True)
    x = torch.randn(4, 7, 9)[:, :, 2:7]  # (N, L, H_in), every row strided
    hx = tuple(torch.randn(4, 1, 16).transpose(0, 1) for _ in range(2))
    for a, b in zip(_run(ours, x, hx), _run(theirs, x, hx), strict=True):
        assert torch.equal(a, b)
    assert len(onednn_calls) == 1


@needs_onednn
def test_dropout_between_layers_draws_torchs_masks(onednn_calls):
    """The stack is torch's one call, dropout included: the same random state gives
    torch's masks, so a trained stack with dropout is torch's bit for bit."""
    ours, theirs = _pair(num_layers=3, dropout=0.5)
    x = torch.randn(7, 4, 5)
    hx = (torch.randn(3, 4, 16), torch.randn(3, 4, 16))
    torch.manual_seed(1)
    mine = _run(ours, x, hx)
    torch.manual_seed(1)
    for a, b in zip(mine, _run(theirs, x, hx), strict=True):
        assert torch.equal(a, b)
    assert len(onednn_calls) == 1


@needs_onednn
@pytest.mark.parametrize("kwargs", [{}, {"batch_first": True, "num_layers": 2}])
def test_batched_input_without_states_goes_straight_to_torch(onednn_calls, kwargs):
    """The common call, a batched tensor and no states, makes torch's own call on the
    input as given (no packed rows): outputs and gradients are nn.LSTM's."""
    ours, theirs = _pair(**kwargs)
    x = torch.randn(4, 7, 5) if kwargs.get("batch_first") else torch.randn(7, 4, 5)
    results = []
    for module in (ours, theirs):
        xg = x.clone().requires_grad_()
        out, (h_n, c_n) = module(xg)
        (out.sin().sum() + h_n.cos().sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, xg.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    assert onednn_calls == [tuple(x.shape)]


@needs_onednn
def test_inputs_the_direct_call_declines_get_the_general_paths_checks(onednn_calls):
    """Unbatched input and states as a list still run on oneDNN (through the general
    path or the direct one); wrong states, dtypes and sizes raise torch's messages."""
    ours, theirs = _pair()
    x = torch.randn(7, 5)
    with torch.no_grad():
        assert torch.equal(ours(x)[0], theirs(x)[0])
        hx, x = [torch.randn(1, 4, 16), torch.randn(1, 4, 16)], torch.randn(7, 4, 5)
        assert torch.equal(ours(x, hx)[1][1], theirs(x, tuple(hx))[1][1])
    assert len(onednn_calls) == 2
    wrong_size = re.escape("Expected hidden[0] size (1, 4, 16), got [1, 3, 16]")
    with pytest.raises(RuntimeError, match=wrong_size):
        ours(torch.randn(7, 4, 5), (torch.randn(1, 3, 16), torch.randn(1, 4, 16)))
    with pytest.raises(RuntimeError, match="hx dtype"):
        ours(torch.randn(7, 4, 5), (torch.randn(1, 4, 16).double(), torch.randn(1, 4, 16)))
    with pytest.raises(ValueError, match="RNN input dtype"):
        ours(torch.randn(7, 4, 5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=re.escape("input.size(-1) must be equal to input_size")):
        ours(torch.randn(7, 4, 6))
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        ours(torch.randn(0, 4, 5))
    assert len(onednn_calls) == 2


@pytest.fixture
def packed_calls(monkeypatch) -> dict:
    """Counts torch's packed LSTM calls (the direct one) and the general path's stacks on
    torch's layer; kernels reported ready, engine "auto"."""
    calls = {"packed": [], "general": []}
    layer, stack = gated.native_lstm, gated_stack.native_stack

    def counted_packed(data, *args):
        if isinstance(args[0], torch.Tensor):  # batch_sizes: torch's packed call
            calls["packed"].append(tuple(data.shape))
        return layer(data, *args)

    def counted_stack(cell, x, *args):
        calls["general"].append(tuple(x.shape))
        return stack(cell, x, *args)

    monkeypatch.setattr(gated, "native_lstm", counted_packed)
    monkeypatch.setattr(gated_stack, "native_stack", counted_stack)
    monkeypatch.setattr(warmup, "ready", lambda dtype, cell="rnn": True)
    monkeypatch.setenv("RNNKIT_ENGINE", "auto")
    return calls


def _packed_results(module, packed, hx, train: bool) -> list[torch.Tensor]:
    """Output rows, final states and, in training, every gradient (input, states and
    parameters) of ``module`` on ``packed``."""
    data = packed.data.clone().requires_grad_(train)
    states = None if hx is None else tuple(s.clone().requires_grad_(train) for s in hx)
    with torch.set_grad_enabled(train):
        out, (h_n, c_n) = module(packed._replace(data=data), states)
    results = [out.data, h_n, c_n]
    if train:
        (out.data.sin().sum() + h_n.cos().sum() + (c_n * c_n).sum()).backward()
        grads = [data.grad] + ([] if hx is None else [s.grad for s in states])
        results += grads + [p.grad for p in module.parameters()]
        module.zero_grad()
    return results


@needs_onednn
@pytest.mark.parametrize(
    "kwargs", [{}, {"num_layers": 2, "bidirectional": True}, {"batch_first": True}]
)
def test_packed_sequences_of_equal_lengths_make_torch_s_packed_call_at_any_length(
    packed_calls, avx512, kwargs
):
    """One sequence, or several of equal lengths, unsorted: torch's packed call as
    nn.LSTM makes it (not the general path), past the few-step limits, from zeros and
    from given states, inference and training (bidirectional training excepted: oneDNN's
    rules with AVX-512 give it to our loops), with torch's results bit for bit; unequal
    lengths and oneDNN switched off stay on the general path."""
    ours, theirs = _pair(**kwargs)
    batch_first = kwargs.get("batch_first", False)
    steps, rows = 20, kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    assert steps > native.max_native_steps("lstm")

    def packed_input(lengths):
        x = torch.randn(len(lengths), steps, 5)  # (N, L, H_in)
        x = x if batch_first else x.transpose(0, 1)
        return pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)

    expected = []
    three = packed_input([steps] * 3)
    # sequences of equal lengths in another order: the states follow it
    permuted = three._replace(
        sorted_indices=torch.tensor([2, 0, 1]), unsorted_indices=torch.tensor([1, 2, 0])
    )
    for packed in (packed_input([steps]), three, permuted):
        batch = int(packed.batch_sizes[0])
        hx = (torch.randn(rows, batch, 16), torch.randn(rows, batch, 16))
        for state in (None, hx):
            for train in (False, True):
                mine = _packed_results(ours, packed, state, train)
                pairs = zip(mine, _packed_results(theirs, packed, state, train), strict=True)
                if train and ours.bidirectional:  # our loops' (oneDNN's rules, AVX-512)
                    assert all(torch.allclose(a, b, atol=1e-5) for a, b in pairs)
                    continue
                assert all(torch.equal(a, b) for a, b in pairs)
                expected.append(tuple(packed.data.shape))
    assert packed_calls == {"packed": expected, "general": []}
    unequal = packed_input([steps, steps - 3, steps])
    _packed_results(ours, unequal, None, False)
    with pytest.MonkeyPatch.context() as switch:
        switch.setattr(torch.backends.mkldnn, "enabled", False)
        _packed_results(ours, packed_input([steps]), None, False)
    assert packed_calls["packed"] == expected


@needs_onednn
def test_packed_sequences_of_equal_lengths_follow_onednn_s_training_rules(packed_calls, avx2):
    """The direct packed call asks oneDNN's rules as the general path does: without
    AVX-512, bidirectional training of AVX2_BIDIRECTIONAL_MIN_STEPS steps runs on our
    loops, one step fewer on torch's packed call."""
    ours, _ = _pair(bidirectional=True)
    fewest = onednn.AVX2_BIDIRECTIONAL_MIN_STEPS
    for steps in (fewest, fewest - 1):
        packed = pack_padded_sequence(torch.randn(steps, 2, 5), [steps, steps])
        _packed_results(ours, packed, None, True)
    assert packed_calls == {"packed": [((fewest - 1) * 2, 5)], "general": []}


def test_one_sequence_in_its_only_place_is_not_copied_to_sort_its_states():
    """A batch of one, sorted_indices [0]: the states as they are (index_select would copy
    them); any other order is index_select's, its errors included."""
    states = (torch.randn(2, 1, 4), torch.randn(2, 1, 3))
    same = recurrent.in_order(states, torch.tensor([0]))
    assert all(a is b for a, b in zip(same, states, strict=True))
    pair = (torch.randn(2, 2, 4),)
    assert torch.equal(recurrent.in_order(pair, torch.tensor([1, 0]))[0], pair[0].flip(1))
    assert recurrent.in_order(pair, torch.tensor([0]))[0].shape == (2, 1, 4)  # not skipped
    with pytest.raises(RuntimeError, match="out of DATA bounds"):
        recurrent.in_order(states, torch.tensor([1]))


def test_packed_output_takes_the_inputs_indices_as_torch_s_constructor_would():
    """The direct calls' output keeps the input's batch sizes and indices; where the input
    has no unsorted_indices (built by hand), they are sorted_indices inverted, as
    PackedSequence's constructor makes them for torch's layers."""
    data, batch_sizes, out = torch.randn(6, 4), torch.tensor([3, 3]), torch.randn(6, 5)
    built = PackedSequence(data, batch_sizes, torch.tensor([2, 0, 1]))
    by_hand = PackedSequence._make((data, batch_sizes, torch.tensor([2, 0, 1]), None))
    for packed in (built, by_hand):
        result = recurrent.packed_like(out, packed)
        assert result.data is out and result.batch_sizes is batch_sizes
        assert torch.equal(result.unsorted_indices, torch.tensor([1, 2, 0]))
    plain = recurrent.packed_like(out, PackedSequence(data, batch_sizes))
    assert plain.sorted_indices is None and plain.unsorted_indices is None
