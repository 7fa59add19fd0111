"""Getting the compiled kernels ready without making a call wait for them.

Kernels come in sets, one per dtype and cell ("rnn", "lstm", "gru", and "options":
every cell with recurrent dropout, zoneout or layer norm), each
prepared when first wanted: a program that runs only ``rnnkit.RNN`` never
compiles the gated kernels. Compiling one set takes about 5-15 s of CPU with an
empty numba cache; loading it from the cache, under a second. The first time
``auto`` would pick the compiled engine for a set, :func:`ready` decides:

- The cache holds them all (an earlier process marked it: see
  :func:`rnnkit.compiled.cache.complete`): load them now, so that every call of
  the process runs the compiled loops, and a rerun gives the same numbers.
- Else: start preparing them in the background and answer False, so the call
  runs on the torch-ops engine; calls switch to the compiled loops once they
  are loaded. Results are each engine's own (equal to float tolerance, not
  bitwise: pin ``RNNKIT_ENGINE`` where a rerun must match bit for bit); a
  backward pass runs on the engine its forward pass ran on.

In the background, a worker process compiles the kernels into the disk cache
(:mod:`rnnkit.compiled.cache`), then a thread here loads them from it. A thread
compiling them here would hold the GIL for most of that time (numba's type
inference and lowering are Python): the caller's calls ran 2.3x slower for the
20 s it took (``benchmarks/cold_start.py`` measures both phases). Where no disk
cache can be written, or no Python executable can be started, the thread
compiles them itself.

:func:`wait` blocks until a dtype's kernels are ready: ``RNNKIT_ENGINE=compiled``
and ``rnnkit warmup`` use it.

Training is the exception (:func:`compiling_in_place`): a run of thousands of
steps should run all of them on one engine, so that its result does not depend
on when a background compile finished, and on two cores a worker compiling
beside it slowed every step it overlapped (the main job took 78.9 s against
67.8 s, and its test RMSE moved from 9.500 to 9.881 with the switch). Inside
it, kernels compile (or load) in the caller's thread on first use, as numba
does by default: the wait it cost before, and the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import torch

from rnnkit.compiled import cache

logger = logging.getLogger(__name__)

DTYPES = (torch.float32, torch.float64)
CELLS = ("rnn", "lstm", "gru", "options")
Kernels = tuple[torch.dtype, str]  # one set: (dtype, cell)

# While the thread loads kernels, the interpreter hands the GIL over this often
# (seconds; Python's default is 0.005). Loading is Python that rarely releases
# it, and each torch op of the caller releases it and then waits a full interval
# to get it back, so at the default a call of 100 small steps slowed several-fold.
_LOAD_SWITCH_INTERVAL = 0.0002

_ready: set[Kernels] = set()
_cpu_seconds: dict[Kernels, float] = {}
_threads: dict[Kernels, threading.Thread | None] = {}  # None: a load that failed
_lock = threading.Lock()
_in_place_depth = 0  # > 0 inside compiling_in_place()
_in_place_noted: set[Kernels] = set()


def ready(dtype: torch.dtype, cell: str = "rnn") -> bool:
    """Whether the kernels of ``dtype`` and ``cell`` are loaded; if not, start preparing
    them in the background (once per process) and return False.

    Args:
        dtype: ``torch.float32`` or ``torch.float64``.
        cell: "rnn", "lstm", "gru" or "options".
    """
    kernels = (dtype, cell)
    if kernels in _ready:
        return True
    if _in_place_depth > 0:
        _note_in_place(kernels)
        return True
    with _lock:
        fresh = kernels not in _threads and kernels not in _ready
        if fresh and cache.complete(_name(kernels)):
            _load_before_first_call(kernels)
        elif fresh:
            name = _name(kernels)
            logger.info(
                "rnnkit.compiled: preparing the %s kernels in the background (compiling them "
                "takes 5-15 s of CPU once per cache); torch ops run until they are ready",
                name,
            )
            thread = threading.Thread(
                target=_prepare_in_background, args=(kernels,), name=f"rnnkit-warmup-{name}",
                daemon=True,
            )  # fmt: skip
            _threads[kernels] = thread
            thread.start()
    return kernels in _ready


def loaded(dtype: torch.dtype, cell: str = "rnn") -> bool:
    """Whether the kernels of ``dtype`` and ``cell`` are loaded in this process, without
    preparing them if not (:func:`ready` starts that): for calls that use the kernels
    only where they are already there (:mod:`rnnkit.engine.few_steps`)."""
    return (dtype, cell) in _ready


@contextlib.contextmanager
def compiling_in_place() -> Iterator[None]:
    """Within this block, :func:`ready` answers True at once: ``auto`` runs the compiled
    loops from the first call, and each kernel compiles (or loads from the disk cache)
    in the calling thread when first called, with no background worker.

    For training loops (:meth:`rnnkit.toolkit.trainer.Trainer.fit` and ``rnnkit
    train`` use it): every step on one engine, whatever the cache holds, so a run
    gives the same numbers on a fresh machine as on a warm one.
    """
    global _in_place_depth
    with _lock:
        _in_place_depth += 1
    try:
        yield
    finally:
        with _lock:
            _in_place_depth -= 1
            if _in_place_depth == 0:
                # Their kernels are in this process now: later calls (a predict after
                # fit) stay on the compiled loops, compiling any other kernel in place.
                _ready.update(_in_place_noted)


def _note_in_place(kernels: Kernels) -> None:
    """Log, once per set, that kernels the cache lacks will compile on first use."""
    if kernels in _in_place_noted:
        return
    _in_place_noted.add(kernels)
    if not cache.complete(_name(kernels)):
        logger.info(
            "rnnkit.compiled: the %s kernels compile on first use if the cache (%s) lacks "
            "them: 5-15 s of CPU once per cache (`rnnkit warmup` does it ahead)",
            _name(kernels), cache.location() or "none",
        )  # fmt: skip


def cpu_seconds(dtype: torch.dtype, cell: str = "rnn") -> float | None:
    """CPU time this process (its worker included) spent compiling or loading the
    kernels of ``dtype`` and ``cell``, or None if they have not been prepared here."""
    return _cpu_seconds.get((dtype, cell))


def _load_before_first_call(kernels: Kernels) -> None:
    """Load kernels the cache holds, in the caller's thread; a failure is logged, and
    leaves ``auto`` on torch ops for this set (``wait`` raises it)."""
    logger.info("rnnkit.compiled: loading the %s kernels from %s", _name(kernels),
                cache.location())  # fmt: skip
    start = time.perf_counter()
    try:
        compiled_now = load(*kernels)
    except Exception:
        logger.warning(
            "rnnkit.compiled: loading the %s kernels failed; torch ops keep running them",
            _name(kernels), exc_info=True,
        )  # fmt: skip
        _threads[kernels] = None  # tried: not again on every call
        return
    _log_ready(kernels, time.perf_counter() - start, compiled_now)


def wait(dtype: torch.dtype, cell: str = "rnn") -> None:
    """Block until the kernels of ``dtype`` and ``cell`` are loaded: join the background
    preparation, or, if none runs (or it failed), compile or load them in this thread.

    Raises:
        Whatever compiling the kernels raises.
    """
    kernels = (dtype, cell)
    if kernels in _ready:
        return
    with _lock:
        thread = _threads.get(kernels)
    if thread is not None and thread is not threading.current_thread():
        thread.join()
    if kernels not in _ready:
        logger.info(
            "rnnkit.compiled: compiling or loading the %s kernels before this call (5-15 s "
            "of CPU once per cache; `rnnkit warmup` does it ahead)",
            _name(kernels),
        )
        start = time.perf_counter()
        compiled_now = load(dtype, cell)
        _log_ready(kernels, time.perf_counter() - start, compiled_now)


def load(dtype: torch.dtype, cell: str = "rnn") -> bool:
    """Compile or load every kernel of ``dtype`` and ``cell``, in this thread, and mark
    them ready.

    Returns:
        Whether any kernel was compiled (rather than loaded from the disk cache).

    Raises:
        ValueError: ``cell`` is not one of :data:`CELLS`.
    """
    if cell not in CELLS:
        raise ValueError(
            f"Received an invalid value for argument `cell`, expected one of {CELLS}, got {cell!r}"
        )
    dispatchers = _dispatchers(cell)
    before = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
    cpu = time.thread_time()
    exercise = {"rnn": _exercise, "options": _exercise_options}.get(cell, _exercise_gated)
    exercise(dtype, cell)
    cache.mark_complete(_name((dtype, cell)))
    kernels = (dtype, cell)
    _cpu_seconds[kernels] = _cpu_seconds.get(kernels, 0.0) + time.thread_time() - cpu
    _ready.add(kernels)
    return sum(sum(d.stats.cache_misses.values()) for d in dispatchers) > before


def _dispatchers(cell: str) -> list:
    """The numba dispatchers of one cell's kernels."""
    from rnnkit.compiled import gated_kernels, kernels, options_kernels

    return {
        "rnn": [kernels.forward_loop, kernels.backward_loop, kernels.backward_equal_lengths],
        "lstm": [gated_kernels.lstm_forward_loop, gated_kernels.lstm_backward_walk],
        "gru": [gated_kernels.gru_forward_loop, gated_kernels.gru_backward_walk],
        "options": [options_kernels.options_forward_loop, options_kernels.options_backward_walk],
    }[cell]


