"""Benchmark rnnkit's recurrent layers against torch's on CPU.

Each cell's layer is timed against torch's of the same name: ``rnnkit.RNN``
against ``torch.nn.RNN`` (cell ``rnn``), ``rnnkit.LSTM`` against
``torch.nn.LSTM`` (``lstm``), ``rnnkit.GRU`` against ``torch.nn.GRU`` (``gru``).
Both modules run in the same process, in float32, on the same input and the same
weights: rnnkit's parameters are loaded from the torch module's ``state_dict``
(the parameter names are identical). Each row of the result is one
(cell, shape, layers, direction, mode, threads) case.

Baselines:
    ``torch`` is torch's default CPU path. For LSTM on dense float32 input
    that is oneDNN (``aten::mkldnn_rnn_layer``, training included), so LSTM
    rows also time a second baseline, ``torch_onednn_off``: the same
    ``torch.nn.LSTM`` with oneDNN turned off around each call, which is the
    per-step path torch takes wherever oneDNN cannot run (PackedSequence input,
    ``proj_size > 0``, float64). torch.nn.RNN and torch.nn.GRU never use
    oneDNN on CPU, so their rows have the one baseline.

Shape vocabulary (torch's): ``T`` time steps (torch's ``L``), ``N`` batch,
``H_in`` input features, ``H_out`` hidden features, ``D`` directions (2 if
bidirectional else 1). A shape is written ``(T, N, H_in, H_out)``.

Inputs:
    Dense ``(T, N, H_in)`` tensors, and with ``packed`` a ``PackedSequence`` of
    unequal lengths (drawn from ``[T / 2, T]``, the first ``T``, unsorted:
    ``pack_padded_sequence(..., enforce_sorted=False)`` inside each call, for both
    implementations). ``proj_size`` gives the LSTM rows a projection (other cells'
    rows have none). Packed and projected rows are where torch.nn.LSTM leaves
    oneDNN for its per-step path.

Modes:
    ``inference``: one forward call under ``torch.inference_mode()``.
    ``train``: one training step, the forward call followed by a backward pass
    of random upstream gradients for ``output`` and ``h_n``; it computes the
    gradients with respect to every parameter and to the input, freshly
    allocated each step as ``zero_grad(set_to_none=True)`` would leave them.

Timing:
    After warm-up calls, the two implementations are called alternately
    (A, B, B, A, A, B, ...), so that the noise of a shared machine falls on both
    alike and neither always runs second, each call timed with
    ``time.perf_counter`` with the garbage collector paused. The repeat count
    is chosen from a time budget per implementation and row unless given
    (timing stops early, after at least three calls of each, past five times
    the budget), and the median is reported. ``ratio`` is torch's median over
    rnnkit's: above 1 means rnnkit is faster; ``ratio_onednn_off`` is the same
    against the LSTM's second baseline. A row where any implementation's
    interquartile range exceeds a quarter of its median is flagged noisy: on a
    shared machine other processes were competing for the CPUs, which hurts most
    with several threads, where one descheduled thread stalls the others at
    every parallel op.

Peak extra memory:
    One further call of each implementation runs under
    ``torch.profiler.profile(profile_memory=True)``, which records every
    allocation and free of torch's CPU allocator with its size and time (read
    from the profile's raw Kineto events: the per-op summary has no timeline).
    The running sum of those sizes, in time order, is the memory torch holds beyond
    what it held before the call; its maximum is the peak. Memory held before
    the call (weights, input) is not counted; the returned output and
    gradients are, as they are allocated by the call. ``tracemalloc`` does not
    see torch's allocations, but it does see numpy buffers and Python objects,
    so its peak over the same call is added: the total is an upper bound
    should an engine keep scratch memory in numpy. The peak is also given as a
    multiple of the output size ``T * N * D * H_out * 4`` bytes.

Example:
    >>> from rnnkit.benchmark import CELLS, BenchmarkConfig, format_table, run_benchmark
    >>> config = BenchmarkConfig(cells=CELLS, shapes=((100, 30, 4, 64),), threads=(1,))
    >>> results = run_benchmark(config)  # doctest: +SKIP
    >>> len(results)  # 3 cells x 2 layers x 2 directions x 2 modes x 1 thread  # doctest: +SKIP
    24
    >>> print(format_table(results))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import itertools
import logging
import math
import os
import platform
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from rnnkit import compiled
from rnnkit.bound import sequential_gemm_bound_ms
from rnnkit.cpu import has_avx512
from rnnkit.engine import workspace

logger = logging.getLogger(__name__)

Shape = tuple[int, int, int, int]  # (T, N, H_in, H_out)

REFERENCE_SHAPE: Shape = (100, 30, 4, 64)
DEFAULT_SHAPES: tuple[Shape, ...] = (
    REFERENCE_SHAPE,
    (100, 30, 4, 256),
    (50, 64, 32, 128),
    (200, 32, 64, 512),
    (1000, 8, 16, 64),
    (100, 1, 4, 64),
)
MODES = ("inference", "train")
CELLS = ("rnn", "lstm", "gru")
IMPLEMENTATIONS = ("torch", "rnnkit")  # result keys; torch is the baseline
ONEDNN_OFF = "torch_onednn_off"  # result key of LSTM's second baseline
_LAYER_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}  # in torch.nn and in rnnkit
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # gate blocks stacked in each weight

# A float32 engine that matches nn.RNN differs by rounding only; anything larger
# means the timings compare different computations.
_AGREEMENT_TOLERANCE = 1e-4
# A row whose interquartile range exceeds this fraction of its median was timed
# while something else competed for the CPUs; its ratio is marked as noisy.
_NOISY_SPREAD = 0.25
# Timing of a row whose repeat count came from the budget stops after this many
# times the budget, once it has the fewest repeats that give a median.
_OVERRUN = 5
_FEWEST_FOR_MEDIAN = 3


class _Step:
    """One call of a module (forward or training step) and the leaves it gives gradients."""

    def __init__(
        self, call: Callable[[], tuple[torch.Tensor, ...]], leaves: Sequence[torch.Tensor]
    ):
        self._call = call
        self.leaves = list(leaves)

    def __call__(self) -> tuple[torch.Tensor, ...]:
        return self._call()

    def clear_grads(self) -> None:
        """Drops the gradients of the last call, as zero_grad(set_to_none=True) does."""
        for leaf in self.leaves:
            leaf.grad = None


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to benchmark and how long to spend on it.

    Every sequence field is one axis of the grid; the rows are their product.
    """

    cells: tuple[str, ...] = ("rnn",)  # subset of CELLS: whose layers to time against torch's
    shapes: tuple[Shape, ...] = DEFAULT_SHAPES  # (T, N, H_in, H_out) each
    layers: tuple[int, ...] = (1, 2)  # values of num_layers
    bidirectional: tuple[bool, ...] = (False, True)  # values of bidirectional
    packed: tuple[bool, ...] = (False,)  # True: PackedSequence input of unequal lengths
    proj_size: int = 0  # the LSTM rows' proj_size (0: none; other cells have none)
    modes: tuple[str, ...] = MODES  # subset of MODES
    threads: tuple[int, ...] = (1, 2)  # values for torch.set_num_threads
    repeats: int | None = None  # timed calls per implementation and row; None: from budget_s
    budget_s: float = 0.75  # seconds of timed calls per implementation and row
    warmup: int = 3  # untimed calls per implementation before timing, at least 1
    min_repeats: int = 5  # fewest timed calls when repeats is None
    max_repeats: int = 500  # most timed calls when repeats is None
    measure_memory: bool = True  # profile one more call of each for peak memory
    seed: int = 0  # seeds weights, input and upstream gradients

    def __post_init__(self) -> None:
        # Lists from argparse or JSON become tuples so that the config stays hashable.
        for name in ("cells", "shapes", "layers", "bidirectional", "packed", "modes", "threads"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "shapes", tuple(tuple(s) for s in self.shapes))
        for shape in self.shapes:
            if len(shape) != 4 or not all(_is_positive_int(v) for v in shape):
                raise ValueError(
                    "Received an invalid value for argument `shapes`, expected "
                    f"(T, N, H_in, H_out) tuples of positive integers, got {shape!r}."
                )
        for name in ("layers", "threads"):
            values = getattr(self, name)
            if not all(_is_positive_int(v) for v in values):
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, expected "
                    f"positive integers, got {values!r}."
                )
        for name in ("bidirectional", "packed"):
            if not all(isinstance(v, bool) for v in getattr(self, name)):
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, expected "
                    f"booleans, got {getattr(self, name)!r}."
                )
        too_wide = [shape for shape in self.shapes if self.proj_size >= shape[3]]
        if (
            not isinstance(self.proj_size, int)
            or self.proj_size < 0
            or (self.proj_size and too_wide)
        ):
            raise ValueError(
                "Received an invalid value for argument `proj_size`, expected 0 or a "
                f"positive integer below every shape's H_out, got {self.proj_size!r}."
            )
        if not set(self.cells) <= set(CELLS):
            raise ValueError(
                f"Received an invalid value for argument `cells`, expected a subset "
                f"of {CELLS!r}, got {self.cells!r}."
            )
        if not set(self.modes) <= set(MODES):
            raise ValueError(
                f"Received an invalid value for argument `modes`, expected a subset "
                f"of {MODES!r}, got {self.modes!r}."
            )
        for name in ("cells", "shapes", "layers", "bidirectional", "packed", "modes", "threads"):
            if not getattr(self, name):
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, expected at "
                    "least one value, got none."
                )
        if self.repeats is not None and not _is_positive_int(self.repeats):
            raise ValueError(
                "Received an invalid value for argument `repeats`, expected a "
                f"positive integer or None, got {self.repeats!r}."
            )
        if not self.budget_s > 0:
            raise ValueError(
                "Received an invalid value for argument `budget_s`, expected a "
                f"positive number of seconds, got {self.budget_s!r}."
            )
        for name in ("warmup", "min_repeats"):
            if not _is_positive_int(getattr(self, name)):
                raise ValueError(
                    f"Received an invalid value for argument `{name}`, expected a "
                    f"positive integer, got {getattr(self, name)!r}."
                )
        if not (_is_positive_int(self.max_repeats) and self.max_repeats >= self.min_repeats):
            raise ValueError(
                "Received an invalid value for argument `max_repeats`, expected an "
                f"integer >= min_repeats ({self.min_repeats}), got {self.max_repeats!r}."
            )

    @classmethod
    def quick(cls, **overrides: Any) -> BenchmarkConfig:
        """A smoke-test configuration: the reference shape and short budgets.

        Args:
            **overrides: Fields to set instead of the quick defaults.

        Returns:
            The configuration.
        """
        fields = {
            "shapes": (REFERENCE_SHAPE,),
            "budget_s": 0.1,
            "warmup": 2,
            "min_repeats": 3,
        }
        fields.update(overrides)
        return cls(**fields)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def run_benchmark(
    config: BenchmarkConfig | None = None,
    *,
    candidate: Callable[..., nn.Module] | None = None,
) -> list[dict[str, Any]]:
    """Times rnnkit's layer against torch's on every row of the grid.

    The global number of torch threads is set per row and restored at the end;
    the global random state and torch's oneDNN switch are left as they were.

    Args:
        config: What to run; ``BenchmarkConfig()`` (the full grid) if None.
        candidate: The module class compared with torch's layer of every row's
            cell, called like it; rnnkit's layer of the cell if None.

    Returns:
        One dict per row, in grid order (cell, shape, layers, direction, packed,
        mode, threads), with keys ``cell``, ``T``, ``N``, ``H_in``, ``H_out``,
        ``num_layers``, ``bidirectional``, ``packed``, ``proj_size`` (the row's: 0
        but in LSTM rows), ``mode``, ``threads``, ``repeats`` (timed calls of
        each implementation), ``output_bytes``, ``load_average`` (of the
        machine, over the minute before the row ended), ``ratio`` (torch's
        median time over rnnkit's), ``ratio_onednn_off`` (the same for the
        LSTM's second baseline; None in other cells' rows), ``bound_ms`` and
        ``bound_fraction`` (the sequential-GEMM bound of :mod:`rnnkit.bound`
        and its fraction of rnnkit's time),
        ``noisy`` (whether any implementation's interquartile range exceeds a
        quarter of its median, the sign of competing processes), ``max_rel_diff``
        (largest difference between rnnkit's outputs and gradients and each
        baseline's, relative to the largest magnitude of each tensor), and one
        dict per implementation under ``"torch"``, ``"torch_onednn_off"`` (None
        in rows of other cells than LSTM) and ``"rnnkit"`` with ``median_ms``, ``iqr_ms``,
        ``peak_bytes``, ``peak_torch_bytes``, ``peak_python_bytes`` and
        ``peak_x_output`` (the four memory keys are None when memory is not
        measured).
    """
    config = config if config is not None else BenchmarkConfig()
    if max(config.threads) > (os.cpu_count() or 1):
        logger.warning(
            "Timing with %d threads on %d CPUs: those rows measure contention.",
            max(config.threads),
            os.cpu_count(),
        )
    _warn_if_busy()
    if candidate is None and compiled.available():
        # "auto" runs torch ops while the compiled kernels are prepared on first use:
        # time the engine as it runs once they are ready, not that first minute.
        from rnnkit.compiled import warmup

        for cell in dict.fromkeys(config.cells):
            warmup.wait(torch.float32, cell)
    results = []
    started = time.perf_counter()
    with warnings.catch_warnings():
        # torch says, once, that it leaves oneDNN for a projected LSTM: these rows time that.
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        _run_grid(config, candidate, results)
    logger.info("Benchmarked %d rows in %.1f s.", len(results), time.perf_counter() - started)
    return results


