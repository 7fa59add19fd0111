"""torch's oneDNN LSTM for the dense float32 CPU layers where it beats our loops.

torch runs ``nn.LSTM`` on oneDNN's fused LSTM (``aten::mkldnn_rnn_layer``) for
dense float32 CPU input without projection. Its steps run closer to the
sequential-GEMM bound than our loops, which call BLAS per step (at batch 30-64, 50-96%
of the bound in inference against our 43-82%: ``bound %`` of ``rnnkit bench``), so
there it wins. Our compiled loops against it, as ratios of
time (above 1: ours faster), same weights, one process, 100x30x4x64, 100x1x4x64,
50x64x32x128 and 100x30x4x256, 1-2 layers
(``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm``):

- inference, every row: 0.67-0.91 at 1 thread, 0.52-0.79 at 2 (0.78-0.86 at 1
  thread since per-step products run on torch's brgemm);
- training one direction: 0.83-1.02 at 1 thread, 0.68-0.90 at 2 (before the batch
  split below); since per-step products run on torch's brgemm at one thread, our
  loops win once a step's product passes ``OURS_TRAIN_MIN`` (``N * H**2``): 1.04-1.21
  at 100x30x4x256, 100x64x4x256, 50x64x32x256, 100x30x64x256 and 100x30x4x512, against
  0.89-0.92 at 50x64x32x128 (exactly ``2**20``), 100x30x4x128 and 100x8x4x256
  (``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm --modes train --threads 1``);
- training a bidirectional layer: 1.07-1.46, our loops win (oneDNN's backward
  runs the two directions one after the other);
- at two threads, since our loops split the batch over torch's OpenMP team
  (:mod:`rnnkit.compiled.team`): inference 0.70-1.27; one-direction training above
  ``OURS_TRAIN_MIN`` with at least ``OURS_PART_ROWS`` rows a thread (``N >= 64``) won
  all 11 rows measured, 1.13-1.46 (100x64x4x256, 50x64x32x256, 100x128x4x128,
  100x64x4x512, 50x128x32x256, 100x96x4x256, 100x64x64x256, 100x64x32x192, twice for
  the first three), so there our loops run; with fewer rows a thread it went both ways,
  1.13-1.27 at 100x30x4x256 and 100x30x64x256, 0.86-0.96 at 50x32x32x256, 100x30x4x512
  and 100x16x4x512; at ``N = 64`` up to ``OURS_TRAIN_MIN``, 0.86-1.30 (50x64x32x128
  lost, 100x64x4x128 won). More threads were not measured: there oneDNN stays
  (``RNNKIT_ENGINE=compiled OMP_NUM_THREADS=2 rnnkit bench --cell lstm --modes train
  --threads 2 --layers 1 --bidirectional 0 --shapes ...``). Where torch does not run
  on GNU OpenMP the loops do not split, and oneDNN stays too.

A call of one step (a step-by-step decoder's) goes the other way where the weights are
large beside the batch: oneDNN reorders them into its own layout on every call, while our
loops read them in place (:mod:`rnnkit.engine.recurrent_operand`). Ours against it,
inference of 1 x N x H x H, 1 and 2 threads, two or three runs each
(``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm --modes inference --layers 1
--bidirectional 0 --shapes 1,8,512,512 ...``):
- ``4H * (H_in + H)`` from ``2**19`` and N up to 64: H = 512 at N = 1-64 1.43-4.12;
  H = 256 at N = 1-8 1.1-3.6, at N = 16-64 mostly 1.04-1.80 (0.7 and 0.89 once each);
- N of 128 or more: H = 512 0.7-1.43, H = 256 1.2-1.55;
- below ``2**19``: 0.77-0.91 at H = 128, 0.88-1.02 at 1x32x128x256, 0.91-1.06 at
  1x16x64x256;
- two steps: oneDNN wins again (0.95-0.98 at 2x8x512x512), as our loops then copy
  ``w_hh``.
Training of one step goes the same way, and training reads ``w_hh`` in place at one step
too: 1.05-3.72 from ``2**19`` weights (H = 256 at N = 1-64, H = 512 at N = 8-64), 1.06-1.19
at 1x16x64x256, 0.75-0.88 at H = 128 (``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm
--modes train ...``). torch's own per-step LSTM (oneDNN off) beats both there, but it
cannot be asked for without switching oneDNN off for the whole process: its packed entry,
which never takes oneDNN, ran 7 ms at 1x8x512x512 against 1.7 ms dense.
So a call of one step from ``ONE_STEP_OURS_MIN`` weights at a batch of at most
``ONE_STEP_MAX_BATCH`` runs on our loops, in inference and training.

Everything above was measured on a CPU with AVX-512 (AMD Zen 4). On one with AVX2 only
(AMD Zen 3: :func:`rnnkit.cpu.has_avx512`), after the per-step products moved to the
libraries that win there (:mod:`rnnkit.compiled.blas`), these rules change
(``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm --layers 1 --threads 1 2 ...``, runs
that varied by 10% or more):
- training with ``4 * H**2`` of at least ``AVX2_OURS_TRAIN_MAX_RECURRENT`` stays on
  oneDNN, whatever the directions: 0.74-0.94 at 35x20x650x650, 0.9-0.91 at 100x30x4x512,
  against 1.04-1.09 at 50x32x512x512 and 50x32x128x512; below that, where the rules above
  send training to our loops, they won 1.09-1.8 (bidirectional at 100x30x4x64, 200x4x8x64,
  50x32x64x384, 50x32x1024x128 and 100x30x4x256, one direction at the last and at
  50x32x64x384) and tied at 100x32x300x256 and 20x32x300x256 bidirectional (0.91-1.03);
- a call of one step in inference needs ``AVX2_ONE_STEP_INFERENCE_MIN`` weights a layer:
  1x8x512x512 3.9, but 0.72-0.93 at 1x16x256x256 and 1x64x256x256 (training there 0.97-1.12,
  so training keeps ``ONE_STEP_OURS_MIN``).
- one-direction training that the rule of large steps (``OURS_TRAIN_MIN``) gives our
  loops needs, with ``4 * H**2`` of at least ``AVX2_LONG_TRAIN_RECURRENT`` (H >= 182),
  ``AVX2_LONG_TRAIN_MIN_ROWS`` rows (``L * N``) of at least ``AVX2_LONG_TRAIN_MIN_BATCH``
  sequences; so does training both directions below ``AVX2_BIDIRECTIONAL_MIN_STEPS``.
  Our loops against oneDNN, H = 192-384, one direction: below 1,024 rows 0.79-1.02 (2-32
  steps, N = 8-128, 1 and 2 threads), at 1,024-1,535 rows 0.85-1.01, from 1,536 rows at N
  = 24-128 1.02-1.32 but for 0.89 at 50 x 32 x 64 x 256, 0.97-1.03 at 100-150 x 24 x 32 x
  384 and 0.95 at 50 x 30 x 4 x 256; at N = 8-16 and H = 384, 0.79-0.88 at any length
  (0.98-1.07 at H = 256). Both directions below 30 steps: 0.88-1.03 below 1,024 rows,
  1.07-1.25 at 8 x 128 (left to oneDNN by the rule), 1.17-1.28 from 1,536. At H = 128-160
  (N = 64-256) they won from 4 steps, 1.02-1.67, and keep the rule of large steps alone
  (``rnnkit bench --cell lstm --modes train --layers 1 --bidirectional 0 1 --threads 1 2
  --shapes 8,32,64,256 50,16,32,384 100,24,32,256 20,128,64,256 24,128,32,128 ...``,
  2026-12-07).
- bidirectional training needs ``AVX2_BIDIRECTIONAL_MIN_STEPS`` steps: below them our
  loops lost 0.81-0.93 at 10x16x32x32, 20x16x32x32, 10x16x32x64 and 10x64x32x32 (two
  threads), 0.89-1.01 at 20x16x32x64 and 0.96-1.01 at 20x32x300x256; from them they won
  1.45-1.49 at 30x16x32x64 and 40x16x32x64 and 1.02-1.13 at 30x32x300x256 and
  50x32x300x256, and tied at H = 32 (0.93-1.01 at 30x16x32x32 and 40x16x32x32, 0.99-1.10
  at 50x16x32x32) and at 32x8x64x128 (0.95-1.05) (``... --modes train --bidirectional 1``).
- a batch of one (a sequence at a time: a prompt, a generator's step, one text to tag or
  score) runs on our loops from ``AVX2_ONE_ROW_MIN`` weights in the stack's largest layer (a
  layer above the first reads ``D * H`` features), inference and training, in one direction
  or two: at one thread over at most a step per ``AVX2_ONE_ROW_WEIGHTS_A_STEP`` weights and
  ``AVX2_ONE_ROW_MAX_STEPS`` in all, at two over at most
  ``AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS``. oneDNN reorders the weights on every call, and at
  a batch of one that costs it most (1 x 1 x 512 x 512: 3.7 ms against 1.9 at 1 x 2), while
  our loops read them in place at any length (:mod:`rnnkit.engine.recurrent_operand`). Ours
  against it, one direction, N = 1, H = 128-768, H_in = 64 and H, L = 1-128
  (``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm --modes inference train --threads 1``
  and ``2``, with glibc's ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set so
  that oneDNN's allocations cost no page faults): at one thread, from 2**19 weights,
  inference 1.25-3.76 at one step, 1.24-2.30 at two, 0.99-1.80 at 4-16 (1.00-3.76 inside the
  rule) and 0.76-1.19 at 32-128; training 1.02-3.63 inside the rule, 0.74-1.17 at 32-128;
  below 2**19 weights 0.72-1.22; at two threads, from 2**19 weights, inference 1.04-2.16 at
  one step, 1.02-1.49 at two, 0.71-1.21 at 4-16, training 1.04-2.39, 0.93-1.59 and
  0.74-1.38. Checked on other shapes with the rule in place (``rnnkit bench --cell lstm
  --modes inference train --threads 1 2 --layers 1 --bidirectional 0 --shapes ...``, N = 1,
  H = 288-1024, H_in = 32-1024, L = 1-48): inside it, one thread, inference 1.07-2.28,
  training 1.05-1.70 but for 0.79-0.89 in three noisy rows of H = 896-1024; two threads at
  two steps, inference 0.88-1.33, training 1.09-2.22. Two layers, one direction and two,
  dense and packed, at 1 x 1 x 256-768 x 256-768 and 2-16 steps: 1.02-4.38 in all 56 rows.
  In a fresh process oneDNN loses more: glibc hands its large reorder buffers back to the
  system until a larger block has been freed, and each call then pays 700-2000 page faults
  (2 x 4 x 512 x 512: 4.5 ms a call, 1.7 ms once a larger call had run). A generator's step,
  1 x 1 x 64, after a prompt of 20 steps, carrying the states (``python
  benchmarks/generation_step.py --cell lstm --stacks 2,64,512 --threads 1 2``, and
  ``--stacks 2,64,256``, a process each): two layers of H = 512 took 1.2-1.4 ms against
  ``nn.LSTM``'s 5.6-9.6 ms (1.00-1.10 of its speed before), two layers of H = 256 0.45-0.79
  ms against 1.6-3.0 (0.94-1.11 before).
Left to oneDNN though our loops win: one-direction training of
many small steps (1.06-1.17 at 100x30x4x64, 200x4x8x64 and 100x16x32x64, ``--budget 1``;
they tie at H = 128). Taking it would compile the LSTM kernels in the background on the
first training run of the most common LSTM (``test_a_dense_float32_lstm_compiles_nothing``)
for a gain that ``benchmarks/compare_revisions.py`` could not tell from the noise.
So is inference of small hidden states over long calls, on AVX2 (2026-12-07): in the
benchmark our loops read 1.06-1.46 of oneDNN at one thread over 50-200 steps of 16-64
sequences at H = 32-80 (``RNNKIT_ENGINE=compiled rnnkit bench --cell lstm --modes
inference ...``; 0.66-1.25 at fewer steps or sequences or larger H), but a rule that sent
them there did not pay in a fresh process running ``LSTM(4, 64)`` on ``(100, 30, 4)``
in a loop: 1.07-1.08 under ``torch.no_grad()`` (1.24 under ``inference_mode``); a first
call of 1.0-1.2 s with a warm kernel cache (loading the LSTM kernels; 8-13 ms for
``nn.LSTM``); in two such processes 125 and 569 page faults a call (the per-call
buffers), and at 569 a call took 4.0-5.8 ms against oneDNN's 3.7. Kept inference buffers
and kernels that load without holding up the first call would come first.

Training both directions of a single step below ``ONE_STEP_OURS_MIN`` weights stays on
oneDNN on either CPU: one step has no recurrence to gain on (1x16x32x32 read 0.75-0.83
on our loops, AVX2).

Where our loops win, oneDNN runs the stack only until our compiled kernels are ready.

The torch-ops engine, the other fallback, reaches 0.07-0.81 of it, so while the
compiled kernels compile on first use (:mod:`rnnkit.compiled.warmup`) such a
layer runs here too. Results are torch's own, bit for bit.

Shape symbols: ``R = L * N`` packed rows, ``N`` batch, ``D`` directions,
``H_in`` input features, ``H`` hidden features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.cpu import has_avx512
from rnnkit.engine.parallel import torch_openmp_library

# What :func:`onednn_fit` returns: oneDNN runs the layer whenever "auto" may pick,
# or only while the compiled kernels are not ready.
ALWAYS = "always"
UNTIL_COMPILED = "until_compiled"
# One-direction training: above this N * H**2 (a step's product), our compiled loops
# beat oneDNN at one thread, and at two threads with OURS_PART_ROWS rows a thread or
# more (see the module doc).
OURS_TRAIN_MIN = 1 << 20
OURS_PART_ROWS = 32
# A call of one step: from this many weights a layer (4H * (H_in + H)), and up to this
# batch, our loops win.
ONE_STEP_OURS_MIN = 1 << 19
ONE_STEP_MAX_BATCH = 64
# Without AVX-512: training on our loops only below this 4 * H**2, and one step of
# inference on them only from this many weights (see the module doc).
AVX2_OURS_TRAIN_MAX_RECURRENT = 1 << 20
AVX2_ONE_STEP_INFERENCE_MIN = 1 << 21
# Without AVX-512: bidirectional training on our loops only from this many steps.
AVX2_BIDIRECTIONAL_MIN_STEPS = 30
# Without AVX-512: other training that the rule of large steps gives our loops, with
# 4 * H**2 of at least AVX2_LONG_TRAIN_RECURRENT (H >= 182), only from this many rows
# (L * N) and sequences (see the module doc).
AVX2_LONG_TRAIN_RECURRENT = 1 << 17
AVX2_LONG_TRAIN_MIN_ROWS = 1536
AVX2_LONG_TRAIN_MIN_BATCH = 24
# Without AVX-512: a batch of one runs on our loops, in inference and training, from this
# many weights in the stack's largest layer (4H * (H_in + H)): at one thread over at most a
# step per AVX2_ONE_ROW_WEIGHTS_A_STEP of them and AVX2_ONE_ROW_MAX_STEPS in all, at two
# over at most AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS (see the module doc).
AVX2_ONE_ROW_MIN = 1 << 19
AVX2_ONE_ROW_WEIGHTS_A_STEP = 1 << 16
AVX2_ONE_ROW_MAX_STEPS = 16
AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS = 2


def onednn_enabled() -> bool:
    """Whether torch has oneDNN and it is switched on (``torch.backends.mkldnn``)."""
    # torch.backends.mkldnn's flag, read where it is kept: 0.1 us against 0.9 through
    # is_available() and the module's property, on every direct LSTM call
    return _ONEDNN_BUILT and torch._C._get_mkldnn_enabled()


_ONEDNN_BUILT = torch.backends.mkldnn.is_available()


def onednn_fit(
    x: Tensor,
    batch_sizes: Sequence[int],
    directions: Sequence[bool],
    projected: bool,
    training_grad: bool,
    hidden_size: int,
    num_layers: int = 1,
) -> str | None:
    """Whether torch's oneDNN LSTM may run an LSTM stack, and when (see the module doc).

    Args:
        x: the stack's packed input rows.
        batch_sizes: rows per step, non-increasing; oneDNN takes only equal ones
            (dense input).
        directions: each layer's directions (``True`` = reverse).
        projected: whether the stack has ``proj_size`` (oneDNN has none).
        training_grad: whether autograd records the stack.
        hidden_size: ``H``, the cell state's features.
        num_layers: the stack's layers (the rule for a batch of one reads its largest).

    Returns:
        ``ALWAYS``, ``UNTIL_COMPILED`` or None (never: not dense float32 CPU input
        without projection, or oneDNN unavailable or off).
    """
    dense = batch_sizes[0] == batch_sizes[-1]  # packed batch sizes never grow
    if not (dense and not projected and x.is_cpu and x.dtype == torch.float32):
        return None
    if not onednn_enabled():
        return None
    batch, threads = batch_sizes[0], torch.get_num_threads()
    avx512 = has_avx512()
    weights = 4 * hidden_size * (x.size(-1) + hidden_size)  # the first layer's
    one_step_min = ONE_STEP_OURS_MIN
    if not (avx512 or training_grad):
        one_step_min = AVX2_ONE_STEP_INFERENCE_MIN
    if len(batch_sizes) == 1 and batch <= ONE_STEP_MAX_BATCH and weights >= one_step_min:
        return UNTIL_COMPILED
    if not avx512 and batch == 1:
        # the largest layer's weights: a layer above the first reads D * H features
        upper = 4 * hidden_size * (len(directions) + 1) * hidden_size if num_layers > 1 else 0
        if _avx2_one_row_ours(len(batch_sizes), max(weights, upper), threads):
            return UNTIL_COMPILED
    if not training_grad:
        return ALWAYS
    if not avx512 and 4 * hidden_size**2 >= AVX2_OURS_TRAIN_MAX_RECURRENT:
        return ALWAYS
    large_steps = batch * hidden_size**2 > OURS_TRAIN_MIN
    # Parts only where the loops can split the batch (on torch's GNU OpenMP team).
    large_parts = threads == 2 and batch >= threads * OURS_PART_ROWS
    large_parts = large_parts and torch_openmp_library() is not None
    # One step has no recurrence for oneDNN's serial backward directions to lose on; on
    # AVX2 a few steps do not pay for our loops' larger cost per call either.
    min_steps = 2 if avx512 else AVX2_BIDIRECTIONAL_MIN_STEPS
    both_directions = len(directions) == 2 and len(batch_sizes) >= min_steps
    if both_directions:
        return UNTIL_COMPILED
    ours_win = large_steps and (threads == 1 or large_parts)
    if ours_win and not avx512 and 4 * hidden_size**2 >= AVX2_LONG_TRAIN_RECURRENT:
        # On AVX2 our loops' cost a call, the weight's copy among it, needs many rows of
        # a fair batch to pay for.
        rows = len(batch_sizes) * batch
        ours_win = rows >= AVX2_LONG_TRAIN_MIN_ROWS and batch >= AVX2_LONG_TRAIN_MIN_BATCH
    return UNTIL_COMPILED if ours_win else ALWAYS


def _avx2_one_row_ours(steps: int, weights: int, threads: int) -> bool:
    """Whether, without AVX-512, our loops beat oneDNN on a batch of one: from
    ``AVX2_ONE_ROW_MIN`` weights in the largest layer, at one thread over at most a step
    per ``AVX2_ONE_ROW_WEIGHTS_A_STEP`` of them and ``AVX2_ONE_ROW_MAX_STEPS`` in all, at two
    over at most ``AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS``; never at more threads
    (unmeasured). See the module doc."""
    if weights < AVX2_ONE_ROW_MIN or threads > 2:
        return False
    if threads == 2:
        return steps <= AVX2_ONE_ROW_MAX_STEPS_TWO_THREADS
    return steps <= min(weights // AVX2_ONE_ROW_WEIGHTS_A_STEP, AVX2_ONE_ROW_MAX_STEPS)


def onednn_lstm(
    x: Tensor,
    hx: tuple[Tensor, Tensor],
    weights: list[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """torch's LSTM on a batched dense input: exactly the call ``torch.nn.LSTM.forward``
    makes (oneDNN runs it where torch picks oneDNN). The layer's initial states,
    weights (``w_ih, w_hh[, b_ih, b_hh]`` per layer and direction, torch's order),
    ``has_biases``, ``num_layers``, ``dropout``, ``training`` (dropout applies),
    ``bidirectional`` and ``batch_first``. A whole stack over packed rows goes
    through :func:`rnnkit.engine.gated_stack.native_stack`, which makes the same call.

    Returns:
        ``(out, h_n, c_n)``.

    Shape:
        x ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``); out ``(L, N, D * H)``
        (``(N, L, D * H)``), h_n and c_n as hx's ``(D * num_layers, N, H)``.
    """
    return native_lstm(
        x, hx, weights, has_biases, num_layers, dropout, training, bidirectional, batch_first
    )


# torch's LSTM, the op ``torch.nn.LSTM.forward`` calls: on a batched dense input ``(x,
# (h0, c0), weights, has_biases, num_layers, dropout, training, bidirectional,
# batch_first)``, on packed rows ``(data, batch_sizes, (h0, c0), weights, has_biases,
# num_layers, dropout, training, bidirectional)``, to ``(out, h_n, c_n)``. Held here, for
# every direct call and native_stack: each lookup of ``torch._VF``'s attributes costs 2 us.
native_lstm = torch._VF.lstm
