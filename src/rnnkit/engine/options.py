"""Layers with recurrent dropout, zoneout or layer norm: every cell, one engine.

Equivalent to :func:`rnnkit.functional_options.options_reference`, with the
fused engine's design (see :mod:`rnnkit.engine`): one autograd node per layer
(all its directions), one GEMM for every step's input projection, one
recurrent GEMM per step with the options applied in a few in-place ops around
it, and a backward pass that walks back in time computing only what depends on
the next step (the cell's gate derivatives, the layer norm's backward, one
``d @ W_hh``), then gets every weight gradient with a few large GEMMs over all
rows. The forward keeps per row only what that walk reads: the activated gates,
the normalised products and their inverse deviations (layer norm), the GRU's
recurrent ``n`` term, the LSTM's cell state and ``tanh`` of its update.

Two implementations of the time loops share that algorithm, as for the cells
without options: torch ops (every device and dtype) and compiled CPU loops
(:mod:`rnnkit.compiled.options_kernels`, their own kernel set ``"options"``);
:func:`rnnkit.engine.resolve_engine` picks per layer. Everything around the loops
(the projections, the weight gradients, the wrappers) is shared.

Shape symbols: ``R`` packed rows, ``N`` batch, ``D`` directions, ``G`` gates,
``H_in`` input features, ``H`` hidden features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.compiled import options as compiled_options
from rnnkit.engine.gated_stack import stack_layers
from rnnkit.engine.layer import grad_needed, resolve_engine
from rnnkit.engine.products import add_input_grad, project_input, weight_grad
from rnnkit.engine.rows import step_offsets
from rnnkit.engine.walk import last_states, previous_rows, previous_states, steps_in_order
from rnnkit.functional_options import GATES, LAYER_NORM_EPS
from rnnkit.masks import LayerMasks


@dataclass(frozen=True)
class OptionsSpec:
    """What a layer computes besides its weights.

    Attributes:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        relu: the Elman cell's activation is ``relu`` (else ``tanh``).
        has_bias: the layer has ``b_ih`` and ``b_hh``.
        layer_norm: the weights of each direction end with the layer norm's gain and bias.
    """

    cell: str
    relu: bool
    has_bias: bool
    layer_norm: bool

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def num_states(self) -> int:
        return 2 if self.cell == "lstm" else 1


class Kept(NamedTuple):
    """What the forward keeps for the backward, per direction; None where not needed.

    ``raw``, ``mean`` and ``inv_std`` are the layer norm's input (the recurrent
    products) and statistics, what ``native_layer_norm_backward`` reads.

    Shape:
        gates, raw ``(D, R, G * H)``; mean, inv_std ``(D, R, G, 1)``; recurrent_n,
        cells, tanh_cells ``(D, R, H)``.
    """

    gates: Tensor
    raw: Tensor | None
    mean: Tensor | None
    inv_std: Tensor | None
    recurrent_n: Tensor | None
    cells: Tensor | None
    tanh_cells: Tensor | None


def _kept_shapes(spec: OptionsSpec, num_directions: int, rows: int, hidden: int) -> Kept:
    """The shape of each tensor :class:`Kept` holds for this spec, None where it holds none."""
    ln, lstm, gru = spec.layer_norm, spec.cell == "lstm", spec.cell == "gru"
    per_gate, per_unit = (num_directions, rows, spec.gates * hidden), (num_directions, rows, hidden)
    statistics = (num_directions, rows, spec.gates, 1) if ln else None
    return Kept(
        per_gate,
        per_gate if ln else None,
        statistics,
        statistics,
        per_unit if gru else None,
        per_unit if lstm else None,
        per_unit if lstm else None,
    )


def _empty_kept(x: Tensor, spec: OptionsSpec, num_directions: int, hidden: int) -> Kept:
    """Uninitialised :class:`Kept` for the rows of ``x``."""
    shapes = _kept_shapes(spec, num_directions, x.size(0), hidden)
    return Kept(*(None if s is None else x.new_empty(s) for s in shapes))


def _split(weights: Sequence[Tensor], spec: OptionsSpec, num_directions: int) -> list[tuple]:
    """``(w_ih, w_hh, b_ih, b_hh, norm)`` per direction; biases and norm None if absent."""
    per = len(weights) // num_directions
    parts = []
    for k in range(num_directions):
        own = list(weights[k * per : (k + 1) * per])
        norm = tuple(own[-2:]) if spec.layer_norm else None
        torch_weights = own[:-2] if spec.layer_norm else own
        parts.append((*(*torch_weights, None, None)[:4], norm))
    return parts


def options_layer_forward(x, states, weights, masks, batch_sizes, directions, spec, engine="fused"):
    """The forward pass of every direction of one layer with the options.

    Args:
        x: packed input rows.
        states: ``(h0,)``, or ``(h0, c0)`` for the LSTM, per direction.
        weights: per direction ``w_ih, w_hh[, b_ih, b_hh][, gain, bias]``, flattened.
        masks: the layer's :class:`rnnkit.masks.LayerMasks` (packed rows).
        batch_sizes: rows per step.
        directions: per direction, whether it runs in reverse.
        spec: the cell and options.
        engine: ``"compiled"`` (the time loops compiled) or ``"fused"`` (torch ops).

    Returns:
        ``(out, finals, kept)``: the state of every direction at every row, the
        final states (as ``states``), and :class:`Kept`.

    Shape:
        x ``(R, H_in)``, states ``(D, N, H)``; out ``(R, D * H)``.
    """
    num_directions, rows, hidden = len(directions), x.size(0), states[0].size(2)
    gates_count, lstm, gru = spec.gates, spec.cell == "lstm", spec.cell == "gru"
    kept = _empty_kept(x, spec, num_directions, hidden)
    out = x.new_empty(rows, num_directions * hidden)
    finals = tuple(s.new_empty(s.shape) for s in states)
    product = x.new_empty(batch_sizes[0], gates_count * hidden)  # one step's recurrent term
    # the compiled loops' scratch for one step's masked previous states
    masked_states = x.new_empty(batch_sizes[0], hidden) if engine == "compiled" else None
    for k, (w_ih, w_hh, b_ih, b_hh, norm) in enumerate(_split(weights, spec, num_directions)):
        gates = kept.gates[k]
        project_input(x, w_ih, b_ih, gates)  # (R, G * H)
        w_hh_t = w_hh.t().contiguous()  # (H, G * H)
        if norm is not None:  # b_hh joins the layer norm's shift
            shift = norm[1] if b_hh is None else norm[1] + b_hh
            means, inv_stds = [], []
        if engine == "compiled":
            compiled_options.options_forward(
                spec, gates, out, k * hidden, states[0][k], states[1][k] if lstm else None,
                w_hh_t, b_hh, None if norm is None else (norm[0], shift), _masks_of(masks, k),
                _kept_of_direction(kept, k), product, masked_states, batch_sizes, directions[k],
                finals[0][k], finals[1][k] if lstm else None,
            )  # fmt: skip
            continue
        out_k = out[:, k * hidden : (k + 1) * hidden]
        previous = None
        for first, end, n in steps_in_order(batch_sizes, directions[k]):
            h_prev = previous_rows(out_k, states[0][k], previous, n)  # (n, H)
            h_in = h_prev if masks.recurrent is None else h_prev * masks.recurrent[k, :n]
            a = product[:n]  # (n, G * H)
            if norm is not None:
                raw = torch.mm(h_in, w_hh_t, out=kept.raw[k, first:end])
                normed, mean, inv_std = torch.native_layer_norm(
                    raw.view(n, gates_count, hidden), (hidden,), None, None, LAYER_NORM_EPS
                )  # (n, G, H), (n, G, 1), (n, G, 1)
                means.append(mean)
                inv_stds.append(inv_std)
                torch.addcmul(shift, normed.view(n, -1), norm[0], out=a)
            elif b_hh is not None:
                torch.addmm(b_hh, h_in, w_hh_t, out=a)
            else:
                torch.mm(h_in, w_hh_t, out=a)
            g = gates[first:end]
            if lstm:
                c_prev = previous_rows(kept.cells[k], states[1][k], previous, n)
                h_new = _lstm_step(g, a, c_prev, kept, masks, k, first, end)
            elif gru:
                g[:, : 2 * hidden].add_(a[:, : 2 * hidden]).sigmoid_()  # r, z
                kept.recurrent_n[k, first:end] = a[:, 2 * hidden :]
                candidate = g[:, 2 * hidden :]
                candidate.addcmul_(g[:, :hidden], a[:, 2 * hidden :]).tanh_()  # n
                h_new = torch.lerp(candidate, h_prev, g[:, hidden : 2 * hidden])
            else:
                h_new = g.add_(a).relu_() if spec.relu else g.add_(a).tanh_()
            if masks.hidden is None:
                out_k[first:end] = h_new
            else:  # zoneout
                torch.lerp(h_new, h_prev, masks.hidden[k, first:end], out=out_k[first:end])
            previous = (first, n)
        if norm is not None:  # the statistics in row order
            order = slice(None, None, -1 if directions[k] else 1)
            torch.cat(means[order], out=kept.mean[k])
            torch.cat(inv_stds[order], out=kept.inv_std[k])
        last_states(out_k, batch_sizes, directions[k], finals[0][k])
        if lstm:
            last_states(kept.cells[k], batch_sizes, directions[k], finals[1][k])
    return out, finals, kept


def _masks_of(masks: LayerMasks, k: int) -> tuple:
    """Direction ``k``'s masks, None where an option is off."""
    return tuple(None if m is None else m[k] for m in masks)


