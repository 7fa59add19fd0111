r"""What ``rnnkit.RNN``, ``rnnkit.LSTM`` and ``rnnkit.GRU`` share: torch's interface.

:class:`RecurrentBase` holds the parameters in ``torch.nn.RNNBase``'s names,
shapes and order, and turns every input torch accepts (batched, unbatched,
``batch_first``, ``PackedSequence``; initial states given or not) into packed
rows for the engine, with torch's checks and messages; a subclass says what a
cell is (gates per unit, states, how its stack runs).

Shape symbols (as in PyTorch): ``N`` batch, ``L`` sequence length, ``D`` = 2 if
bidirectional else 1, ``H_in`` = input_size, ``H_out`` = hidden_size (or
``proj_size`` for a projected LSTM), ``H_cell`` = hidden_size, ``R`` packed rows.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.engine.few_steps import (
    records_grad,
    short_inference,
    short_inference_fits,
    short_path_open,
    weight_shapes,
)
from rnnkit.engine.layer import grad_needed, resolve_engine
from rnnkit.engine.native import call_quietly, max_native_steps, native_fit
from rnnkit.engine.options import OptionsSpec, options_stack
from rnnkit.functional_options import options_reference
from rnnkit.masks import draw_masks, padded_masks
from rnnkit.weight_layout import weight_layout

ENGINE_ENV = "RNNKIT_ENGINE"
ENGINES = ("auto", "compiled", "fused", "reference")
MERGE_MODES = ("concat", "sum", "mul", "ave")
# The keyword-only options that are a probability in [0, 1) (0: off).
PROBABILITY_OPTIONS = ("weight_drop", "recurrent_dropout", "zoneout")


def selected_engine() -> str:
    """The engine named by ``$RNNKIT_ENGINE`` (default ``"auto"``), read at every call."""
    # CPython's dict behind os.environ, read directly: os.environ.get raises and catches
    # two KeyErrors when the variable is unset (0.69 against 0.04 us), which cost about
    # 5 us in place in a batch-1 LSTM call of 200 us.
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        raw = data.get(os.environ.encodekey(ENGINE_ENV))
        engine = "auto" if raw is None else os.environ.decodevalue(raw)
    else:
        engine = os.environ.get(ENGINE_ENV, "auto")
    if engine not in ENGINES:
        raise ValueError(
            f"Received an invalid value for environment variable {ENGINE_ENV}, "
            f"expected one of {ENGINES}, got {engine!r}."
        )
    return engine


class RecurrentBase(nn.Module):
    """torch's recurrent-layer interface over rnnkit's engine (see the module doc).

    A subclass sets ``_gates`` (rows of ``w_ih`` per hidden unit), ``_name`` (as
    in torch's messages) and implements :meth:`_run_stack` (the engine) and
    :meth:`_run_reference` (the readable loop).
    """

    __constants__ = [
        "mode", "input_size", "hidden_size", "num_layers", "bias",
        "batch_first", "dropout", "bidirectional", "proj_size",
    ]  # fmt: skip

    _gates = 1
    _name = "RNN"
    _cell = "rnn"  # whose engine rules apply: "rnn", "gru" or "lstm"
    # torch's message for an input that is neither 2-D nor 3-D ends differently per layer.
    _dims_message = "{name}: Expected input to be 2D or 3D, got {dims}D instead"

    # Class defaults: modules pickled before these options existed still load and run.
    merge_mode = "concat"
    learn_initial_state = False
    weight_drop = 0.0
    recurrent_dropout = 0.0
    zoneout = 0.0
    layer_norm = False
    _layer_norm_names: list[list[str]] = []

    def _build(
        self,
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        proj_size, factory_kwargs, options: Options,
    ) -> None:  # fmt: skip
        """Check torch's arguments and ours, then create the parameters as torch does."""
        _check_constructor_args(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size
        )
        _check_options(options, bidirectional, proj_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        gate_size = self._gates * hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        layout = weight_layout(
            self._gates, input_size, hidden_size, num_layers, bias, bidirectional, proj_size
        )
        for shapes in layout:  # per layer and direction
            for name, shape in shapes.items():
                setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
            self._flat_weights_names.extend(shapes)
            self._all_weights.append(list(shapes))
        if options.merge_mode != "concat":
            self.merge_mode = options.merge_mode
        for name in PROBABILITY_OPTIONS:
            if getattr(options, name):
                setattr(self, name, float(getattr(options, name)))
        if options.layer_norm:
            self.layer_norm = True
            self._layer_norm_names = [
                [f"layer_norm_{kind}_{names[0].split('_', 2)[2]}" for kind in ("weight", "bias")]
                for names in self._all_weights
            ]  # per (layer, direction): gain and bias of each gate's recurrent product
            for names in self._layer_norm_names:
                for name in names:
                    setattr(self, name, nn.Parameter(torch.empty(gate_size, **factory_kwargs)))
        if options.learn_initial_state:
            self.learn_initial_state = True
            for name, size in zip(self._initial_state_names, self._state_sizes(), strict=True):
                shape = (num_layers * num_directions, size)  # (D * num_layers, size)
                setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
        self.reset_parameters()

    # Names of the learned initial states, one per state (LSTM: hidden and cell).
    _initial_state_names = ("initial_state",)

    def _state_sizes(self) -> tuple[int, ...]:
        """Features of each state: ``(H_out,)``; the LSTM adds ``H_cell``."""
        return (self.hidden_size,)

    def _weights_named(self, names: list[str]) -> list[Tensor]:
        """The weights of these names, looked up on every call, so replaced or
        reparametrised weights are always the ones used."""
        # _parameters first: Module.__getattr__ costs about 1 us per name. It holds
        # what torch.func.functional_call swaps in; a name it lacks (moved by
        # torch.nn.utils.parametrize, say) is looked up as an attribute.
        parameters = self._parameters
        return [parameters[name] if name in parameters else getattr(self, name) for name in names]

    @property
    def _flat_weights(self) -> list[Tensor]:
        return self._weights_named(self._flat_weights_names)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per (layer, direction), in torch's order."""
        return [self._weights_named(names) for names in self._all_weights]

    def reset_parameters(self) -> None:
        """Draw every weight and bias from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.

        A learned initial state starts at zeros, the state torch assumes; a layer
        norm's gain at ones and its bias at zeros.
        """
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name, weight in self.named_parameters():
            if name in self._initial_state_names or name.startswith("layer_norm_bias"):
                nn.init.zeros_(weight)
            elif name.startswith("layer_norm_weight"):
                nn.init.ones_(weight)
            else:
                nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """Kept for code written for torch's layers; a no-op.

        torch packs weights into one buffer for cuDNN; our engine reads each
        parameter where it is, so there is nothing to flatten.
        """

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
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
        for name in PROBABILITY_OPTIONS:
            if getattr(self, name):
                s += f", {name}={getattr(self, name)}"
        if self.layer_norm:
            s += ", layer_norm=True"
        return s

    # -- states: a tensor for RNN and GRU, a pair for LSTM (overridden there) --

    def _states_of(self, hx) -> tuple[Tensor, ...]:
        """The initial states as a tuple."""
        return (hx,)

    def _result_of(self, states: tuple[Tensor, ...]):
        """The final states in the form the caller gave them."""
        return states[0]

    def _check_state_dims(self, states: tuple[Tensor, ...], batched: bool) -> None:
        """torch's check that the states have the input's batchedness."""
        dims, expected = states[0].dim(), 3 if batched else 2
        if dims != expected:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx should also be {expected}-D but got {dims}-D tensor"
            )

    _hidden_messages = ("Expected hidden size {}, got {}",)

    def forward(self, input, hx=None):
        """Run the layer.

        Args:
            input: a tensor or a ``PackedSequence`` (see the class Shape section).
            hx: the initial state(s), or None for zeros (or for the learned
                initial state with ``learn_initial_state=True``).

        Returns:
            ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); output is a
            ``PackedSequence`` if input is.
        """
        if type(input) is Tensor and not torch.compiler.is_compiling():
            dims = input.dim()
            result = None
            if dims == 3:
                result = self._forward_on_torch(input, hx)
            elif dims == 2:
                result = self._unbatched_on_torch(input, hx)
            if result is not None:
                return result
        packed = isinstance(input, PackedSequence)
        if packed and not torch.compiler.is_compiling():
            result = self._packed_on_torch(input, hx)
            if result is not None:
                return result
        states = None if hx is None else self._states_of(hx)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            sizes = packed_sizes(batch_sizes, data.size(0) if data.dim() else 0)
            batch = sizes[0]
            if states is not None:
                states = in_order(states, sorted_indices)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(self._dims_message.format(name=self._name, dims=input.dim()))
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if states is not None:
                self._check_state_dims(states, is_batched)
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if states is not None:
                    states = tuple(s.unsqueeze(1) for s in states)
            data = input
            batch = input.size(0) if self.batch_first else input.size(1)
        all_weights = self.all_weights  # once: each lookup goes through Module.__getattr__
        if self.weight_drop and self.training:
            all_weights = _drop_recurrent_weights(all_weights, self.weight_drop)
        data = self._check_input(data, all_weights[0][0].dtype, packed)
        states = self._initial_states(states, batch, data)

        if not packed:
            if self.batch_first:
                data = data.transpose(0, 1)  # (L, N, H_in)
            seq_len = data.size(0)
            if seq_len == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            sizes = [batch] * seq_len
            data = data.reshape(seq_len * batch, self.input_size)  # (L * N, H_in)
        # (R, D * H_out), each final state (D * num_layers, N, *)
        out, finals = self._run(data, states, sizes, all_weights)
        if self.merge_mode != "concat":
            out = _merge_directions(out, self.merge_mode)  # (R, H_out)

        if packed:
            finals = in_order(finals, unsorted_indices)
            return packed_like(out, input), self._result_of(finals)
        out = out.view(seq_len, batch, out.size(1))  # (L, N, D * H_out), or H_out if merged
        if self.batch_first:
            out = out.transpose(0, 1)  # (N, L, D * H_out)
        if not is_batched:
            out, finals = out.squeeze(batch_dim), tuple(s.squeeze(1) for s in finals)
        return out, self._result_of(finals)

    def _forward_on_torch(self, input: Tensor, hx) -> tuple | None:
        """A batched tensor input that ``"auto"`` runs on torch's own layer, run there as
        ``torch.nn``'s layer runs it: here a call of few steps (:func:`few_steps_on_torch`;
        the general path makes the same call after turning the input into packed rows,
        which cost a GRU step 0.76-0.91 of ``nn.GRU``'s speed at 1 x 1 x 64 x 64 and
        1 x 8 x 128 x 128, ``rnnkit bench --cell gru --shapes 1,1,64,64 ...``); None for
        every other input, which the general path then takes (its checks and messages
        included).

        Shape:
            input ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``); output as
            :meth:`forward`'s.
        """
        return few_steps_on_torch(self, input, hx)

    def _unbatched_on_torch(self, input: Tensor, hx) -> tuple | None:
        """An unbatched input as a batch of one, as ``torch.nn``'s layer runs it: offered
        to :meth:`_forward_on_torch`, its result unbatched; None where that declines, or
        where the states are not 2-D tensors (the general path then raises its error).
        Through the general path, calls of 1-8 steps ran at 0.60-0.96 of ``nn.RNN``'s
        speed, 0.79-0.92 of ``nn.GRU``'s and, at 1-30 steps, the LSTM's at 0.84-0.93 of
        ``nn.LSTM``'s on oneDNN (``python benchmarks/unbatched.py --modes inference train
        --threads 1``, H_in = 16, H = 64-256).

        Shape:
            input ``(L, H_in)``; output ``(L, D * H_out)``, states ``(D * num_layers, *)``.
        """
        if hx is not None:
            states = self._states_of(hx)
            if len(states) != len(self._state_sizes()):
                return None
            for state in states:
                if type(state) is not Tensor or state.dim() != 2:
                    return None
            hx = self._result_of([state.unsqueeze(1) for state in states])
        batch_dim = 0 if self.batch_first else 1
        result = self._forward_on_torch(input.unsqueeze(batch_dim), hx)
        if result is None:
            return None
        out, finals = result
        finals = [state.squeeze(1) for state in self._states_of(finals)]
        return out.squeeze(batch_dim), self._result_of(finals)

    def _packed_on_torch(self, input: PackedSequence, hx) -> tuple | None:
        """A ``PackedSequence`` that ``"auto"`` runs on torch's own layer, run there as
        ``torch.nn``'s layer runs it: one step as a batched tensor
        (:meth:`_packed_step_on_torch`); a few (:data:`rnnkit.engine.native.NATIVE_MAX_STEPS`)
        by torch's packed call (:func:`packed_on_torch`), which in inference once the compiled
        kernels are loaded passes them, and small longer calls, to our loops' short path
        (:mod:`rnnkit.engine.few_steps`); None for every other input. (The LSTM adds
        sequences of equal lengths that oneDNN runs: ``LSTM._packed_on_torch``.)
        """
        data, batch_sizes = input.data, input.batch_sizes
        if type(data) is not Tensor or data.dim() != 2 or type(batch_sizes) is not Tensor:
            return None
        if batch_sizes.dim() != 1:
            return None
        steps = batch_sizes.size(0)  # len() costs twice as much
        if steps == 1:
            return self._packed_step_on_torch(input, hx)
        if steps > max_native_steps(self._cell) and not short_path_open(
            self, steps, data.size(0), data.dtype
        ):
            return None  # the common case, checked first
        return packed_on_torch(self, input, hx)

    def _native_layer(self):
        """torch's op for this layer (``torch._VF.rnn_tanh``, ``gru``, ``lstm``...), called
        as ``torch.nn``'s layer calls it."""
        raise NotImplementedError

    def _packed_step_on_torch(self, input: PackedSequence, hx) -> tuple | None:
        """A ``PackedSequence`` whose sequences all have one step (a step-by-step decoder
        over packed input) is a batched tensor of one step in the sorted order: offered
        to :meth:`_forward_on_torch` as one, so that it runs as the tensor would (the
        general path's packing cost 0.81-0.93 of torch's speed at 1 x 16 x 32 x 32,
        ``rnnkit bench --cell gru lstm --shapes 1,16,32,32 --packed 1``); None where
        that declines.

        Shape:
            input.data ``(N, H_in)``; output.data ``(N, D * H_out)``.
        """
        data, _, sorted_indices, unsorted_indices = input
        if hx is not None:  # sorted as the general path sorts them
            hx = self._result_of(in_order(self._states_of(hx), sorted_indices))
        step = data.unsqueeze(1 if self.batch_first else 0)  # (1, N, H_in) or (N, 1, H_in)
        result = self._forward_on_torch(step, hx)
        if result is None:
            return None
        out, finals = result
        finals = in_order(self._states_of(finals), unsorted_indices)
        out = out.reshape(data.size(0), out.size(-1))  # (N, D * H_out): the packed rows
        return packed_like(out, input), self._result_of(finals)

    def _initial_states(self, states, batch: int, data: Tensor) -> tuple[Tensor, ...]:
        """The given states checked, else the learned ones, else zeros."""
        num_directions = 2 if self.bidirectional else 1
        rows = self.num_layers * num_directions
        if states is not None:
            for s, size, message in zip(
                states, self._state_sizes(), self._hidden_messages, strict=True
            ):
                _check_state(s, (rows, batch, size), data, message)
            return states
        if self.learn_initial_state:
            # Every sequence starts from the same state, so the sorted order of
            # packed input needs no reordering here.
            return tuple(
                getattr(self, name).unsqueeze(1).expand(-1, batch, -1).contiguous()
                for name in self._initial_state_names
            )
        return tuple(
            torch.zeros(rows, batch, size, dtype=data.dtype, device=data.device)
            for size in self._state_sizes()
        )

    @property
    def _has_step_options(self) -> bool:
        """Whether an option acts inside the step (then the options engine runs)."""
        return bool(self.recurrent_dropout or self.zoneout or self.layer_norm)

    def _run(self, data: Tensor, states, batch_sizes: list[int], all_weights):
        """Dispatch to the selected engine.

        Shape:
            data ``(R, H_in)`` -> ``(R, D * H_out)``, states as given.
        """
        engine = selected_engine()
        if self._has_step_options:
            return self._run_options(data, states, batch_sizes, all_weights, engine)
        if engine != "reference":  # "auto", "compiled" or "fused": the stack resolves it
            return self._run_stack(data, states, batch_sizes, all_weights, engine)
        return _on_padded(
            lambda padded, lengths: self._run_reference(padded, states, all_weights, lengths),
            data, batch_sizes,
        )  # fmt: skip

    def _run_options(self, data, states, batch_sizes, all_weights, engine):
        """A layer with recurrent dropout, zoneout or layer norm: its masks drawn once,
        then the options engine (:mod:`rnnkit.engine.options`: compiled or torch-ops
        loops, as ``engine`` resolves) or, for ``"reference"``, the readable loop.
        Shapes as :meth:`_run`."""
        num_directions = 2 if self.bidirectional else 1
        masks = draw_masks(
            self.num_layers, num_directions, batch_sizes, self._state_sizes(),
            self.recurrent_dropout, self.zoneout, self.training, data,
        )  # fmt: skip
        if self.layer_norm:  # an attribute lookup: torch.nn.utils.parametrize moves them
            all_weights = [
                [*weights, *(getattr(self, name) for name in names)]
                for weights, names in zip(all_weights, self._layer_norm_names, strict=True)
            ]
        spec = OptionsSpec(
            self.mode.split("_")[0].lower(), self.mode == "RNN_RELU", self.bias, self.layer_norm
        )
        args = (self.bidirectional, self.dropout, self.training)
        if engine != "reference":
            return options_stack(
                spec, data, states, all_weights, masks, batch_sizes, *args, engine=engine
            )
        nonlinearity = "relu" if spec.relu else "tanh"
        masks = padded_masks(masks, batch_sizes)
        return _on_padded(
            lambda padded, lengths: options_reference(
                spec.cell, padded, states, all_weights, masks, self.layer_norm, nonlinearity,
                *args, lengths,
            ),
            data, batch_sizes,
        )  # fmt: skip

    def _run_stack(self, data, states, batch_sizes, all_weights, engine):
        """The engine. Returns ``(out, final_states)``; shapes as :meth:`_run`."""
        raise NotImplementedError

    def _run_reference(self, padded, states, all_weights, lengths):
        """The reference loop on padded input. Returns ``(out, final_states)``."""
        raise NotImplementedError

    def _check_input(self, data: Tensor, weight_dtype: torch.dtype, packed: bool) -> Tensor:
        """Validate the input as torch does, with its messages (autocast converts)."""
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
        return data


def plain_cpu_call(
    module: RecurrentBase, input: Tensor, weights: list[Tensor]
) -> tuple[int, int] | None:
    """``(steps, batch)`` of a batched tensor input that torch's own layer could run
    as ``module`` would (:func:`torch_could_run`; ``weights``, the module's
    ``_flat_weights``), with at least one step and sequence; else None.

    Shape:
        input ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``).
    """
    if not torch_could_run(module, input, weights):
        return None
    steps, batch, _ = input.shape
    if module.batch_first:
        steps, batch = batch, steps
    if steps == 0 or batch == 0:
        return None
    return steps, batch


def torch_could_run(module: RecurrentBase, data: Tensor, weights: list[Tensor]) -> bool:
    """Whether torch's own layer could run ``data`` (a batched input or packed rows) as
    ``module`` would: no option torch lacks, engine "auto" (the only one that picks
    torch's layer), CPU data in the weights' dtype with ``input_size`` features.
    ``weights``: the module's ``_flat_weights`` (a property that builds the list: the
    caller's, built once)."""
    if (
        module._has_step_options
        or module.merge_mode != "concat"
        or module.learn_initial_state
        or (module.weight_drop and module.training)
        or selected_engine() != "auto"
    ):
        return False
    first = weights[0]
    # is_cpu costs a sixth of comparing devices
    return (
        data.is_cpu and first.is_cpu and data.dtype == first.dtype
        and data.size(-1) == module.input_size
    )  # fmt: skip


def state_fits(state, shape: tuple[int, ...], input: Tensor) -> bool:
    """Whether ``state`` is a CPU tensor of ``shape`` in the input's dtype: an initial
    state torch's own layer takes as it is, on the direct calls (and a weight the short
    path's kernels may read: :func:`short_path_states`)."""
    return (
        isinstance(state, Tensor) and state.shape == shape
        and state.dtype == input.dtype and state.is_cpu
    )  # fmt: skip


def few_steps_on_torch(module: RecurrentBase, input: Tensor, hx):
    """A call of few steps (:func:`rnnkit.engine.native.native_fit`; one, a step-by-step
    decoder's, among them) of a batched tensor input, which ``"auto"`` runs on torch's own
    layer (``resolve_engine``'s ``native``: our loops cost more around the same products),
    as ``module._native_layer()(input, hx, weights, has_biases, num_layers, dropout,
    training, bidirectional, batch_first)``, or, in inference once the compiled kernels are
    loaded, on our loops without the general path around them
    (:func:`dense_short_inference`); None for every other input
    (:meth:`RecurrentBase._forward_on_torch`).

    Returns:
        ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), or None.
    """
    steps, cell = input.size(1 if module.batch_first else 0), module._cell
    few = steps <= max_native_steps(cell)
    rows = input.size(0) * input.size(1)
    if not few and not short_path_open(module, steps, rows, input.dtype, dense=True):
        return None  # the common case, checked first
    weights = module._flat_weights
    sizes = plain_cpu_call(module, input, weights)
    if sizes is None:
        return None
    batch = sizes[1]
    short = dense_short_inference(module, input, hx, weights, steps, batch)
    if short is not None or not few:
        return short
    states = fitting_states(module, None if hx is None else module._states_of(hx), batch, input)
    if states is None or not _native_picked(module, input, states, weights, steps, batch, False):
        return None
    out, *finals = call_quietly(
        module.proj_size > 0, module._native_layer(), input,
        states if cell == "lstm" else states[0],
        weights, module.bias, module.num_layers, module.dropout, module.training,
        module.bidirectional, module.batch_first,
    )  # fmt: skip
    return out, module._result_of(tuple(finals))


def packed_on_torch(
    module: RecurrentBase, input: PackedSequence, hx, sizes: list[int] | None = None
):
    """A ``PackedSequence`` that ``"auto"`` runs on torch's own layer, exactly as
    ``torch.nn``'s layer runs it: the states sorted by ``sorted_indices``,
    ``module._native_layer()(data, batch_sizes, hx, weights, has_biases, num_layers,
    dropout, training, bidirectional)``, the final states unsorted, for a call of few steps
    (:func:`rnnkit.engine.native.native_fit`); in inference once the compiled kernels are
    loaded, on our loops without the general path around them
    (:func:`packed_short_inference`). None for every other input, which the
    general path then takes (its checks and messages included); a malformed
    ``batch_sizes`` raises its error here. ``sizes``: the rows per step, where the caller
    has read them (:func:`packed_sizes`).

    Returns:
        ``(output, final states)`` as :meth:`RecurrentBase.forward`'s, or None.

    Shape:
        input.data ``(R, H_in)``; output.data ``(R, D * H_out)``.
    """
    data, batch_sizes, sorted_indices, unsorted_indices = input
    rows = data.size(0)
    if not rows:
        return None
    if sizes is None:
        sizes = packed_sizes(batch_sizes, rows)
    cell = module._cell
    few = len(sizes) <= max_native_steps(cell)
    if not few and not short_path_open(module, len(sizes), rows, data.dtype):
        return None
    weights = module._flat_weights
    if not torch_could_run(module, data, weights):
        return None
    short = packed_short_inference(module, input, hx, sizes, weights)
    if short is not None or not few:
        return short
    # checked in the caller's order (sorting keeps their shapes), then sorted
    states = fitting_states(module, None if hx is None else module._states_of(hx), sizes[0], data)
    if states is None:
        return None
    if hx is not None:
        states = in_order(states, sorted_indices)
    if not _native_picked(module, data, states, weights, len(sizes), sizes[0], True):
        return None
    args = (weights, module.bias, module.num_layers, module.dropout, module.training,
            module.bidirectional)  # fmt: skip
    hx = states if cell == "lstm" else states[0]
    torch_call = module._native_layer()
    out, *finals = call_quietly(module.proj_size > 0, torch_call, data, batch_sizes, hx, *args)
    output = packed_like(out, input)
    return output, module._result_of(in_order(tuple(finals), unsorted_indices))


def dense_short_inference(
    module: RecurrentBase, input: Tensor, hx, weights: list[Tensor], steps: int, batch: int
) -> tuple | None:
    """A batched tensor input's call of few steps (or a small one) on our loops, where
    :func:`short_path_states` takes it (inference, the kernels loaded); else None.
    ``weights``: the module's ``_flat_weights``.

    Returns:
        ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), or None.

    Shape:
        input ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``); output
        ``(L, N, D * H_out)`` (``(N, L, D * H_out)``).
    """
    sizes = [batch] * steps
    states = short_path_states(module, input, hx, sizes, steps * batch, weights)
    if states is None:
        return None
    if module.batch_first:
        input = input.transpose(0, 1)  # (L, N, H_in)
    rows = input.reshape(steps * batch, input.size(2))  # (L * N, H_in)
    out, finals = short_inference(module, rows, sizes, states, weights)
    out = out.view(steps, batch, out.size(1))  # (L, N, D * H_out)
    return (out.transpose(0, 1) if module.batch_first else out), module._result_of(finals)


def packed_short_inference(
    module: RecurrentBase, input: PackedSequence, hx, sizes: list[int], weights: list[Tensor]
) -> tuple | None:
    """A ``PackedSequence`` of few steps (or a small one) on our loops, where
    :func:`short_path_states` takes it (inference, the kernels loaded); else None.
    ``sizes``: its rows per step (:func:`packed_sizes`); ``weights``: the module's
    ``_flat_weights``.

    Returns:
        ``(output, final states)`` as :meth:`RecurrentBase.forward`'s, or None.

    Shape:
        input.data ``(R, H_in)``; output.data ``(R, D * H_out)``.
    """
    data, batch_sizes, sorted_indices, unsorted_indices = input
    states = short_path_states(module, data, hx, sizes, data.size(0), weights)
    if states is None:
        return None
    # checked in the caller's order (sorting keeps their shapes), then sorted
    states = in_order(states, sorted_indices) if states else states
    out, finals = short_inference(module, data, sizes, states, weights, batch_sizes)
    return packed_like(out, input), module._result_of(in_order(finals, unsorted_indices))


def short_path_states(
    module: RecurrentBase, data: Tensor, hx, sizes: list[int], rows: int,
    weights: list[Tensor],
) -> tuple | None:  # fmt: skip
    """The initial states for the short path where it takes this call
    (:mod:`rnnkit.engine.few_steps`), else None: ``()`` for zeros (built there, without a
    torch call), else the given states where they fit (:func:`fitting_states`). The
    questions in the order that lets most calls it does not take leave soonest.

    Args:
        data: the input, a batched tensor or packed rows, that torch's layer could run.
        hx: the caller's states, or None.
        sizes: rows per step; rows: their sum.
        weights: the module's ``_flat_weights``.
    """
    if not short_path_open(module, len(sizes), rows, data.dtype) or records_grad(data, weights):
        return None
    states = () if hx is None else fitting_states(module, module._states_of(hx), sizes[0], data)
    if states is None or not short_inference_fits(module, data, sizes, states):
        return None
    shapes = weight_shapes(
        module._gates, module.input_size, module.hidden_size, module.num_layers, module.bias,
        module.bidirectional, module.proj_size,
    )  # fmt: skip
    return states if _tensors_fit(weights, shapes, data) else None


def packed_like(data: Tensor, input: PackedSequence) -> PackedSequence:
    """``data``, a layer's output rows, packed as ``input`` (its batch sizes and indices),
    as torch's layers pack their output. ``PackedSequence._make`` where torch's
    constructor would only pass them on: it skips the constructor's checks, which cost
    1.2 us a call.

    Shape:
        data ``(R, *)``; input.data ``(R, H_in)``.
    """
    _, batch_sizes, sorted_indices, unsorted_indices = input
    if unsorted_indices is None and sorted_indices is not None:  # the constructor inverts
        return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)
    return PackedSequence._make((data, batch_sizes, sorted_indices, unsorted_indices))


