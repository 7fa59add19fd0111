"""The recurrence with one torch op per step: runs on every device and dtype.

Forward and backward time loops of the fused engine (see :mod:`rnnkit.engine`)
written with in-place torch ops, so the interpreter costs a few microseconds
per step; :mod:`rnnkit.compiled` removes that cost on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _recurrence(out: Tensor, h0: Tensor, w_hh_t: Tensor, batch_sizes, reverse, activate_) -> None:
    """In place: ``out_t = activate(out_t + h_prev(t) @ w_hh_t)`` step by step.

    ``w_hh_t`` should be contiguous: BLAS calls on a transposed view cost about
    1 us more per step (measured at N=30, H=64), most of a small step.

    Shape:
        out ``(R, H_out)`` holding each step's input projection, h0 ``(N, H_out)``,
        w_hh_t ``(H_out, H_out)``.
    """
    steps = out.split(batch_sizes)
    n_prev = batch_sizes[-1] if reverse else batch_sizes[0]
    h = h0[:n_prev]
    if reverse:
        steps, batch_sizes = reversed(steps), reversed(batch_sizes)
    for o, n in zip(steps, batch_sizes, strict=True):
        if n == n_prev:
            o.addmm_(h, w_hh_t)
        elif n < n_prev:  # forward direction: finished sequences drop out
            o.addmm_(h[:n], w_hh_t)
        else:  # reverse direction: sequences starting here begin from h0
            o[:n_prev].addmm_(h, w_hh_t)
            o[n_prev:].addmm_(h0[n_prev:n], w_hh_t)
        activate_(o)
        h, n_prev = o, n


def _backward_recurrence(d, grad_out, grad_h_n, w_hh, batch_sizes, reverse) -> None:
    """In place, walking back in time: ``d_t *= grad_out_t + d_next @ w_hh``.

    On entry d holds act'(pre); on return, the gradient of every
    pre-activation. ``grad_h_n`` enters at each sequence's last step. dL/dh_t
    is formed in one step-sized buffer, so grad_out is read, never copied.

    Shape:
        d, grad_out ``(R, H_out)``, grad_h_n ``(N, H_out)``, w_hh ``(H_out, H_out)``.
    """
    d_steps, g_steps = d.split(batch_sizes), grad_out.split(batch_sizes)
    if not reverse:  # walk back from the last step
        d_steps, g_steps, batch_sizes = d_steps[::-1], g_steps[::-1], batch_sizes[::-1]
    grad_h = d.new_empty(max(batch_sizes[0], batch_sizes[-1]), d.size(1))  # (N, H_out)
    d_next, n_prev = None, 0
    for d_t, g_t, n in zip(d_steps, g_steps, batch_sizes, strict=True):
        grad_h_t = grad_h[:n]  # dL/dh_t
        if d_next is None:  # the first step walked back: only dL/dh_n flows in
            torch.add(g_t, grad_h_n[:n], out=grad_h_t)
        elif n == n_prev:
            torch.addmm(g_t, d_next, w_hh, out=grad_h_t)
        elif n < n_prev:  # reverse direction: the batch shrinks
            torch.addmm(g_t, d_next[:n], w_hh, out=grad_h_t)
        else:  # forward direction: sequences whose last step is t get dL/dh_n
            torch.addmm(g_t[:n_prev], d_next, w_hh, out=grad_h_t[:n_prev])
            torch.add(g_t[n_prev:], grad_h_n[n_prev:n], out=grad_h_t[n_prev:])
        d_t.mul_(grad_h_t)
        d_next, n_prev = d_t, n


def forward_torch_ops(out, h0, w_hhs, biases, batch_sizes, directions, relu) -> None:
    """In place on ``out``: the recurrence of every direction, one torch op per step
    (any device and dtype).

    Args:
        out: the input projection of every direction, without bias; becomes the output.
        h0: initial state per direction.
        w_hhs, biases: per direction, the recurrent weight and ``b_ih + b_hh`` (or None).
        batch_sizes, directions, relu: as in ``layer.layer_forward``.

    Shape:
        out ``(R, D * H_out)``, h0 ``(D, N, H_out)``.
    """
    hidden = w_hhs[0].size(0)
    columns = [slice(k * hidden, (k + 1) * hidden) for k in range(len(directions))]
    if relu or out.dtype != torch.float32 or out.device.type != "cpu":
        if biases[0] is not None:
            out.add_(torch.cat(biases))
        activate_ = Tensor.relu_ if relu else Tensor.tanh_
        for k, reverse in enumerate(directions):
            w_hh_t = w_hhs[k].t().contiguous()
            _recurrence(out[:, columns[k]], h0[k], w_hh_t, batch_sizes, reverse, activate_)
        return
    # float32 tanh on CPU costs 3x a sigmoid, and tanh(p) = 2 sigmoid(2p) - 1,
    # so run the recurrence on s = (h + 1) / 2 = sigmoid(2p):
    # 2 p_t = 2 (W_ih x_t + b - W_hh 1) + (4 W_hh) s_{t-1}.
    # The scaled weights are made without extra copies (a weight-sized temporary is
    # a tenth of the output at 200x32x64x512): 2 W_ih x_t as 2 * (x_t @ W_ih^T) in the
    # pass that adds the bias, 4 W_hh in place on its transposed copy.
    shifts = [-w.sum(1) if b is None else b - w.sum(1) for w, b in zip(w_hhs, biases, strict=True)]
    torch.add(2 * torch.cat(shifts), out, alpha=2, out=out)
    s0 = (h0 + 1) * 0.5
    for k, reverse in enumerate(directions):
        # a copy, always: .contiguous() would return a 1x1 weight itself
        w_hh_t = w_hhs[k].t().clone(memory_format=torch.contiguous_format).mul_(4)
        _recurrence(out[:, columns[k]], s0[k], w_hh_t, batch_sizes, reverse, Tensor.sigmoid_)
    out.mul_(2).sub_(1)


def pre_activation_grad_torch_ops(d, grad_out, grad_h_n, out, w_hh, batch_sizes, reverse, relu):
    """Fills ``d`` with dL/d(pre-activation) of every row, one torch op per step.

    Args:
        d: written in place (a column view of a wider buffer is fine).
        grad_out, grad_h_n: upstream gradients of the hidden sequence and the last states.
        out: the forward's hidden sequence.
        w_hh, batch_sizes, reverse, relu: as in the forward.

    Shape:
        d, grad_out, out ``(R, H_out)``, grad_h_n ``(N, H_out)``.
    """
    # d: the activation's derivative, then (walking back in time) the gradient
    # of the pre-activation, dpre_t = dL/dh_t * act'(pre_t).
    # relu': 0 where h <= 0, as torch's (a NaN state passes the gradient on); tanh': 1 - h^2
    if relu:
        d.copy_(out.le(0).logical_not_())
    else:
        torch.addcmul(out.new_ones(()), out, out, value=-1, out=d)
    _backward_recurrence(d, grad_out, grad_h_n, w_hh, batch_sizes, reverse)
