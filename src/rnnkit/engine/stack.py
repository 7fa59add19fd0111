"""Stacked and bidirectional layers: the whole ``torch.nn.RNN`` over packed rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.engine.layer import grad_needed, run_layer


def rnn_stack(
    x: Tensor,
    hx: Tensor,
    all_weights: Sequence[Sequence[Tensor]],
    batch_sizes: Sequence[int],
    nonlinearity: str,
    bidirectional: bool,
    dropout: float,
    training: bool,
    engine: str = "auto",
) -> tuple[Tensor, Tensor]:
    """A multi-layer, optionally bidirectional RNN over packed rows.

    Args:
        x: packed input rows.
        hx: initial state of every layer and direction.
        all_weights: per (layer, direction), as in ``torch.nn.RNN.all_weights``.
        batch_sizes: rows per step.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bidirectional: every second entry of ``all_weights`` is a reverse pass.
        dropout: dropout on the outputs of all layers but the last.
        training: dropout applies only when True.
        engine: ``"auto"``, ``"compiled"`` or ``"fused"`` (see
            :func:`rnnkit.engine.resolve_engine`).

    Returns:
        ``(out, h_n)``.

    Shape:
        x ``(R, H_in)``, hx ``(D * num_layers, N, H_out)``;
        out ``(R, D * H_out)``, h_n ``(D * num_layers, N, H_out)``.
    """
    directions = (False, True) if bidirectional else (False,)
    num_layers = len(all_weights) // len(directions)
    batch_sizes = tuple(batch_sizes)
    # Without autograd, each layer writes its rows of h_n in place (no torch.cat copy).
    stacked = num_layers > 1 and not _needs_autograd(x, hx, all_weights)
    h_n_all = torch.empty_like(hx, memory_format=torch.contiguous_format) if stacked else None
    layer_input, h_n = x, []
    for layer in range(num_layers):
        first = layer * len(directions)
        rows = slice(first, first + len(directions))
        weights = [w for index in range(first, first + len(directions)) for w in all_weights[index]]
        layer_input, h_last = run_layer(
            layer_input, hx[rows], weights, batch_sizes, directions, nonlinearity, engine,
            x_is_scratch=layer > 0, h_n=None if h_n_all is None else h_n_all[rows],
        )  # fmt: skip  # (R, D * H_out), (D, N, H_out)
        h_n.append(h_last)
        if dropout and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, True)
    if h_n_all is not None:
        return layer_input, h_n_all
    return layer_input, h_n[0] if len(h_n) == 1 else torch.cat(h_n)


# torch's Elman RNN on a batched dense input, by nonlinearity: the op torch.nn.RNN.forward
# calls, ``(x, h0, weights, has_biases, num_layers, dropout, training, bidirectional,
# batch_first)`` to ``(out, h_n)``.
NATIVE_RNN = {"tanh": torch._VF.rnn_tanh, "relu": torch._VF.rnn_relu}


def _needs_autograd(x: Tensor, hx: Tensor, all_weights: Sequence[Sequence[Tensor]]) -> bool:
    """Whether the stack's layers go through autograd (or are being traced), as
    each layer's ``run_layer`` decides: then each layer returns its own ``h_n``."""
    weights = (w for ws in all_weights for w in ws)
    return torch.compiler.is_compiling() or grad_needed(x, hx, weights)
