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

from typing import Any

from torch import Tensor, nn

from rnnkit.gated import GRU, LSTM
from rnnkit.rnn import RNN
from rnnkit.toolkit.arguments import invalid_argument

# The layer of each cell name; "rnn" (Elman) is the default everywhere.
CELLS: dict[str, type[nn.Module]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}

__all__ = ["CELLS", "check_cell", "final_hidden", "recurrent_layer"]


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
    weight_drop: float = 0.0,
    **options: Any,
) -> nn.Module:
    """A ``batch_first`` :class:`rnnkit.RNN`, :class:`rnnkit.LSTM` or :class:`rnnkit.GRU`.

    Args:
        cell: "rnn", "lstm" or "gru".
        input_size, hidden_size: As in torch's layers.
        nonlinearity: The "rnn" cell's; "tanh" with the others (:func:`check_cell`).
        weight_drop: rnnkit's DropConnect on the recurrent weights; 0 (off) builds the
            layer without the option, so its repr and state dict are torch's.
        options: Further constructor arguments (num_layers, dropout, bidirectional).
    """
    check_cell(cell, nonlinearity)
    if cell == "rnn":
        options["nonlinearity"] = nonlinearity
    if weight_drop:
        options["weight_drop"] = weight_drop
    return CELLS[cell](input_size, hidden_size, batch_first=True, **options)


def final_hidden(state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """``h_n`` of a layer's final state: an LSTM's ``(h_n, c_n)`` or the others' ``h_n``."""
    return state[0] if isinstance(state, tuple) else state