def _full(dtype: torch.dtype):
    """Constant operands: this may run beside the caller's code and must not draw from
    torch's global generator."""

    def full(*shape: int, value: float = 0.5) -> torch.Tensor:
        return torch.full(shape, value, dtype=dtype)

    return full


def _exercise(dtype: torch.dtype, cell: str = "rnn") -> None:
    """Call each Elman kernel once on tiny operands, so that numba compiles (or loads)
    every signature the wrappers in :mod:`rnnkit.compiled` give it in this dtype (they
    differ only by dtype: every array is C-contiguous and ``batch_sizes`` read-only)."""
    from rnnkit import compiled

    steps, batch, hidden, width = 3, 2, 3, 2
    rows = steps * batch
    full = _full(dtype)

    x, w_ih, w_hh, bias = full(rows, width), full(hidden, width), full(hidden, hidden), full(hidden)
    h0, out, h_n = full(batch, hidden), torch.empty(rows, hidden, dtype=dtype), full(batch, hidden)
    kind = "fast_tanh" if dtype == torch.float32 else "tanh"
    compiled.forward(out, h0, w_hh, bias, [batch] * steps, False, kind, x=x, w_ih=w_ih, h_n=h_n)
    grad_out, d = full(rows, hidden), torch.empty(rows, hidden, dtype=dtype)
    packed = [batch, batch, 1]  # sequences of unequal lengths: another kernel
    compiled.backward(d[: sum(packed)], grad_out[: sum(packed)], h_n, out[: sum(packed)], w_hh,
                      packed, False, False)  # fmt: skip
    grad_x, grad_h0 = torch.empty_like(x), torch.empty_like(h0)
    compiled.backward_equal_lengths(
        d, grad_out, h_n, x, out, h0, w_ih, w_hh, 0, False, False, grad_x, grad_h0,
        accumulate_x=False, weight_grads=True, bias_grads=True,
    )  # fmt: skip