def _kept_of_direction(kept: Kept, k: int) -> tuple:
    """Direction ``k``'s :class:`Kept` but its gates, as the compiled loops take them
    (``mean`` and ``inv_std`` ``(R, G)``)."""
    return tuple(None if t is None else t[k].flatten(1) for t in kept[1:])


def _lstm_step(g, a, c_prev, kept, masks, k, first, end) -> Tensor:
    """One LSTM step's gates (in place in ``g``), cell state and ``tanh`` of its update
    (into ``kept``); returns the new hidden state before zoneout.

    Shape:
        g, a ``(n, 4H)``, c_prev ``(n, H)``; returns ``(n, H)``.
    """
    hidden = c_prev.size(1)
    g.add_(a)
    g[:, : 2 * hidden].sigmoid_()  # i, f
    g[:, 2 * hidden : 3 * hidden].tanh_()  # g
    g[:, 3 * hidden :].sigmoid_()  # o
    i, f, cell_input, o = g.chunk(4, dim=1)
    c = kept.cells[k, first:end]
    torch.mul(f, c_prev, out=c).addcmul_(i, cell_input)
    tanh_c = torch.tanh(c, out=kept.tanh_cells[k, first:end])
    if masks.cell is not None:  # zoneout on the cell state
        c.lerp_(c_prev, masks.cell[k, first:end])
    return o * tanh_c


