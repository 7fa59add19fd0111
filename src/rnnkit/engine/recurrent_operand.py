"""What the compiled GRU and LSTM loops multiply each step's states by: the recurrent
weight itself, read transposed in place, or a transposed copy of it.

A step's product is ``h_prev @ w_hh.T``. BLAS and brgemm read the transposed copy
``(P, G)`` faster than ``w_hh`` ``(G, P)`` in place, but the copy costs about as much
as reading the weight a few times (0.66 ms for a 2048 x 512 float32 weight, one
thread), so it pays only over enough steps. Measured on the GRU, float32, one
thread, inference of L x N x H x H, in place against the copy (above 1: in place
faster; ``benchmarks/weight_in_place.py``):

- L = 1: 1.03-2.70 at N = 1-32, H = 64-512: the copy costs more than the step;
- N = 1, H = 64-256: 1.01-2.15 at L = 1-256 (one 0.63 at L = 4);
- N = 1, H = 512, where the copy's products run on brgemm: 0.21-0.49 from L = 16
  (0.92 at L = 64 since one-row products of more than 1200 columns read in place
  go to MKL: ``rnnkit.compiled.blas.wide_matrix_vector``);
- N >= 4, L >= 16: 0.41-1.01.

Training reads in place only a call of one step, where the copy costs more than the
step as in inference; elsewhere it keeps the copy, whose memory is small beside the
saved gates. Shape symbols: ``G`` gate rows (3H or 4H), ``P`` state features.

The list above was measured on a CPU with AVX-512 (AMD Zen 4). On one with AVX2 only
(AMD Zen 3, :func:`rnnkit.cpu.has_avx512`), in place against the copy read, one thread
(``python benchmarks/weight_in_place.py --steps ... --batches ... --hidden ...``):

- H = 512: 1.06-2.02 at L = 2-16 and N = 4-16, 1.60-3.84 at N = 1 (where the rule
  above copies); 0.91-1.28 from L = 24 (24 x 16 x 512 to 64 x 64 x 512, 32 x 1 x 512);
- H = 256: 1.05-1.61 at L = 2-12 and N = 1-16, 1.00-1.13 at L = 16 (0.93-0.95 in one
  rerun of 16 x 4 x 256 x 256), 0.90-1.08 from L = 24;
- H = 64-128: 0.87-1.17, a tie.

Through the layer against the copy (``python benchmarks/compare_revisions.py --cell gru
--modes inference --threads 1 --bidirectional 0 1 --shapes ...``): 1.12-1.67 at 8 x 8 x
256 x 512 and 12 x 8 x 256 x 512, 1.40-2.55 at 12 x 1 x 256 x 512, 1.07-1.08 at 10 x 16 x
128 x 256; 1.01-1.02 at 100 x 8 x 256 x 512, which keeps the copy.

So there inference also reads a weight of at least ``AVX2_IN_PLACE_MIN_WEIGHT`` in place
over at most ``AVX2_IN_PLACE_MAX_STEPS`` steps and ``AVX2_IN_PLACE_MAX_ROWS`` rows
(``L * N``).

A second grid, both cells, through the layer (compiled engine, inference, one thread,
H_in = 64, H = 224-768, dense and packed sequences of unequal lengths drawn from
``[L / 2, L]``: ``python benchmarks/weight_in_place.py --cell gru lstm --packed 0 1 ...``,
2026-12-07), in place against the copy, moved the step limit by the batch:

- N = 4-16 at 14-16 steps: 0.88-1.58, 134 of 144 rows above 1 (dense 69 of 72); at 20-24
  steps 0.82-1.47, 14 of 72 below 1; so ``AVX2_IN_PLACE_MAX_STEPS_WIDE``;
- N = 2, sequences of unequal lengths (the batch then falls to one, whose copy's products
  run on brgemm): 0.96-1.50 at 16 steps (19 of 20 above 1), 0.52-1.18 from 24 (half below
  1); equal lengths at 13-16 steps 0.76-1.35, the GRU's mostly below 1 (13 of 17): only
  unequal lengths take the wider limit;
- N = 3: 0.98-1.69 at 4 steps, but 0.66-1.87 at 6-16 with 83 of 116 rows below 1: MKL's
  products of three rows by a transposed weight run slowly, where the copy's go to brgemm
  (:data:`rnnkit.compiled.blas.AVX2_ANY_WEIGHT_ROWS`). So a batch of three keeps the old
  limit. (Within it, dense at 6-12 steps read 19 of 24 rows below 1 here, but through
  ``compare_revisions.py``, each call after an ``nn.RNN`` call, 8 x 3 x 64 x 512 with the
  copy read 0.95-1.03 against in place, one thread and two: no change made there.)

Against the revision before (``python benchmarks/compare_revisions.py --cell lstm gru --modes
inference --threads 1 --layers 1 2 --bidirectional 0 1 [--packed] --shapes 16,2,64,768
16,4,64,512 16,8,64,256 14,6,128,384 16,3,64,512 8,3,64,512 12,2,64,512``): packed LSTM
sequences 1.08-1.55 where the rule moved, GRU 0.99-1.17 (dense 14 x 6 x 128 x 384
1.16-1.20); the rows it left 0.89-1.05 (noise: dense LSTM input runs on oneDNN both
sides). At two threads (``--threads 2``, one layer), where the rule moved, packed
sequences read 1.08-1.97 (LSTM) and 0.99-1.27 (GRU), dense input 0.98-1.08. Against torch
(``rnnkit bench --cell lstm gru --modes inference --threads 1 --packed 0 1 --shapes
16,2,64,768 16,4,64,512``), packed LSTM sequences there read 1.00-1.06 of ``nn.LSTM``'s
speed, against 0.61-0.88 before.

A batch of one there reads in place past those steps too, where the copy's one-row products
would run on brgemm (``G * P >= BRGEMM_MIN``). In place against the copy, inference, one
thread (the LSTM through a scratch copy of ``benchmarks/weight_in_place.py``, 2026-12-07):
LSTM 1.09-1.98 at L = 12-128 and H = 256-768 (1.35-1.98 at H = 512-768), GRU 1.02-1.47 at
L = 16-128 and H = 384-768; at N = 2 it went both ways (0.70-1.20). Through the layer
(``python benchmarks/compare_revisions.py --cell lstm gru --modes inference train --threads
1 --bidirectional 0 1 --shapes 16,1,64,256 64,1,256,256 16,1,384,384 128,1,64,384
16,1,512,512 64,1,64,512 32,1,768,768``, the LSTM with ``RNNKIT_ENGINE=compiled``):
inference 1.31-1.74 (LSTM) and 1.20-1.62 (GRU from H = 384, one row 1.03), training
1.13-1.37 but for 128 x 1 x 64 x 384 (0.95-1.11). With a smaller weight, training at batch 1
read 0.90-1.08 in place (100 x 1 x 4 x 64 and 200 x 1 x 16 x 32 on the LSTM 0.91-0.93), so
it keeps the copy, as on AVX-512.

At two threads the loop splits the batch in two parts (:mod:`rnnkit.engine.parallel`),
and the parts read the copy. On AVX2, where the rule above would read the weight in place,
the whole batch on one thread reading it in place against the two parts, GRU inference,
L = 8 and 12, N = 2-21 (``L * N <= 256``), H_in = 256 (median of 40 alternated pairs of
calls; scratch script):

- H = 384 and 512: 1.05-1.42 from N = 8; 0.90-1.01 at N = 4 and 6; 1.01-1.45 at N = 2;
- H = 256: 0.92-1.10, a tie.

Through the layer against the parts, GRU inference at two threads, one direction and two
(``python benchmarks/compare_revisions.py --cell gru --modes inference --threads 2
--bidirectional 0 1 --shapes ...``), L = 7-12, N = 8-32, H_in = 32-256:

- H = 256 (a weight of ``3 * 2**16``): 1.06-1.24 at 7-8 steps, 0.98-1.12 at 10-12;
- H = 224 and 240: 1.08-1.23 at 8 x 8, but 0.93-0.98 at 12 x 16.

So there inference of a weight of at least ``AVX2_WHOLE_MIN_WEIGHT`` over a batch of at
least ``AVX2_WHOLE_MIN_BATCH`` runs whole, in place (:func:`inference_parts`), where it
would have read in place unsplit. Unmeasured at more than two threads, where the parts gain
more: there the batch stays split.
"""

