"""How the compiled loops split a batch over torch's threads.

At two threads or more, each thread of torch's OpenMP team can run the time loop for
a part of the batch, with single-threaded per-step products (see
:mod:`rnnkit.compiled.team`, which runs them). This module decides the parts.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Each part's per-step product has at least this many multiply-adds. Below it the
# products are short enough that BLAS on one thread, or the unsplit loop, keeps up
# (100 x 30 x 4 x 64 GRU, 3.7e5 a step: not split).
PART_MIN = 1 << 18


def batch_parts(batch: int, step_work: int, like: Tensor) -> list[tuple[int, int]]:
    """The parts a compiled time loop runs on, one per thread; ``[(0, batch)]`` to run
    it whole in the caller's thread.

    Splits only float32 on CPU (its products have a single-threaded fast path), where
    torch runs on GNU OpenMP with more than one thread, into at most as many parts as
    torch has threads, each with at least ``PART_MIN`` multiply-adds a step.

    Args:
        batch: sequences (rows per step).
        step_work: multiply-adds of one row's per-step product (``H * G``).
        like: a tensor of the loop, for its dtype and device.

    Returns:
        ``(first, count)`` per part, in order, covering ``0 : batch``.
    """
    threads = torch.get_num_threads()
    if threads < 2 or like.dtype != torch.float32 or not like.is_cpu:
        return [(0, batch)]
    count = min(threads, batch * step_work // PART_MIN, batch)
    if count < 2 or not _team_available():
        return [(0, batch)]
    size, extra = divmod(batch, count)
    parts, first = [], 0
    for i in range(count):
        rows = size + (i < extra)
        parts.append((first, rows))
        first += rows
    return parts


def _team_available() -> bool:
    from rnnkit.compiled import gated

    return gated.team_available()