class _Scales(NamedTuple):
    """Per row, what turns dL/d(a step's new state) into its gate gradients, computed
    for all rows before the walk back (the walk then multiplies once per step).

    ``pre``: dL/d(input projection) per unit of dL/dh_new, ``(R, G, H)`` (LSTM: the
    ``i, f, g`` part per unit of dL/dc_new). ``recurrent``: the same for the recurrent
    term ``a`` where it differs (GRU: ``n``'s part scaled by ``r``). ``carry``: dL/dh_new
    that skips the product (GRU: ``z``) or, for the LSTM, dL/dc_new per unit of dL/dh_new
    (``o * tanh'(c)``). ``output``: the LSTM's ``o`` gate per unit of dL/dh_new.
    """

    pre: Tensor
    recurrent: Tensor | None = None
    carry: Tensor | None = None
    output: Tensor | None = None


def _scales(spec: OptionsSpec, gates: Tensor, kept: Kept, k: int, h_prev: Tensor, c_prev):
    """:class:`_Scales` of one direction from what the forward kept.

    Shape:
        gates ``(R, G * H)``, h_prev and c_prev ``(R, H)``.
    """
    if spec.cell == "rnn":
        derivative = gates.gt(0).to(gates.dtype) if spec.relu else 1 - gates * gates
        return _Scales(derivative.unsqueeze(1))
    if spec.cell == "gru":
        r, z, n = gates.chunk(3, dim=1)
        scale_n = (1 - z) * (1 - n * n)
        scale_r = kept.recurrent_n[k] * r * (1 - r) * scale_n
        scale_z = (h_prev - n) * z * (1 - z)
        pre = torch.stack([scale_r, scale_z, scale_n], dim=1)  # (R, 3, H)
        return _Scales(pre, torch.stack([scale_r, scale_z, scale_n * r], dim=1), z)
    i, f, g, o = gates.chunk(4, dim=1)
    tanh_c = kept.tanh_cells[k]
    pre = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=1)
    return _Scales(pre, None, o * (1 - tanh_c * tanh_c), tanh_c * o * (1 - o))


