"""rnnkit.bound: the sequential-GEMM bound the benchmark reports against.

Timing tests compare only quantities an order of magnitude apart, so that a
shared, noisy machine cannot flip them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rnnkit import bound, compiled


def test_the_bound_counts_every_dependent_step_and_the_training_products():
    short = bound.sequential_gemm_bound_ms(10, 8, 4, 64, 1, False, train=False)
    long = bound.sequential_gemm_bound_ms(1000, 8, 4, 64, 1, False, train=False)
    assert short > 0 and long > 10 * short  # 100x the steps
    train = bound.sequential_gemm_bound_ms(1000, 8, 4, 64, 2, True, train=True)
    assert train > 4 * long  # 2 layers x 2 directions, forward and backward


@pytest.mark.parametrize("numba", [True, False])
def test_dependent_steps_take_the_faster_of_the_compiled_and_torch_loops(monkeypatch, numba):
    """Without numba only torch's loop runs; with it, both run and the minimum counts."""
    timed = []
    best = bound._best_ms

    def spy(call):
        timed.append(best(call))
        return timed[-1]

    with_numba = numba and compiled.available()
    monkeypatch.setattr(bound, "_best_ms", spy)
    monkeypatch.setattr(compiled, "available", lambda: with_numba)
    result = bound._dependent_ms(20, 8, 32)
    if with_numba:
        assert len(timed) == 2 and result == min(timed)
    else:
        assert len(timed) == 1 and result == timed[0]


def test_packed_and_projected_bounds_time_each_step_size_and_the_projection(monkeypatch):
    """Packed input: the dependent products of each step size, as many as it has steps;
    a projection: its own dependent products, and the recurrent ones read P features."""
    calls = []

    def dependent(steps, batch, hidden_size, out_size=None):
        calls.append((steps, batch, hidden_size, out_size))
        return 1.0

    monkeypatch.setattr(bound, "_dependent_ms", dependent)
    monkeypatch.setattr(bound, "_mm_ms", lambda m, k, n: 0.0)
    sizes = [8, 8, 8, 4, 4]
    ms = bound.sequential_gemm_bound_ms(
        5, 8, 3, 16, 1, False, train=True, gates=4, batch_sizes=sizes, proj_size=6
    )
    assert sorted(calls) == sorted([
        (3, 8, 6, 64), (2, 4, 6, 64),  # h_prev (P = 6 features) @ W_hh^T (4H = 64)
        (3, 8, 16, 6), (2, 4, 16, 6),  # the projection
        (3, 8, 64, 6), (2, 4, 64, 6),  # backward, to h_prev
        (3, 8, 6, 16), (2, 4, 6, 16),  # backward, through the projection
    ])  # fmt: skip
    assert ms == 8.0
    calls.clear()
    bound.sequential_gemm_bound_ms(5, 8, 3, 16, 1, False, train=False, gates=4)
    assert calls == [(5, 8, 16, 64)]  # dense, unprojected: one size, H features


@pytest.mark.skipif(not compiled.available(), reason="needs numba and scipy")
def test_the_compiled_loop_is_loaded_from_the_cache_by_the_next_process(tmp_path):
    """A second process loads the first one's kernel: the cache holds one entry."""
    script = (
        "from rnnkit.bound import _dependent_ms\n"
        "_dependent_ms(2, 4, 8)\n"
    )  # fmt: skip
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    entries = [p.name for p in tmp_path.rglob("*repeated_products*.nbc")]
    assert len(entries) == 1, entries
