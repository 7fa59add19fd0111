"""rnnkit.RNN against torch.nn.RNN holding the same weights.

torch is the oracle: outputs, final states and the gradients of input, h_0 and
every parameter must agree, float64 to 1e-9 and float32 to torch's default
tolerances, over random configurations of every constructor argument and every
input layout (batched, unbatched, packed sorted and unsorted). Long sequences
(thousands of steps) are checked separately; see the note before those tests.

Error paths are in test_errors.py and rnnkit.RNNCell in test_cell.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

# ---------------------------------------------------------------------------
# Random configurations


@dataclass
class Case:
    """One drawn configuration: constructor kwargs plus the input it is fed."""

    kwargs: dict
    training: bool
    layout: str  # "batched" | "unbatched" | "packed_sorted" | "packed_unsorted"
    L: int
    N: int
    lengths: list[int] | None
    with_hx: bool
    seed: int
    scale: float  # weights are U(-scale, scale)

    @property
    def D(self) -> int:
        return 2 if self.kwargs["bidirectional"] else 1

    @property
    def dtype(self) -> torch.dtype:
        return self.kwargs["dtype"]


@st.composite
def rnn_cases(draw) -> Case:
    num_layers = draw(st.integers(1, 3))
    hidden_size = draw(st.integers(1, 5))
    nonlinearity = draw(st.sampled_from(["tanh", "relu"]))
    training = draw(st.booleans())
    if training:
        # Only the deterministic dropouts can be compared with torch: 0 keeps
        # everything, 1 zeroes every inter-layer activation.
        dropout = draw(st.sampled_from([0.0, 1.0]))
    else:
        dropout = draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
    kwargs = dict(
        input_size=draw(st.integers(1, 5)),
        hidden_size=hidden_size,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        dropout=dropout,
        bidirectional=draw(st.booleans()),
        device=draw(st.sampled_from([None, "cpu"])),
        dtype=draw(st.sampled_from([torch.float64, torch.float32])),
    )
    layout = draw(st.sampled_from(["batched", "unbatched", "packed_sorted", "packed_unsorted"]))
    L = draw(st.integers(1, 6))
    N = 1 if layout == "unbatched" else draw(st.integers(1, 4))
    lengths = None
    if layout.startswith("packed"):
        lengths = draw(st.lists(st.integers(1, L), min_size=N, max_size=N))
        if layout == "packed_sorted":
            lengths.sort(reverse=True)
    # relu is unbounded: keep weights modest so three layers stay well scaled.
    scale = hidden_size**-0.5 * (1.0 if nonlinearity == "tanh" else 0.5)
    return Case(
        kwargs=kwargs,
        training=training,
        layout=layout,
        L=L,
        N=N,
        lengths=lengths,
        with_hx=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
        scale=scale,
    )


def make_tensors(case: Case):
    """Input, h_0 and upstream gradients for `case`, with the shapes the contract promises."""
    k = case.kwargs
    gen = torch.Generator().manual_seed(case.seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=case.dtype)

    H_in, H_out, D, L, N = k["input_size"], k["hidden_size"], case.D, case.L, case.N
    if case.layout == "unbatched":
        x = randn(L, H_in)  # (L, H_in) whatever batch_first says
        hx = randn(D * k["num_layers"], H_out) if case.with_hx else None
        g_out = randn(L, D * H_out)
        g_hn = randn(D * k["num_layers"], H_out)
    else:
        x = randn(N, L, H_in) if k["batch_first"] else randn(L, N, H_in)
        hx = randn(D * k["num_layers"], N, H_out) if case.with_hx else None
        if case.lengths is not None:
            g_out = randn(sum(case.lengths), D * H_out)  # packed data
        elif k["batch_first"]:
            g_out = randn(N, L, D * H_out)
        else:
            g_out = randn(L, N, D * H_out)
        g_hn = randn(D * k["num_layers"], N, H_out)
    return x, hx, g_out, g_hn


def check_case(case: Case, rnn_pair, run_pair, check_runs) -> None:
    theirs, ours = rnn_pair(seed=case.seed, scale=case.scale, **case.kwargs)
    theirs.train(case.training)
    ours.train(case.training)
    x, hx, g_out, g_hn = make_tensors(case)
    pack = {}
    if case.lengths is not None:
        pack = dict(pack_lengths=case.lengths, enforce_sorted=case.layout == "packed_sorted")
    expected, actual = run_pair(theirs, ours, x, hx, g_out, g_hn, **pack)
    check_runs(actual, expected)


# ---------------------------------------------------------------------------
# Property: rnnkit.RNN == torch.nn.RNN


# The engine fixture is set once per test, for all examples: that is intended.
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rnn_cases())
def test_rnn_matches_torch(case, engine, rnn_pair, run_pair, check_runs):
    check_case(case, rnn_pair, run_pair, check_runs)


@pytest.mark.parametrize("layout", ["batched", "unbatched", "packed_sorted", "packed_unsorted"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_torch_full_config(
    layout, nonlinearity, engine, rnn_pair, run_pair, check_runs
):
    """Every feature switched on at once, float64, in training mode with dropout=1."""
    case = Case(
        kwargs=dict(
            input_size=3,
            hidden_size=4,
            num_layers=3,
            nonlinearity=nonlinearity,
            bias=True,
            batch_first=True,
            dropout=1.0,
            bidirectional=True,
            dtype=torch.float64,
        ),
        training=True,
        layout=layout,
        L=5,
        N=1 if layout == "unbatched" else 4,
        lengths={"packed_sorted": [5, 4, 4, 2], "packed_unsorted": [2, 5, 1, 4]}.get(layout),
        with_hx=True,
        seed=1234,
        scale=0.5 if nonlinearity == "tanh" else 0.25,
    )
    check_case(case, rnn_pair, run_pair, check_runs)


def test_dropout_one_zeroes_upper_layer_inputs(engine, rnn_pair):
    """Guards the oracle's train-mode cases: with dropout=1 the layers above the first see zeros.

    So h_n of layer 1 does not depend on the input at all, and equals a run on zeros.
    """
    _, ours = rnn_pair(input_size=3, hidden_size=4, num_layers=2, dropout=1.0, dtype=torch.float64)
    ours.train()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    _, h_n = ours(x)
    _, h_n_zero = ours(torch.zeros_like(x))
    torch.testing.assert_close(h_n[1], h_n_zero[1], rtol=0, atol=0)
    assert not torch.equal(h_n[0], h_n_zero[0])


# ---------------------------------------------------------------------------
# Long sequences: thousands of steps expose accumulation error in the engine.
#
# float64 is held to 1e-9 everywhere. In float32, everything computed per step
# (output, h_n, the gradients of input and h_0) is held to torch's default
# elementwise tolerances against torch in float32: drift in the recurrence
# shows there. The parameter gradients are sums over L * N steps, and torch's
# float32 summation order is no better than ours: it computes bias_ih.grad and
# bias_hh.grad, mathematically equal, in two ways that differ by up to 1e-4
# here, well outside the default tolerance on entries of size 1; an engine that
# is exactly torch in another order fails that comparison too. So in float32
# both are measured against the float64 oracle (torch on the same weights), and
# ours may be off by at most ACCURACY_FACTOR times torch's own error, or by
# torch's default tolerance at the gradient's scale. Two correct orders land
# up to about 4x apart on one tensor here; a lost step's contribution (about
# 1e-2) or a half-precision accumulator would be off by far more.

LONG_L = 2000
ACCURACY_FACTOR = 8


def check_long(theirs, ours, x, hx, g_out, g_hn, fixtures, **pack) -> None:
    run_module, run_pair, check_runs = fixtures
    expected, actual = run_pair(theirs, ours, x, hx, g_out, g_hn, **pack)
    if x.dtype == torch.float64:
        check_runs(actual, expected)
        return
    check_runs(actual, expected, param_grads=False)
    oracle = copy.deepcopy(theirs).double()
    exact = run_module(oracle, x.double(), hx.double(), g_out.double(), g_hn.double(), **pack)
    for name, grad in exact.param_grads.items():
        err_ours = (actual.param_grads[name].double() - grad).abs().max().item()
        err_torch = (expected.param_grads[name].double() - grad).abs().max().item()
        scale = grad.abs().max().item()
        default_tolerance = 1e-5 + 1.3e-6 * scale  # torch's float32 atol + rtol * scale
        assert err_ours <= max(ACCURACY_FACTOR * err_torch, default_tolerance), (
            f"{name}.grad in float32 is off the float64 oracle by {err_ours:.3g}, "
            f"torch by {err_torch:.3g} (largest entry {scale:.3g})"
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_long_sequence_matches_torch(
    nonlinearity, dtype, fused, rnn_pair, run_module, run_pair, check_runs
):
    N, H_in, H_out = 3, 2, 4
    theirs, ours = rnn_pair(
        seed=7,
        scale=0.3 * H_out**-0.5,
        input_size=H_in,
        hidden_size=H_out,
        nonlinearity=nonlinearity,
        dtype=dtype,
    )
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(LONG_L, N, H_in, generator=gen, dtype=dtype)
    hx = torch.randn(1, N, H_out, generator=gen, dtype=dtype)
    g_out = torch.randn(LONG_L, N, H_out, generator=gen, dtype=dtype)
    g_hn = torch.randn(1, N, H_out, generator=gen, dtype=dtype)
    check_long(theirs, ours, x, hx, g_out, g_hn, (run_module, run_pair, check_runs))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_long_bidirectional_packed_matches_torch(
    dtype, fused, rnn_pair, run_module, run_pair, check_runs
):
    lengths = [900, LONG_L, 3, 1500]  # unsorted, and very unequal
    N, H_in, H_out = len(lengths), 2, 3
    theirs, ours = rnn_pair(
        seed=9,
        scale=0.3 * H_out**-0.5,
        input_size=H_in,
        hidden_size=H_out,
        num_layers=2,
        bidirectional=True,
        batch_first=True,
        dtype=dtype,
    )
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(N, LONG_L, H_in, generator=gen, dtype=dtype)
    hx = torch.randn(4, N, H_out, generator=gen, dtype=dtype)
    g_out = torch.randn(sum(lengths), 2 * H_out, generator=gen, dtype=dtype)
    g_hn = torch.randn(4, N, H_out, generator=gen, dtype=dtype)
    pack = dict(pack_lengths=lengths, enforce_sorted=False)
    check_long(theirs, ours, x, hx, g_out, g_hn, (run_module, run_pair, check_runs), **pack)


# ---------------------------------------------------------------------------
# The backward pass walks through time in chunks (rnnkit.engine.layer) only
# above a buffer size the drawn cases never reach. Forcing chunks of a step or
# two puts chunk boundaries everywhere: sequences that end, start (in reverse)
# or run on across a boundary, in every layout.


def _force_backward_chunks(monkeypatch, chunks: int) -> None:
    from rnnkit.engine import layer

    monkeypatch.setattr(layer, "_CHUNKED_BACKWARD_BYTES", 0)
    monkeypatch.setattr(layer, "_BACKWARD_CHUNKS", chunks)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rnn_cases(), chunks=st.integers(2, 7))
def test_rnn_matches_torch_with_the_backward_in_chunks(
    case, chunks, fused, monkeypatch, rnn_pair, run_pair, check_runs
):
    _force_backward_chunks(monkeypatch, chunks)
    check_case(case, rnn_pair, run_pair, check_runs)


def test_the_backward_pass_runs_in_the_chunks_it_is_given(fused, monkeypatch, rnn_pair):
    """Guards the property above: each direction of each layer walks 3 chunks,
    of equal lengths too (there the compiled engine walks them in one call
    with a buffer of the longest chunk)."""
    from rnnkit import compiled
    from rnnkit.engine import layer

    _force_backward_chunks(monkeypatch, 3)
    chunk_steps, equal_lengths_chunk_steps = [], []
    run_chunk, run_equal_lengths = layer._pre_activation_grad, compiled.backward_equal_lengths

    def spy(engine, d, grad_out, grad_h_n, out, w_hh, sizes, *rest):
        chunk_steps.append(len(sizes))
        return run_chunk(engine, d, grad_out, grad_h_n, out, w_hh, sizes, *rest)

    def spy_equal_lengths(d, grad_out, grad_h_n, x, out, h0, *rest):
        equal_lengths_chunk_steps.append(d.size(0) // h0.size(0))
        return run_equal_lengths(d, grad_out, grad_h_n, x, out, h0, *rest)

    monkeypatch.setattr(layer, "_pre_activation_grad", spy)
    monkeypatch.setattr(compiled, "backward_equal_lengths", spy_equal_lengths)
    _, ours = rnn_pair(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(7, 2, 3)
    lengths = torch.tensor([7, 5])
    out, h_n = ours(x)
    (out.sum() + h_n.sum()).backward()
    packed_out, h_n = ours(pack_padded_sequence(x, lengths))  # lengths differ
    (packed_out.data.sum() + h_n.sum()).backward()
    # 7 steps in 3 chunks, 2 layers x 2 directions, per input
    if fused == "compiled":
        assert equal_lengths_chunk_steps == [3] * 4  # chunks of at most 3 steps
        assert sorted(chunk_steps) == sorted([2, 2, 3] * 4)  # the packed input's
    else:
        assert equal_lengths_chunk_steps == []
        assert sorted(chunk_steps) == sorted([2, 2, 3] * 8)