def options_layer_backward(
    grad_out, grad_finals, x, states, weights, masks, out, kept, batch_sizes, directions, spec,
    needs, engine="fused",
):  # fmt: skip
    """Backpropagation through time for every direction of one layer with the options.

    Args:
        grad_out, grad_finals: upstream gradients of ``out`` and the final states.
        x, states, weights, masks: the forward's inputs.
        out, kept: what :func:`options_layer_forward` returned.
        batch_sizes, directions, spec: as in the forward.
        needs: whether ``x``, the states and the weights need a gradient.
        engine: as in the forward.

    Returns:
        ``(grad_x, grad_states, grad_weights)``; grad_x and grad_weights None where
        ``needs`` says no, grad_weights in the order of ``weights``.
    """
    rows, hidden = x.size(0), states[0].size(2)
    width, lstm, gru = spec.gates * hidden, spec.cell == "lstm", spec.cell == "gru"
    grad_x = x.new_empty(x.shape) if needs[0] else None
    grad_states = tuple(s.new_empty(s.shape) for s in states)
    grad_weights = [] if needs[2] else None
    d_pre = x.new_empty(rows, width)  # dL/d(input projection) of every row
    d_rec = x.new_empty(rows, width) if gru else d_pre  # dL/d(recurrent term a)
    d_raw = x.new_empty(rows, width) if spec.layer_norm else d_rec  # dL/d(h_in W_hh^T)
    # each row's position in the batch: the row of its sequence's recurrent dropout mask
    batch_rows = None if masks.recurrent is None else step_offsets(batch_sizes, x.device)[2]
    for k, (w_ih, w_hh, b_ih, _, norm) in enumerate(_split(weights, spec, len(directions))):
        reverse, columns = directions[k], slice(k * hidden, (k + 1) * hidden)
        h_prev_all = previous_states(out[:, columns], states[0][k], batch_sizes, reverse)
        carry = grad_finals[0][k].clone()  # dL/dh entering each sequence's step from later
        carry_c = grad_finals[1][k].clone() if lstm else None
        if engine == "compiled":
            scratch = x.new_empty(2, carry.size(0), hidden)  # to_prev, carry_hh
            compiled_options.options_backward(
                spec, d_pre, d_rec, d_raw, grad_out, out, k * hidden, kept.gates[k],
                states[0][k], states[1][k] if lstm else None, w_hh,
                None if norm is None else norm[0], _masks_of(masks, k),
                _kept_of_direction(kept, k), *scratch, batch_sizes, reverse, carry, carry_c,
            )  # fmt: skip
        else:
            _walk_back(
                d_pre, d_rec, d_raw, grad_out[:, columns], kept, k, h_prev_all, w_hh, norm,
                masks, batch_sizes, reverse, carry, carry_c, spec, states,
            )  # fmt: skip
        grad_states[0][k] = carry
        if lstm:
            grad_states[1][k] = carry_c
        if grad_x is not None:
            add_input_grad(grad_x, d_pre, w_ih, first=k == 0)
        if grad_weights is None:
            continue
        h_in = h_prev_all
        if masks.recurrent is not None:  # each row's sequence's mask
            h_in = h_prev_all * masks.recurrent[k].index_select(0, batch_rows)
        grad_weights += [weight_grad(d_pre, x), weight_grad(d_raw, h_in)]
        if b_ih is not None:
            grad_weights += [d_pre.sum(0), d_rec.sum(0)]
        if norm is not None:
            raw = kept.raw[k].unflatten(1, (spec.gates, hidden))  # (R, G, H)
            normed = ((raw - kept.mean[k]) * kept.inv_std[k]).flatten(1)
            grad_weights += [(d_rec * normed).sum(0), d_rec.sum(0)]
    return grad_x, grad_states, grad_weights


