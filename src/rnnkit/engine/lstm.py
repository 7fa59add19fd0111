"""One LSTM layer, all its directions, in torch ops: forward and backpropagation.

The algorithm of the Elman engine (see :mod:`rnnkit.engine`) with gates: one
GEMM projects every step's input for all four gates; each step then adds its
recurrent product and applies the gates in five in-place ops. The backward pass
walks back in time with five ops per step: everything in it that does not
depend on the step before (the gates' derivatives) is computed for all rows at
once first, and the weight and input gradients are a few large GEMMs after the
walk.

The torch-ops walk holds the gates in the order ``o, i, f, g`` (torch's is ``i, f,
g, o``): then the three sigmoid gates are adjacent in the forward pass, and the
three gates scaled by the cell gradient adjacent in the backward pass, so each is
one op. Its weights are reordered on entry and gradients on exit (copies of the
weights' size). The compiled loops read each unit's four gates by index, so they
hold torch's order and read the weights as they are: no reordered copies, and a
call of one step reads ``w_hh`` in place (:mod:`rnnkit.engine.recurrent_operand`).

Shape symbols: ``R`` packed rows, ``N`` batch, ``D`` directions, ``H_in``
input features, ``H`` cell features (``hidden_size``), ``P`` output features
(``proj_size`` if projected, else ``H``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.compiled import gated as compiled_gated
from rnnkit.engine.parallel import dense_parts
from rnnkit.engine.products import add_input_grad, project_input, weight_grad
from rnnkit.engine.recurrent_operand import inference_parts, reads_in_place, recurrent_operand
from rnnkit.engine.walk import (
    dense_chunks,
    last_states,
    previous_rows,
    previous_states,
    recurrent_weight_grad,
    steps_in_order,
)
from rnnkit.engine.workspace import scratch


def _to_engine_order(w: Tensor) -> Tensor:
    """Rows of gates ``i, f, g, o`` (torch) to ``o, i, f, g``. Shape: ``(4H, *)``."""
    hidden = w.size(0) // 4
    return torch.cat([w[3 * hidden :], w[: 3 * hidden]])


def _to_torch_order(w: Tensor) -> Tensor:
    """Rows of gates ``o, i, f, g`` back to torch's ``i, f, g, o``. Shape: ``(4H, *)``."""
    hidden = w.size(0) // 4
    return torch.cat([w[hidden:], w[:hidden]])


def _in_gate_order(w: Tensor, engine: str) -> Tensor:
    """``w``'s gate rows in the order ``engine`` holds them: torch's for the compiled
    loops, ``o, i, f, g`` for the torch-ops walk. Shape: ``(4H, *)``."""
    return w if engine == "compiled" else _to_engine_order(w)


def _from_gate_order(grad: Tensor, engine: str) -> Tensor:
    """A gradient's gate rows from ``engine``'s order to torch's. Shape: ``(4H, *)``."""
    return grad if engine == "compiled" else _to_torch_order(grad)


def split_lstm_weights(weights, num_directions: int, projected: bool) -> list[tuple]:
    """``(w_ih, w_hh, b_ih, b_hh, w_hr)`` per direction from the flat list, in torch's
    order ``w_ih, w_hh[, b_ih, b_hh][, w_hr]`` (None where absent)."""
    per = len(weights) // num_directions
    parts = []
    for k in range(num_directions):
        own = list(weights[k * per : (k + 1) * per])
        w_hr = own.pop() if projected else None
        w_ih, w_hh, b_ih, b_hh = (*own, None, None)[:4]
        parts.append((w_ih, w_hh, b_ih, b_hh, w_hr))
    return parts


