"""torch's own layer for calls of few steps, where its lower cost per call wins.

Our loops win per step (the gates fused in one pass, the weight gradients in large
products after the time loop), but a call costs more around them: the layer's
bookkeeping in Python, the input projection's buffers, the compiled kernels' checks.
torch's layer (``torch._VF.rnn_tanh``, ``gru``, ``lstm``: the call ``torch.nn.RNN.forward``
makes) costs less a call and more a step, so below some number of steps it is the
faster. Our loops against it, same weights, one process, AMD Zen 3 (AVX2), 1 and 2
threads, one direction and two: the step count at which our loops first reached torch's
speed as it grew over 2, 3, 4, 6, 8, 12 (and 16), dense / packed input:

- Elman, ``N * H**2`` of 4k to 123k: inference 4-12 / 8-12, training 2-6 / 3-8;
- Elman, 1M to 2M: inference 2-4 / 3-6, training 2-3 / 3-6;
- GRU: inference 6-12 / 6-16 (3 of the 18 series of each never within 12 or 16),
  training 2-6 / 2-6;
- LSTM, packed: inference 4-12 (7 of 18 never), training 3-6 (3 of 18 never).

(``rnnkit bench --cell rnn gru lstm --layers 1 --bidirectional 0 1 --packed 0 1
--threads 1 2 --budget 0.12 --shapes ...``, ``N x H_in x H`` of ``1 x 4 x 64``,
``16 x 32 x 32``, ``30 x 4 x 64``, ``64 x 32 x 128``, ``32 x 64 x 256``, ``8 x 256 x
512``). Below those counts our loops ran at 0.34-0.9 of torch's speed. The limits
(:data:`NATIVE_MAX_STEPS`) are those that gave the best geometric mean over those 1,080
rows, or, within 2% of it, the best worst row. With them, against the loops before,
the same grid at one thread, 432 rows a direction (T up to 12): rows below 0.9 went from
138 to 24 in one direction and from 106 to 8 in two, the geometric means from 1.00 to
1.06 and from 1.05 to 1.11; at two threads, one direction, from 140 to 16 and from 0.99 to
1.07. What stays below 0.9: GRU inference of ``8 x 256 x 512`` past
the limits (0.62-0.84, our loops' own loss; since 0.99-1.06 at one thread and 0.91-1.04 at
two, the weight read in place: :mod:`rnnkit.engine.recurrent_operand`), packed LSTM
inference at 2-4 steps (0.87-0.89: torch's call and ours are the same, ours costs about
10 us more around it), a packed LSTM at batch 1 (0.83-0.89 at every count; since
torch's packed call at any count, as ``torch.nn.LSTM`` makes it: training 0.94-1.01 at 4-12
steps, inference unchanged; since that call was written out, ``rnnkit.LSTM._packed_on_torch``,
inference 0.92-0.95 at 2-12 steps, and 0.84-0.92 at 16 x 32 x 32 with sequences of unequal
lengths, on a Zen 3 CPU), and rows of
``8 x 256 x 512`` training whose repeated runs of the same call on both sides differ by
30% and more (0.63-0.71 at two and three GRU steps, where both sides run torch's layer;
0.99-1.01 when the two alternate call by call).

A dense float32 LSTM goes where oneDNN's rules send it (:mod:`rnnkit.engine.onednn`):
oneDNN is torch's own call there. Packed, torch runs an LSTM on its per-step path, and
so do we for few steps. A packed call costs more on our loops than a dense one, and
torch's packed steps more than its dense ones, so packed input keeps torch's layer for
more steps. An Elman step's product is all its work, so once that is large our loops win
from two or three steps; a gated step is several ops in torch, so there the limits hold
at every size, except that where a step is tiny (``N * H**2 <= SMALL_STEP``: batch 1-2 at
H = 32-64) dense Elman and GRU inference still read 0.69-0.92 at 7 and 8 steps on our
loops, and stay on torch's layer up to 8 steps: 0.97-1.04 since, at 1 and 2 threads, one
direction and two (``rnnkit bench --cell gru rnn --modes inference --bidirectional 0 1
--threads 1 2 --shapes 7,1,4,32 8,1,4,32 7,1,4,64 8,1,4,64 8,2,4,64 7,2,32,64``; at
``N * H**2 = 2**14`` the rows read 0.88-1.07 on our loops, so the limit stays there).
Bidirectional rows at N = 2 that our loops ran at 1.03-1.26 read 1.00-1.01 on torch's.

Those limits weigh torch's layer against our general path. In inference, once a process
has loaded the compiled kernels, an LSTM's or GRU's call of few steps goes first to
:mod:`rnnkit.engine.few_steps`, our loops without the general path around them, which
beats both where it runs.
"""