def _walk_back(d_pre, d_rec, d_raw, grad_out, kept, k, h_prev_all, w_hh, norm, masks,
               batch_sizes, reverse, carry, carry_c, spec, states) -> None:  # fmt: skip
    """One direction's walk back in time in torch ops: fills ``d_pre``, ``d_rec`` and
    ``d_raw``; ``carry`` (``carry_c``) enters as dL/dh_n (dL/dc_n) and leaves as dL/dh_0
    (dL/dc_0).

    Shape:
        as in :func:`options_layer_backward`; grad_out ``(R, H)`` (this direction's
        columns), h_prev_all ``(R, H)`` the state each row's step started from.
    """
    hidden, lstm, gru = h_prev_all.size(1), spec.cell == "lstm", spec.cell == "gru"
    c_prev_all = (
        previous_states(kept.cells[k], states[1][k], batch_sizes, reverse) if lstm else None
    )
    scales = _scales(spec, kept.gates[k], kept, k, h_prev_all, c_prev_all)
    for first, end, n in reversed(steps_in_order(batch_sizes, reverse)):
        dh = torch.add(grad_out[first:end], carry[:n])  # dL/dh_t
        to_prev = None  # what flows to h_{t-1} outside the recurrent product
        if masks.hidden is not None:  # zoneout: the kept share skips the step
            to_prev = dh * masks.hidden[k, first:end]
            dh.sub_(to_prev)  # dL/d(the step's new state)
        dp = d_pre[first:end]
        if lstm:
            d_c = _cell_grad(carry_c[:n], dh, scales.carry[first:end], masks, k, first, end)
            forget = kept.gates[k, first:end, hidden : 2 * hidden]
            carry_c[:n].addcmul_(d_c, forget)  # dL/dc_{t-1} through c_t = f * c_{t-1} + ...
            d_ifg = dp[:, : 3 * hidden].view(n, 3, hidden)
            torch.mul(scales.pre[first:end], d_c.unsqueeze(1), out=d_ifg)
            torch.mul(dh, scales.output[first:end], out=dp[:, 3 * hidden :])
        else:
            torch.mul(scales.pre[first:end], dh.unsqueeze(1), out=dp.view(n, -1, hidden))
        if gru:
            d_recurrent = d_rec[first:end].view(n, 3, hidden)
            torch.mul(scales.recurrent[first:end], dh.unsqueeze(1), out=d_recurrent)
            direct = dh.mul_(scales.carry[first:end])
            to_prev = direct if to_prev is None else to_prev.add_(direct)
        d_product = d_raw[first:end]
        if norm is not None:
            d_normed = (d_rec[first:end] * norm[0]).view(n, spec.gates, hidden)
            statistics = (kept.mean[k, first:end], kept.inv_std[k, first:end])
            raw = kept.raw[k, first:end].view(n, spec.gates, hidden)
            grad_raw = torch.ops.aten.native_layer_norm_backward(
                d_normed, raw, (hidden,), *statistics, None, None, (True, False, False)
            )[0]  # (n, G, H)
            d_product.copy_(grad_raw.view(n, -1))
        dh_prev = d_product.mm(w_hh)  # (n, H)
        if masks.recurrent is not None:
            dh_prev.mul_(masks.recurrent[k, :n])
        if to_prev is not None:
            dh_prev.add_(to_prev)
        carry[:n] = dh_prev


def _cell_grad(carry_c, dh, scale, masks, k, first, end) -> Tensor:
    """dL/d(an LSTM step's new cell state); ``carry_c`` (dL/dc_t in) becomes dL/dc_{t-1}
    but for the forget gate's share, which the caller adds.

    Shape:
        carry_c, dh, scale ``(n, H)``; returns ``(n, H)``.
    """
    if masks.cell is not None:  # zoneout: the kept share of dL/dc_t skips the step
        kept_c = carry_c * masks.cell[k, first:end]
        d_c = carry_c - kept_c
        carry_c.copy_(kept_c)
    else:
        d_c = carry_c.clone()
        carry_c.zero_()
    return d_c.addcmul_(dh, scale)


