r"""Initialisers for recurrent layers: ``rnnkit.init``.

Each works in place on any rnnkit or torch recurrent module (``RNN``, ``LSTM``,
``GRU`` and their cells), found by torch's parameter names: ``weight_hh_l{k}``
(``_reverse`` for the backward direction) or ``weight_hh`` in a cell. A gated
layer stacks its gates' blocks along dim 0, in torch's order (LSTM ``i, f, g, o``;
GRU ``r, z, n``), so ``weight_hh`` has ``G * H_out`` rows for ``G`` gates.

Example:
    >>> lstm = torch.nn.LSTM(8, 32)
    >>> rnnkit.init.orthogonal_recurrent_(lstm)  # each of the 4 gate blocks orthogonal
    LSTM(8, 32)
    >>> rnnkit.init.forget_gate_bias_(lstm, 1.0)  # remember by default (Jozefowicz et al.)
    LSTM(8, 32)
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["forget_gate_bias_", "identity_recurrent_", "orthogonal_recurrent_"]

# Torch's names: `weight_hh_l0`, `bias_ih_l1_reverse` in layers, `weight_hh` in cells.
_NAME = re.compile(r"(weight_hh|bias_ih|bias_hh)(_l\d+(_reverse)?)?")


def orthogonal_recurrent_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Make every recurrent weight orthogonal, each gate's block on its own.

    An orthogonal ``W_hh`` keeps the norm of ``h`` through the linear part of a
    step, which delays vanishing and exploding gradients (Saxe et al. 2014).

    Args:
        module: an RNN, LSTM or GRU (rnnkit or torch), or one of their cells.
        gain: scale of each orthogonal block, as in ``torch.nn.init.orthogonal_``.

    Returns:
        ``module``, changed in place.

    Shape:
        each ``(H_out, H_out)`` block of ``weight_hh`` (``(H_out, proj_size)`` in an
        LSTM with a projection: semi-orthogonal) satisfies ``W W^T = gain^2 I``.
    """
    hidden = _hidden_size(module)
    with torch.no_grad():
        for weight in _recurrent(module, "weight_hh").values():
            for block in weight.split(hidden):  # one block per gate, views into weight
                nn.init.orthogonal_(block, gain=gain)
    return module


def identity_recurrent_(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """IRNN (Le et al. 2015): ``W_hh = scale * I`` and the biases zero.

    Meant for ``nonlinearity='relu'``, where ``h_t = relu(h_{t-1} + x_t W_ih^T)``
    starts by copying the state forward; a tanh layer is allowed but squashes it.
    Both biases are zeroed, as in the paper: torch adds ``b_ih`` and ``b_hh``.

    Args:
        module: an Elman ``RNN`` or ``RNNCell`` (rnnkit or torch).
        scale: the diagonal of ``W_hh``; the paper also tries 0.01.

    Returns:
        ``module``, changed in place.

    Raises:
        ValueError: if ``module`` is gated (LSTM, GRU), whose gates have no IRNN.
    """
    hidden = _hidden_size(module)
    weights = _recurrent(module, "weight_hh")
    for name, weight in weights.items():
        if weight.size(0) != hidden:
            raise ValueError(
                "Received an invalid value for argument `module`, expected an Elman RNN "
                f"({name} with {hidden} rows), got {type(module).__name__} with "
                f"{weight.size(0)} rows: a gated layer."
            )
    with torch.no_grad():
        for weight in weights.values():
            weight.copy_(torch.eye(hidden, dtype=weight.dtype, device=weight.device) * scale)
        for kind in ("bias_ih", "bias_hh"):
            for bias in _recurrent(module, kind, required=False).values():
                bias.zero_()
    return module


def forget_gate_bias_(module: nn.Module, value: float = 1.0) -> nn.Module:
    """Set an LSTM's forget-gate bias to ``value`` (in ``b_ih``; its ``b_hh`` part to 0).

    Torch adds ``b_ih`` and ``b_hh``, so the forget gate's total bias is ``value``.
    A bias of 1 keeps the cell state by default early in training (Jozefowicz et
    al. 2015).

    Args:
        module: a ``torch.nn.LSTM`` or ``LSTMCell``, or any module with that layout:
            biases of ``4 * hidden_size`` rows in the order ``i, f, g, o``.
        value: the forget gate's bias.

    Returns:
        ``module``, changed in place.

    Raises:
        ValueError: if ``module`` has no biases or they are not in LSTM layout.
    """
    hidden = _hidden_size(module)
    biases = {kind: _recurrent(module, kind, required=False) for kind in ("bias_ih", "bias_hh")}
    found = {**biases["bias_ih"], **biases["bias_hh"]}
    bad = [f"{name} of {b.size(0)} rows" for name, b in found.items() if b.size(0) != 4 * hidden]
    if not found or bad:
        got = bad[0] if bad else "no biases"
        raise ValueError(
            "Received an invalid value for argument `module`, expected LSTM biases of "
            f"4 * hidden_size = {4 * hidden} rows, got {type(module).__name__} with {got}."
        )
    with torch.no_grad():
        for bias in biases["bias_ih"].values():
            bias[hidden : 2 * hidden] = value  # rows of the forget gate f
        for bias in biases["bias_hh"].values():
            bias[hidden : 2 * hidden] = 0.0
    return module


def _hidden_size(module: nn.Module) -> int:
    hidden = getattr(module, "hidden_size", None)
    if not isinstance(hidden, int):
        raise ValueError(
            "Received an invalid value for argument `module`, expected a recurrent "
            f"module with a `hidden_size`, got {type(module).__name__}."
        )
    return hidden


def _recurrent(module: nn.Module, kind: str, required: bool = True) -> dict[str, nn.Parameter]:
    """The module's own parameters named ``kind`` per layer and direction, by name."""
    found = {}
    for name, param in module.named_parameters(recurse=False):
        match = _NAME.fullmatch(name)
        if match and match.group(1) == kind:
            found[name] = param
    if required and not found:
        raise ValueError(
            "Received an invalid value for argument `module`, expected a recurrent "
            f"module with `{kind}_l*` parameters, got {type(module).__name__}."
        )
    return found
