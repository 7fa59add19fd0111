"""How the compiled loops split a batch over torch's threads.

At two threads or more, each thread of torch's OpenMP team can run the time loop for
a part of the batch, with single-threaded per-step products (see
:mod:`rnnkit.compiled.team`, which runs them). This module decides the parts.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

# Each part's per-step product has at least this many multiply-adds. Against the unsplit
# loop at two threads (benchmarks/compare_revisions.py, GRU): 100x30x4x64 (1.8e5 a part)
# 1.06-1.17x, 100x8x4x128 1.08-1.11x, 100x4x4x128 and 100x16x4x64 (9.8e4) 0.97-1.10x; with
# a limit of 2**13, 100x8x4x64 (4.9e4) and 100x2x4x128 ran 0.90-0.95x.
PART_MIN = 1 << 16
# At most this many parts (the room in rnnkit.compiled.gated_kernels' descriptor,
# TEAM_MAX_PARTS); more threads than this leave the rest idle.
MAX_PARTS = 64


def batch_parts(batch: int, step_work: int, like: Tensor) -> list[tuple[int, int]]:
    """The parts a compiled time loop runs on, one per thread; ``[(0, batch)]`` to run
    it whole in the caller's thread.

    Splits only float32 on CPU (its products have a single-threaded fast path), where
    torch runs on GNU OpenMP with more than one thread, into at most as many parts as
    torch has threads (and ``MAX_PARTS``), each with at least ``PART_MIN`` multiply-adds
    a step.

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
    count = min(threads, batch * step_work // PART_MIN, batch, MAX_PARTS)
    if count < 2 or not _team_available():
        return [(0, batch)]
    size, extra = divmod(batch, count)
    parts, first = [], 0
    for i in range(count):
        rows = size + (i < extra)
        parts.append((first, rows))
        first += rows
    return parts


def dense_parts(batch_sizes, batch: int, step_work: int, like: Tensor) -> list[tuple[int, int]]:
    """:func:`batch_parts` for sequences of equal length only (``batch_sizes`` all
    ``batch``): a packed step's rows would leave the parts uneven; else one part. A call
    of one step runs as one part too: the parts read a transposed copy of the weight, which
    costs more than the step, while BLAS splits that single product over the threads
    itself (GRU 1 x 8 x 512 x 512 inference at two threads: 2.2x faster)."""
    if len(batch_sizes) < 2 or batch_sizes[-1] != batch:
        return [(0, batch)]
    return batch_parts(batch, step_work, like)


@functools.cache
def torch_openmp_library() -> Path | None:
    """The GNU OpenMP runtime (``libgomp``) torch runs its threads on, or None (another
    backend, or not found): the team whose threads run the parts
    (:mod:`rnnkit.compiled.team`). Found without importing numba, so that deciding an
    engine never waits on it."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    loaded = [line.split()[-1] for line in _maps() if "libgomp" in line]
    if str(path) in loaded:
        return path
    candidates = sorted(set(loaded))  # torch links another runtime (or a renamed copy)
    return Path(candidates[0]) if len(candidates) == 1 else None


def _maps() -> list[str]:
    try:
        return Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []


def _team_available() -> bool:
    from rnnkit.compiled import gated

    return gated.team_available()