class OptionsLayerFunction(torch.autograd.Function):
    """:func:`options_layer_forward` and its backward for autograd."""

    @staticmethod
    def forward(ctx, spec, engine, batch_sizes, directions, masks, x, *tensors):
        states, weights = tensors[: spec.num_states], tensors[spec.num_states :]
        out, finals, kept = options_layer_forward(
            x, states, weights, masks, batch_sizes, directions, spec, engine
        )
        ctx.save_for_backward(x, out, *kept, *tensors)
        ctx.args = (masks, batch_sizes, directions, spec, engine)
        return out, *finals

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *grad_finals):
        masks, batch_sizes, directions, spec, engine = ctx.args
        x, out, *rest = ctx.saved_tensors
        kept, tensors = Kept(*rest[: len(Kept._fields)]), rest[len(Kept._fields) :]
        states, weights = tensors[: spec.num_states], tensors[spec.num_states :]
        need = ctx.needs_input_grad[5:]  # x, then the states and weights
        needs = (need[0], any(need[1 : 1 + spec.num_states]), any(need[1 + spec.num_states :]))
        grad_finals = tuple(
            torch.zeros_like(s) if g is None else g
            for g, s in zip(grad_finals, states, strict=True)
        )
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()
        grad_x, grad_states, grad_weights = options_layer_backward(
            grad_out, grad_finals, x, states, weights, masks, out, kept, batch_sizes,
            directions, spec, needs, engine,
        )  # fmt: skip
        grad_weights = grad_weights or [None] * len(weights)
        return None, None, None, None, None, grad_x, *grad_states, *grad_weights


# -- custom ops: what torch.compile and torch.export trace --------------------


def _kept_list(kept: Kept) -> list[Tensor]:
    """The tensors of :class:`Kept` that the spec fills (a custom op returns no None)."""
    return [t for t in kept if t is not None]


def _kept_of(tensors: Sequence[Tensor], spec: OptionsSpec) -> Kept:
    """:class:`Kept` back from :func:`_kept_list`."""
    it = iter(tensors)
    return Kept(*(None if s is None else next(it) for s in _kept_shapes(spec, 1, 1, 1)))