from __future__ import annotations

import warnings

from rnnkit.engine.onednn import ALWAYS

# Calls of at most this many steps run on torch's layer under "auto", by cell:
# ((dense inference, dense training), (packed inference, packed training)).
NATIVE_MAX_STEPS = {
    "rnn": ((6, 3), (8, 6)),
    "gru": ((6, 3), (8, 3)),
    "lstm": ((6, 3), (8, 3)),  # dense: where oneDNN cannot run it (float64, proj_size)
}
# An Elman layer's steps of at least LARGE_STEP (N * H**2): its product is all of a
# step's work, so our loops win sooner; but not the dense inference of at most
# LARGE_STEP_FEW_ROWS sequences, whose products are thin: there our loops read 0.81-0.95
# of torch's speed at 3-4 steps and 0.91-1.00 at 6, N = 1-4, H = 256-512, one thread
# (rnnkit bench --cell rnn --modes inference --shapes 3,2,64,512 4,4,64,256 6,1,64,512 ...),
# and at N = 5-8, H = 256-512, 0.79-1.04 at 3-4 steps, 0.92-1.09 at 5-6 (1-2 layers, one
# direction and two; 0.92-1.13 at N = 16, which stays on our loops). At two threads
# torch's layer ran those calls 1.00-1.36x faster than our loops at 3-4 steps, 0.94-1.07x
# at 6 (compare_revisions.py --threads 2 --shapes 3,5,256,256 6,8,256,512 ...).
NATIVE_MAX_STEPS_LARGE_RNN = ((2, 2), (4, 4))
LARGE_STEP = 1 << 18
LARGE_STEP_FEW_ROWS = 8
# Dense inference of an Elman or GRU layer whose steps are at most SMALL_STEP (N * H**2):
# each step is so small that our loops' cost per call outweighs their gain per step for
# longer, up to this many steps.
NATIVE_MAX_STEPS_SMALL_DENSE_INFERENCE = 8
SMALL_STEP = 1 << 13
SMALL_STEP_CELLS = ("rnn", "gru")
# torch's note that a projected LSTM leaves oneDNN, given on every call of its layer: its
# business, not our user's.
PROJECTION_WARNING = "LSTM with projections is not supported with oneDNN"


def native_fit(
    cell: str, steps: int, batch: int, hidden_size: int, training_grad: bool, packed: bool
) -> str | None:
    """Whether torch's own layer runs a call of ``steps`` steps under ``"auto"``.

    Args:
        cell: ``"rnn"``, ``"gru"`` or ``"lstm"``.
        steps: the call's time steps (a packed input's ``len(batch_sizes)``).
        batch: sequences, ``N``.
        hidden_size: ``H``.
        training_grad: whether autograd records the call.
        packed: whether the input is a ``PackedSequence`` (our loops' packed path costs
            more a call, torch's packed steps more each).

    Returns:
        ``ALWAYS`` (for :func:`rnnkit.engine.resolve_engine`'s ``native``), or None.
    """
    limits = NATIVE_MAX_STEPS[cell]
    step = batch * hidden_size**2
    few_rows = batch <= LARGE_STEP_FEW_ROWS and not (packed or training_grad)
    if cell == "rnn" and step >= LARGE_STEP and not few_rows:
        limits = NATIVE_MAX_STEPS_LARGE_RNN
    limit = limits[packed][training_grad]
    if cell in SMALL_STEP_CELLS and not (packed or training_grad) and step <= SMALL_STEP:
        limit = NATIVE_MAX_STEPS_SMALL_DENSE_INFERENCE
    return ALWAYS if steps <= limit else None


def max_native_steps(cell: str) -> int:
    """The most steps :func:`native_fit` ever gives torch's layer for ``cell``: a call of
    more skips its questions (every batched call asks, so the answer is worked out once,
    at import)."""
    return _MOST_STEPS[cell]


_MOST_STEPS = {
    cell: max(
        *(max(pair) for pair in limits),
        *((NATIVE_MAX_STEPS_SMALL_DENSE_INFERENCE,) if cell in SMALL_STEP_CELLS else ()),
    )
    for cell, limits in NATIVE_MAX_STEPS.items()
}


def call_quietly(projected: bool, op, *args):
    """``op(*args)``, torch's layer, without its note that a projected LSTM leaves oneDNN
    (:data:`PROJECTION_WARNING`), which it gives on every call; the filter is set only
    where it applies (it costs a few microseconds a call)."""
    if not projected:
        return op(*args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", PROJECTION_WARNING)
        return op(*args)