def lstm_layer_forward(
    x, h0, c0, weights, batch_sizes, directions, projected, engine="fused", keep=True
):
    """The forward pass of every direction of one LSTM layer.

    Args:
        x: packed input rows.
        h0, c0: initial hidden and cell state per direction.
        weights: per direction ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``, flattened.
        batch_sizes: rows per step.
        directions: per direction, whether it runs in reverse.
        projected: whether each direction has a projection ``w_hr``.
        engine: ``"compiled"`` (the time loop compiled) or ``"fused"`` (torch ops).
        keep: keep what the backward pass reads; False (inference) lets the
            compiled loop hold the cell states of two steps only.

    Returns:
        ``(out, h_n, c_n, gates, cells, tanh_cells)``: the outputs, the last
        states, and what the backward pass reads: every row's activated gates
        (order ``i, f, g, o`` on the compiled engine, ``o, i, f, g`` on the fused one), cell
        state and its tanh (scratch without keep).

    Shape:
        x ``(R, H_in)``, h0 ``(D, N, P)``, c0 ``(D, N, H)``; out ``(R, D * P)``,
        h_n, c_n as h0, c0; gates ``(D, R, 4H)``, cells and tanh_cells ``(D, R, H)``.
    """
    num_directions, rows = len(directions), x.size(0)
    hidden, out_size = c0.size(2), h0.size(2)
    ring = not keep and engine == "compiled"  # (2N, H) cell rows, (N, H) of their tanh
    batch = batch_sizes[0] if len(batch_sizes) else 0
    unequal = batch > 0 and batch_sizes[-1] != batch
    if ring and batch > 0 and not unequal:
        return _compiled_inference(x, h0, c0, weights, len(batch_sizes), directions, projected)
    out = x.new_empty(rows, num_directions * out_size)
    gates = x.new_empty(num_directions, rows, 4 * hidden)
    cells = x.new_empty(num_directions, 2 * batch if ring else rows, hidden)
    tanh_cells = x.new_empty(num_directions, batch if ring else rows, hidden)
    h_n, c_n = h0.new_empty(h0.shape), c0.new_empty(c0.shape)
    raw = x.new_empty(batch_sizes[0], hidden) if projected else None  # o * tanh(c) of a step
    batch_split = _parts(batch_sizes, h0, hidden, x) if engine == "compiled" else None
    parts = split_lstm_weights(weights, num_directions, projected)
    for k, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(parts):
        gate_rows, cell_rows, tanh_rows = gates[k], cells[k], tanh_cells[k]
        out_k = out[:, k * out_size : (k + 1) * out_size]
        bias = None if b_ih is None else _in_gate_order(b_ih + b_hh, engine)
        project_input(x, _in_gate_order(w_ih, engine), bias, gate_rows)  # (R, 4H)
        w_hr_t = None if w_hr is None else w_hr.t().contiguous()  # (H, P)
        if engine == "compiled":
            in_place = reads_in_place(len(batch_sizes), batch, w_hh.numel(), not ring,
                                      batch_split, unequal)  # fmt: skip
            compiled_gated.lstm_forward(
                gate_rows, cell_rows, tanh_rows, out, k * out_size, h0[k], c0[k],
                recurrent_operand(w_hh, in_place), w_hr_t, batch_sizes, directions[k], h_n[k],
                c_n[k], keep=not ring, w_in_place=in_place, parts=batch_split,
            )  # fmt: skip
            continue
        w_hh_t = _to_engine_order(w_hh).t().contiguous()  # (P, 4H)
        previous = None
        for first, end, n in steps_in_order(batch_sizes, directions[k]):
            g = gate_rows[first:end]  # (n, 4H)
            h_prev = previous_rows(out_k, h0[k], previous, n)
            c_prev = previous_rows(cell_rows, c0[k], previous, n)
            g.addmm_(h_prev, w_hh_t)
            g[:, : 3 * hidden].sigmoid_()  # o, i, f
            g[:, 3 * hidden :].tanh_()  # g
            c, tanh_c = cell_rows[first:end], tanh_rows[first:end]
            torch.mul(g[:, 2 * hidden : 3 * hidden], c_prev, out=c)  # f * c_prev
            c.addcmul_(g[:, hidden : 2 * hidden], g[:, 3 * hidden :])  # + i * g
            torch.tanh(c, out=tanh_c)
            if w_hr_t is None:
                torch.mul(g[:, :hidden], tanh_c, out=out_k[first:end])  # o * tanh(c)
            else:
                torch.mul(g[:, :hidden], tanh_c, out=raw[:n])
                torch.mm(raw[:n], w_hr_t, out=out_k[first:end])
            previous = (first, n)
        last_states(out_k, batch_sizes, directions[k], h_n[k])
        last_states(cell_rows, batch_sizes, directions[k], c_n[k])
    return out, h_n, c_n, gates, cells, tanh_cells