from __future__ import annotations

from torch import Tensor

from rnnkit.cpu import has_avx512

# rnnkit.compiled.blas.BRGEMM_MIN, the multiply-adds from which the compiled loops' per-step
# products run on brgemm (not imported: that module imports numba).
BRGEMM_MIN = 1 << 18
# Without AVX-512: inference reads a weight of this many elements (G * P) or more in
# place over a call of at most these steps and rows (see the module doc).
AVX2_IN_PLACE_MIN_WEIGHT = 1 << 17
AVX2_IN_PLACE_MAX_STEPS = 12
AVX2_IN_PLACE_MAX_ROWS = 256
# ... and over more steps from a batch of four, or for sequences of unequal lengths, but
# not at a batch of three, whose in-place products (MKL's) run slowly (see the module doc).
AVX2_IN_PLACE_MAX_STEPS_WIDE = 16
# Without AVX-512, at two threads: inference reads a weight of this many elements or more
# in place over a batch of at least this many sequences on one thread, rather than split
# the batch in two parts that read the copy, where the rule above holds (see the module doc).
AVX2_WHOLE_MIN_WEIGHT = 3 << 16  # a GRU's at H = 256
AVX2_WHOLE_MIN_BATCH = 8


def reads_in_place(
    steps: int, batch: int, weight_size: int, keep: bool, parts, unequal: bool = False
) -> bool:
    """Whether the compiled loop reads ``w_hh`` in place: in a call of one step (a
    step-by-step decoder's), or in inference (without ``keep``) at batch 1 where the
    copy's products would not go to brgemm (``weight_size``, ``G * P``, the multiply-adds
    of a row, below ``BRGEMM_MIN``), or, without AVX-512, at batch 1 where they would (in
    training too) and in inference of a large weight over few rows (see the module doc;
    ``unequal``: sequences of unequal lengths, ``batch`` the first step's rows); never when
    the batch is split into ``parts`` (their callbacks read the copy)."""
    if len(parts) != 1:
        return False
    if steps == 1:
        return True
    if batch == 1:
        if weight_size >= BRGEMM_MIN:  # the copy's one-row products would go to brgemm
            return not has_avx512()
        return not keep
    if keep:
        return False
    return _avx2_few_rows(steps, batch, weight_size, unequal)