def _exercise_gated(dtype: torch.dtype, cell: str) -> None:
    """:func:`_exercise` for the LSTM or GRU kernels, through the engine's layers
    (a projected LSTM: the same signatures as one without)."""
    from rnnkit.engine.gru import gru_layer_backward, gru_layer_forward
    from rnnkit.engine.lstm import lstm_layer_backward, lstm_layer_forward

    full = _full(dtype)
    steps, batch, hidden, width, every = 3, 2, 3, 2, (True, True, True)
    x, batch_sizes = full(steps * batch, width), [batch] * steps
    if cell == "gru":
        h0 = full(1, batch, hidden)
        gru = [full(3 * hidden, width), full(3 * hidden, hidden), full(3 * hidden),
               full(3 * hidden)]  # fmt: skip
        out, h_n, *saved = gru_layer_forward(x, h0, gru, batch_sizes, (False,), "compiled")
        gru_layer_backward(full(*out.shape), full(*h_n.shape), x, h0, gru, out, *saved,
                           batch_sizes, (False,), every, "compiled")  # fmt: skip
        if dtype == torch.float32:
            _exercise_gru_team(full, steps, batch, hidden)
        return
    h0, c0 = full(1, batch, 2), full(1, batch, hidden)
    lstm = [full(4 * hidden, width), full(4 * hidden, 2), full(4 * hidden), full(4 * hidden),
            full(2, hidden)]  # fmt: skip
    out, h_n, c_n, *saved = lstm_layer_forward(x, h0, c0, lstm, batch_sizes, (False,), True,
                                               "compiled")  # fmt: skip
    lstm_layer_backward(full(*out.shape), full(*h_n.shape), full(*c_n.shape), x, h0, c0, lstm,
                        out, *saved, batch_sizes, (False,), True, every, "compiled")  # fmt: skip
    if dtype == torch.float32:
        _exercise_lstm_team(full, steps, batch, hidden, 2)


