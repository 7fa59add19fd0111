r"""``rnnkit.LSTMCell`` and ``rnnkit.GRUCell``: drop-in replacements for
``torch.nn.LSTMCell`` and ``torch.nn.GRUCell``.

One step of the recurrences of :mod:`rnnkit.functional_gated`, for code that
loops over time itself (decoders, generation with a carried state).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cell import CellBase, check_cell_args
from rnnkit.functional_gated import gru_cell_reference, lstm_cell_reference


class _GatedCell(CellBase):
    """What the gated cells share beyond :class:`rnnkit.cell.CellBase`: batching and
    checking their input and states."""

    _gates = 4
    _name = "LSTMCell"

    def _check_input_rank(self, input: Tensor) -> None:
        """torch's first check of a cell's call, before its states'."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{self._name}: Expected input to be 1D or 2D, got {input.dim()}D instead"
            )

    def _batched(self, input: Tensor, states) -> tuple[Tensor, tuple[Tensor, ...], bool]:
        """The input and states with a batch dimension (zeros for missing states), checked
        (the input's rank already, by :meth:`_check_input_rank`)."""
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if states is None:
            zeros = torch.zeros(
                input.size(0), self.hidden_size, dtype=input.dtype, device=input.device
            )
            states = (zeros,) * (2 if self._gates == 4 else 1)
        elif not is_batched:
            states = tuple(s.unsqueeze(0) for s in states)
        check_cell_args(input, states, self.input_size, self.hidden_size)
        return input, states, is_batched

    def _weights(self) -> tuple:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh


class LSTMCell(_GatedCell):
    r"""One LSTM step, exactly as ``torch.nn.LSTMCell``.

    .. math::
        \begin{array}{ll}
        i = \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) \\
        f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
        g = \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) \\
        o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
        c' = f \odot c + i \odot g \\
        h' = o \odot \tanh(c')
        \end{array}

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of ``h`` and ``c``.
        bias: if False, the cell has no ``b_ih`` and ``b_hh``. Default: True.
        device, dtype: of the parameters.

    Shape:
        - input: ``(N, H_in)`` or ``(H_in)``.
        - hx: ``(h, c)``, each ``(N, H_out)`` or ``(H_out)``; zeros when not given.
        - output: ``(h', c')``, shaped as hx.

    Example:
        >>> cell = LSTMCell(10, 20)
        >>> h, c = torch.zeros(3, 20), torch.zeros(3, 20)  # (N, H_out) each
        >>> for x_t in torch.randn(6, 3, 10):  # (L, N, H_in)
        ...     h, c = cell(x_t, (h, c))
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        # Defined here so that a wrong call names LSTMCell as torch's does.
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        """The next ``(h, c)`` (see the class Shape section)."""
        self._check_input_rank(input)
        if hx is not None:  # torch's checks, in torch's order
            for index, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {value.dim()}D instead"
                    )
            if input.dim() == 1:  # indexed as torch's cell does (a tensor's rows too)
                hx = (hx[0], hx[1])
            elif isinstance(hx, Tensor):
                raise TypeError(
                    "lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not Tensor"
                )
            elif len(hx) != 2:
                raise RuntimeError("lstm_cell expects two hidden states")
        input, (h, c), is_batched = self._batched(input, hx)
        h, c = lstm_cell_reference(input, h, c, *self._weights())
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_GatedCell):
    r"""One GRU step, exactly as ``torch.nn.GRUCell``.

    .. math::
        \begin{array}{ll}
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' = (1 - z) \odot n + z \odot h
        \end{array}

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of ``h``.
        bias: if False, the cell has no ``b_ih`` and ``b_hh``. Default: True.
        device, dtype: of the parameters.

    Shape:
        - input: ``(N, H_in)`` or ``(H_in)``.
        - hx: ``(N, H_out)`` or ``(H_out)``; zeros when not given.
        - output: ``(N, H_out)`` or ``(H_out)``, the next hidden state.

    Example:
        >>> cell = GRUCell(10, 20)
        >>> h = torch.zeros(3, 20)  # (N, H_out)
        >>> for x_t in torch.randn(6, 3, 10):  # (L, N, H_in)
        ...     h = cell(x_t, h)
    """

    _gates = 3
    _name = "GRUCell"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        # Defined here so that a wrong call names GRUCell as torch's does.
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """The next hidden state (see the class Shape section)."""
        self._check_input_rank(input)
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"GRUCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        input, (h,), is_batched = self._batched(input, None if hx is None else (hx,))
        h = gru_cell_reference(input, h, *self._weights())
        return h if is_batched else h.squeeze(0)
