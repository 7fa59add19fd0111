"""rnnkit.bound: the sequential-GEMM bound the benchmark reports against.

Timing tests compare only quantities an order of magnitude apart, so that a
shared, noisy machine cannot flip them.
"""

from __future__ import annotations

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