def _exercise_gru_team(full, steps: int, batch: int, hidden: int) -> None:
    """The GRU loops split over torch's OpenMP team (:mod:`rnnkit.compiled.team`), where
    they can run: two parts of one sequence each."""
    from rnnkit.compiled import gated

    if not gated.team_available():
        return
    rows, parts, sizes = steps * batch, [(0, 1), (1, batch - 1)], [batch] * steps
    out, gates, kept_n = full(rows, hidden), full(rows, 3 * hidden), full(rows, hidden)
    h0, w_hh, bias = full(batch, hidden), full(3 * hidden, hidden), full(hidden)
    gated.gru_forward(gates, full(batch, 3 * hidden), kept_n, out, 0, h0, w_hh.t().contiguous(),
                      bias, sizes, False, full(batch, hidden), parts=parts)  # fmt: skip
    gated.gru_backward(full(rows, 3 * hidden), full(rows, hidden), full(rows, hidden), out, 0,
                       gates, kept_n, h0, w_hh, sizes, False, full(batch, hidden),
                       parts=parts)  # fmt: skip


def _exercise_lstm_team(full, steps: int, batch: int, hidden: int, width: int) -> None:
    """:func:`_exercise_gru_team` for the LSTM's loops: a projection to ``width``."""
    from rnnkit.compiled import gated

    if not gated.team_available():
        return
    rows, parts, sizes = steps * batch, [(0, 1), (1, batch - 1)], [batch] * steps
    gates, cells, tanh_cells = full(rows, 4 * hidden), full(rows, hidden), full(rows, hidden)
    out, c0, w_hh, w_hr = (
        full(rows, width),
        full(batch, hidden),
        full(4 * hidden, width),
        full(width, hidden),
    )
    gated.lstm_forward(gates, cells, tanh_cells, out, 0, full(batch, width), c0,
                       w_hh.t().contiguous(), w_hr.t().contiguous(), sizes, False,
                       full(batch, width), full(batch, hidden), parts=parts)  # fmt: skip
    gated.lstm_backward(full(rows, 4 * hidden), full(rows, width), full(batch, hidden),
                        full(rows, width), 0, gates, cells, tanh_cells, c0, w_hh, w_hr, sizes,
                        False, full(batch, width), full(batch, hidden), parts=parts)  # fmt: skip