def _run_grid(config: BenchmarkConfig, candidate, results: list[dict[str, Any]]) -> None:
    """:func:`run_benchmark`'s rows, appended to ``results`` as they finish."""
    threads_before = torch.get_num_threads()
    try:
        for cell, shape, num_layers, bidirectional, packed, mode, threads in _grid(config):
            torch.set_num_threads(threads)
            layer = candidate if candidate is not None else _rnnkit_layer(cell)
            case = _Case(cell, shape, num_layers, bidirectional, packed, mode, threads)
            row = _run_row(config, layer, case)
            logger.info("%s", _describe(row))
            results.append(row)
    finally:
        torch.set_num_threads(threads_before)


def _warn_if_busy() -> None:
    load = _load_average()
    cpus = os.cpu_count() or 1
    if load is not None and load > 0.5 * cpus:
        logger.warning(
            "Load average %.1f on %d CPUs: other processes compete with the timings, "
            "most of all with several threads; rows they disturb are marked noisy.",
            load,
            cpus,
        )


def _load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _rnnkit_layer(cell: str) -> Callable[..., nn.Module]:
    # Imported on use: a top-level import would be circular should the
    # package (a `rnnkit bench` command) import this module.
    import rnnkit

    return getattr(rnnkit, _LAYER_NAMES[cell])


