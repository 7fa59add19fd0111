"""The fused recurrence engine: equivalent to ``rnnkit.functional.rnn_reference``.

One custom autograd function per layer, covering its directions. Its forward
computes the input projection of all steps with one GEMM per direction, each
into its own columns of one buffer, then runs each direction's recurrence in
place in its columns; the buffer becomes the output. Its backward
(backpropagation through time) loops over steps computing only the gradient of
the pre-activation, in chunks of time steps, and gets the weight gradients,
the bias gradient and the input gradient with a few large GEMMs per chunk. It
saves only the input, ``h_0`` and the hidden sequence: no per-step autograd
graph.

Sequences are held in the packed layout of ``torch.nn.utils.rnn.PackedSequence``:
the rows of all steps stacked, step ``t`` holding ``batch_sizes[t]`` rows (the
sequences still running, longest first). An ordinary ``(L, N, H_in)`` batch is
the special case ``batch_sizes = [N] * L``, so padding is never computed.

Two implementations of the time loops share that algorithm: one torch op per
step (:mod:`rnnkit.engine.torch_ops`, every device and dtype) and compiled CPU
loops (:mod:`rnnkit.compiled`); :func:`resolve_engine` picks one per layer.

Modules: ``rows`` (packed-layout index arithmetic), ``torch_ops`` (the loops
in torch ops), ``layer`` (one layer, its autograd and custom ops), ``stack``
(layers and dropout).

Shape symbols: ``R = sum(batch_sizes)`` packed rows, ``N = batch_sizes[0]``,
``H_in`` input features, ``H_out`` hidden features.
"""

from rnnkit.engine.layer import (
    AUTO_COMPILED_MAX,
    AUTO_COMPILED_MAX_ONE_THREAD,
    RNNLayerFunction,
    layer_backward,
    layer_forward,
    resolve_engine,
    rnn_layer,
)
from rnnkit.engine.stack import rnn_stack

__all__ = [
    "AUTO_COMPILED_MAX",
    "AUTO_COMPILED_MAX_ONE_THREAD",
    "RNNLayerFunction",
    "layer_backward",
    "layer_forward",
    "resolve_engine",
    "rnn_layer",
    "rnn_stack",
]