def _exercise_options(dtype: torch.dtype, cell: str = "options") -> None:
    """:func:`_exercise` for the options kernels, through the engine's layer: one LSTM
    with every option (every cell and option passes the kernels the same types: an
    option that is off is an array with no rows)."""
    from rnnkit.engine.options import OptionsSpec, options_layer_backward, options_layer_forward
    from rnnkit.masks import LayerMasks

    full = _full(dtype)
    steps, batch, hidden, width = 3, 2, 3, 2
    x, batch_sizes, spec = (
        full(steps * batch, width),
        [batch] * steps,
        OptionsSpec("lstm", False, True, True),
    )
    states = (full(1, batch, hidden), full(1, batch, hidden))
    weights = [full(4 * hidden, width), full(4 * hidden, hidden), *(full(4 * hidden),) * 4]
    masks = LayerMasks(full(1, batch, hidden), full(1, steps * batch, hidden),
                       full(1, steps * batch, hidden))  # fmt: skip
    args = (batch_sizes, (False,), spec, "compiled")
    out, finals, kept = options_layer_forward(x, states, weights, masks, *args)
    grads = (full(*out.shape), tuple(full(*s.shape) for s in finals))
    options_layer_backward(*grads, x, states, weights, masks, out, kept, *args[:3],
                           (True, True, True), "compiled")  # fmt: skip


def _prepare_in_background(kernels: Kernels) -> None:
    """The background thread: compile in a worker process if the cache takes it, then load."""
    start = time.perf_counter()
    try:
        worker_cpu = _compile_in_worker(kernels) if cache.location() is not None else None
        loading = time.perf_counter()
        thread_cpu = time.thread_time()
        previous = sys.getswitchinterval()
        sys.setswitchinterval(_LOAD_SWITCH_INTERVAL)
        try:
            compiled_here = load(*kernels)
        finally:
            sys.setswitchinterval(previous)
    except Exception:
        logger.warning(
            "rnnkit.compiled: preparing the %s kernels failed; torch ops keep running them",
            _name(kernels), exc_info=True,
        )  # fmt: skip
        return
    end = time.perf_counter()
    _cpu_seconds[kernels] += worker_cpu or 0.0
    logger.info(
        "rnnkit.compiled: %s kernels ready after %.1f s (worker process %s; %s here in %.2f s, "
        "%.2f s of CPU)",
        _name(kernels), end - start,
        "not used" if worker_cpu is None else f"{worker_cpu:.1f} s of CPU",
        "compiled" if compiled_here else "loaded", end - loading, time.thread_time() - thread_cpu,
    )  # fmt: skip


def _compile_in_worker(kernels: Kernels) -> float | None:
    """Compile one set of kernels into the disk cache in a new Python process.

    Returns:
        The worker's CPU time in seconds, or None where no worker could run
        (then the caller compiles them in this process).
    """
    if getattr(sys, "frozen", False) or not sys.executable:
        return None
    env = {
        **os.environ,
        # the worker must import this same rnnkit, found however this process found it
        "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
        # one core: the caller keeps the others; compiling is single-threaded anyway
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    code = "import sys; from rnnkit.compiled import warmup; warmup._worker(*sys.argv[1:])"
    dtype, cell = kernels
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, _dtype_name(dtype), cell], env=env, capture_output=True,
            text=True, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except OSError as error:
        logger.info("rnnkit.compiled: no worker process (%s); compiling here", error)
        return None
    if result.returncode != 0:
        logger.warning(
            "rnnkit.compiled: the worker compiling the %s kernels failed (exit status %d); "
            "compiling here. Its last output: %s",
            _name(kernels), result.returncode, result.stderr.strip()[-2000:],
        )  # fmt: skip
        return None
    return float(result.stdout.split()[-1])


def _worker(dtype_name: str, cell: str = "rnn") -> None:
    """The worker process: compile one set of kernels into the cache, print its CPU time."""
    torch.set_num_threads(1)
    load(getattr(torch, dtype_name), cell)
    print(time.process_time())


def _log_ready(kernels: Kernels, seconds: float, compiled_now: bool) -> None:
    logger.info(
        "rnnkit.compiled: %s kernels %s in %.1f s (cache: %s)",
        _name(kernels), "compiled" if compiled_now else "loaded", seconds,
        cache.location() or "none",
    )  # fmt: skip


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _name(kernels: Kernels) -> str:
    """``"float32-lstm"``: the set in log lines and in the cache's completion marker."""
    dtype, cell = kernels
    return f"{_dtype_name(dtype)}-{cell}"


def _forget_unfinished() -> None:
    """In a forked child the background threads are gone: start again if needed."""
    global _lock
    _lock = threading.Lock()
    _threads.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_unfinished)
