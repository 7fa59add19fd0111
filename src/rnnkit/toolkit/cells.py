"""The recurrent layer an encoder is built on, chosen by name: ``cell = "rnn" | "lstm" | "gru"``.

Every layer here is rnnkit's drop-in for torch's of the same name, built
``batch_first``. They differ in one thing the toolkit sees: an LSTM's final
state is a pair ``(h_n, c_n)`` where the others return ``h_n`` alone, and it
takes ``hx`` as such a pair back.

Example:
    >>> layer = recurrent_layer("lstm", 4, 16)
    >>> output, state = layer(torch.randn(3, 10, 4))  # (batch, window, features)
    >>> final_hidden(state).shape  # h_n: (directions * layers, batch, hidden)
    torch.Size([1, 3, 16])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from rnnkit.gated import GRU, LSTM
from rnnkit.rnn import RNN
from rnnkit.toolkit.arguments import invalid_argument

# The layer of each cell name; "rnn" (Elman) is the default everywhere.
CELLS: dict[str, type[nn.Module]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}

# rnnkit's regularising options that torch's layers lack, which the toolkit's models
# expose (``model.<name>`` in a run config), with the value that means off.
LAYER_OPTIONS: dict[str, Any] = {
    "weight_drop": 0.0,
    "recurrent_dropout": 0.0,
    "zoneout": 0.0,
    "layer_norm": False,
}

__all__ = [
    "CELLS",
    "LAYER_OPTIONS",
    "check_cell",
    "final_hidden",
    "layer_options_of",
    "recurrent_layer",
]


def layer_options_of(config: Any) -> dict[str, Any]:
    """The :data:`LAYER_OPTIONS` a model config (or any object with those attributes) sets."""
    return {name: getattr(config, name, off) for name, off in LAYER_OPTIONS.items()}


def check_cell(cell: object, nonlinearity: object = "tanh") -> None:
    """Refuse an unknown cell, and a nonlinearity other than tanh with a gated one.

    The gates fix LSTM's and GRU's activations: ``nonlinearity`` is the Elman
    cell's alone, and its default, "tanh", is accepted with every cell.

    Raises:
        ValueError: Naming ``cell``, or ``nonlinearity`` and the cell.
    """
    if not isinstance(cell, str) or cell not in CELLS:
        raise invalid_argument("cell", f"one of {tuple(CELLS)}", cell)
    if cell != "rnn" and nonlinearity != "tanh":
        raise invalid_argument(
            "nonlinearity", f"'tanh' with cell={cell!r} (only the 'rnn' cell has a choice)",
            nonlinearity,
        )  # fmt: skip


def recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    nonlinearity: str = "tanh",
    layer_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """A ``batch_first`` :class:`rnnkit.RNN`, :class:`rnnkit.LSTM` or :class:`rnnkit.GRU`.

    Args:
        cell: "rnn", "lstm" or "gru".
        input_size, hidden_size: As in torch's layers.
        nonlinearity: The "rnn" cell's; "tanh" with the others (:func:`check_cell`).
        layer_options: rnnkit's options from :data:`LAYER_OPTIONS` (weight_drop,
            recurrent_dropout, zoneout, layer_norm); those at their off value are not
            passed, so a layer without any has torch's repr and state dict.
        options: Further constructor arguments (num_layers, dropout, bidirectional).
    """
    check_cell(cell, nonlinearity)
    if cell == "rnn":
        options["nonlinearity"] = nonlinearity
    for name, value in (layer_options or {}).items():
        if value != LAYER_OPTIONS[name]:
            options[name] = value
    return CELLS[cell](input_size, hidden_size, batch_first=True, **options)


def final_hidden(state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """``h_n`` of a layer's final state: an LSTM's ``(h_n, c_n)`` or the others' ``h_n``."""
    return state[0] if isinstance(state, tuple) else state
