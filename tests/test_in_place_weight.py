"""GRU and LSTM inference at batch 1 (training too without AVX-512), and of a single step
at any batch, reads the recurrent weight in place, without a transposed copy
(rnnkit.engine.recurrent_operand.reads_in_place): its results are torch's, and only those
calls take that path."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnkit
from rnnkit.compiled import blas
from rnnkit.compiled import gated as compiled_gated
from rnnkit.engine import parallel, recurrent_operand

CELLS = ("gru", "lstm")
GATES = {"gru": 3, "lstm": 4}


@pytest.fixture
def in_place_calls(monkeypatch):
    """The compiled GRU and LSTM loops' ``w_in_place`` of every call, on the compiled
    engine."""
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    seen = []

    def spy_on(name: str, position: int) -> None:
        forward = getattr(compiled_gated, name)

        def spy(*args, **kwargs):
            seen.append(kwargs.get("w_in_place", len(args) > position and args[position]))
            return forward(*args, **kwargs)

        monkeypatch.setattr(compiled_gated, name, spy)

    spy_on("gru_forward", 12)
    spy_on("lstm_forward", 14)
    return seen


def _pair(cell, dtype, input_size=5, hidden=7, **kwargs):
    torch.manual_seed(0)
    name = {"gru": "GRU", "lstm": "LSTM"}[cell]
    ours = getattr(rnnkit, name)(input_size, hidden, **kwargs).to(dtype)
    theirs = getattr(torch.nn, name)(input_size, hidden, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _states(layer, batch, dtype):
    """Random initial states of ``layer`` for ``batch`` sequences: ``h0`` or ``(h0, c0)``."""
    rows = layer.num_layers * (2 if layer.bidirectional else 1)
    h0 = torch.randn(rows, batch, getattr(layer, "proj_size", 0) or layer.hidden_size,
                     dtype=dtype)  # fmt: skip
    if isinstance(layer, rnnkit.LSTM):
        return h0, torch.randn(rows, batch, layer.hidden_size, dtype=dtype)
    return h0


def _assert_torchs(result, expected, dtype, at_scale=False):
    """torch's float32 tolerance, with ``at_scale`` its relative part taken of the
    tensor's largest entry: a weight's gradient sums many rows, in another order."""
    tolerance = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {}
    if at_scale and dtype == torch.float32:
        tolerance = {"atol": 1e-5 + 1.3e-6 * expected.abs().max().item(), "rtol": 1.3e-6}
    torch.testing.assert_close(result, expected, **tolerance)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_layers": 2, "bidirectional": True}, {"bias": False, "batch_first": True}],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_one_inference_is_torchs(in_place_calls, cell, kwargs, dtype):
    ours, theirs = _pair(cell, dtype, **kwargs)
    x = torch.randn(9, 5, dtype=dtype)  # unbatched, then as a batch of 1
    with torch.no_grad():
        for args in [(x,), (x.unsqueeze(0 if ours.batch_first else 1), _states(ours, 1, dtype))]:
            _assert_torchs(ours(*args), theirs(*args), dtype)
    assert in_place_calls and all(in_place_calls)


@pytest.mark.parametrize("cell", CELLS)
def test_a_packed_single_sequence_reads_in_place_too(in_place_calls, cell):
    ours, theirs = _pair(cell, torch.float64, bidirectional=True)
    packed = pack_sequence([torch.randn(6, 5, dtype=torch.float64)])
    with torch.no_grad():
        out, state = ours(packed)
        expected_out, expected_state = theirs(packed)
    _assert_torchs(out.data, expected_out.data, torch.float64)
    _assert_torchs(state, expected_state, torch.float64)
    assert in_place_calls == [True, True]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_at_any_batch_reads_in_place(in_place_calls, cell, dtype):
    """A step-by-step decoder's call: the copy would cost more than the step."""
    ours, theirs = _pair(cell, dtype, num_layers=2)
    x, states = torch.randn(1, 6, 5, dtype=dtype), _states(ours, 6, dtype)
    with torch.no_grad():
        _assert_torchs(ours(x, states), theirs(x, states), dtype)
    assert in_place_calls == [True, True]


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_of_a_projected_lstm_reads_in_place(in_place_calls, dtype):
    ours, theirs = _pair("lstm", dtype, proj_size=3, bidirectional=True)
    x, states = torch.randn(1, 4, 5, dtype=dtype), _states(ours, 4, dtype)
    with torch.no_grad():
        _assert_torchs(ours(x, states), theirs(x, states), dtype)
    assert in_place_calls == [True, True]  # a call per direction


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_at_two_threads_runs_whole_and_in_place(in_place_calls, cell):
    """The batch's parts would read the copy; one step runs as one part."""
    threads = torch.get_num_threads()
    ours, theirs = _pair(cell, torch.float32, input_size=16, hidden=256)
    x, states = torch.randn(1, 64, 16), _states(ours, 64, torch.float32)
    try:
        torch.set_num_threads(2)
        assert parallel.dense_parts([64], 64, 1 << 20, x) == [(0, 64)]
        with torch.no_grad():
            _assert_torchs(ours(x, states), theirs(x, states), torch.float32)
    finally:
        torch.set_num_threads(threads)
    assert in_place_calls == [True]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_at_batch_one_with_a_wide_weight_is_torchs(in_place_calls, cell, dtype):
    """G H above blas.ONE_ROW_WIDE columns: the in-place product goes to the large library."""
    hidden = blas.ONE_ROW_WIDE // GATES[cell] + 1
    ours, theirs = _pair(cell, dtype, hidden=hidden)
    x, states = torch.randn(1, 1, 5, dtype=dtype), _states(ours, 1, dtype)
    with torch.no_grad():
        _assert_torchs(ours(x, states), theirs(x, states), dtype)
    assert in_place_calls == [True]