def _grid(config: BenchmarkConfig) -> Iterator[tuple[str, Shape, int, bool, bool, str, int]]:
    return itertools.product(
        config.cells, config.shapes, config.layers, config.bidirectional, config.packed,
        config.modes, config.threads,
    )  # fmt: skip


@dataclass(frozen=True)
class _Case:
    """One row of the grid."""

    cell: str
    shape: Shape
    num_layers: int
    bidirectional: bool
    packed: bool
    mode: str
    threads: int


def _run_row(
    config: BenchmarkConfig, candidate: Callable[..., nn.Module], case: _Case
) -> dict[str, Any]:
    """Builds the modules for one row, checks they agree, times them and profiles them."""
    cell, shape, mode, threads = case.cell, case.shape, case.mode, case.threads
    num_layers, bidirectional = case.num_layers, case.bidirectional
    proj_size = config.proj_size if cell == "lstm" else 0
    steps = _make_steps(
        candidate, shape, num_layers, bidirectional, mode, config.seed, cell,
        packed=case.packed, proj_size=proj_size,
    )  # fmt: skip
    warm_times, first_results = _warm_up(steps, config.warmup, config.budget_s)
    max_rel_diff = max(
        _max_rel_diff(first_results[name], first_results["rnnkit"])
        for name in steps
        if name != "rnnkit"
    )
    del first_results
    if not max_rel_diff <= _AGREEMENT_TOLERANCE:
        logger.warning(
            "rnnkit and torch.nn.%s disagree on shape %s, %d layers, %s, %s: max "
            "relative difference %.3g.",
            _LAYER_NAMES[cell],
            shape,
            num_layers,
            _direction(bidirectional),
            mode,
            max_rel_diff,
        )
    if config.repeats is not None:
        samples = _time_interleaved(steps, config.repeats)
    else:
        # The estimate fails when other processes start competing after the
        # warm-up; the time limit keeps such a row from stalling the whole run.
        limit_s = _OVERRUN * len(steps) * config.budget_s
        samples = _time_interleaved(steps, _choose_repeats(warm_times, config), limit_s)
    repeats = len(samples["torch"])

    T, N, _, H_out = shape
    output_bytes = T * N * (2 if bidirectional else 1) * (proj_size or H_out) * 4  # float32
    row: dict[str, Any] = {
        "cell": cell,
        "T": T,
        "N": N,
        "H_in": shape[2],
        "H_out": H_out,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "packed": case.packed,
        "proj_size": proj_size,
        "mode": mode,
        "threads": threads,
        "repeats": repeats,
        "output_bytes": output_bytes,
        "load_average": _load_average(),  # of the minute before the row ended
    }
    row[ONEDNN_OFF] = None  # replaced below in LSTM rows
    for name, step in steps.items():
        torch_bytes, python_bytes = _peak_memory(step) if config.measure_memory else (None, None)
        row[name] = _summarize_impl(samples[name], torch_bytes, python_bytes, output_bytes)
    ours_ms = row["rnnkit"]["median_ms"]
    row["ratio"] = row["torch"]["median_ms"] / ours_ms
    row["ratio_onednn_off"] = row[ONEDNN_OFF]["median_ms"] / ours_ms if row[ONEDNN_OFF] else None
    batch_sizes = None
    if case.packed:
        lengths = packed_lengths(T, N, config.seed)
        batch_sizes = [int((lengths > t).sum()) for t in range(T)]
    row["bound_ms"] = sequential_gemm_bound_ms(
        *shape, num_layers, bidirectional, mode == "train", gates=_GATES[cell],
        batch_sizes=batch_sizes, proj_size=proj_size,
    )  # fmt: skip
    row["bound_fraction"] = row["bound_ms"] / ours_ms
    row["noisy"] = any(
        row[name]["iqr_ms"] > _NOISY_SPREAD * row[name]["median_ms"] for name in steps
    )
    row["max_rel_diff"] = max_rel_diff
    return row


