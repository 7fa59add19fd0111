"""Running parts of a batch's GRU or LSTM time loop on torch's own OpenMP threads.

The sequences of a batch never read each other's states, so at two threads or more
each thread can run the whole time loop for a part of the batch, with its own
single-threaded per-step products (brgemm), and no synchronisation until the loop
ends. Otherwise each step's product is one multi-threaded BLAS call that forks and
joins every step, and the gates run on one thread.

The parts must run on torch's OpenMP team, not on threads of our own: after each of
torch's parallel operations its OpenMP workers spin for milliseconds waiting for
more work, so a thread of ours would share a core with a spinning one (measured at
50 x 64 x 128, 50 steps: the split loop took 2.0 ms alone, 4.7 ms right after one
torch product, against 3.9 ms unsplit). So :func:`run` calls
``GOMP_parallel`` of the OpenMP runtime torch loaded, with a compiled callback that
each thread of the team enters: it picks its parts by ``omp_get_thread_num`` and runs
the same loop as for a whole batch, over its part's rows (the callbacks' bodies and
their descriptor: :mod:`rnnkit.compiled.gated_kernels`, ``gru_forward_parts``).
:func:`available` says whether torch runs on GNU OpenMP here.
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.binding as llvm
import numpy as np
from numba import cfunc, types

from rnnkit.compiled import gated_kernels as k
from rnnkit.compiled.cache import configure_numba
from rnnkit.engine.parallel import torch_openmp_library

_CACHE = configure_numba()


def _torch_openmp() -> ctypes.CDLL | None:
    """The GNU OpenMP runtime torch runs its threads on, loaded, with the two functions
    the callbacks call registered; None where there is none
    (:func:`rnnkit.engine.parallel.torch_openmp_library`)."""
    path = torch_openmp_library()
    if path is None:
        return None
    try:
        runtime = ctypes.CDLL(str(path))
        runtime.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                                          ctypes.c_uint]  # fmt: skip
        runtime.GOMP_parallel.restype = None
        for name in ("omp_get_thread_num", "omp_get_num_threads"):
            address = ctypes.cast(getattr(runtime, name), ctypes.c_void_p).value
            llvm.add_symbol(f"rnnkit_{name}", address)
    except (OSError, AttributeError):
        return None
    return runtime


_RUNTIME = _torch_openmp()


def available() -> bool:
    """Whether batch parts can run on torch's OpenMP team here."""
    return _RUNTIME is not None


# Each loop's callback body (rnnkit.compiled.gated_kernels) and the arrays it reads.
_LOOPS = {
    "gru_forward": (k.gru_forward_parts, k.TEAM_FORWARD_ARRAYS),
    "gru_backward": (k.gru_backward_parts, k.TEAM_BACKWARD_ARRAYS),
    "lstm_forward": (k.lstm_forward_parts, k.TEAM_LSTM_FORWARD_ARRAYS),
    "lstm_backward": (k.lstm_backward_parts, k.TEAM_LSTM_BACKWARD_ARRAYS),
}


@functools.cache
def _callback(name: str) -> int:
    """The address of a loop's compiled callback, compiled (or loaded from numba's cache)
    on first use."""
    return cfunc(types.void(types.voidptr), cache=_CACHE)(_LOOPS[name][0]).address


def _descriptor(fields: dict[str, int], names: tuple[str, ...], arrays: dict, parts
                ) -> np.ndarray:  # fmt: skip
    """The callbacks' descriptor (see :mod:`rnnkit.compiled.gated_kernels`)."""
    if not 1 <= len(parts) <= k.TEAM_MAX_PARTS:
        raise ValueError(
            f"rnnkit.compiled: expected 1 to {k.TEAM_MAX_PARTS} parts, got {len(parts)}"
        )
    d = np.zeros(k.TEAM_PARTS + 2 * k.TEAM_MAX_PARTS, np.int64)
    for slot, field in enumerate(k.TEAM_FIELDS):
        d[slot] = len(parts) if field == "parts" else fields[field]
    for index, name in enumerate(names):
        d[k.TEAM_ARRAYS + index] = arrays[name].ctypes.data
    for p, (first, count) in enumerate(parts):
        d[k.TEAM_PARTS + 2 * p], d[k.TEAM_PARTS + 2 * p + 1] = first, count
    return d


def run(name: str, arrays: dict, fields: dict[str, int], parts) -> None:
    """A loop of :mod:`rnnkit.compiled.gated_kernels` (``"gru_forward"``,
    ``"gru_backward"``, ``"lstm_forward"``, ``"lstm_backward"``) for each part of the
    batch, every thread of a team of ``len(parts)`` of torch's OpenMP runtime entering its
    callback: float32 ``arrays`` named as the loop's arguments, ``fields`` as
    :func:`fields` gives them."""
    descriptor = _descriptor(fields, _LOOPS[name][1], arrays, parts)
    _RUNTIME.GOMP_parallel(_callback(name), descriptor.ctypes.data, len(parts), 0)


def fields(rows, width, hidden, batch, steps, column, reverse, small_gemm, tall_rows, keep,
           state_width=0, projected=False) -> dict[str, int]:  # fmt: skip
    """The descriptor's sizes and flags (``state_width``: the LSTM's ``P``)."""
    return {"rows": rows, "width": width, "hidden": hidden, "batch": batch, "steps": steps,
            "column": column, "reverse": int(reverse), "small_gemm": small_gemm,
            "tall_rows": tall_rows, "keep": int(keep), "w_in_place": 0,
            "state_width": state_width, "projected": int(projected)}  # fmt: skip
