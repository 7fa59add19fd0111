r"""``rnnkit.LSTM`` and ``rnnkit.GRU``: drop-in replacements for ``torch.nn.LSTM`` and
``torch.nn.GRU`` on our own engine.

Shape symbols (as in PyTorch): ``N`` batch, ``L`` sequence length, ``D`` = 2 if
bidirectional else 1, ``H_in`` = input_size, ``H_cell`` = hidden_size,
``H_out`` = proj_size if it is positive, else hidden_size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnkit.engine.few_steps import MAX_STEPS as SHORT_MAX_STEPS
from rnnkit.engine.few_steps import below_onednn_weights, short_path_open
from rnnkit.engine.gated_stack import gated_stack, native_gru, native_lstm
from rnnkit.engine.layer import resolve_engine
from rnnkit.engine.onednn import onednn_enabled, onednn_fit, onednn_lstm
from rnnkit.functional_gated import gru_reference, lstm_reference
from rnnkit.recurrent import (
    RecurrentBase,
    dense_short_inference,
    few_steps_on_torch,
    in_order,
    packed_like,
    packed_on_torch,
    packed_short_inference,
    packed_sizes,
    plain_cpu_call,
    state_fits,
    take_options,
    torch_could_run,
)


class LSTM(RecurrentBase):
    r"""A multi-layer long short-term memory network, exactly as ``torch.nn.LSTM``.

    Each layer computes, for every step,

    .. math::
        \begin{array}{ll}
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    and with ``proj_size > 0``, :math:`h_t = W_{hr}(o_t \odot \tanh(c_t))`.
    The readable loop is :func:`rnnkit.functional_gated.lstm_reference`; the
    engine (:mod:`rnnkit.engine.lstm`) fuses it. ``$RNNKIT_ENGINE=reference``
    runs the loop.

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the cell state ``c`` (and of ``h`` without projection).
        num_layers: number of stacked layers. Default: 1.
        bias: if False, no ``b_ih`` and ``b_hh``. Default: True.
        batch_first: if True, input and output are ``(N, L, features)``. Default: False.
        dropout: dropout on the outputs of every layer but the last, in
            training mode. Default: 0.
        bidirectional: if True, a bidirectional LSTM. Default: False.
        proj_size: if positive, ``h`` is projected to this many features. Default: 0.
        device, dtype: of the parameters.
        merge_mode, learn_initial_state, weight_drop, recurrent_dropout, zoneout,
            layer_norm: keyword-only options torch lacks, as in :class:`rnnkit.RNN`
            (``learn_initial_state`` adds ``initial_state`` ``(D * num_layers, H_out)``
            and ``initial_cell_state`` ``(D * num_layers, H_cell)``; zoneout also acts
            on the cell state, with its own draws; layer_norm normalises each of the
            four gates; the last three not with ``proj_size``); at their defaults the
            layer is torch's.

    Shape:
        - input: ``(L, H_in)`` unbatched, ``(L, N, H_in)``, ``(N, L, H_in)``
          with ``batch_first``, or a ``PackedSequence``.
        - hx: ``(h_0, c_0)``, each ``(D * num_layers, N, H_out)`` and
          ``(D * num_layers, N, H_cell)`` (without ``N`` if unbatched); zeros if
          not given.
        - output: ``(L, N, D * H_out)`` (``(N, L, D * H_out)`` with
          ``batch_first``), or a ``PackedSequence``.
        - ``(h_n, c_n)``: like ``(h_0, c_0)``, after each sequence's last step.

    Example:
        >>> lstm = LSTM(4, 64, batch_first=True)
        >>> x = torch.randn(30, 100, 4)  # (batch, days, open/high/low/close)
        >>> output, (h_n, c_n) = lstm(x)
        >>> output.shape, h_n.shape, c_n.shape
        (torch.Size([30, 100, 64]), torch.Size([1, 30, 64]), torch.Size([1, 30, 64]))
    """

    _gates = 4
    _name = "LSTM"
    _cell = "lstm"
    _initial_state_names = ("initial_state", "initial_cell_state")
    _hidden_messages = ("Expected hidden[0] size {}, got {}", "Expected hidden[1] size {}, got {}")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        options = take_options(kwargs, "LSTM", proj_allowed=True)
        super().__init__()
        self.mode = "LSTM"
        self._build(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, {"device": device, "dtype": dtype}, options,
        )  # fmt: skip

    def _forward_on_torch(self, input: Tensor, hx) -> tuple | None:
        """A batched tensor input that torch's oneDNN LSTM runs (as :func:`resolve_engine`
        decides), passed to it as ``nn.LSTM`` passes it, or, where oneDNN cannot run it
        (``proj_size``, float64), a call of few steps (:func:`few_steps_on_torch`); None
        for every other input, which the general path then takes (its checks and messages
        included).

        The general path makes the same call (:func:`rnnkit.engine.onednn.onednn_lstm`)
        after turning the input into packed rows and back; this one skips that and the
        per-layer bookkeeping, about 20 us of Python. A batch-1 sequence (100x1x4x64, one
        thread) ran at 0.86-0.89 of ``nn.LSTM``'s speed with them, 0.91-0.95 without
        (``rnnkit bench --cell lstm --shapes 100,1,4,64``).

        Shape:
            input ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``); output as
            :meth:`forward`'s.
        """
        if self.proj_size or input.dtype != torch.float32:  # oneDNN cannot run these
            return few_steps_on_torch(self, input, hx)
        weights = self._flat_weights
        sizes = plain_cpu_call(self, input, weights)
        if sizes is None:
            return None
        steps, batch = sizes
        if self._short_beats_onednn(steps, steps * batch):
            short = dense_short_inference(self, input, hx, weights, steps, batch)
            if short is not None:
                return short
        hx = self._states_for_onednn(input, (batch,) * steps, hx, weights)
        if hx is None:
            return None
        output, h_n, c_n = onednn_lstm(
            input, hx, weights, self.bias, self.num_layers, self.dropout, self.training,
            self.bidirectional, self.batch_first,
        )  # fmt: skip
        return output, (h_n, c_n)

    def _packed_on_torch(self, input: PackedSequence, hx) -> tuple | None:
        """Packed sequences of equal lengths (one sequence among them), more than one step,
        that torch's oneDNN LSTM runs (as :func:`resolve_engine` decides), passed to
        torch's packed call as ``nn.LSTM`` passes them; every other packed input as the
        other layers' (:meth:`RecurrentBase._packed_on_torch`).

        The general path makes the same call on the same rows after its own bookkeeping:
        25-40 us more a call in a loop of calls, and training of a batch-1 LSTM at 4-12
        steps ran at 0.88-0.95 of ``nn.LSTM``'s speed through it, 0.94-1.01 direct. This
        call is written out for the reason :meth:`_forward_on_torch` is: through the direct
        call the other layers share (:func:`rnnkit.recurrent.packed_on_torch`), which asks
        every layer's questions, inference of one sequence of 2-12 steps at 1 x 4 x 64 ran
        at 0.90-0.91 of ``nn.LSTM``'s speed, through this one at 0.92-0.95 (``rnnkit bench
        --cell lstm --packed 1 --shapes 2,1,4,64 12,1,4,64 --modes inference train
        --threads 1``).

        Shape:
            input.data ``(R, H_in)``; output.data ``(R, D * H_out)``.
        """
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if (
            self.proj_size or type(data) is not Tensor or type(batch_sizes) is not Tensor
            or data.dim() != 2 or batch_sizes.dim() != 1 or batch_sizes.size(0) < 2
            or not data.size(0) or data.dtype != torch.float32 or not onednn_enabled()
        ):  # fmt: skip
            return super()._packed_on_torch(input, hx)
        sizes = packed_sizes(batch_sizes, data.size(0))
        if sizes[0] != sizes[-1]:  # unequal lengths: oneDNN cannot run them
            return packed_on_torch(self, input, hx, sizes)
        weights = self._flat_weights
        if not torch_could_run(self, data, weights):
            return None
        if self._short_beats_onednn(len(sizes), data.size(0)):
            short = packed_short_inference(self, input, hx, sizes, weights)
            if short is not None:
                return short
        hx = self._states_for_onednn(data, sizes, hx, weights)
        if hx is None:
            return None
        out, h_n, c_n = native_lstm(
            data, batch_sizes, in_order(hx, sorted_indices), weights, self.bias,
            self.num_layers, self.dropout, self.training, self.bidirectional,
        )  # fmt: skip
        return packed_like(out, input), in_order((h_n, c_n), unsorted_indices)

    def _short_beats_onednn(self, steps: int, rows: int) -> bool:
        """Whether a float32 call of ``steps`` steps and ``rows`` rows that oneDNN would run
        may take the short path instead (:mod:`rnnkit.engine.few_steps`): at most
        ``MAX_STEPS`` steps, the kernels loaded, every layer's weights below
        ``ONEDNN_MAX_WEIGHTS``. Asked cheaply first: most calls fail one of these, and this
        runs before every dense one."""
        return (
            steps <= SHORT_MAX_STEPS
            and short_path_open(self, steps, rows, torch.float32)
            and below_onednn_weights(self)
        )

    def _states_for_onednn(
        self, x: Tensor, batch_sizes: Sequence[int], hx, weights: list[Tensor]
    ) -> tuple[Tensor, Tensor] | None:
        """The initial states to pass to torch's LSTM (``hx`` as given, or zeros) where
        ``"auto"`` runs this call on oneDNN (:func:`rnnkit.engine.onednn.onednn_fit`,
        then :func:`resolve_engine`); None where it does not, or where ``hx`` is not a
        pair of CPU states of their shape in ``x``'s dtype (the general path then checks
        them, with its messages).

        Args:
            x: the input, a batched tensor or packed rows, float32 on the CPU.
            batch_sizes: rows per step, all equal.
            hx: the caller's ``(h_0, c_0)`` in the caller's order, or None.
            weights: the module's ``_flat_weights``.

        Shape:
            each state ``(D * num_layers, N, H)``.
        """
        batch = batch_sizes[0]
        rows = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            # One zero tensor for both states: torch's LSTM only reads them.
            zeros = torch.zeros(rows, batch, self.hidden_size, dtype=x.dtype, device=x.device)
            hx = (zeros, zeros)
        elif _states_fit(hx, (rows, batch, self.hidden_size), x):
            hx = tuple(hx)
        else:
            return None
        # Whether autograd records the call (grad_needed's question, written out: this
        # path's every microsecond shows in a call of one step; fitting_states and
        # grad_needed, which other direct calls share, cost about 8 us more here).
        grad = torch.is_grad_enabled() and (
            x.requires_grad
            or hx[0].requires_grad
            or hx[1].requires_grad
            or any(w.requires_grad for w in weights)
        )
        directions = (False, True) if self.bidirectional else (False,)
        onednn = onednn_fit(
            x, batch_sizes, directions, False, grad, self.hidden_size, self.num_layers
        )
        if onednn is None:
            return None
        if resolve_engine("auto", x, batch, self.hidden_size, "lstm", onednn) != "onednn":
            return None
        return hx

    def _native_layer(self):
        return native_lstm

    def _state_sizes(self) -> tuple[int, int]:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def _states_of(self, hx) -> tuple[Tensor, Tensor]:
        if isinstance(hx, Tensor):  # indexed as torch's layer does: its IndexError, its words
            return hx[0], hx[1]
        if len(hx) > 2:
            raise RuntimeError("lstm expects two hidden states")  # torch's kernel's words
        return tuple(hx)

    def _result_of(self, states):
        return states[0], states[1]

    def _check_state_dims(self, states, batched: bool) -> None:
        expected = 3 if batched else 2
        if states[0].dim() != expected or states[1].dim() != expected:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {expected}-D but got "
                f"({states[0].dim()}-D, {states[1].dim()}-D) tensors"
            )

    def _run_stack(self, data, states, batch_sizes, all_weights, engine):
        args = (self.bidirectional, self.dropout, self.training, self.proj_size)
        return gated_stack("lstm", data, states, all_weights, batch_sizes, *args, engine=engine)

    def _run_reference(self, padded, states, all_weights, lengths):
        out, finals = lstm_reference(
            padded, *states, all_weights, self.bidirectional, self.dropout, self.training,
            lengths, self.proj_size,
        )  # fmt: skip
        return out, finals


def _states_fit(hx, shape: tuple[int, int, int], input: Tensor) -> bool:
    """Whether ``hx`` is a pair of CPU states of ``shape`` in the input's dtype."""
    if isinstance(hx, Tensor) or len(hx) != 2:
        return False
    return state_fits(hx[0], shape, input) and state_fits(hx[1], shape, input)