def _make_steps(
    candidate: Callable[..., nn.Module],
    shape: Shape,
    num_layers: int,
    bidirectional: bool,
    mode: str,
    seed: int,
    cell: str = "rnn",
    packed: bool = False,
    proj_size: int = 0,
) -> dict[str, _Step]:
    """Builds torch's module of ``cell``, copies its weights into the candidate, and a
    step for each; for LSTM also a step of torch's module with oneDNN off."""
    T, N, H_in, H_out = shape
    D = 2 if bidirectional else 1
    P = proj_size or H_out  # features of h
    layer = getattr(nn, _LAYER_NAMES[cell])
    kwargs = {"num_layers": num_layers, "bidirectional": bidirectional}
    if proj_size:
        kwargs["proj_size"] = proj_size
    # Forked so that seeding here, and the candidate's own initialisation, leave
    # the caller's random stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = layer(H_in, H_out, **kwargs)
        x = torch.randn(T, N, H_in)
        h0 = torch.randn(num_layers * D, N, P)
        grad_output = torch.randn(T, N, D * P)
        grad_h_n = torch.randn(num_layers * D, N, P)
        hx, grad_state = h0, grad_h_n
        if cell == "lstm":  # (h, c); c has H_out features
            hx = (h0, torch.randn(num_layers * D, N, H_out))
            grad_state = (grad_h_n, torch.randn(num_layers * D, N, H_out))
        lengths = None
        if packed:
            lengths = packed_lengths(T, N, seed)
            grad_output = _packed(grad_output, lengths).data  # (R, D * P)
        engine = candidate(H_in, H_out, **kwargs)
    engine.load_state_dict(reference.state_dict())
    modules = {"torch": reference, "rnnkit": engine}
    if cell == "lstm":
        # A module of its own, or the two baselines would share parameter gradients.
        modules = {"torch": reference, ONEDNN_OFF: copy.deepcopy(reference), "rnnkit": engine}
    steps = {
        name: _make_step(module, mode, x, hx, grad_output, grad_state, lengths)
        for name, module in modules.items()
    }
    if ONEDNN_OFF in steps:
        steps[ONEDNN_OFF] = _with_onednn_off(steps[ONEDNN_OFF])
    return steps


def _with_onednn_off(step: _Step) -> _Step:
    """The same step, with torch's oneDNN backend turned off for the call and its backward."""

    def call() -> tuple[torch.Tensor, ...]:
        # The switch alone: torch.backends.mkldnn.flags(enabled=False) also resets
        # TF32, precision and determinism settings, and warns about TF32 on CPU builds.
        was_enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return step()
        finally:
            torch.backends.mkldnn.enabled = was_enabled

    return _Step(call, step.leaves)


