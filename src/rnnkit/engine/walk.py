"""Walking the packed rows of one direction step by step: what the gated loops share.

Step ``t`` owns rows ``offsets[t] : offsets[t + 1]`` (``batch_sizes[t]`` rows,
the sequences still running, longest first). A forward direction runs steps
``0 .. L-1``, a reverse one ``L-1 .. 0``; backpropagation walks the other way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.engine.products import transposed_faster, weight_grad
from rnnkit.engine.rows import last_step_rows, previous_state_rows

# About the bytes of input projections that one chunk of an inference pass holds
# (see dense_chunks); measured best between 0.5 and 2 MB on a 1 MB L2 (100x30x4x256 and
# 50x64x32x128 GRU, one thread).
CHUNK_BYTES = 1 << 20
# Below this many bytes of input projections in all, one chunk (see dense_chunks).
CHUNKED_MIN = 4 << 20


def steps_in_order(batch_sizes: Sequence[int], reverse: bool) -> list[tuple[int, int, int]]:
    """``(first_row, end_row, rows)`` of every step in the order the direction runs them."""
    offsets = [0, *itertools.accumulate(batch_sizes)]
    steps = [(offsets[t], offsets[t + 1], n) for t, n in enumerate(batch_sizes)]
    return steps[::-1] if reverse else steps


def dense_chunks(
    steps: int,
    batch: int,
    row_bytes: int,
    reverse: bool,
    chunk_bytes: int | None = None,
    chunked_min: int | None = None,
) -> list[tuple[int, int]]:
    """Row ranges ``(first_row, end_row)`` of runs of whole steps of equal-length sequences,
    each at most ``chunk_bytes`` (default ``CHUNK_BYTES``) of ``row_bytes`` rows (at least
    one step), in the order the direction runs them; one range for all the rows when they
    hold at most ``chunked_min`` (default ``CHUNKED_MIN``) bytes.

    An inference pass that projects its input one chunk at a time, into a scratch the
    chunk's steps then read while it is still in cache, is faster than one that projects
    every step first and reads them back from memory: 6-16% at 100x30x4x256 for the GRU
    (the whole projection is 9.2 MB there). Up to ``chunked_min`` bytes in all, one chunk:
    each costs a call of about 20 us.
    """
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    chunked_min = CHUNKED_MIN if chunked_min is None else chunked_min
    step_bytes = max(1, batch * row_bytes)
    steps_per_chunk = steps if steps * step_bytes <= chunked_min else chunk_bytes // step_bytes
    steps_per_chunk = max(1, steps_per_chunk)
    bounds = [(t, min(t + steps_per_chunk, steps)) for t in range(0, steps, steps_per_chunk)]
    chunks = [(first * batch, end * batch) for first, end in bounds]
    return chunks[::-1] if reverse else chunks


def previous_rows(states: Tensor, initial: Tensor, previous, n: int) -> Tensor:
    """The state each of a step's ``n`` sequences starts from.

    Args:
        states: every row's state so far (a column view is fine).
        initial: the initial state of every sequence.
        previous: ``(first_row, rows)`` of the step run before, or None at the first.
        n: rows of this step.

    Shape:
        states ``(R, H)``, initial ``(N, H)``; returns ``(n, H)``.
    """
    if previous is None:
        return initial[:n]
    first, n_prev = previous
    if n <= n_prev:  # forward: finished sequences drop out
        return states[first : first + n]
    # reverse: sequences starting at this step begin from their initial state
    return torch.cat([states[first : first + n_prev], initial[n_prev:n]])


def previous_states(states: Tensor, initial: Tensor, batch_sizes, reverse: bool) -> Tensor:
    """For every row, the state its step started from, in one gather.

    Shape:
        states ``(R, H)``, initial ``(N, H)``; returns ``(R, H)``.
    """
    n = batch_sizes[0]
    if batch_sizes[-1] == n:  # equal lengths: a shifted copy
        if reverse:
            return torch.cat([states[n:], initial])
        return torch.cat([initial, states[: states.size(0) - n]])
    rows = previous_state_rows(batch_sizes, reverse, states.device)
    return torch.cat([states, initial]).index_select(0, rows)


def recurrent_weight_grad(d: Tensor, states: Tensor, initial: Tensor, batch_sizes,
                          reverse: bool) -> Tensor:  # fmt: skip
    """``sum_t d_t^T @ h_prev(t)``, the gradient of a recurrent weight from dL/d(pre-
    activation) of every row, as (at most) two GEMMs: with equal lengths the previous
    states are a shifted slice, read in place (no ``(R, H)`` copy at the backward's peak).

    Shape:
        d ``(R, G)``, states ``(R, H)`` (column views are fine), initial ``(N, H)``;
        returns ``(G, H)`` (a transposed view for narrow states:
        :func:`rnnkit.engine.products.weight_grad`).
    """
    n = batch_sizes[0]
    if batch_sizes[-1] != n:
        return weight_grad(d, previous_states(states, initial, batch_sizes, reverse))
    # Step t read step t + 1's state in reverse, else step t - 1's; the first step the
    # initial one.
    first, rest = (d[-n:], d[:-n]) if reverse else (d[:n], d[n:])
    before = states[n:] if reverse else states[:-n]
    if not len(rest):  # one step: adding an empty product would copy the whole gradient
        return weight_grad(first, initial)
    if transposed_faster(states.size(1)):
        return torch.addmm(initial.t().mm(first), before.t(), rest).t()
    return torch.addmm(first.t().mm(initial), rest.t(), before)


def last_states(states: Tensor, batch_sizes, reverse: bool, out: Tensor) -> Tensor:
    """Each sequence's state after its last processed step, written into ``out``.

    Shape:
        states ``(R, H)``; out ``(N, H)``, returned.
    """
    n = batch_sizes[0]
    if reverse:  # the last processed step is step 0, where every sequence runs
        return out.copy_(states[:n])
    if batch_sizes[-1] == n:
        return out.copy_(states[states.size(0) - n :])
    return torch.index_select(states, 0, last_step_rows(batch_sizes, states.device), out=out)