def fitting_states(module: RecurrentBase, states, batch: int, data: Tensor):
    """The initial states as torch's layer takes them on a direct call: ``states`` (a
    tuple, one per state) if each is a CPU tensor of its shape in the data's dtype, zeros
    if None; else None (the general path then checks them, with its messages).

    Shape:
        each state ``(D * num_layers, N, H_out)`` (an LSTM's cell state ``H_cell``).
    """
    rows = module.num_layers * (2 if module.bidirectional else 1)
    shapes = [(rows, batch, size) for size in module._state_sizes()]
    if states is None:  # torch's layers only read them: one zero tensor for equal shapes
        zeros = torch.zeros(shapes[-1], dtype=data.dtype, device=data.device)
        return tuple(
            zeros if shape == shapes[-1]
            else torch.zeros(shape, dtype=data.dtype, device=data.device)
            for shape in shapes
        )  # fmt: skip
    return tuple(states) if _tensors_fit(states, shapes, data) else None


def _tensors_fit(tensors, shapes: list[tuple[int, ...]], data: Tensor) -> bool:
    """Whether there is one tensor per shape, each fitting it (:func:`state_fits`)."""
    if len(tensors) != len(shapes):
        return False
    for tensor, shape in zip(tensors, shapes, strict=True):  # all() over a generator costs more
        if not state_fits(tensor, shape, data):
            return False
    return True