@torch.library.custom_op("rnnkit::options_layer", mutates_args=())
def _options_layer_op(
    x: Tensor,
    states: list[Tensor],
    weights: list[Tensor],
    recurrent_mask: Tensor | None,
    hidden_mask: Tensor | None,
    cell_mask: Tensor | None,
    batch_sizes: list[int],
    directions: list[bool],
    cell: str,
    relu: bool,
    has_bias: bool,
    layer_norm: bool,
    engine: str,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    spec = OptionsSpec(cell, relu, has_bias, layer_norm)
    masks = LayerMasks(recurrent_mask, hidden_mask, cell_mask)
    engine = resolve_engine(engine, x, states[0].size(1), states[0].size(2), "options")
    out, finals, kept = options_layer_forward(
        x, states, weights, masks, batch_sizes, directions, spec, engine
    )
    return out, list(finals), _kept_list(kept)


@_options_layer_op.register_fake
def _(x, states, weights, m_rec, m_hidden, m_cell, batch_sizes, directions, cell, relu, has_bias,
      layer_norm, engine):  # fmt: skip
    spec = OptionsSpec(cell, relu, has_bias, layer_norm)
    hidden = states[0].size(2)
    kept = _empty_kept(x, spec, len(directions), hidden)
    out = x.new_empty(x.size(0), len(directions) * hidden)
    return out, [s.new_empty(s.shape) for s in states], _kept_list(kept)


@torch.library.custom_op("rnnkit::options_layer_backward", mutates_args=())
def _options_layer_backward_op(
    grad_out: Tensor,
    grad_finals: list[Tensor],
    x: Tensor,
    states: list[Tensor],
    weights: list[Tensor],
    recurrent_mask: Tensor | None,
    hidden_mask: Tensor | None,
    cell_mask: Tensor | None,
    out: Tensor,
    kept: list[Tensor],
    batch_sizes: list[int],
    directions: list[bool],
    cell: str,
    relu: bool,
    has_bias: bool,
    layer_norm: bool,
    engine: str,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    spec = OptionsSpec(cell, relu, has_bias, layer_norm)
    masks = LayerMasks(recurrent_mask, hidden_mask, cell_mask)
    engine = resolve_engine(engine, x, states[0].size(1), states[0].size(2), "options")
    grad_x, grad_states, grad_weights = options_layer_backward(
        grad_out.contiguous(), grad_finals, x, states, weights, masks, out,
        _kept_of(kept, spec), batch_sizes, directions, spec, (True, True, True), engine,
    )  # fmt: skip
    # contiguous and unaliased, as the fake implementation promises
    contiguous = torch.contiguous_format
    grad_weights = [g.clone(memory_format=contiguous) for g in grad_weights]
    return grad_x.contiguous(), list(grad_states), grad_weights


@_options_layer_backward_op.register_fake
def _(grad_out, grad_finals, x, states, weights, *_):
    like = [w.new_empty(w.shape) for w in weights]
    return x.new_empty(x.shape), [s.new_empty(s.shape) for s in states], like


def _options_setup_context(ctx, inputs, output):
    x, states, weights, *masks = inputs[:6]
    ctx.save_for_backward(x, output[0], *states, *weights, *output[2])
    ctx.counts = (len(states), len(weights))
    ctx.masks, ctx.args = masks, inputs[6:]
    ctx.num_inputs = len(inputs)


def _options_op_backward(ctx, grad_out, grad_finals, _):
    x, out, *rest = ctx.saved_tensors
    num_states, num_weights = ctx.counts
    states, weights = rest[:num_states], rest[num_states : num_states + num_weights]
    kept = rest[num_states + num_weights :]
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_finals = [
        torch.zeros_like(s) if g is None else g.contiguous()
        for g, s in zip(grad_finals, states, strict=True)
    ]
    grad_x, grad_states, grad_weights = _options_layer_backward_op(
        grad_out, grad_finals, x, list(states), list(weights), *ctx.masks, out, list(kept),
        *ctx.args,
    )  # fmt: skip
    return grad_x, grad_states, grad_weights, *[None] * (ctx.num_inputs - 3)


_options_layer_op.register_autograd(_options_op_backward, setup_context=_options_setup_context)


def _options_layer(spec, x, states, weights, masks, batch_sizes, directions, engine):
    """One layer through the right wrapper: the custom op while tracing, the
    autograd.Function when a gradient is needed, else the plain forward; ``engine``
    as requested (resolved here, once per layer). Returns ``(out, finals)``."""
    if torch.compiler.is_compiling():
        out, finals, _ = _options_layer_op(
            x, list(states), list(weights), *masks, list(batch_sizes), list(directions),
            spec.cell, spec.relu, spec.has_bias, spec.layer_norm, engine,
        )  # fmt: skip
        return out, finals
    engine = resolve_engine(engine, x, states[0].size(1), states[0].size(2), "options")
    args = (batch_sizes, directions, spec, engine)
    if grad_needed(x, states[0], [*states[1:], *weights]):
        out, *finals = OptionsLayerFunction.apply(
            spec, engine, batch_sizes, directions, masks, x, *states, *weights
        )
        return out, finals
    out, finals, _ = options_layer_forward(x, states, weights, masks, *args)
    return out, finals


def options_stack(
    spec: OptionsSpec,
    x: Tensor,
    states: Sequence[Tensor],
    all_weights: Sequence[Sequence[Tensor]],
    masks: Sequence[LayerMasks],
    batch_sizes: Sequence[int],
    bidirectional: bool,
    dropout: float,
    training: bool,
    engine: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A multi-layer, optionally bidirectional layer with the options, over packed rows.

    Args:
        spec: the cell and options.
        x: packed input rows.
        states: ``(h0,)``, or ``(h0, c0)`` for the LSTM, over every layer and direction.
        all_weights: per (layer, direction), torch's weights followed by the layer
            norm's gain and bias when ``spec.layer_norm``.
        masks: per layer, from :func:`rnnkit.masks.draw_masks`.
        batch_sizes: rows per step.
        bidirectional: every second entry of ``all_weights`` is a reverse pass.
        dropout: dropout on the outputs of all layers but the last.
        training: dropout applies only when True.
        engine: ``"auto"``, ``"compiled"`` or ``"fused"`` (see
            :func:`rnnkit.engine.resolve_engine`; its kernel set is ``"options"``).

    Returns:
        ``(out, final_states)``, final_states shaped as ``states``.

    Shape:
        x ``(R, H_in)``, states ``(D * num_layers, N, H)``; out ``(R, D * H)``.
    """

    def run_layer(layer, layer_input, layer_states, weights, batch_sizes, directions):
        return _options_layer(
            spec, layer_input, layer_states, weights, masks[layer], batch_sizes, directions,
            engine,
        )  # fmt: skip

    return stack_layers(run_layer, x, states, all_weights, batch_sizes, bidirectional, dropout,
                        training)  # fmt: skip
