"""Running a model over a task's examples: evaluation batches and the shape trace.

:func:`shape_trace` runs one real batch through a model's ``encoder`` and ``head``
for the shapes ``rnnkit train`` prints; :func:`first_batch` collates that batch.
``_batches`` and ``_forward_all`` run a whole dataset in eval mode, without
gradients, for the tasks' scores and predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.data import Dataset, default_collate

from rnnkit.toolkit.devices import to_device

EVAL_BATCH_SIZE = 256  # sequences per forward pass when scoring: no gradients, so larger

__all__ = ["EVAL_BATCH_SIZE", "first_batch", "shape_trace"]


# What an input of (batch, window, *step) holds, by (len(step), floating point).
_STEP_MEANINGS = {
    (0, False): "(batch, max_len) token ids",
    (1, False): "(batch, max_len, 1 + chars) word ids, then their characters",
    (1, True): "(batch, window, features)",
}


def shape_trace(model: nn.Module, batch: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """Run one real batch through ``model.encoder`` and ``model.head``, recording the shapes.

    Args:
        model: A toolkit model (an ``encoder`` and a ``head``).
        batch: A collated batch ``(*inputs, target)``.

    Returns:
        ``(what, shape, meaning)`` rows: the input, the recurrent layer's output
        and ``h_n`` (and an LSTM's ``c_n``), the head's output.

    Example:
        >>> trace = shape_trace(model, (torch.randn(30, 100, 4), torch.randn(30, 1)))
        >>> [shape for _, shape, _ in trace]
        [(30, 100, 4), (30, 100, 64), (1, 30, 64), (30, 1)]
    """
    inputs = tuple(batch[:-1])
    if hasattr(model, "shape_trace"):  # a model of its own layout (TranslationModel)
        return model.shape_trace(*to_device(inputs, next(model.parameters()).device))
    x = inputs[0]
    if isinstance(x, PackedSequence):
        lengths = inputs[1] if len(inputs) > 1 else None
        step = tuple(x.data.shape[1:])  # () token ids, (features,) or (1 + chars,) per step
        shown = (len(lengths), int(lengths.max()), *step) if lengths is not None else x.data.shape
        meaning = _STEP_MEANINGS[(len(step), x.data.dtype.is_floating_point)]
        input_row = ("input", tuple(shown), f"{meaning}, packed: no step of padding")
    else:
        meaning = _STEP_MEANINGS[(x.dim() - 2, x.dtype.is_floating_point)]
        input_row = ("input", tuple(x.shape), meaning)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            encoded = model.encoder(*to_device(inputs, device))
            output = model.head(encoded)
    finally:
        model.train(was_training)
    out_meaning = (
        "(batch, outputs)" if output.dim() == 2 else "(batch, window, outputs)"
    )  # many-to-one or one per step
    layer = type(model.encoder.rnn).__name__  # RNN, LSTM or GRU
    state = "(directions * layers, batch, hidden)"
    states = [(f"{layer} h_n", tuple(encoded.h_n.shape), state)]
    if encoded.c_n is not None:  # an LSTM's
        states.append((f"{layer} c_n", tuple(encoded.c_n.shape), f"{state}: the cell state"))
    return [
        input_row,
        (f"{layer} output", tuple(encoded.output.shape), "(batch, window, directions * hidden)"),
        *states,
        ("head output", tuple(output.shape), out_meaning),
    ]


def first_batch(dataset: Dataset, collate_fn: Callable | None, batch_size: int) -> Any:
    """The first `batch_size` examples of `dataset`, collated."""
    items = [dataset[i] for i in range(min(batch_size, len(dataset)))]
    return (collate_fn or default_collate)(items)


def _batches(model: nn.Module, dataset: Any, collate_fn: Callable | None):
    """Yield ``(batch, outputs)`` for `dataset` in order, in eval mode, outputs on the CPU."""
    collate = collate_fn or default_collate
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), EVAL_BATCH_SIZE):
                stop = min(start + EVAL_BATCH_SIZE, len(dataset))
                batch = collate([dataset[i] for i in range(start, stop)])
                inputs = to_device(tuple(batch[:-1]), device)
                yield batch, model(*inputs).cpu()
    finally:
        model.train(was_training)


def _forward_all(model: nn.Module, dataset: Any, collate_fn: Callable | None) -> Tensor:
    """Outputs of every example, concatenated: ``(examples, outputs)``."""
    return torch.cat([outputs for _, outputs in _batches(model, dataset, collate_fn)])
