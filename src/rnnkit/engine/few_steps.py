"""Inference of few steps on the compiled loops, once a process has loaded them.

A call of few steps goes to torch's own layer (:mod:`rnnkit.engine.native`) because our
general path costs more around the loops than the loops save: about 150 us of Python a
call at 2 x 1 x 4 x 64 (the stack's and layers' bookkeeping, chunking, the wrappers'
checks). Without it (:func:`rnnkit.compiled.stack_inference.stack_inference`: one
``addmm`` and one kernel call per layer and direction, on arrays built to size) an LSTM's
or GRU's call of a few steps costs less than torch's layer. Against torch's layer, same
weights, one process (``rnnkit bench --cell lstm gru --packed 0 1 --modes inference
--layers 1 --bidirectional 0 1 --threads 1 --budget 0.12 --shapes ...``: T = 1-8 by
``N x H_in x H`` of 1 x 4 x 64, 16 x 32 x 32, 30 x 4 x 64, 64 x 32 x 128, 32 x 64 x 256
and 8 x 256 x 512; AMD Zen 3, one thread, 288 rows):

- LSTM, the 108 rows it runs: geometric mean 1.14, 0.91-1.69 (1.09-1.69 at 6-8 steps of
  16-30 sequences; the lowest, 0.91-0.96, at 1-3 packed steps of 16 x 32 x 32);
- GRU from 3 steps (96 rows): geometric mean 1.21, 0.98-1.92. In earlier runs it read
  0.75-0.86 at one step and 0.87-0.98 at two in one direction (1.00-1.13 in two): torch's
  GRU step costs least, so those stay on torch's layer (``MIN_STEPS``);
- a dense float32 LSTM, which oneDNN runs otherwise: 0.83-0.91 at 4-8 steps of 4-8
  sequences with H = 256-512 (4 x 8 x 128 x 256, 8 x 4 x 256 x 384, 8 x 8 x 256 x 512),
  so only stacks whose layers have fewer than ``ONEDNN_MAX_WEIGHTS`` weights take it.

At two threads (120 rows, one direction) torch's layer runs a larger step's products on
both threads and our loops on one: from ``N * H**2`` of 2**17 (30 x 4 x 64 and up) it read
0.91-0.98 on dense input, and on packed sequences at 32 x 64 x 256 (2**21) at 2-4 steps;
at 1 x 4 x 64 and 16 x 32 x 32, 0.94-1.47. So past one thread only steps of ``N * H**2 <=
MULTI_THREAD_MAX_STEP`` take it, or of ``MULTI_THREAD_MAX_STEP_UNEQUAL`` for sequences of
unequal lengths, which torch runs on its slower packed path: with that limit, two threads,
packed, one direction and two (``rnnkit bench ... --threads 2 --shapes 2,30,4,64
4,30,4,64 2,64,32,128 4,64,32,128 20,8,16,64 40,8,8,32 12,16,32,32 6,64,32,128``),
1.04-2.55 where it ran, 0.97 at two LSTM steps of 30 x 4 x 64.

Past ``MAX_STEPS`` the alternative is the general path itself, which costs the same
Python a call, so the short path also wins longer calls while the call is small: against
the revision before it (``python benchmarks/compare_revisions.py --base a44ec2c --cell
lstm gru --modes inference --threads 1 2 --layers 1 --bidirectional 0 1 [--packed]
--shapes 12,16,32,32 24,16,32,32 16,1,4,64 32,1,4,64 100,1,4,64 20,8,16,64 40,4,8,32
16,8,32,128``), at one thread, packed sequences of unequal lengths read 1.21-1.43 (LSTM)
and 1.18-1.48 (GRU), dense GRU input 1.19-1.56, but for 16 x 8 x 32 x 128 (0.99-1.09,
its projections 256 KiB a direction). So a call of more steps takes it while one
direction's projections fit in ``MAX_PROJECTION_BYTES``, except:

- where oneDNN would run it (a dense float32 LSTM, or packed sequences of equal
  lengths): there the same runs read 0.86-1.04 in one direction (0.96-1.17 in two)
  and 0.91-0.93 for packed sequences of one;
- past one thread at more than one sequence of equal lengths: against the general path
  (alternating call by call, scratch script) dense GRU inference at two threads read
  0.79-0.98 at 40 x 4 x 8 x 32, 20 x 8 x 16 x 64 and 24 x 16 x 32 x 32, one direction and
  two, and 1.56-1.63 at 16 x 1 x 4 x 64 (1.20-1.65 at one thread).

It runs only where the kernels are already loaded (:func:`rnnkit.compiled.warmup.loaded`):
loading them takes about a second from the disk cache, more than a process of only short
calls would save, so a short call never loads them. A process that also makes longer
calls, or trains, loads them for those, and its short calls then take this path; one that
makes only short calls runs them on torch's layer, as before. (``rnnkit bench`` loads the
kernels before it times anything, so its rows are the first kind of process.) Inference
only (autograd not recording), LSTM and GRU (with ``proj_size`` too), under ``"auto"`` and
where the general path would run our loops (:func:`rnnkit.engine.layer.resolve_engine`),
with the batch in one part (:func:`rnnkit.engine.parallel.dense_parts`), and not where
dropout between layers applies (a stack in training mode).

An Elman stack takes it only past every step limit of torch's layer (``MIN_STEPS``: more
than 8 steps), so only in calls whose projections fit ``MAX_PROJECTION_BYTES``, which the
general path ran before: torch's Elman step costs least, and at 3-5 steps of ``N * H**2``
of 2**15-2**16 this path read 0.74-0.92 of torch's layer (1 x 64 x 256, 2 x 4 x 128, 8 x
16 x 64; ``compare_revisions.py --cell rnn --shapes 3,2,4,128 3,8,16,64 ...``). Against
the general path (``python benchmarks/compare_revisions.py --base cdfcc7d --cell rnn
--modes inference --layers 1 2 --bidirectional 0 1 [--packed] --shapes 9,1,4,64
12,16,32,32 40,4,8,32 16,8,32,128 100,1,4,64 100,2,16,64 50,4,32,128 100,10,4,64
200,1,4,256``): 1.03-1.72 dense and 1.20-1.88 packed at one thread; at two threads
1.08-1.19 at a batch of one and 1.19-1.37 packed, while a dense call of more sequences
leaves at the first question (``short_path_open``'s ``dense``), a tie (0.98-1.01).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from rnnkit.compiled import warmup
from rnnkit.engine.layer import resolve_engine
from rnnkit.engine.native import max_native_steps
from rnnkit.engine.parallel import dense_parts
from rnnkit.weight_layout import weight_layout

CELLS = ("lstm", "gru", "rnn")
# Calls of this many steps (inference) take the short path where it applies: a GRU's of
# one or two steps stay on torch's layer, whose GRU step costs least (see the module doc).
# An Elman layer's, only past every step limit of torch's layer (NATIVE_MAX_STEPS): torch's
# Elman step costs least of all, and beat the path at 3-5 steps where its step was small.
MIN_STEPS = {"lstm": 1, "gru": 3, "rnn": max_native_steps("rnn") + 1}
MAX_STEPS = 8
# A call of more steps takes it while one direction's input projections fit in this many
# bytes (rows * gate rows * itemsize): there it also beats the general path, which costs
# the same Python a call (see the module doc).
MAX_PROJECTION_BYTES = 1 << 18
# At more than one thread, only steps of at most this size (N * H**2): torch's layer then
# runs larger steps' products on all its threads, our loops on one. Packed sequences of
# unequal lengths, which torch runs on its slower packed path, up to the larger size.
MULTI_THREAD_MAX_STEP = 1 << 14
MULTI_THREAD_MAX_STEP_UNEQUAL = 1 << 20
# Dense float32 LSTM calls, which oneDNN runs otherwise, take it only where no layer has
# this many weights (4H * (H_in + H)) or more: oneDNN's steps win on larger ones.
ONEDNN_MAX_WEIGHTS = 1 << 17


def short_path_open(module, steps: int, rows: int, dtype: torch.dtype, dense: bool = False) -> bool:
    """The path's first questions, the cheapest, which most calls that do not take it
    fail (:func:`rnnkit.recurrent.short_path_states` asks them before the rest): a call
    of ``MIN_STEPS``-``MAX_STEPS`` steps (by cell) or of more whose ``rows`` (``L * N``
    dense) have their input projections within ``MAX_PROJECTION_BYTES`` (and, past one
    thread, whose ``dense`` input has one sequence: :func:`_fits_threads`), the kernels of
    ``dtype`` loaded."""
    cell = module._cell
    if cell not in CELLS or steps < MIN_STEPS[cell]:
        return False
    if steps > MAX_STEPS:
        itemsize = 8 if dtype == torch.float64 else 4
        if rows * module._gates * module.hidden_size * itemsize > MAX_PROJECTION_BYTES:
            return False
        if dense and rows != steps and torch.get_num_threads() > 1:
            return False
    return warmup.loaded(dtype, cell)


def records_grad(data: Tensor, weights: list[Tensor]) -> bool:
    """Whether autograd records a call on ``data`` with ``weights`` (the module's
    ``_flat_weights``) whatever its states: the short path's question a training call
    fails, asked before the states are checked."""
    return torch.is_grad_enabled() and (
        data.requires_grad or any(weight.requires_grad for weight in weights)
    )


def short_inference_fits(
    module, data: Tensor, batch_sizes: list[int], states: tuple[Tensor, ...]
) -> bool:
    """Whether ``"auto"`` runs this call on the short path (see the module doc), once
    :func:`short_path_open` has said yes, :func:`records_grad` no, and the states and
    weights are CPU tensors of their shapes in the data's dtype
    (:func:`rnnkit.recurrent.short_path_states` asks all of it, in that order).

    Args:
        module: an ``rnnkit.LSTM`` or ``rnnkit.GRU``.
        data: the input, a batched tensor or packed rows, checked as torch's layer
            could run it (:func:`rnnkit.recurrent.torch_could_run`).
        batch_sizes: rows per step.
        states: the initial states; ``()`` for zeros.
    """
    if torch.is_grad_enabled() and any(state.requires_grad for state in states):
        return False  # autograd records the call
    if module.training and module.dropout and module.num_layers > 1:
        return False
    batch, hidden = batch_sizes[0], module.hidden_size
    if torch.get_num_threads() > 1 and not _fits_threads(batch_sizes, batch, hidden):
        return False
    if resolve_engine("auto", data, batch, hidden, module._cell) != "compiled":
        return False
    width = module.proj_size or hidden
    return len(dense_parts(batch_sizes, batch, module._gates * hidden * width, data)) == 1


def _fits_threads(batch_sizes: list[int], batch: int, hidden: int) -> bool:
    """Past one thread: steps of at most ``MULTI_THREAD_MAX_STEP`` (``N * H**2``), or
    ``MULTI_THREAD_MAX_STEP_UNEQUAL`` for sequences of unequal lengths; past ``MAX_STEPS``,
    equal lengths at a batch of one only (see the module doc)."""
    unequal = batch_sizes[-1] != batch
    limit = MULTI_THREAD_MAX_STEP_UNEQUAL if unequal else MULTI_THREAD_MAX_STEP
    if batch * hidden * hidden > limit:
        return False
    return unequal or batch == 1 or len(batch_sizes) <= MAX_STEPS


def below_onednn_weights(module) -> bool:
    """Whether every layer of this LSTM has fewer than ``ONEDNN_MAX_WEIGHTS`` weights: where
    a dense float32 call, which oneDNN runs otherwise, takes the short path."""
    hidden = module.hidden_size
    width = module.proj_size or hidden
    widest_input = max(module.input_size, (2 if module.bidirectional else 1) * width)
    return 4 * hidden * (widest_input + width) < ONEDNN_MAX_WEIGHTS


@functools.lru_cache(maxsize=64)
def weight_shapes(
    gates: int, input_size: int, hidden: int, num_layers: int, bias: bool,
    bidirectional: bool, proj_size: int,
) -> list[tuple[int, ...]]:  # fmt: skip
    """The shapes of a stack's ``_flat_weights``, in their order
    (:func:`rnnkit.weight_layout.weight_layout`): the kernels do not bounds-check, so a
    weight replaced by one of another shape must reach the general path's checks instead."""
    layout = weight_layout(gates, input_size, hidden, num_layers, bias, bidirectional, proj_size)
    return [shape for shapes in layout for shape in shapes.values()]


def short_inference(
    module, data: Tensor, batch_sizes: list[int], states: tuple[Tensor, ...],
    weights: list[Tensor], packed_batch_sizes: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:  # fmt: skip
    """Run a call :func:`rnnkit.recurrent.short_path_states` took: the stack on the compiled loops.
    ``states``: as there (``()``: zeros), in the sorted order; ``packed_batch_sizes``: a
    packed input's ``batch_sizes``, which hold ``batch_sizes``.

    Returns:
        ``(out, finals)`` as :func:`rnnkit.compiled.stack_inference.stack_inference`.

    Shape:
        data ``(R, H_in)`` packed rows (a dense input's steps one after the other); states
        in the sorted order, ``(D * num_layers, N, *)``; out ``(R, D * H_out)``.
    """
    from rnnkit.compiled.stack_inference import stack_inference, step_sizes

    hidden = module.hidden_size
    sizes = step_sizes(batch_sizes, packed_batch_sizes)
    return stack_inference(
        module._cell, data, sizes, states, weights, module.num_layers,
        module.bidirectional, hidden, module.proj_size or hidden,
        relu=getattr(module, "nonlinearity", "tanh") == "relu",
    )  # fmt: skip