def _make_step(
    module: nn.Module,
    mode: str,
    x: torch.Tensor,
    hx: torch.Tensor | tuple[torch.Tensor, ...],
    grad_output: torch.Tensor,
    grad_state: torch.Tensor | tuple[torch.Tensor, ...],
    lengths: torch.Tensor | None = None,
) -> _Step:
    """Returns one call of ``module`` in ``mode``, returning outputs and gradients.

    ``hx`` and ``grad_state`` are a tensor (``h_0`` and the gradient of
    ``h_n``) or, for LSTM, a tuple (``(h_0, c_0)`` and those of ``(h_n, c_n)``).
    With ``lengths`` the call packs ``x`` first, and ``grad_output`` is the packed
    output's. The call returns ``output`` (its packed data), the final state's
    tensors, then in training the gradients of the input and of every parameter
    (sorted by name).
    """

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        output, state = module(x if lengths is None else _packed(x, lengths), hx)
        return (output if lengths is None else output.data), _tensors(state)

    if mode == "inference":

        def infer() -> tuple[torch.Tensor, ...]:
            with torch.inference_mode():
                output, state = forward(x)
                return (output, *state)

        return _Step(infer, leaves=())

    # Each module gets its own input leaf, or they would share x.grad.
    x = x.detach().clone().requires_grad_(True)
    # Sorted by name so that the implementations' gradients line up.
    leaves = [x] + [p for _, p in sorted(module.named_parameters())]

    def train() -> tuple[torch.Tensor, ...]:
        # Part of every training step, so part of its time.
        for leaf in leaves:
            leaf.grad = None
        output, state = forward(x)
        torch.autograd.backward((output, *state), (grad_output, *_tensors(grad_state)))
        return (output.detach(), *(s.detach() for s in state), *(leaf.grad for leaf in leaves))

    return _Step(train, leaves)


def packed_lengths(T: int, N: int, seed: int) -> torch.Tensor:
    """The sequence lengths of a packed row: unequal, unsorted, drawn from ``[T / 2, T]``,
    the first ``T``; from a generator of their own, so that the row's bound can ask again."""
    lengths = torch.randint(
        (T + 1) // 2, T + 1, (N,), generator=torch.Generator().manual_seed(seed)
    )
    lengths[0] = T
    return lengths


def _packed(x: torch.Tensor, lengths: torch.Tensor) -> PackedSequence:
    """``x`` packed with ``lengths``, in any order. Shape: x ``(T, N, *)``."""
    return pack_padded_sequence(x, lengths, enforce_sorted=False)