def inference_parts(
    steps: int, batch: int, weight_size: int, parts: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The parts an inference call of equal-length sequences runs on: the whole batch
    (which :func:`reads_in_place` then reads in place) where, without AVX-512, the batch
    would be split in two over a weight of at least ``AVX2_WHOLE_MIN_WEIGHT`` elements
    (``weight_size``, ``G * P``) that an unsplit call of these steps reads in place, from
    ``AVX2_WHOLE_MIN_BATCH`` sequences; else ``parts`` (see the module doc)."""
    if (
        len(parts) == 2
        and batch >= AVX2_WHOLE_MIN_BATCH
        and weight_size >= AVX2_WHOLE_MIN_WEIGHT
        and steps <= AVX2_IN_PLACE_MAX_STEPS  # measured at two threads to here
        and _avx2_few_rows(steps, batch, weight_size)
    ):
        return [(0, batch)]
    return parts


def _avx2_few_rows(steps: int, batch: int, weight_size: int, unequal: bool = False) -> bool:
    """Whether, without AVX-512, inference reads a large weight in place over few rows:
    ``AVX2_IN_PLACE_MAX_STEPS`` steps, ``AVX2_IN_PLACE_MAX_STEPS_WIDE`` from a batch of
    four or for sequences of unequal lengths (``unequal``), but for a batch of three."""
    wide = (batch >= 4 or unequal) and batch != 3
    max_steps = AVX2_IN_PLACE_MAX_STEPS_WIDE if wide else AVX2_IN_PLACE_MAX_STEPS
    return (
        weight_size >= AVX2_IN_PLACE_MIN_WEIGHT
        and steps <= max_steps
        and steps * batch <= AVX2_IN_PLACE_MAX_ROWS
        and not has_avx512()
    )


def recurrent_operand(w_hh: Tensor, in_place: bool) -> Tensor:
    """``w_hh`` itself where :func:`reads_in_place` says, else its transposed copy.

    At batch 1 the copy is also the inference call's largest allocation after the
    gates: 48 KiB for a GRU at H = 64, which put its peak above nn.GRU's (173 KiB against
    126 at 100x1x4x64; 111 without).

    Shape:
        w_hh ``(G, P)``; returns ``(G, P)`` in place, else ``(P, G)``.
    """
    return w_hh if in_place else w_hh.t().contiguous()
