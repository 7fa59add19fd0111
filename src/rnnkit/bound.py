"""The sequential-GEMM bound: the least time a recurrence can take on this machine.

A recurrent layer cannot beat the matrix products it must do, and the
per-step ones are dependent: step ``t`` needs ``h_{t-1}``. Per layer and
direction the forward pass needs one input GEMM ``(T*N, H_in) @ (H_in, G*H)``
plus ``T`` dependent ``(N, H) @ (H, G*H)`` GEMMs, where ``G`` is the number of
gates whose pre-activations the weights stack (1 for the Elman cell, 4 for
LSTM, 3 for GRU). A training step adds ``T`` dependent ``(N, G*H) @ (G*H, H)``
GEMMs backward and the three gradient GEMMs over all steps (input, ``W_ih`` and
``W_hh``). Elementwise work (activations, gates, bias) is left out, so the bound
is optimistic and a real engine reaches a fraction of it.

The dependent GEMMs are timed two ways and the faster counts: in a compiled
loop calling BLAS as :mod:`rnnkit.compiled` does (SciPy's on one thread for
small products, torch's bundled BLAS for large ones), where no interpreter cost
enters, and with ``torch.mm`` in a Python loop at the caller's thread count
(timing only a one-thread loop once let torch beat the "bound" at 2 threads).
Each GEMM is timed best-of-5 on its own, so on a noisy machine an engine can
show more than 100% of the bound.
The large GEMMs are timed with ``torch.mm`` at the caller's thread count.
Without numba only the torch loop is timed, which overstates the bound at
small sizes.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence

import numpy as np
import torch

from rnnkit import compiled

_REPEATS = 5


def sequential_gemm_bound_ms(
    steps: int, batch: int, input_size: int, hidden_size: int, num_layers: int,
    bidirectional: bool, train: bool, *, gates: int = 1,
    batch_sizes: Sequence[int] | None = None, proj_size: int = 0,
) -> float:  # fmt: skip
    """The bound, in milliseconds, for one call of an RNN of this shape.

    Args:
        steps, batch, input_size, hidden_size: ``T, N, H_in, H_out``.
        num_layers, bidirectional: the stack.
        train: a training step (forward and backward) rather than inference.
        gates: ``G``, the gate blocks stacked in the weights: 1 (Elman), 4
            (LSTM) or 3 (GRU).
        batch_sizes: rows of each step of packed input (a PackedSequence's
            ``batch_sizes``); None: ``batch`` at every step.
        proj_size: an LSTM's projection ``P``: each step adds the dependent
            ``(n, H) @ (H, P)`` product (and, training, ``(n, P) @ (P, H)`` and dW_hr);
            the recurrent products read ``P`` features.

    Returns:
        The summed best-of-5 times of the GEMMs the call cannot avoid.
    """
    sizes = list(batch_sizes) if batch_sizes is not None else [batch] * steps
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        return _bound_ms(
            sizes, input_size, hidden_size, num_layers, bidirectional, train, gates, proj_size
        )


def _bound_ms(
    sizes, input_size, hidden_size, num_layers, bidirectional, train, gates, proj_size
) -> float:
    directions = 2 if bidirectional else 1
    rows = sum(sizes)
    width = gates * hidden_size  # the pre-activations of all gates
    state = proj_size or hidden_size  # the features of h, which the next step reads
    total = 0.0
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else directions * state
        per_direction = _mm_ms(rows, layer_input, width) + _steps_ms(sizes, state, width)
        if proj_size:
            per_direction += _steps_ms(sizes, hidden_size, proj_size)  # h = r @ W_hr^T
        if train:
            per_direction += _steps_ms(sizes, width, state)
            per_direction += _mm_ms(width, rows, state)  # dW_hh
            per_direction += _mm_ms(width, rows, layer_input)  # dW_ih
            per_direction += _mm_ms(rows, width, layer_input)  # dX
            if proj_size:
                per_direction += _steps_ms(sizes, proj_size, hidden_size)  # dL/dr
                per_direction += _mm_ms(proj_size, rows, hidden_size)  # dW_hr
        total += directions * per_direction
    return total


def _steps_ms(sizes: Sequence[int], hidden_size: int, out_size: int) -> float:
    """One dependent ``(n, hidden_size) @ (hidden_size, out_size)`` product per step of
    ``n = sizes[t]`` rows; the steps of each size are timed together."""
    return sum(
        _dependent_ms(count, n, hidden_size, out_size)
        for n, count in collections.Counter(sizes).items()
    )


def _mm_ms(m: int, k: int, n: int) -> float:
    """One ``(m, k) @ (k, n)`` product into a buffer already written: a fresh output of
    a few MiB would add its page faults (1.5 ms of 2.5 for 3200 x 32 x 384), which are
    not the product's arithmetic."""
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.zeros(m, n)
    return _best_ms(lambda: torch.mm(a, b, out=c))


def _dependent_ms(steps: int, batch: int, hidden_size: int, out_size: int | None = None) -> float:
    """``steps`` products ``(batch, hidden_size) @ (hidden_size, out_size)``, one after another."""
    out_size = hidden_size if out_size is None else out_size
    h = np.random.default_rng(0).standard_normal((batch, hidden_size), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((hidden_size, out_size), dtype=np.float32)
    out = np.zeros((batch, out_size), np.float32)
    h_t, w_t, out_t = torch.from_numpy(h), torch.from_numpy(w), torch.from_numpy(out)
    # torch at the caller's thread count: with several threads it splits large steps
    torch_ms = _best_ms(lambda: [torch.mm(h_t, w_t, out=out_t) for _ in range(steps)])
    if not compiled.available():
        return torch_ms
    # A kernel of the package (compiled on first use, then loaded from numba's cache).
    # Not a closure: numba keys a closure's cache entry on its captured dispatchers,
    # which pickle differently in every process, so each run compiled and stored a new one.
    from rnnkit.compiled.blas import repeated_products, tall_rows

    repeated_products(h, w, out, 1, tall_rows())  # compile or load before timing
    return min(torch_ms, _best_ms(lambda: repeated_products(h, w, out, steps, tall_rows())))


def _best_ms(call) -> float:
    call()
    best = float("inf")
    for _ in range(_REPEATS):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1e3
