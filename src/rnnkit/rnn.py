r"""``rnnkit.RNN``: a drop-in replacement for ``torch.nn.RNN`` on our own engine.

Shape symbols (as in PyTorch): ``N`` batch, ``L`` sequence length, ``D`` = 2 if
bidirectional else 1, ``H_in`` = input_size, ``H_out`` = hidden_size.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.engine import rnn_stack
from rnnkit.functional import rnn_reference

ENGINE_ENV = "RNNKIT_ENGINE"
ENGINES = ("auto", "compiled", "fused", "reference")
MERGE_MODES = ("concat", "sum", "mul", "ave")


def selected_engine() -> str:
    """The engine named by ``$RNNKIT_ENGINE`` (default ``"auto"``)."""
    engine = os.environ.get(ENGINE_ENV, "auto")
    if engine not in ENGINES:
        raise ValueError(
            f"Received an invalid value for environment variable {ENGINE_ENV}, "
            f"expected one of {ENGINES}, got {engine!r}."
        )
    return engine


class RNN(nn.Module):
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

    ``merge_mode`` and ``learn_initial_state`` are keyword-only options torch
    lacks; at their defaults the layer, its ``state_dict`` and repr are torch's.

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

    __constants__ = [
        "mode", "input_size", "hidden_size", "num_layers", "bias",
        "batch_first", "dropout", "bidirectional", "proj_size",
    ]  # fmt: skip

    # Class defaults: modules pickled before these options existed still load and run.
    merge_mode = "concat"
    learn_initial_state = False

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
        # Taken from **kwargs so the signature stays the one torch documents.
        merge_mode = kwargs.pop("merge_mode", "concat")
        learn_initial_state = kwargs.pop("learn_initial_state", False)
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if kwargs:
            raise TypeError(
                f"RNN.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'"
            )
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        _check_constructor_args(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        _check_options(merge_mode, learn_initial_state, bidirectional)
        super().__init__()
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        num_directions = 2 if bidirectional else 1
        factory_kwargs = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = "_reverse" if direction == 1 else ""
                shapes = {
                    f"weight_ih_l{layer}{suffix}": (hidden_size, layer_input_size),
                    f"weight_hh_l{layer}{suffix}": (hidden_size, hidden_size),
                }
                if bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = (hidden_size,)
                    shapes[f"bias_hh_l{layer}{suffix}"] = (hidden_size,)
                for name, shape in shapes.items():
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
                self._flat_weights_names.extend(shapes)
                self._all_weights.append(list(shapes))
        if merge_mode != "concat":
            self.merge_mode = merge_mode
        if learn_initial_state:
            self.learn_initial_state = True
            shape = (num_layers * num_directions, hidden_size)  # (D * num_layers, H_out)
            self.initial_state = nn.Parameter(torch.empty(shape, **factory_kwargs))
        self.reset_parameters()

    @property
    def _flat_weights(self) -> list[Tensor]:
        # Looked up on every call, so replaced or reparametrised weights
        # (torch.func.functional_call) are always the ones used.
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per (layer, direction): ``[w_ih, w_hh, b_ih, b_hh]``."""
        # _parameters first: Module.__getattr__ costs about 1 us per name. It holds
        # what torch.func.functional_call swaps in; a name it lacks (moved by
        # torch.nn.utils.parametrize, say) is looked up as an attribute.
        parameters = self._parameters
        return [
            [parameters[name] if name in parameters else getattr(self, name) for name in names]
            for names in self._all_weights
        ]

    def reset_parameters(self) -> None:
        """Draw every weight and bias from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.

        A learned ``initial_state`` starts at zeros, the state torch assumes.
        """
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name, weight in self.named_parameters():
            if name == "initial_state":
                nn.init.zeros_(weight)
            else:
                nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """Kept for code written for ``torch.nn.RNN``; a no-op.

        torch packs weights into one buffer for cuDNN; our engine reads each
        parameter where it is, so there is nothing to flatten.
        """

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        s = s.format(**self.__dict__)
        if self.merge_mode != "concat":
            s += f", merge_mode={self.merge_mode!r}"
        if self.learn_initial_state:
            s += ", learn_initial_state=True"
        return s

    def forward(self, input, hx=None):
        """Run the RNN.

        Args:
            input: a tensor or a ``PackedSequence`` (see the class Shape section).
            hx: the initial hidden state, or None for zeros (or for the learned
                ``initial_state`` with ``learn_initial_state=True``).

        Returns:
            ``(output, h_n)``; output is a ``PackedSequence`` if input is.
        """
        num_directions = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            sizes = _packed_sizes(batch_sizes, data.size(0) if data.dim() else 0)
            batch = sizes[0]
            if hx is not None:
                hx = hx.index_select(1, sorted_indices) if sorted_indices is not None else hx
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"
                )
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            "For unbatched 2-D input, hx should also be 2-D but got "
                            f"{hx.dim()}-D tensor"
                        )
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(
                    f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor"
                )
            data = input
            batch = input.size(0) if self.batch_first else input.size(1)
        all_weights = (
            self.all_weights
        )  # looked up once: each lookup goes through Module.__getattr__
        data, hx = self._check_forward_args(data, hx, batch, all_weights[0][0].dtype, packed)
        if hx is None and self.learn_initial_state:
            # Every sequence starts from the same state, so the sorted order of
            # packed input needs no reordering here.
            hx = self.initial_state.unsqueeze(1).expand(-1, batch, -1).contiguous()
        elif hx is None:
            hx = torch.zeros(
                self.num_layers * num_directions, batch, self.hidden_size,
                dtype=data.dtype, device=data.device,
            )  # fmt: skip

        if not packed:
            if self.batch_first:
                data = data.transpose(0, 1)  # (L, N, H_in)
            seq_len = data.size(0)
            if seq_len == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            sizes = [batch] * seq_len
            data = data.reshape(seq_len * batch, self.input_size)  # (L * N, H_in)
        out, h_n = self._run(data, hx, sizes, all_weights)  # (R, D*H_out), (D*num_layers, N, H_out)
        if self.merge_mode != "concat":
            out = _merge_directions(out, self.merge_mode)  # (R, H_out)

        if packed:
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), h_n
        out = out.view(seq_len, batch, out.size(1))  # (L, N, D * H_out), or H_out if merged
        if self.batch_first:
            out = out.transpose(0, 1)  # (N, L, D * H_out)
        if not is_batched:
            out, h_n = out.squeeze(batch_dim), h_n.squeeze(1)
        return out, h_n

    def _run(
        self, data: Tensor, hx: Tensor, batch_sizes: list[int], all_weights: list[list[Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """Dispatch to the selected engine. Shape: data ``(R, H_in)`` -> ``(R, D * H_out)``."""
        args = (self.nonlinearity, self.bidirectional, self.dropout, self.training)
        engine = selected_engine()
        if engine != "reference":  # "auto", "compiled" or "fused": rnn_stack resolves it
            return rnn_stack(data, hx, all_weights, batch_sizes, *args, engine=engine)
        # reference: the readable loop works on padded, time-major sequences
        seq_len, batch = len(batch_sizes), batch_sizes[0]
        if batch_sizes[-1] == batch:  # equal lengths: the rows are already (L, N, H_in)
            padded = data.view(seq_len, batch, data.size(1))
            out, h_n = rnn_reference(padded, hx, all_weights, *args)
            return out.view(seq_len * batch, out.size(2)), h_n
        packed = PackedSequence(data, torch.tensor(batch_sizes))
        padded, lengths = pad_packed_sequence(packed)  # (L, N, H_in)
        out, h_n = rnn_reference(padded, hx, all_weights, *args, lengths=lengths)
        return pack_padded_sequence(out, lengths).data, h_n

    def _check_forward_args(self, data, hx, batch, weight_dtype, packed):
        """Validate input and hx as torch.nn.RNN does, with its messages."""
        if data.dtype != weight_dtype:
            if not torch.is_autocast_enabled(data.device.type):
                raise ValueError(
                    f"RNN input dtype ({data.dtype}) does not match weight dtype "
                    f"({weight_dtype}). Convert input: input.to({weight_dtype}), "
                    f"or convert model: model.to({data.dtype})"
                )
            data = data.to(weight_dtype)
        expected_dim = 2 if packed else 3
        if data.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {data.dim()}")
        if data.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {data.size(-1)}"
            )
        if hx is None:
            return data, None
        num_directions = 2 if self.bidirectional else 1
        expected = (self.num_layers * num_directions, batch, self.hidden_size)
        if tuple(hx.shape) != expected:  # a tuple compare: torch.Size's goes through sym_eq
            raise RuntimeError(f"Expected hidden size {expected}, got {list(hx.size())}")
        if hx.device != data.device:
            raise RuntimeError(
                "Input and hidden tensors are not at the same device, found input tensor "
                f"at {data.device} and hidden tensor at {hx.device}"
            )
        if hx.dtype != data.dtype:
            raise RuntimeError(
                f"hx dtype ({hx.dtype}) does not match input dtype ({data.dtype}). "
                f"Convert hx: hx.to({data.dtype})"
            )
        return data, hx


def _check_constructor_args(input_size, hidden_size, num_layers, bias, batch_first, dropout):
    """Reject what torch.nn.RNN rejects, with the same exception types and wording."""
    float(dropout)  # torch converts first, so a non-number fails here as it does there
    if (
        not isinstance(dropout, numbers.Number)
        or isinstance(dropout, bool)
        or not 0 <= dropout <= 1
    ):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability "
            "of an element being zeroed"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero "
            "dropout expects num_layers greater than 1, but got "
            f"dropout={dropout} and num_layers={num_layers}",
            stacklevel=3,
        )
    for name, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")


def _check_options(merge_mode, learn_initial_state, bidirectional):
    """Validate the keyword-only options that torch.nn.RNN lacks."""
    if merge_mode not in MERGE_MODES:
        raise ValueError(
            "Received an invalid value for argument `merge_mode`, "
            f"expected one of {MERGE_MODES}, got {merge_mode!r}."
        )
    if merge_mode != "concat" and not bidirectional:
        raise ValueError(
            "Received an invalid value for argument `merge_mode`, expected 'concat' "
            f"with bidirectional=False (one direction, nothing to merge), got {merge_mode!r}."
        )
    if not isinstance(learn_initial_state, bool):
        raise TypeError(
            "Received an invalid value for argument `learn_initial_state`, "
            f"expected a bool, got {learn_initial_state!r}."
        )


def _merge_directions(out: Tensor, merge_mode: str) -> Tensor:
    """Combine the two directions' columns. Shape: ``(R, 2 * H_out)`` -> ``(R, H_out)``."""
    forward, backward = out.chunk(2, dim=1)  # (R, H_out) each
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    return (forward + backward) / 2  # "ave"


def _packed_sizes(batch_sizes: Tensor, rows: int) -> list[int]:
    """The rows per step of a PackedSequence, checked against the rows of its ``data``.

    The compiled loops index rows by these sizes without bounds checks, so a
    malformed PackedSequence (built by hand, not by ``pack_padded_sequence``)
    is refused here, with torch.nn.RNN's exception type for the same input.
    torch ignores rows of ``data`` beyond the sum, and the steps after a zero
    size; we refuse those too rather than drop data silently.
    """
    expected = "PackedSequence batch_sizes, expected a 1-D int64 tensor"
    if batch_sizes.dim() != 1:
        error = IndexError if batch_sizes.dim() == 0 else TypeError
        raise error(f"{expected}, got a {batch_sizes.dim()}-D tensor")
    if batch_sizes.dtype != torch.int64:
        error = TypeError if batch_sizes.is_floating_point() else RuntimeError
        raise error(f"{expected}, got dtype {batch_sizes.dtype}")
    sizes = batch_sizes.tolist()
    if not sizes:
        raise IndexError(f"{expected} with one entry per step, got an empty tensor")
    if sizes[-1] < 0 or sum(sizes) != rows or sizes != sorted(sizes, reverse=True):
        shown = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
        raise RuntimeError(
            "PackedSequence batch_sizes, expected non-negative, non-increasing sizes summing "
            f"to the {rows} rows of data, got [{shown}] (sum {sum(sizes)})"
        )
    return sizes
