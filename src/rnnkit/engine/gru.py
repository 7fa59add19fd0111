"""One GRU layer, all its directions, in torch ops: forward and backpropagation.

The algorithm of the Elman engine (see :mod:`rnnkit.engine`) with gates: one
GEMM projects every step's input for the three gates, each step adds its
recurrent product (kept apart for the candidate ``n``, which the reset gate
scales together with its bias ``b_hn``, as torch does) and applies the gates in
five in-place ops, the last a ``lerp``: ``h = n + z * (h_prev - n)``. The
backward pass walks back in time with three ops per step, after computing the
gates' derivatives for all rows at once; the weight and input gradients are a
few large GEMMs after the walk.

Shape symbols: ``R`` packed rows, ``N`` batch, ``D`` directions, ``H_in``
input features, ``H`` hidden features.
"""

from __future__ import annotations

import functools

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


def _split(weights, num_directions: int) -> list[tuple]:
    """``(w_ih, w_hh, b_ih, b_hh)`` per direction (biases None if absent)."""
    per = len(weights) // num_directions
    return [(*weights[k * per : (k + 1) * per], None, None)[:4] for k in range(num_directions)]


def input_bias(b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """The bias added to the input projection: ``b_ih``, plus ``b_hh`` for ``r`` and ``z``
    (``b_hn`` stays inside the reset gate's product). Shape: ``(3H,)``.

    One ``where`` over the sum, not a copy and an add into its slice: 7 us against 15 a
    call at H = 64, which shows in the short path's calls (:mod:`rnnkit.engine.few_steps`);
    the same values, and ``b_hn`` never enters ``n``'s sum (a ``b_ih + b_hh * mask`` would
    turn an infinite ``b_hn`` into NaN there)."""
    return torch.where(_rz_rows(b_ih.size(0) // 3, b_ih.device), b_ih + b_hh, b_ih)


@functools.lru_cache(maxsize=16)
def _rz_rows(hidden: int, device: torch.device) -> Tensor:
    """True for a GRU's ``r`` and ``z`` rows, False for ``n``'s. Shape: ``(3H,)``."""
    rows = torch.zeros(3 * hidden, dtype=torch.bool, device=device)
    rows[: 2 * hidden] = True
    return rows


def gru_layer_forward(x, h0, weights, batch_sizes, directions, engine="fused", keep=True):
    """The forward pass of every direction of one GRU layer.

    Args:
        x: packed input rows.
        h0: initial state per direction.
        weights: per direction ``w_ih, w_hh[, b_ih, b_hh]``, flattened.
        batch_sizes: rows per step.
        directions: per direction, whether it runs in reverse.
        engine: ``"compiled"`` (the time loop compiled) or ``"fused"`` (torch ops).
        keep: keep what the backward pass reads; False (inference) holds one
            step's ``kept_n`` only.

    Returns:
        ``(out, h_n, gates, kept_n)``: the outputs, the last states, and what the
        backward pass reads: every row's activated gates ``r, z, n`` and the ``n``
        gate's recurrent term ``W_hn h_prev + b_hn`` (one step's without keep).

    Shape:
        x ``(R, H_in)``, h0 ``(D, N, H)``; out ``(R, D * H)``, h_n ``(D, N, H)``;
        gates ``(D, R, 3H)``, kept_n ``(D, R, H)``.
    """
    num_directions, rows, hidden = len(directions), x.size(0), h0.size(2)
    batch = batch_sizes[0] if len(batch_sizes) else 0
    unequal = batch > 0 and batch_sizes[-1] != batch
    if engine == "compiled" and not keep and batch > 0 and not unequal:
        return _compiled_inference(x, h0, weights, len(batch_sizes), directions)
    out = x.new_empty(rows, num_directions * hidden)
    gates = x.new_empty(num_directions, rows, 3 * hidden)
    products = x.new_empty(batch, 3 * hidden)  # one step's W_hh h_prev (+ [0, 0, b_hn])
    kept_n = x.new_empty(num_directions, rows if keep else batch, hidden)
    h_n = h0.new_empty(h0.shape)
    parts = _parts(batch_sizes, h0, x) if engine == "compiled" else None
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(_split(weights, num_directions)):
        gate_rows, kept_rows = gates[k], kept_n[k]
        out_k = out[:, k * hidden : (k + 1) * hidden]
        bias = None if b_ih is None else input_bias(b_ih, b_hh)
        project_input(x, w_ih, bias, gate_rows)  # (R, 3H)
        if engine == "compiled":
            b_hn = None if b_hh is None else b_hh[2 * hidden :]
            w_in_place = reads_in_place(
                len(batch_sizes), batch, 3 * hidden**2, keep, parts, unequal
            )
            compiled_gated.gru_forward(
                gate_rows, products, kept_rows, out, k * hidden, h0[k],
                recurrent_operand(w_hh, w_in_place), b_hn, batch_sizes, directions[k], h_n[k],
                keep, w_in_place, parts,
            )  # fmt: skip
            continue
        w_hh_t = w_hh.t().contiguous()  # (H, 3H)
        if b_ih is not None:
            bias_hn = torch.cat([torch.zeros_like(b_hh[: 2 * hidden]), b_hh[2 * hidden :]])
        previous = None
        for first, end, n in steps_in_order(batch_sizes, directions[k]):
            h_prev = previous_rows(out_k, h0[k], previous, n)
            gh = products[:n]  # (n, 3H)
            if b_ih is None:
                torch.mm(h_prev, w_hh_t, out=gh)
            else:
                torch.addmm(bias_hn, h_prev, w_hh_t, out=gh)
            g = gate_rows[first:end]
            g[:, : 2 * hidden].add_(gh[:, : 2 * hidden]).sigmoid_()  # r, z
            candidate = g[:, 2 * hidden :]
            candidate.addcmul_(g[:, :hidden], gh[:, 2 * hidden :]).tanh_()  # n
            torch.lerp(candidate, h_prev, g[:, hidden : 2 * hidden], out=out_k[first:end])
            if keep:
                kept_rows[first:end] = gh[:, 2 * hidden :]
            previous = (first, n)
        last_states(out_k, batch_sizes, directions[k], h_n[k])
    return out, h_n, gates, kept_n


def _parts(batch_sizes, h0: Tensor, like: Tensor) -> list[tuple[int, int]]:
    """The batch's parts for torch's threads (:mod:`rnnkit.engine.parallel`): a step's
    product is ``(N, H) @ (H, 3H)``. Shape: h0 ``(D, N, H)``."""
    return dense_parts(batch_sizes, h0.size(1), 3 * h0.size(2) ** 2, like)


def _compiled_inference(x, h0, weights, steps, directions):
    """:func:`gru_layer_forward` without ``keep`` for equal-length sequences on the compiled
    loops: each direction projects its input a chunk of steps at a time
    (:func:`rnnkit.engine.walk.dense_chunks`) and runs the chunk's steps from the state
    the chunk before ended with. Returns ``(out, h_n, None, None)``; shapes as there."""
    num_directions, rows, hidden, batch = len(directions), x.size(0), h0.size(2), h0.size(1)
    out = x.new_empty(rows, num_directions * hidden)
    h_n = h0.new_empty(h0.shape)
    chunks = dense_chunks(steps, batch, 3 * hidden * x.element_size(), False)
    gates = x.new_empty(chunks[0][1], 3 * hidden)  # one chunk's projections; the first is whole
    products = x.new_empty(batch, 3 * hidden)  # one step's W_hh h_prev
    kept_n = x.new_empty(batch, hidden)  # scratch: one step's W_hn h_prev + b_hn
    # every chunk's parts
    parts = inference_parts(steps, batch, 3 * hidden**2, _parts([batch] * steps, h0, x))
    w_in_place = reads_in_place(steps, batch, 3 * hidden**2, False, parts)
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(_split(weights, num_directions)):
        bias = None if b_ih is None else input_bias(b_ih, b_hh)
        b_hn = None if b_hh is None else b_hh[2 * hidden :]
        w_hh_t = recurrent_operand(w_hh, w_in_place)
        state = h0[k]  # (N, H): the state the next chunk starts from
        for i, (first, end) in enumerate(chunks[::-1] if directions[k] else chunks):
            if i:  # the chunk before wrote it into h_n, which this one writes
                state = h_n[k].clone()
            chunk_gates = gates[: end - first]
            project_input(x[first:end], w_ih, bias, chunk_gates)  # (rows, 3H)
            compiled_gated.gru_forward(
                chunk_gates, products, kept_n, out[first:end], k * hidden, state, w_hh_t,
                b_hn, [batch] * ((end - first) // batch), directions[k], h_n[k], False,
                w_in_place, parts,
            )  # fmt: skip
    return out, h_n, None, None


def gru_layer_backward(
    grad_out, grad_h_n, x, h0, weights, out, gates, kept_n, batch_sizes, directions, needs,
    engine="fused",
):  # fmt: skip
    """Backpropagation through time for every direction of one GRU layer.

    Args:
        grad_out, grad_h_n: upstream gradients of ``out`` and ``h_n``.
        x, h0, weights: the forward inputs.
        out, gates, kept_n: what :func:`gru_layer_forward` returned.
        batch_sizes, directions: as in the forward.
        needs: whether ``x``, ``h0`` and the weights need a gradient.
        engine: as in the forward.

    Returns:
        ``(grad_x, grad_h0, grad_weights)``, None where ``needs`` says no;
        grad_weights in the order of ``weights``.

    Shape:
        as in :func:`gru_layer_forward`.
    """
    num_directions, rows, hidden = len(directions), x.size(0), h0.size(2)
    grad_x = x.new_empty(x.shape) if needs[0] else None
    grad_h0 = h0.new_empty(h0.shape)
    grad_weights = [] if needs[2] else None
    # dL/dh at every row: the torch-ops walk's (the compiled one keeps one step's)
    d_out = None if engine == "compiled" else scratch("gru.d_out", (rows, hidden), x)
    # dL/d(recurrent pre-activations)
    d_hidden = scratch("gru.d_hidden", (rows, 3 * hidden), x)
    # dL/d(input pre-activations) is d_hidden's for r and z; for n it is d_n (unscaled by r)
    d_n = scratch("gru.d_n", (rows, hidden), x)
    d_rz = d_hidden[:, : 2 * hidden]
    parts = _parts(batch_sizes, h0, x) if engine == "compiled" else None
    for k, (w_ih, w_hh, b_ih, _) in enumerate(_split(weights, num_directions)):
        reverse = directions[k]
        out_k = out[:, k * hidden : (k + 1) * hidden]
        grad_out_k = grad_out[:, k * hidden : (k + 1) * hidden]
        carry = grad_h_n[k].clone()  # dL/dh entering each sequence's step from later ones
        if engine == "compiled":
            compiled_gated.gru_backward(
                d_hidden, d_n, grad_out, out, k * hidden, gates[k], kept_n[k], h0[k], w_hh,
                batch_sizes, reverse, carry, parts,
            )  # fmt: skip
        else:
            h_prev = previous_states(out_k, h0[k], batch_sizes, reverse)  # (R, H)
            _walk_back(
                d_hidden, d_n, d_out, grad_out_k, gates[k], kept_n[k], h_prev, w_hh,
                batch_sizes, reverse, carry,
            )  # fmt: skip
        grad_h0[k] = carry
        if grad_x is not None:
            add_input_grad(grad_x, d_rz, w_ih[: 2 * hidden], first=k == 0)
            add_input_grad(grad_x, d_n, w_ih[2 * hidden :], first=False)
        if grad_weights is None:
            continue
        grad_w_ih = w_ih.new_empty(w_ih.shape)  # (3H, H_in)
        weight_grad(d_rz, x, out=grad_w_ih[: 2 * hidden])
        weight_grad(d_n, x, out=grad_w_ih[2 * hidden :])
        grad_w_hh = recurrent_weight_grad(d_hidden, out_k, h0[k], batch_sizes, reverse)
        grad_weights += [grad_w_ih, grad_w_hh]
        if b_ih is not None:
            grad_weights += [torch.cat([d_rz.sum(0), d_n.sum(0)]), d_hidden.sum(0)]
    return grad_x, grad_h0, grad_weights


def _walk_back(d_hidden, d_n, d_out, grad_out, gates, kept_n, h_prev, w_hh, batch_sizes,
               reverse, carry) -> None:  # fmt: skip
    """One direction's walk back in time in torch ops: fills ``d_hidden`` and ``d_n``;
    ``carry`` enters as dL/dh_n and leaves as dL/dh_0.

    Shape:
        as in :func:`gru_layer_backward`; grad_out ``(R, H)`` (this direction's
        columns), h_prev ``(R, H)`` the state each row's step started from.
    """
    hidden = h_prev.size(1)
    r, z, n = gates.split(hidden, dim=1)  # (R, H) each
    # dL/d(pre-activation) per unit of dL/dh, for all rows: n, z, then r
    # (through n's product with W_hn h + b_hn).
    scale_n = (1 - z) * (1 - n * n)
    scale_z = (h_prev - n) * z * (1 - z)
    scale_r = kept_n * r * (1 - r) * scale_n
    scale = torch.stack([scale_r, scale_z, scale_n * r], dim=1)  # (R, 3, H)
    for first, end, rows_t in reversed(steps_in_order(batch_sizes, reverse)):
        dh = d_out[first:end]
        torch.add(grad_out[first:end], carry[:rows_t], out=dh)
        dg = d_hidden[first:end]  # (n, 3H)
        torch.mul(scale[first:end], dh.unsqueeze(1), out=dg.unflatten(1, (3, -1)))
        torch.mul(dh, z[first:end], out=carry[:rows_t])
        carry[:rows_t].addmm_(dg, w_hh)
    torch.mul(d_out, scale_n, out=d_n)  # n's input pre-activation is not scaled by r
