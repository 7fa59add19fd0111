"""The input products of a layer: its projection, and the backward pass's products in
the form BLAS runs fast for a narrow input.

CPU BLAS is slow (4-7x, measured for the Elman and gated layers) on products
whose output or inner dimension is the input width when that is small (a few
features); the transposed product gives the same numbers fast. A weight gradient
summed over many rows gains from the transposed product up to a few dozen columns.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Input widths up to which the input gradient runs transposed.
NARROW_INPUT = 8
# Widths of ``a`` up to which a weight gradient ``d.t() @ a`` runs as ``(a.t() @ d).t()``.
# MKL, one thread, 3,200 rows, G = 128-1024 gate columns: 1.06-2.3x faster at widths 12-32
# (1.25-1.43 at G = 512, width 32: the LSTM's at H = 128 with 32 input features), except
# 0.94-0.96 at G = 768 for widths 16 and 32; 0.97-1.2 at 48-64; no gain from 128 up. At two
# threads 0.99-1.85 up to 32, except 0.82-0.85 at G = 768; a GRU's gate slices (G = 256 or
# 512 inside 768) read 1.04-1.25 at one thread, 0.93-1.05 at two
# (benchmarks/weight_grad_orientation.py).
NARROW_WEIGHT_GRAD = 32


def project_input(x: Tensor, w_ih: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """``out = x @ w_ih.t() (+ bias)``, the bias added in the same pass.

    Shape:
        x ``(R, H_in)``, w_ih ``(G, H_in)``, bias ``(G,)`` or None, out ``(R, G)``.
    """
    if bias is None:
        torch.mm(x, w_ih.t(), out=out)
    else:
        torch.addmm(bias, x, w_ih.t(), out=out)


def add_input_grad(grad_x: Tensor, d: Tensor, w_ih: Tensor, first: bool) -> None:
    """``grad_x = d @ w_ih`` if ``first``, else ``grad_x += d @ w_ih``.

    Shape:
        grad_x ``(R, H_in)``, d ``(R, G)``, w_ih ``(G, H_in)``.
    """
    if w_ih.size(1) <= NARROW_INPUT:
        share = w_ih.t().mm(d.t()).t()  # (R, H_in)
        grad_x.copy_(share) if first else grad_x.add_(share)
    elif first:
        torch.mm(d, w_ih, out=grad_x)
    else:
        grad_x.addmm_(d, w_ih)


def transposed_faster(width: int) -> bool:
    """Whether a weight gradient ``d.t() @ a`` over ``a`` of ``width`` columns runs
    faster as ``(a.t() @ d).t()``: up to ``NARROW_WEIGHT_GRAD`` columns (see there)."""
    return width <= NARROW_WEIGHT_GRAD


def weight_grad(d: Tensor, a: Tensor, out: Tensor | None = None) -> Tensor:
    """``d.t() @ a``, the gradient of a weight that multiplied ``a``'s rows, in the
    orientation BLAS runs faster (:func:`transposed_faster`); into ``out`` if given
    (rows of a larger gradient, which then needs no concatenation).

    Shape:
        d ``(R, G)``, a ``(R, K)`` (column views are fine), out ``(G, K)`` contiguous;
        returns ``(G, K)``: ``out``, else a new tensor (a transposed view for a narrow
        ``a``).
    """
    if transposed_faster(a.size(1)):
        grad = a.t().mm(d).t()
        return grad if out is None else out.copy_(grad)
    return d.t().mm(a) if out is None else torch.mm(d.t(), a, out=out)