def _native_picked(
    module: RecurrentBase, data: Tensor, states: tuple[Tensor, ...], weights: list[Tensor],
    steps: int, batch: int, packed: bool,
) -> bool:  # fmt: skip
    """Whether ``"auto"`` runs this call of ``steps`` steps on torch's own layer
    (:func:`rnnkit.engine.native.native_fit`, then :func:`resolve_engine`)."""
    grad = grad_needed(data, states[0], itertools.chain(states[1:], weights))
    cell, hidden = module._cell, module.hidden_size
    native = native_fit(cell, steps, batch, hidden, grad, packed)
    return (
        native is not None
        and resolve_engine("auto", data, batch, hidden, cell, native=native) == "native"
    )


def in_order(states: tuple[Tensor, ...], indices: Tensor | None) -> tuple[Tensor, ...]:
    """``states`` with their sequences in the order of ``indices`` (a packed input's
    ``sorted_indices`` or ``unsorted_indices``), as torch's ``permute_hidden``; as they
    are where ``indices`` is None, or where one sequence is in its only place (index_select
    would copy it: 2 us a state, 4 a call, in a batch-1 call of 150 us; asked on CPU only,
    where reading the index costs no wait for the device).

    Shape:
        each state ``(D * num_layers, N, *)``.
    """
    if indices is None:
        return states
    only = indices.size(0) == 1 and indices.is_cpu and indices.dtype == torch.int64
    only = only and int(indices) == 0
    if only and all(isinstance(s, Tensor) and s.dim() == 3 and s.size(1) == 1 for s in states):
        return tuple(states)
    return tuple(s.index_select(1, indices) for s in states)