@pytest.mark.parametrize("cell, hidden", [("gru", 296), ("lstm", 256)])
def test_batch_one_with_products_for_brgemm_uses_the_copy(
    in_place_calls, monkeypatch, cell, hidden
):
    """At batch 1 from BRGEMM_MIN multiply-adds a step (G H**2 >= 2**18 here) the copy's
    products run on brgemm, 2-5x faster than reading in place over 16 steps or more
    (AVX-512; see the next test for AVX2)."""
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: True)
    assert recurrent_operand.BRGEMM_MIN == blas.BRGEMM_MIN
    assert GATES[cell] * hidden**2 >= blas.BRGEMM_MIN > GATES[cell] * (hidden - 1) ** 2
    ours, _ = _pair(cell, torch.float32, hidden=hidden)
    with torch.no_grad():
        ours(torch.randn(3, 1, 5))
        ours(torch.randn(1, 1, 5))
    assert in_place_calls == [False, True]


@pytest.mark.parametrize("cell, hidden", [("gru", 210), ("lstm", 182)])
def test_with_avx2_inference_of_few_rows_reads_a_large_weight_in_place(
    in_place_calls, monkeypatch, cell, hidden
):
    """Without AVX-512, inference reads a weight of at least 2**17 elements in place over
    up to 256 rows of up to 12 steps (here 12 x 2, and 3 x 1), 16 from a batch of four
    (16 x 16) or for sequences of unequal lengths (16 and 9 steps), but for a batch of three
    (dense or packed);
    more steps or rows, a smaller weight, training, and AVX-512 use the copy. Results are
    torch's."""
    minimum = recurrent_operand.AVX2_IN_PLACE_MIN_WEIGHT
    assert GATES[cell] * hidden**2 >= minimum > GATES[cell] * (hidden - 1) ** 2
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: False)
    ours, theirs = _pair(cell, torch.float64, hidden=hidden)
    reads = {(12, 2): True, (3, 1): True, (13, 2): False, (8, 33): False, (16, 16): True,
             (17, 4): False, (16, 17): False, (12, 3): True, (13, 3): False}  # fmt: skip
    unequal = {(16, 9): True, (17, 9): False, (13, 12, 11): False}  # lengths: reads in place
    with torch.no_grad():
        for steps, batch in reads:
            x = torch.randn(steps, batch, 5, dtype=torch.float64)
            _assert_torchs(ours(x), theirs(x), torch.float64)
        for lengths in unequal:
            x = pack_sequence([torch.randn(n, 5, dtype=torch.float64) for n in lengths])
            _assert_torchs(ours(x)[0].data, theirs(x)[0].data, torch.float64)
    assert in_place_calls == list(reads.values()) + list(unequal.values())
    in_place_calls.clear()
    out, _ = ours(torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True))
    out.sum().backward()  # training
    smaller, _ = _pair(cell, torch.float64, hidden=hidden - 1)
    with torch.no_grad():
        smaller(torch.randn(4, 2, 5, dtype=torch.float64))
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: True)
    with torch.no_grad():
        ours(torch.randn(4, 2, 5, dtype=torch.float64))
    assert in_place_calls == [False, False, False]