class GRU(RecurrentBase):
    r"""A multi-layer gated recurrent unit network, exactly as ``torch.nn.GRU``.

    Each layer computes, for every step,

    .. math::
        \begin{array}{ll}
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{array}

    The readable loop is :func:`rnnkit.functional_gated.gru_reference`; the
    engine (:mod:`rnnkit.engine.gru`) fuses it. ``$RNNKIT_ENGINE=reference``
    runs the loop.

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``.
        num_layers: number of stacked layers. Default: 1.
        bias: if False, no ``b_ih`` and ``b_hh``. Default: True.
        batch_first: if True, input and output are ``(N, L, features)``. Default: False.
        dropout: dropout on the outputs of every layer but the last, in
            training mode. Default: 0.
        bidirectional: if True, a bidirectional GRU. Default: False.
        device, dtype: of the parameters.
        merge_mode, learn_initial_state, weight_drop, recurrent_dropout, zoneout,
            layer_norm: keyword-only options torch lacks, as in :class:`rnnkit.RNN`
            (layer_norm normalises each of the three gates' products, ``n``'s before
            the reset gate scales it); at their defaults the layer is torch's.

    Shape:
        - input: ``(L, H_in)`` unbatched, ``(L, N, H_in)``, ``(N, L, H_in)``
          with ``batch_first``, or a ``PackedSequence``.
        - hx: ``(D * num_layers, N, H_out)`` (without ``N`` if unbatched); zeros
          if not given.
        - output: ``(L, N, D * H_out)`` (``(N, L, D * H_out)`` with
          ``batch_first``), or a ``PackedSequence``.
        - h_n: like hx, after each sequence's last step.

    Example:
        >>> gru = GRU(4, 64, batch_first=True)
        >>> output, h_n = gru(torch.randn(30, 100, 4))
        >>> output.shape, h_n.shape
        (torch.Size([30, 100, 64]), torch.Size([1, 30, 64]))
    """

    _gates = 3
    _name = "GRU"
    _cell = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        options = take_options(kwargs, "GRU")
        super().__init__()
        self.mode = "GRU"
        self._build(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            0, {"device": device, "dtype": dtype}, options,
        )  # fmt: skip

    def _native_layer(self):
        return native_gru

    def _run_stack(self, data, states, batch_sizes, all_weights, engine):
        args = (self.bidirectional, self.dropout, self.training)
        return gated_stack("gru", data, states, all_weights, batch_sizes, *args, engine=engine)

    def _run_reference(self, padded, states, all_weights, lengths):
        out, h_n = gru_reference(
            padded, states[0], all_weights, self.bidirectional, self.dropout, self.training,
            lengths,
        )  # fmt: skip
        return out, (h_n,)
