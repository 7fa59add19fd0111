r"""``rnnkit.RNNCell``: a drop-in replacement for ``torch.nn.RNNCell``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnkit.functional import rnn_cell_reference


class CellBase(nn.Module):
    """Parameters, initialisation and repr every cell shares, in torch's layout:
    ``weight_ih`` ``(G * H_out, H_in)``, ``weight_hh`` ``(G * H_out, H_out)`` and the
    biases ``(G * H_out,)``, ``G`` the subclass's ``_gates``."""

    __constants__ = ["input_size", "hidden_size", "bias"]
    _gates = 1

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate_size = self._gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty((gate_size, input_size), **factory_kwargs))
        self.weight_hh = nn.Parameter(torch.empty((gate_size, hidden_size), **factory_kwargs))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory_kwargs))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory_kwargs))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every parameter from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.bias is not True:
            s += ", bias={bias}"
        return s.format(**self.__dict__)


class RNNCell(CellBase):
    r"""One step of the Elman recurrence, exactly as ``torch.nn.RNNCell``.

    .. math::
        h' = \tanh(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})

    (``relu`` in place of ``tanh`` if asked).

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``.
        bias: if False, the cell has no ``b_ih`` and ``b_hh``. Default: True.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - input: ``(N, H_in)`` or ``(H_in)``.
        - hx: ``(N, H_out)`` or ``(H_out)``; zeros when not given.
        - output: ``(N, H_out)`` or ``(H_out)``, the next hidden state.

    Example:
        >>> cell = RNNCell(10, 20)
        >>> x = torch.randn(6, 3, 10)  # (L, N, H_in)
        >>> h = torch.zeros(3, 20)  # (N, H_out)
        >>> for x_t in x:
        ...     h = cell(x_t, h)  # (N, H_out)
    """

    __constants__ = ["input_size", "hidden_size", "bias", "nonlinearity"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """Compute the next hidden state (see the class Shape section)."""
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(
                input.size(0), self.hidden_size, dtype=input.dtype, device=input.device
            )
        elif not is_batched:
            hx = hx.unsqueeze(0)
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        self._check_forward_args(input, hx)
        h_next = rnn_cell_reference(
            input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
            self.nonlinearity,
        )  # fmt: skip
        return h_next if is_batched else h_next.squeeze(0)

    def _check_forward_args(self, input: Tensor, hx: Tensor) -> None:
        check_cell_args(input, (hx,), self.input_size, self.hidden_size)


def check_cell_args(input: Tensor, states, input_size: int, hidden_size: int) -> None:
    """Validate a cell's input and states as torch's ``rnn_*_cell`` ops do, with their
    messages (``hidden0``, ``hidden1``: the states in order)."""
    if input.size(1) != input_size:
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(1)} expected {input_size}"
        )
    for index, hx in enumerate(states):
        if input.size(0) != hx.size(0):
            raise RuntimeError(
                f"Input batch size {input.size(0)} doesn't match hidden{index} batch size "
                f"{hx.size(0)}"
            )
        if hx.size(1) != hidden_size:
            raise RuntimeError(
                f"hidden{index} has inconsistent hidden_size: got {hx.size(1)}, "
                f"expected {hidden_size}"
            )