@pytest.mark.parametrize("cell", CELLS)
def test_larger_batches_and_training_use_the_transposed_copy(in_place_calls, cell):
    ours, theirs = _pair(cell, torch.float64)
    with torch.no_grad():
        ours(torch.randn(4, 2, 5, dtype=torch.float64))
    assert in_place_calls == [False]
    x = torch.randn(4, 1, 5, dtype=torch.float64, requires_grad=True)  # training
    out, _ = ours(x)
    out.sum().backward()
    assert in_place_calls == [False, False]
    expected_x = x.detach().clone().requires_grad_()
    theirs(expected_x)[0].sum().backward()
    _assert_torchs(x.grad, expected_x.grad, torch.float64)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert p.grad is not None, name
        _assert_torchs(p.grad, q.grad, torch.float64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_with_avx2_a_batch_of_one_reads_in_place_at_any_length(
    in_place_calls, monkeypatch, cell, bidirectional
):
    """Without AVX-512, a batch of one reads a weight of BRGEMM_MIN elements or more (G H**2,
    whose copy's one-row products would run on brgemm) in place over any number of steps,
    in inference and training (here 40 steps). Two sequences, training with a smaller
    weight, and AVX-512 keep the copy. Outputs and every gradient are torch's."""
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: False)
    hidden = 296
    assert GATES[cell] * hidden**2 >= recurrent_operand.BRGEMM_MIN
    ours, theirs = _pair(cell, torch.float64, hidden=hidden, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    x = torch.randn(40, 1, 5, dtype=torch.float64, requires_grad=True)
    states = _states(ours, 1, torch.float64)
    with torch.no_grad():
        _assert_torchs(ours(x, states), theirs(x, states), torch.float64)
    assert in_place_calls == [True] * directions
    expected_x = x.detach().clone().requires_grad_()
    out, _ = ours(x, states)
    out.pow(2).sum().backward()
    theirs(expected_x, states)[0].pow(2).sum().backward()
    assert in_place_calls[directions:] == [True] * directions  # training
    _assert_torchs(x.grad, expected_x.grad, torch.float64)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert p.grad is not None, name
        _assert_torchs(p.grad, q.grad, torch.float64)
    del in_place_calls[:]
    with torch.no_grad():
        ours(torch.randn(40, 2, 5, dtype=torch.float64))
    smaller, _ = _pair(cell, torch.float64, hidden=7, bidirectional=bidirectional)
    smaller(torch.randn(40, 1, 5, dtype=torch.float64, requires_grad=True))[0].sum().backward()
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: True)
    with torch.no_grad():
        ours(torch.randn(40, 1, 5, dtype=torch.float64))
    ours(torch.randn(40, 1, 5, dtype=torch.float64, requires_grad=True))[0].sum().backward()
    assert in_place_calls == [False] * 4 * directions


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_training_of_one_step_reads_in_place(in_place_calls, cell, bidirectional):
    """The copy costs more than the step in training too; the gradients are torch's."""
    ours, theirs = _pair(cell, torch.float64, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    states = _states(ours, 3, torch.float64)
    expected_x = x.detach().clone().requires_grad_()
    out, _ = ours(x, states)
    out.pow(2).sum().backward()
    theirs(expected_x, states)[0].pow(2).sum().backward()
    assert in_place_calls == [True] * 2 * (2 if bidirectional else 1)
    _assert_torchs(x.grad, expected_x.grad, torch.float64)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert p.grad is not None, name
        _assert_torchs(p.grad, q.grad, torch.float64)


@pytest.fixture
def parts_and_in_place(monkeypatch):
    """``(parts, w_in_place)`` of every call of the compiled GRU and LSTM loops, on the
    compiled engine at two threads (where the batch may be split); skipped where the
    loops cannot split it."""
    if not compiled_gated.team_available():
        pytest.skip("the compiled loops split a batch only on torch's GNU OpenMP runtime")
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    seen = []
    for name in ("gru_forward", "lstm_forward"):
        forward = getattr(compiled_gated, name)

        def spy(*args, _forward=forward, **kwargs):
            call = inspect.signature(_forward).bind(*args, **kwargs).arguments
            seen.append((len(call["parts"]), call["w_in_place"]))
            return _forward(*args, **kwargs)

        monkeypatch.setattr(compiled_gated, name, spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield seen
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cell, hidden", [("gru", 256), ("lstm", 222)])
def test_with_avx2_at_two_threads_a_large_weight_runs_whole_and_in_place(
    parts_and_in_place, monkeypatch, cell, hidden
):
    """Without AVX-512, at two threads, inference over few rows and a weight of at least
    3 * 2**16 elements (a GRU's at H = 256) runs the batch whole, reading the weight in
    place, from 8 sequences (rnnkit.engine.recurrent_operand.inference_parts); a smaller
    batch or weight, more steps, and AVX-512 split it in two parts that read the copy.
    Results are torch's."""
    minimum = recurrent_operand.AVX2_WHOLE_MIN_WEIGHT
    assert GATES[cell] * hidden**2 >= minimum > GATES[cell] * (hidden - 1) ** 2
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: False)
    ours, theirs = _pair(cell, torch.float32, hidden=hidden)
    smaller, smaller_theirs = _pair(cell, torch.float32, hidden=hidden - 1)
    with torch.no_grad():
        for layers, steps, batch in (
            ((ours, theirs), 12, 8),
            ((ours, theirs), 12, 7),
            ((ours, theirs), 13, 8),
            ((smaller, smaller_theirs), 12, 8),
        ):
            x = torch.randn(steps, batch, 5)
            _assert_torchs(layers[0](x), layers[1](x), torch.float32)
        monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: True)
        ours(torch.randn(12, 8, 5))
    whole, split = (1, True), (2, False)
    assert parts_and_in_place == [whole, split, split, split, split]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}])
