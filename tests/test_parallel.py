"""The compiled GRU and LSTM loops split a float32 batch of equal-length sequences over
torch's OpenMP team (rnnkit.engine.parallel decides the parts, rnnkit.compiled.team runs
them): the parts, the checks, and that split runs give torch's results."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.compiled import gated as compiled_gated
from rnnkit.compiled import gated_kernels as team_kernels
from rnnkit.compiled import team, warmup
from rnnkit.engine import gru as gru_engine
from rnnkit.engine import lstm as lstm_engine
from rnnkit.engine import parallel
from rnnkit.engine.parallel import PART_MIN, batch_parts

F32 = torch.empty(0)

needs_team = pytest.mark.skipif(
    not team.available(), reason="torch does not run on GNU OpenMP here"
)


@pytest.fixture
def threads(monkeypatch):
    """Sets torch's thread count for the test (restored after); the team is taken as
    available, so the parts do not depend on this machine's torch build."""
    monkeypatch.setattr(parallel, "_team_available", lambda: True)
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_one_thread_float64_and_small_products_run_whole(threads):
    threads(1)
    assert batch_parts(64, PART_MIN, F32) == [(0, 64)]
    threads(2)
    assert batch_parts(64, PART_MIN, F32.double()) == [(0, 64)]
    assert batch_parts(64, PART_MIN // 64, F32) == [(0, 64)]  # one part's worth in all
    assert batch_parts(1, 10 * PART_MIN, F32) == [(0, 1)]


def test_parts_cover_the_batch_one_per_thread_each_worth_a_split(threads):
    threads(2)
    assert batch_parts(64, PART_MIN, F32) == [(0, 32), (32, 32)]
    assert batch_parts(7, PART_MIN, F32) == [(0, 4), (4, 3)]
    threads(4)
    assert batch_parts(10, PART_MIN, F32) == [(0, 3), (3, 3), (6, 2), (8, 2)]
    assert batch_parts(3, PART_MIN, F32) == [(0, 1), (1, 1), (2, 1)]  # one row a part
    assert batch_parts(8, PART_MIN // 4, F32) == [(0, 4), (4, 4)]  # work for two parts
    threads(200)
    parts = batch_parts(1000, PART_MIN, F32)
    assert len(parts) == parallel.MAX_PARTS == team_kernels.TEAM_MAX_PARTS
    assert parts[0] == (0, 16) and parts[-1] == (985, 15)  # 40 parts of 16, 24 of 15


def test_without_the_team_the_batch_runs_whole(threads, monkeypatch):
    threads(2)
    monkeypatch.setattr(parallel, "_team_available", lambda: False)
    assert batch_parts(64, PART_MIN, F32) == [(0, 64)]


def _operands(dtype=torch.float32, steps=3, batch=4, hidden=5):
    full = torch.rand
    rows = steps * batch
    return dict(
        gates=full(rows, 3 * hidden, dtype=dtype), products=full(batch, 3 * hidden, dtype=dtype),
        kept_n=full(rows, hidden, dtype=dtype), out=full(rows, hidden, dtype=dtype), column=0,
        h0=full(batch, hidden, dtype=dtype), w_hh_t=full(hidden, 3 * hidden, dtype=dtype),
        bias_hn=full(hidden, dtype=dtype), batch_sizes=[batch] * steps, reverse=False,
        h_n=full(batch, hidden, dtype=dtype),
    )  # fmt: skip


@needs_team
@pytest.mark.parametrize(
    "parts, dtype, batch_sizes",
    [
        ([(0, 2), (3, 1)], torch.float32, None),  # a gap
        ([(0, 2), (1, 3)], torch.float32, None),  # an overlap
        ([(0, 2), (2, 1)], torch.float32, None),  # short of the batch
        ([(0, 2), (2, 2)], torch.float64, None),  # the callbacks are float32
        ([(0, 2), (2, 2)], torch.float32, [4, 4, 3]),  # unequal lengths (11 rows)
    ],
)
def test_parts_that_do_not_tile_an_equal_length_float32_batch_are_refused(
    parts, dtype, batch_sizes
):
    a = _operands(dtype)
    if batch_sizes is not None:
        a["batch_sizes"] = batch_sizes
        for name in ("gates", "kept_n", "out"):
            a[name] = a[name][:11]
    with pytest.raises(ValueError, match="tiling a float32 batch"):
        compiled_gated.gru_forward(**a, parts=parts)


@needs_team
def test_parts_refuse_a_weight_read_in_place():
    a = _operands()
    a["w_hh_t"] = a["w_hh_t"].t().contiguous()  # (3H, H), as at batch 1
    with pytest.raises(ValueError, match="w_in_place True"):
        compiled_gated.gru_forward(**a, w_in_place=True, parts=[(0, 2), (2, 2)])


@needs_team
@pytest.mark.parametrize("reverse", [False, True])
def test_a_split_forward_is_the_whole_batchs(reverse):
    whole, split = _operands(steps=6, batch=5), None
    split = {name: value.clone() if torch.is_tensor(value) else value
             for name, value in whole.items()}  # fmt: skip
    whole["reverse"] = split["reverse"] = reverse
    compiled_gated.gru_forward(**whole)
    compiled_gated.gru_forward(**split, parts=[(0, 2), (2, 2), (4, 1)])
    for name in ("out", "h_n", "gates", "kept_n"):
        torch.testing.assert_close(split[name], whole[name], atol=1e-6, rtol=1e-5)


def _states(cell, ours, x64):
    """Random initial states for ``ours`` (float32) and the same in float64."""
    rows = ours.num_layers * (2 if ours.bidirectional else 1)
    h0 = torch.randn(rows, x64.size(1), ours.proj_size or ours.hidden_size)
    if cell == "GRU":
        return h0, h0.double()
    c0 = torch.randn(rows, x64.size(1), ours.hidden_size)
    return (h0, c0), (h0.double(), c0.double())


def _loss(out, state):
    finals = state if isinstance(state, tuple) else (state,)
    return out.square().sum() + sum(final.sum() for final in finals)


# torch's own layer warns that it leaves oneDNN for a projection.
@needs_team
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")
@pytest.mark.parametrize(
    "cell, kwargs",
    [
        ("GRU", {}),
        ("GRU", {"num_layers": 2, "bidirectional": True}),
        ("LSTM", {}),
        ("LSTM", {"num_layers": 2, "bidirectional": True}),
        ("LSTM", {"proj_size": 6, "bidirectional": True}),
    ],
)
def test_split_runs_give_torchs_outputs_and_gradients(monkeypatch, cell, kwargs):
    """Three uneven parts (5 sequences), forced, against torch's float64 layer on the
    same weights: float32 outputs, final states and every gradient at float32 tolerance,
    in training and in inference."""
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    seen = []

    def three(batch_sizes, batch, step_work, like):
        seen.append(batch)
        return [(0, 2), (2, 2), (4, batch - 4)]

    monkeypatch.setattr(gru_engine, "dense_parts", three)
    monkeypatch.setattr(lstm_engine, "dense_parts", three)
    torch.manual_seed(0)
    ours = getattr(rnnkit, cell)(3, 16, **kwargs)
    theirs = getattr(torch.nn, cell)(3, 16, **kwargs).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(7, 5, 3, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    state, state64 = _states(cell, ours, x64)
    out, final = ours(x, state)
    _loss(out, final).backward()
    expected_out, expected_final = theirs(x64, state64)
    _loss(expected_out, expected_final).backward()
    tolerance = {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(out, expected_out.float(), **tolerance)
    torch.testing.assert_close(final, tuple(f.float() for f in expected_final) if cell == "LSTM"
                               else expected_final.float(), **tolerance)  # fmt: skip
    torch.testing.assert_close(x.grad, x64.grad.float(), **tolerance)
    for got, want in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad.float(), **tolerance)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, state)[0], expected_out.float(), **tolerance)
    assert seen and all(batch == 5 for batch in seen)


@needs_team
def test_two_threads_choose_a_split_that_gives_torchs_results(monkeypatch, threads):
    threads(2)
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    chosen = []
    choose = gru_engine.dense_parts
    monkeypatch.setattr(gru_engine, "dense_parts",
                        lambda *args: chosen.append(choose(*args)) or chosen[-1])  # fmt: skip
    torch.manual_seed(0)
    ours, theirs = rnnkit.GRU(8, 128), torch.nn.GRU(8, 128)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(6, 40, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=2e-5, rtol=1e-4)
    assert chosen == [[(0, 20), (20, 20)]]


@needs_team
def test_warming_up_prepares_the_team_callbacks(monkeypatch):
    prepared = []
    monkeypatch.setattr(team, "_callback", lambda name: prepared.append(name) or 0)
    monkeypatch.setattr(team._RUNTIME, "GOMP_parallel", lambda *args: None)
    warmup.load(torch.float32, "gru")
    warmup.load(torch.float32, "lstm")
    assert prepared == ["gru_forward", "gru_backward", "lstm_forward", "lstm_backward"]


def test_torchs_openmp_library_is_found_only_where_torch_runs_on_openmp(monkeypatch):
    found = parallel.torch_openmp_library()
    assert (found is not None) == team.available()
    if found is not None:  # the runtime this process loaded
        assert any(str(found) in line for line in parallel._maps())
    parallel.torch_openmp_library.cache_clear()
    try:
        monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "parallel backend: native")
        assert parallel.torch_openmp_library() is None
        parallel.torch_openmp_library.cache_clear()
        monkeypatch.undo()
        monkeypatch.setattr(parallel, "_maps", lambda: [])  # no libgomp loaded
        assert parallel.torch_openmp_library() is None
    finally:
        parallel.torch_openmp_library.cache_clear()
