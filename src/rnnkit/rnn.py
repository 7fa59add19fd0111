r"""``rnnkit.RNN``: a drop-in replacement for ``torch.nn.RNN`` on our own engine.

Shape symbols (as in PyTorch): ``N`` batch, ``L`` sequence length, ``D`` = 2 if
bidirectional else 1, ``H_in`` = input_size, ``H_out`` = hidden_size.
"""

from __future__ import annotations

from rnnkit.engine import rnn_stack
from rnnkit.engine.stack import NATIVE_RNN
from rnnkit.functional import rnn_reference
from rnnkit.recurrent import (  # noqa: F401  (ENGINE_ENV and selected_engine: public here since 0.1)
    ENGINE_ENV,
    ENGINES,
    MERGE_MODES,
    RecurrentBase,
    selected_engine,
    take_options,
)


class RNN(RecurrentBase):
    r"""A multi-layer Elman RNN with ``tanh`` or ``relu``, exactly as ``torch.nn.RNN``.

    For each element of the input sequence, each layer computes

    .. math::
        h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    where :math:`h_0` is given or zero. Layer ``k > 0`` reads the outputs of
    layer ``k - 1`` (after dropout in training mode). A bidirectional layer also
    runs from the last step to the first and concatenates both outputs. The
    readable loop in :func:`rnnkit.functional.rnn_reference` is equivalent; the
    engine (:mod:`rnnkit.engine`) fuses it. ``$RNNKIT_ENGINE`` picks the path:
    ``"auto"`` (default: compiled CPU loops where they win, else torch ops),
    ``"compiled"``, ``"fused"`` (torch ops) or ``"reference"`` (the loop).

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the hidden state ``h``.
        num_layers: number of stacked recurrent layers. Default: 1.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``.
        bias: if False, the layer has no ``b_ih`` and ``b_hh``. Default: True.
        batch_first: if True, input and output are ``(N, L, features)``; this
            does not apply to the hidden state. Default: False.
        dropout: dropout probability on the outputs of every layer but the
            last, in training mode. Default: 0.
        bidirectional: if True, becomes a bidirectional RNN. Default: False.
        device: device of the parameters.
        dtype: dtype of the parameters.
        merge_mode: how the last layer's two directions make ``output``, as in
            Keras's ``Bidirectional``: ``'concat'`` ``[fwd, bwd]``, ``'sum'``
            ``fwd + bwd``, ``'mul'`` ``fwd * bwd`` or ``'ave'`` ``(fwd + bwd) / 2``.
            Inner layers still read the concatenation, so the weights keep
            torch's shapes; ``h_n`` is unchanged. Only with ``bidirectional``.
            Default: ``'concat'``.
        learn_initial_state: if True, adds a parameter ``initial_state`` of shape
            ``(D * num_layers, H_out)``, zeros at first, used for every sequence
            when ``hx`` is not given; an explicit ``hx`` wins. Default: False.

        weight_drop: DropConnect on ``W_hh`` in training, one mask per forward call
            (AWD-LSTM). Default: 0.
        recurrent_dropout: in training, ``h_{t-1}`` is multiplied by a mask drawn
            once per sequence (0 or ``1 / (1 - p)``) before the recurrent product
            (Gal & Ghahramani 2016). Default: 0.
        zoneout: each unit keeps its previous value with this probability at each
            step in training; evaluation takes the expectation (Krueger et al.
            2017). Default: 0.
        layer_norm: if True, ``W_hh h_{t-1}`` is layer-normalised per gate, with a
            learned gain ``layer_norm_weight_l{k}`` (ones) and bias
            ``layer_norm_bias_l{k}`` (zeros), before ``b_hh``. Default: False.

    The options after ``dtype`` are keyword-only and torch lacks them; at their
    defaults the layer, its ``state_dict`` and repr are torch's. The math of the
    last three is in :mod:`rnnkit.functional_options`; a layer with any of them
    runs on :mod:`rnnkit.engine.options` (not with ``proj_size``).

    Shape:
        - input: ``(L, H_in)`` unbatched, ``(L, N, H_in)``, ``(N, L, H_in)``
          with ``batch_first``, or a ``PackedSequence``.
        - hx: ``(D * num_layers, H_out)`` unbatched or ``(D * num_layers, N, H_out)``;
          zeros when not given.
        - output: ``(L, D * H_out)`` unbatched, ``(L, N, D * H_out)``,
          ``(N, L, D * H_out)`` with ``batch_first``, or a ``PackedSequence``;
          ``H_out`` in place of ``D * H_out`` with merge_mode sum, mul or ave.
        - h_n: like hx, the state after the last step of each layer and direction.

    Example:
        >>> rnn = RNN(4, 64, batch_first=True)
        >>> x = torch.randn(30, 100, 4)  # (batch, days, open/high/low/close)
        >>> output, h_n = rnn(x)
        >>> output.shape  # (N, L, D * H_out): one state per day, many-to-many
        torch.Size([30, 100, 64])
        >>> h_n.shape  # (D * num_layers, N, H_out): last state, many-to-one
        torch.Size([1, 30, 64])
    """

    _dims_message = "{name}: Expected input to be 2D or 3D, got {dims}D tensor instead"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        options = take_options(kwargs, "RNN")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        super().__init__()
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self._build(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            0, {"device": device, "dtype": dtype}, options,
        )  # fmt: skip

    def _native_layer(self):
        return NATIVE_RNN[self.nonlinearity]

    def _run_stack(self, data, states, batch_sizes, all_weights, engine):
        args = (self.nonlinearity, self.bidirectional, self.dropout, self.training)
        out, h_n = rnn_stack(data, states[0], all_weights, batch_sizes, *args, engine=engine)
        return out, (h_n,)

    def _run_reference(self, padded, states, all_weights, lengths):
        args = (self.nonlinearity, self.bidirectional, self.dropout, self.training)
        out, h_n = rnn_reference(padded, states[0], all_weights, *args, lengths=lengths)
        return out, (h_n,)