def test_elman_calls_of_few_rows_by_a_large_weight_are_torchs(monkeypatch, dtype, kwargs):
    """Without AVX-512 the compiled Elman loop reads a weight of at least
    rnnkit.compiled.kernels.AVX2_IN_PLACE_MIN_WEIGHT elements in place over few steps of
    few sequences (decided inside the kernel, by the CPU): those calls, dense and packed
    in unsorted lengths, from given states, give torch's outputs and every gradient."""
    from rnnkit.compiled import kernels

    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    hidden = 256
    assert hidden**2 >= kernels.AVX2_IN_PLACE_MIN_WEIGHT
    torch.manual_seed(0)
    ours = rnnkit.RNN(5, hidden, **kwargs).to(dtype)
    theirs = torch.nn.RNN(5, hidden, **kwargs).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    rows = ours.num_layers * (2 if ours.bidirectional else 1)
    steps, batch = kernels.AVX2_IN_PLACE_MAX_STEPS, kernels.AVX2_IN_PLACE_MAX_BATCH
    sequences = [torch.randn(length, 5, dtype=dtype) for length in (3, steps, 5, steps)]
    # in place at the limits; a copy one sequence past them
    inputs = (
        torch.randn(steps, batch, 5, dtype=dtype),
        torch.randn(steps, batch + 1, 5, dtype=dtype),
        pack_sequence(sequences, False),
    )
    for x in inputs:
        packed = isinstance(x, torch.nn.utils.rnn.PackedSequence)
        batch = int(x.batch_sizes[0]) if packed else x.size(1)
        h0 = torch.randn(rows, batch, hidden, dtype=dtype)
        results = []
        for module in (ours, theirs):
            module.zero_grad()
            data = x.data.clone().requires_grad_()
            given = x._replace(data=data) if packed else data
            state = h0.clone().requires_grad_()
            out, h_n = module(given, state)
            out = out.data if packed else out
            (out.sin().sum() + h_n.cos().sum()).backward()
            results.append(
                [out, h_n, data.grad, state.grad] + [p.grad for p in module.parameters()]
            )
        for result, expected in zip(*results, strict=True):  # 16-17 rows a step: at scale
            _assert_torchs(result, expected, dtype, at_scale=not packed)


@pytest.mark.parametrize("lengths", [(16, 16, 16), (16, 12, 9), (16, 16, 16, 16), (16, 16)])
def test_elman_long_calls_of_few_sequences_by_a_large_weight_are_torchs(monkeypatch, lengths):
    """Without AVX-512, over AVX2_LONG_IN_PLACE_MAX_STEPS steps at H = 512, 2-4 sequences
    read W_hh in place, but 3 of equal length its transposed copy: each gives torch's
    outputs and gradients (packed sequences of equal lengths take a dense batch's rule)."""
    from rnnkit.compiled import kernels

    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    hidden = 512
    assert hidden**2 >= kernels.AVX2_LONG_IN_PLACE_MIN_WEIGHT
    assert max(lengths) == kernels.AVX2_LONG_IN_PLACE_MAX_STEPS
    torch.manual_seed(0)
    ours = rnnkit.RNN(5, hidden)
    theirs = torch.nn.RNN(5, hidden)
    theirs.load_state_dict(ours.state_dict())
    x = pack_sequence([torch.randn(length, 5) for length in lengths], enforce_sorted=False)
    results = []
    for module in (ours, theirs):
        module.zero_grad()
        data = x.data.clone().requires_grad_()
        out, h_n = module(x._replace(data=data))
        (out.data.sin().sum() + h_n.cos().sum()).backward()
        results.append([out.data, h_n, data.grad] + [p.grad for p in module.parameters()])
    for result, expected in zip(*results, strict=True):
        _assert_torchs(result, expected, torch.float32, at_scale=True)