def _compiled_inference(x, h0, c0, weights, steps, directions, projected):
    """:func:`lstm_layer_forward` without ``keep`` for equal-length sequences on the
    compiled loops: each direction projects its input a chunk of steps at a time
    (:func:`rnnkit.engine.walk.dense_chunks`) and runs the chunk's steps from the states
    the chunk before ended with. Returns ``(out, h_n, c_n, None, None, None)``; shapes
    as there."""
    num_directions, rows, batch = len(directions), x.size(0), h0.size(1)
    hidden, out_size = c0.size(2), h0.size(2)
    out = x.new_empty(rows, num_directions * out_size)
    h_n, c_n = h0.new_empty(h0.shape), c0.new_empty(c0.shape)
    chunks = dense_chunks(steps, batch, 4 * hidden * x.element_size(), False)
    gates = x.new_empty(chunks[0][1], 4 * hidden)  # one chunk's projections; the first is whole
    cells, tanh_cells = x.new_empty(2 * batch, hidden), x.new_empty(batch, hidden)
    weight_size = 4 * hidden * out_size
    # every chunk's parts
    batch_split = inference_parts(steps, batch, weight_size, _parts([batch] * steps, h0, hidden, x))
    in_place = reads_in_place(steps, batch, weight_size, False, batch_split)
    for k, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(
        split_lstm_weights(weights, num_directions, projected)
    ):
        bias = None if b_ih is None else b_ih + b_hh
        w_hh_t = recurrent_operand(w_hh, in_place)  # (P, 4H), in place (4H, P)
        w_hr_t = None if w_hr is None else w_hr.t().contiguous()  # (H, P)
        states = h0[k], c0[k]  # (N, P), (N, H): the states the next chunk starts from
        for i, (first, end) in enumerate(chunks[::-1] if directions[k] else chunks):
            if i:  # the chunk before wrote them into h_n and c_n, which this one writes
                states = h_n[k].clone(), c_n[k].clone()
            chunk_gates = gates[: end - first]
            project_input(x[first:end], w_ih, bias, chunk_gates)  # (rows, 4H)
            compiled_gated.lstm_forward(
                chunk_gates, cells, tanh_cells, out[first:end], k * out_size, *states, w_hh_t,
                w_hr_t, [batch] * ((end - first) // batch), directions[k], h_n[k], c_n[k],
                keep=False, w_in_place=in_place, parts=batch_split,
            )  # fmt: skip
    return out, h_n, c_n, None, None, None


def _parts(batch_sizes, h0: Tensor, hidden: int, like: Tensor) -> list[tuple[int, int]]:
    """The batch's parts for torch's threads (:mod:`rnnkit.engine.parallel`): a step's
    product is ``(N, P) @ (P, 4H)``. Shape: h0 ``(D, N, P)``."""
    return dense_parts(batch_sizes, h0.size(1), 4 * hidden * h0.size(2), like)


def lstm_layer_backward(
    grad_out, grad_h_n, grad_c_n, x, h0, c0, weights, out, gates, cells, tanh_cells,
    batch_sizes, directions, projected, needs, engine="fused",
):  # fmt: skip
    """Backpropagation through time for every direction of one LSTM layer.

    Args:
        grad_out, grad_h_n, grad_c_n: upstream gradients of ``out``, ``h_n``, ``c_n``.
        x, h0, c0, weights: the forward inputs.
        out, gates, cells, tanh_cells: what :func:`lstm_layer_forward` returned.
        batch_sizes, directions, projected: as in the forward.
        needs: whether ``x``, the initial states and the weights need a gradient.
        engine: as in the forward.

    Returns:
        ``(grad_x, grad_h0, grad_c0, grad_weights)``, None where ``needs`` says no;
        grad_weights in the order of ``weights``.

    Shape:
        as in :func:`lstm_layer_forward`.
    """
    num_directions, rows = len(directions), x.size(0)
    hidden, out_size = c0.size(2), h0.size(2)
    grad_x = x.new_empty(x.shape) if needs[0] else None
    grad_h0, grad_c0 = h0.new_empty(h0.shape), c0.new_empty(c0.shape)
    grad_weights = [] if needs[2] else None
    # dL/d(pre-activation), reused per direction
    d_gates = scratch("lstm.d_gates", (rows, 4 * hidden), x)
    d_out = scratch("lstm.d_out", (rows, out_size), x)  # dL/dh at every row
    # dL/d(o * tanh(c)) of a step, with a projection (else d_out's rows)
    d_raw = x.new_empty(batch_sizes[0], hidden) if projected else d_out
    d_cell = x.new_empty(batch_sizes[0], hidden)  # dL/dc of a step
    batch_split = _parts(batch_sizes, h0, hidden, x) if engine == "compiled" else None
    parts = split_lstm_weights(weights, num_directions, projected)
    for k, (w_ih, w_hh, b_ih, _, w_hr) in enumerate(parts):
        reverse = directions[k]
        out_k = out[:, k * out_size : (k + 1) * out_size]
        grad_out_k = grad_out[:, k * out_size : (k + 1) * out_size]
        tanh_c = tanh_cells[k]
        w_hh_ordered = _in_gate_order(w_hh, engine)  # (4H, P)
        carry_h = grad_h_n[k].clone()  # dL/dh entering each sequence's step from later ones
        carry_c = grad_c_n[k].clone()
        if engine == "compiled":
            compiled_gated.lstm_backward(
                d_gates, d_out, d_raw, grad_out, k * out_size, gates[k], cells[k], tanh_c,
                c0[k], w_hh_ordered, w_hr, batch_sizes, reverse, carry_h, carry_c,
                parts=batch_split,
            )  # fmt: skip
        else:
            _walk_back(
                d_gates, d_out, d_raw, d_cell, grad_out_k, gates[k], cells[k], tanh_c, c0[k],
                w_hh_ordered, w_hr, batch_sizes, reverse, carry_h, carry_c,
            )  # fmt: skip
        grad_h0[k], grad_c0[k] = carry_h, carry_c
        if grad_x is not None:
            add_input_grad(grad_x, d_gates, _in_gate_order(w_ih, engine), first=k == 0)
        if grad_weights is None:
            continue
        grad_w_hh = recurrent_weight_grad(d_gates, out_k, h0[k], batch_sizes, reverse)
        grad_weights += [
            _from_gate_order(weight_grad(d_gates, x), engine),
            _from_gate_order(grad_w_hh, engine),
        ]
        if b_ih is not None:
            bias = _from_gate_order(d_gates.sum(0), engine)
            grad_weights += [bias, bias.clone()]
        if w_hr is not None:
            o = gates[k][:, 3 * hidden :] if engine == "compiled" else gates[k][:, :hidden]
            grad_weights.append(_projection_grad(d_out, o, tanh_c))
    return grad_x, grad_h0, grad_c0, grad_weights


def _projection_grad(d_out: Tensor, o: Tensor, tanh_c: Tensor, block: int = 1024) -> Tensor:
    """dL/dW_hr = d_out^T @ (o * tanh(c)), a block of rows at a time: all rows of
    ``o * tanh(c)`` at once would be one more ``(R, H)`` buffer at the backward's peak.

    Shape:
        d_out ``(R, P)``, o and tanh_c ``(R, H)``; returns ``(P, H)``.
    """
    grad = d_out.new_zeros(d_out.size(1), o.size(1))
    for first in range(0, d_out.size(0), block):
        rows = slice(first, first + block)
        grad.addmm_(d_out[rows].t(), o[rows] * tanh_c[rows])
    return grad


def _walk_back(d_gates, d_out, d_raw, d_cell, grad_out, gates, cells, tanh_c, c0, w_hh, w_hr,
               batch_sizes, reverse, carry_h, carry_c) -> None:  # fmt: skip
    """One direction's walk back in time in torch ops: fills ``d_gates`` and ``d_out``
    (``d_raw``: a step's dL/d(o * tanh(c)), used with a projection); ``carry_h``/``carry_c``
    enter as dL/dh_n, dL/dc_n and leave as dL/dh_0, dL/dc_0.

    Shape:
        as in :func:`lstm_layer_backward`; grad_out ``(R, P)`` (this direction's
        columns), gates ``(R, 4H)`` (order ``o, i, f, g``), w_hh ``(4H, P)`` in that order,
        d_raw ``(N, H)``.
    """
    hidden = cells.size(1)
    o, i, f, g = gates.split(hidden, dim=1)  # (R, H) each
    # The factors of the walk that do not depend on it, for all rows:
    # dc = dc_next * f_next + dh * a; d(o) = dh * b; d(i, f, g) = dc * scale.
    a = o * (1 - tanh_c * tanh_c)
    b = tanh_c * o * (1 - o)
    c_prev = previous_states(cells, c0, batch_sizes, reverse)
    scale = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=1)
    for first, end, n in reversed(steps_in_order(batch_sizes, reverse)):
        dh = d_out[first:end]
        torch.add(grad_out[first:end], carry_h[:n], out=dh)
        d_raw_t = dh
        if w_hr is not None:
            d_raw_t = torch.mm(dh, w_hr, out=d_raw[:n])
        dc = d_cell[:n]
        torch.addcmul(carry_c[:n], d_raw_t, a[first:end], out=dc)
        dg = d_gates[first:end]  # (n, 4H)
        torch.mul(d_raw_t, b[first:end], out=dg[:, :hidden])
        torch.mul(scale[first:end], dc.unsqueeze(1), out=dg[:, hidden:].unflatten(1, (3, -1)))
        torch.mul(dc, f[first:end], out=carry_c[:n])
        torch.mm(dg, w_hh, out=carry_h[:n])