def _tensors(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``h_n`` as a one-tuple, ``(h_n, c_n)`` as it is."""
    return state if isinstance(state, tuple) else (state,)


def _warm_up(
    steps: dict[str, _Step], warmup: int, budget_s: float
) -> tuple[dict[str, list[float]], dict[str, tuple[torch.Tensor, ...]]]:
    """Calls each step up to ``warmup`` times, stopping early once past ``budget_s``.

    Returns:
        The time of each warm-up call per implementation, and each
        implementation's results from its first call.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    first: dict[str, tuple[torch.Tensor, ...]] = {}
    started = time.perf_counter()
    for i in range(warmup):
        # At least two rounds when asked for: the first may include one-off
        # compilation, and the repeat count is estimated from the later ones.
        if i >= 2 and time.perf_counter() - started > budget_s:
            break
        for name, step in steps.items():
            t0 = time.perf_counter()
            result = step()
            times[name].append(time.perf_counter() - t0)
            first.setdefault(name, result)
            del result
    return times, first


def _choose_repeats(warm_times: dict[str, list[float]], config: BenchmarkConfig) -> int:
    """Picks the number of timed pairs that fills the budget of both implementations."""
    # The fastest warm-up call is the estimate least affected by the first call's compilation.
    pair_s = sum(min(times) for times in warm_times.values())
    repeats = math.ceil(len(warm_times) * config.budget_s / max(pair_s, 1e-9))
    return min(max(repeats, config.min_repeats), config.max_repeats)


def _median_interleaved(
    calls: dict[str, Callable[[], object]], repeats: int, warm: int = 3
) -> dict[str, float]:
    """Median seconds of one call of each of ``calls``: ``warm`` untimed calls of each
    (compilation, first allocations), then :func:`_time_interleaved`."""
    for _ in range(warm):
        for call in calls.values():
            call()
    seconds = _time_interleaved(calls, repeats)  # alternating which runs first
    return {name: statistics.median(times) for name, times in seconds.items()}


def _time_interleaved(
    steps: dict[str, _Step],
    repeats: int,
    limit_s: float = math.inf,
    before: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Times ``repeats`` calls of each step, alternating which runs first.

    Args:
        steps: The calls to time, by implementation.
        repeats: Calls of each.
        limit_s: Seconds after which to stop early, once each has been called
            at least three times (or ``repeats`` times if fewer).
        before: Called, untimed, before every timed call (a torch.nn.RNN step,
            to time a call as it runs after one: see benchmarks/interleave_effect.py).

    Returns:
        Seconds per call, per implementation.
    """
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    # A collection inside one call would charge that call for garbage made by others.
    started = time.perf_counter()
    with _gc_paused():
        for i in range(repeats):
            if i >= _FEWEST_FOR_MEDIAN and time.perf_counter() - started > limit_s:
                logger.warning("Stopped timing after %d of %d repeats: over time.", i, repeats)
                break
            for name in order if i % 2 == 0 else reversed(order):
                step = steps[name]
                if before is not None:
                    before()
                t0 = time.perf_counter()
                step()
                samples[name].append(time.perf_counter() - t0)
    return samples


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector, as ``timeit`` does."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _peak_memory(step: _Step) -> tuple[int | None, int]:
    """Measures the peak extra memory of one call of ``step``.

    Returns:
        The peak bytes held by torch's CPU allocator beyond those held before
        the call (None if the profiler's events cannot be read), and the peak
        bytes traced by ``tracemalloc`` (numpy and Python) beyond those held
        before.
    """
    # Import kept local: the profiler is only needed when memory is measured.
    from torch.profiler import ProfilerActivity, profile

    # Freed now, not inside the profile, where freeing memory held before the
    # call would lower the running sum and hide part of the peak.
    step.clear_grads()
    # rnnkit keeps its backward scratch between calls (rnnkit.engine.workspace): freed
    # first, so that the call's peak counts it as torch's counts its own buffers.
    workspace.release()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    # Collection paused: freeing garbage of earlier calls would lower the running sum.
    with _gc_paused(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        python_before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        # Kept alive until the profile ends: the output is memory the call leaves behind.
        result = step()
        python_peak = tracemalloc.get_traced_memory()[1] - python_before
    if not was_tracing:
        tracemalloc.stop()
    del result
    return _allocator_peak(prof), max(python_peak, 0)


def _allocator_peak(prof: Any) -> int | None:
    """The maximum running sum of the allocation (+) and free (-) events of a profile."""
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:
        logger.warning("This torch's profiler does not expose its memory events.")
        return None
    # Sorted on time alone: the sort is stable, so events of the same nanosecond
    # keep the order in which they were recorded.
    sizes = sorted(
        ((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]"),
        key=lambda time_and_size: time_and_size[0],
    )
    if not sizes:
        # Every call allocates its output, so no events means none were recorded.
        logger.warning("The profiler recorded no allocations; peak memory is unknown.")
        return None
    held = peak = 0
    for _, nbytes in sizes:
        held += nbytes
        peak = max(peak, held)
    return peak


def _max_rel_diff(expected: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> float:
    """The largest ``max|actual - expected| / max|expected|`` over pairs of tensors."""
    worst = 0.0
    for e, a in zip(expected, actual, strict=True):
        if a is None or e is None or a.shape != e.shape:
            return math.inf
        scale = e.abs().max().item() if e.numel() else 0.0
        diff = (a.detach() - e.detach()).abs().max().item() if e.numel() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def _summarize_impl(
    seconds: list[float],
    peak_torch_bytes: int | None,
    peak_python_bytes: int | None,
    output_bytes: int,
) -> dict[str, Any]:
    ms = [s * 1e3 for s in seconds]
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4)
    else:
        q1 = q3 = ms[0]
    peak = None if peak_torch_bytes is None else peak_torch_bytes + (peak_python_bytes or 0)
    return {
        "median_ms": statistics.median(ms),
        "iqr_ms": q3 - q1,
        "peak_bytes": peak,
        "peak_torch_bytes": peak_torch_bytes,
        "peak_python_bytes": peak_python_bytes,
        "peak_x_output": None if peak is None else peak / output_bytes,
    }


def _direction(bidirectional: bool) -> str:
    return "bi" if bidirectional else "uni"


def _shape_label(row: dict[str, Any]) -> str:
    label = f"{row['T']}x{row['N']}x{row['H_in']}x{row['H_out']}"
    if row.get("proj_size"):  # .get: rows written before these options
        label += f" P={row['proj_size']}"
    return label + (" packed" if row.get("packed") else "")


def _describe(row: dict[str, Any]) -> str:
    off = row[ONEDNN_OFF]
    return (
        f"{row['cell']} {_shape_label(row)} L={row['num_layers']} "
        f"{_direction(row['bidirectional'])} {row['mode']} threads={row['threads']}: "
        f"torch {row['torch']['median_ms']:.3f} ms, "
        + (f"torch without oneDNN {off['median_ms']:.3f} ms, " if off else "")
        + f"rnnkit {row['rnnkit']['median_ms']:.3f} ms, ratio {row['ratio']:.2f}"
        + (f" ({row['ratio_onednn_off']:.2f} without oneDNN)" if off else "")
        + f" ({row['repeats']} repeats{', noisy' if row['noisy'] else ''})"
    )


_Column = tuple[str, bool, Callable[[dict[str, Any]], str]]  # header, right-aligned, cell text


def _columns(results: Sequence[dict[str, Any]]) -> list[_Column]:
    """The table's columns: the Elman-only table's, plus a cell column where other
    cells appear and the oneDNN-off baseline's columns where LSTM does."""
    gated = any(row["cell"] != "rnn" for row in results)
    onednn_off = any(row[ONEDNN_OFF] is not None for row in results)

    def off(text: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        return lambda row: text(row) if row[ONEDNN_OFF] is not None else "-"

    columns: list[_Column] = [("cell", False, lambda row: row["cell"])] if gated else []
    columns += [
        ("shape TxNxH_inxH_out", False, _shape_label),
        ("layers", True, lambda row: str(row["num_layers"])),
        ("dir", False, lambda row: _direction(row["bidirectional"])),
        ("mode", False, lambda row: row["mode"]),
        ("threads", True, lambda row: str(row["threads"])),
        ("torch ms", True, lambda row: _format_ms(row["torch"]["median_ms"])),
    ]
    if onednn_off:
        columns.append(
            ("no-oneDNN ms", True, off(lambda row: _format_ms(row[ONEDNN_OFF]["median_ms"])))
        )
    columns += [
        ("rnnkit ms", True, lambda row: _format_ms(row["rnnkit"]["median_ms"])),
        ("ratio", True, lambda row: _format_ratio(row["ratio"], row["noisy"])),
    ]
    if onednn_off:
        columns.append(
            (
                "ratio no-oneDNN",
                True,
                off(lambda row: _format_ratio(row["ratio_onednn_off"], row["noisy"])),
            )
        )
    columns += [
        ("bound %", True, _format_bound),
        ("torch peak", True, lambda row: _format_peak(row["torch"])),
    ]
    if onednn_off:
        columns.append(("no-oneDNN peak", True, off(lambda row: _format_peak(row[ONEDNN_OFF]))))
    columns.append(("rnnkit peak", True, lambda row: _format_peak(row["rnnkit"])))
    return columns


def format_table(results: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Formats benchmark rows as a table followed by a summary line per cell.

    Times are medians in milliseconds; ``ratio`` is torch's time over rnnkit's
    (above 1: rnnkit is faster), marked ``*`` where the row was noisy; peaks
    are the peak extra memory and its multiple of the output size. Where LSTM
    rows appear, ``no-oneDNN`` columns give torch.nn.LSTM with oneDNN off,
    its time, rnnkit's ratio to it and its peak (``-`` in other cells' rows);
    where other cells than the Elman one appear, a first column names the cell.

    Args:
        results: Rows as returned by ``run_benchmark``.
        markdown: Whether to write a GitHub-flavoured markdown table instead of
            aligned plain text.

    ``bound %`` is the sequential-GEMM bound (see :mod:`rnnkit.bound`) as a
    percentage of rnnkit's time: how close rnnkit comes to the GEMMs it cannot avoid.

    Returns:
        The table and the summary, without a trailing newline.
    """
    columns = _columns(results)
    cells = [[text(row) for _, _, text in columns] for row in results]
    headers = [header for header, _, _ in columns]
    summary = _summary_lines(results)
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join("---:" if right else "---" for _, right, _ in columns) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join([*lines, *(part for line in summary for part in ("", line))])
    widths = [max(len(row[i]) for row in [headers, *cells]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, (_, right, _) in zip(values, widths, columns, strict=True)
        ).rstrip()

    lines = [line(headers), line(["-" * width for width in widths])]
    lines += [line(row) for row in cells]
    return "\n".join([*lines, *summary])


def _format_bound(row: dict[str, Any]) -> str:
    fraction = row.get("bound_fraction")
    return "-" if fraction is None else f"{100 * fraction:.0f}"


def _format_ratio(ratio: float, noisy: bool) -> str:
    return f"{ratio:.2f}" + ("*" if noisy else "")


def _format_ms(ms: float) -> str:
    # Three significant figures without switching to exponent notation.
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _format_peak(impl: dict[str, Any]) -> str:
    if impl["peak_bytes"] is None:
        return "n/a"
    return f"{_format_bytes(impl['peak_bytes'])} ({impl['peak_x_output']:.1f}x)"


def _format_bytes(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(nbytes) < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} GiB"


def summarize(results: Sequence[dict[str, Any]]) -> str:
    """One line per cell: how many rows rnnkit is slower in, and the mean ratio per mode.

    Args:
        results: Rows as returned by ``run_benchmark``.

    Returns:
        The summary, a line per cell present, in the order of ``CELLS``.
    """
    return "\n".join(_summary_lines(results))


def _summary_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    if not results:
        return ["No rows."]
    lines = []
    for cell in CELLS:
        rows = [row for row in results if row["cell"] == cell]
        if rows:
            lines.append(_summarize_cell(f"torch.nn.{_LAYER_NAMES[cell]}", rows))
    return lines


def _summarize_cell(baseline: str, rows: Sequence[dict[str, Any]]) -> str:
    slower = sum(row["ratio"] < 1 for row in rows)
    onednn_off = [row for row in rows if row["ratio_onednn_off"] is not None]
    first = f"rnnkit is slower than {baseline} in {slower} of {len(rows)} rows"
    if onednn_off:
        slower_off = sum(row["ratio_onednn_off"] < 1 for row in onednn_off)
        first += f", than {baseline} with oneDNN off (no-oneDNN) in {slower_off}"
    parts = [first, "geometric-mean ratio " + _mean_ratios(rows, "ratio")]
    if onednn_off:
        parts.append("with oneDNN off " + _mean_ratios(onednn_off, "ratio_onednn_off"))
    noisy = sum(row["noisy"] for row in rows)
    if noisy:
        parts.append(
            f"noisy rows (*: an interquartile range above {_NOISY_SPREAD:.0%} of the "
            f"median): {noisy}"
        )
    parts.append(f"max relative difference {max(row['max_rel_diff'] for row in rows):.1e}")
    return "; ".join(parts) + "."


def _mean_ratios(rows: Sequence[dict[str, Any]], key: str) -> str:
    """``all 1.23, inference 1.50, train 1.01``: the geometric means over all rows and per mode."""
    means = [f"all {_geometric_mean([row[key] for row in rows]):.2f}"]
    for mode in MODES:
        ratios = [row[key] for row in rows if row["mode"] == mode]
        if ratios and len(ratios) < len(rows):
            means.append(f"{mode} {_geometric_mean(ratios):.2f}")
    return ", ".join(means)


def _geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def environment() -> dict[str, Any]:
    """Describes the machine and versions, to store next to the results.

    Returns:
        Versions of Python, torch and rnnkit, the platform, the CPU count, torch's CPU
        capability, whether the CPU has AVX-512 (which of the engine's measured rules
        apply: :mod:`rnnkit.cpu`), whether torch has oneDNN, and the BLAS the compiled
        loops give large products (None without them).
    """
    try:
        from importlib.metadata import version

        rnnkit_version = version("rnnkit")
    except Exception:  # any failure only means the version is unknown
        rnnkit_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rnnkit": rnnkit_version,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512": has_avx512() if compiled.available() else None,
        "onednn": torch.backends.mkldnn.is_available(),  # behind torch.nn.LSTM's default path
        "large_gemm_library": compiled.large_gemm_library() if compiled.available() else None,
    }


def config_to_dict(config: BenchmarkConfig) -> dict[str, Any]:
    """The configuration as plain JSON-ready values.

    Args:
        config: The configuration.

    Returns:
        A dict of its fields.
    """
    return dataclasses.asdict(config)


_TRUE = ("1", "true", "yes", "bi")
_FALSE = ("0", "false", "no", "uni")


def parse_shape(text: str) -> Shape:
    """Parses ``"T,N,H_in,H_out"`` or ``"TxNxH_inxH_out"`` into a shape.

    Args:
        text: The shape as written on a command line.

    Returns:
        The shape as a tuple of four integers.

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not four positive integers.
    """
    parts = text.lower().replace("x", ",").split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected T,N,H_in,H_out as four positive integers (e.g. 100,30,4,64), got {text!r}"
        )
    return shape  # type: ignore[return-value]


def positive_ints(names: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type`` for ``names``, comma-separated (``"L,H_in,H_out"``): it parses
    that many comma-separated positive ints, or raises ``argparse.ArgumentTypeError``
    naming them."""
    count = len(names.split(","))

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count or min(values) < 1:
            raise argparse.ArgumentTypeError(f"expected {names} (positive ints), got {text!r}")
        return values

    return parse


def _parse_direction(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(_FALSE + _TRUE)}, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's options to a command-line parser.

    Options left out stay None, so that ``config_from_args`` can tell them from
    defaults.

    Args:
        parser: The parser (of a script or a CLI subcommand).
    """
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: the reference shape {REFERENCE_SHAPE} only, short budgets",
    )
    parser.add_argument(
        "--cell",
        nargs="+",
        dest="cells",
        choices=(*CELLS, "all"),
        help="whose layers to time against torch's: rnn (default), lstm, gru, or all; "
        "LSTM rows add torch with oneDNN off",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        metavar="T,N,H_in,H_out",
        help="shapes to run (default: the six standard shapes)",
    )
    parser.add_argument("--layers", nargs="+", type=int, metavar="L", help="default: 1 2")
    parser.add_argument(
        "--bidirectional",
        nargs="+",
        type=_parse_direction,
        metavar="{0,1}",
        help="directions to run, 0 (uni) and/or 1 (bi) (default: 0 1)",
    )
    parser.add_argument(
        "--packed",
        nargs="+",
        type=_parse_direction,
        metavar="{0,1}",
        help="input as a PackedSequence of unequal lengths: 0 (dense) and/or 1 (default: 0)",
    )
    parser.add_argument(
        "--proj-size",
        type=int,
        dest="proj_size",
        metavar="P",
        help="proj_size of the LSTM rows (default: 0, none)",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, help="default: inference train")
    parser.add_argument(
        "--threads", nargs="+", type=int, metavar="N", help="torch threads (default: 1 2)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="timed calls per implementation and row (default: from --budget)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        dest="budget_s",
        metavar="SECONDS",
        help="timing budget per implementation and row (default: 0.75; 0.1 with --quick)",
    )
    parser.add_argument("--warmup", type=int, metavar="N", help="untimed calls before timing")
    parser.add_argument(
        "--no-memory",
        dest="measure_memory",
        action="store_const",
        const=False,
        help="skip the profiled call that measures peak memory",
    )
    parser.add_argument("--seed", type=int, help="seed of weights and data (default: 0)")


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """Builds the configuration from options added by ``add_arguments``.

    Args:
        args: The parsed options.

    Returns:
        ``BenchmarkConfig.quick`` if ``--quick`` was given, else the default
        configuration, with every option that was given overriding its field.
        ``--cell all`` stands for every cell; a cell named twice runs once.
    """
    names = ("shapes", "layers", "bidirectional", "packed", "proj_size", "modes", "threads")
    names += ("repeats", "budget_s")
    names += ("warmup", "measure_memory", "seed")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.cells is not None:
        named = (cell for value in args.cells for cell in (CELLS if value == "all" else (value,)))
        overrides["cells"] = tuple(dict.fromkeys(named))
    if args.quick:
        return BenchmarkConfig.quick(**overrides)
    return BenchmarkConfig(**overrides)