def _on_padded(loop, data: Tensor, batch_sizes: list[int]):
    """Run a readable loop, which works on padded, time-major sequences, on packed rows.

    Args:
        loop: ``(padded, lengths) -> (out, finals)``; lengths None for equal lengths.
        data: packed rows.
        batch_sizes: rows per step.

    Returns:
        ``(out, finals)``, out as packed rows.

    Shape:
        data ``(R, H_in)``, padded ``(L, N, H_in)``; out ``(R, D * H_out)``.
    """
    seq_len, batch = len(batch_sizes), batch_sizes[0]
    if batch_sizes[-1] == batch:  # equal lengths: the rows are already (L, N, H_in)
        out, finals = loop(data.view(seq_len, batch, data.size(1)), None)
        return out.view(seq_len * batch, out.size(2)), finals
    padded, lengths = pad_packed_sequence(PackedSequence(data, torch.tensor(batch_sizes)))
    out, finals = loop(padded, lengths)
    return pack_padded_sequence(out, lengths).data, finals


def _check_state(state: Tensor, expected: tuple, data: Tensor, message: str) -> None:
    """One initial state's shape (torch's message), device and dtype against the input."""
    if tuple(state.shape) != expected:  # a tuple compare: torch.Size's goes through sym_eq
        raise RuntimeError(message.format(expected, list(state.size())))
    if state.device != data.device:
        raise RuntimeError(
            "Input and hidden tensors are not at the same device, found input tensor "
            f"at {data.device} and hidden tensor at {state.device}"
        )
    if state.dtype != data.dtype:
        raise RuntimeError(
            f"hx dtype ({state.dtype}) does not match input dtype ({data.dtype}). "
            f"Convert hx: hx.to({data.dtype})"
        )


class Options(NamedTuple):
    """rnnkit's keyword-only options that torch's layers lack (see the layers' docs)."""

    merge_mode: str = "concat"
    learn_initial_state: bool = False
    weight_drop: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    layer_norm: bool = False


def take_options(kwargs: dict, name: str, proj_allowed: bool = False) -> Options:
    """Pop rnnkit's keyword-only options from ``**kwargs`` (kept out of the signature,
    which stays the one torch documents) and refuse anything else as torch would."""
    options = Options(**{
        field: kwargs.pop(field) for field in Options._fields if field in kwargs
    })  # fmt: skip
    if "proj_size" in kwargs and not proj_allowed:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    if kwargs:
        raise TypeError(
            f"{name}.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'"
        )
    return options


def _drop_recurrent_weights(all_weights: list[list[Tensor]], p: float) -> list[list[Tensor]]:
    """DropConnect on each ``weight_hh`` (Wan et al. 2013; AWD-LSTM, Merity et al. 2018):
    one mask per forward call, shared by every step, scaled by ``1 / (1 - p)``. The
    dropped weights go to the engine as they are, so every engine runs them."""
    return [
        [w if i != 1 else F.dropout(w, p, training=True) for i, w in enumerate(weights)]
        for weights in all_weights
    ]


def _check_constructor_args(
    input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size=0
):
    """Reject what torch's layers reject, with the same exception types and wording."""
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
            stacklevel=4,
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
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


def _check_options(options: Options, bidirectional: bool, proj_size: int = 0) -> None:
    """Validate the keyword-only options that torch's layers lack."""
    merge_mode, learn_initial_state = options.merge_mode, options.learn_initial_state
    for name in PROBABILITY_OPTIONS:
        value = getattr(options, name)
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected a number in "
                f"[0, 1), got {value!r}."
            )
    if not isinstance(options.layer_norm, bool):
        raise TypeError(
            "Received an invalid value for argument `layer_norm`, "
            f"expected a bool, got {options.layer_norm!r}."
        )
    if proj_size and (options.recurrent_dropout or options.zoneout or options.layer_norm):
        raise ValueError(
            "Received recurrent_dropout, zoneout or layer_norm with "
            f"proj_size={proj_size}; expected proj_size=0: the options engine has no "
            "projected LSTM."
        )
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


def packed_sizes(batch_sizes: Tensor, rows: int) -> list[int]:
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
