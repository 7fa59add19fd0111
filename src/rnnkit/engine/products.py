"""The input products of a layer: its projection, and the backward pass's products in
the form BLAS runs fast for a narrow input.

CPU BLAS is slow (4-7x, measured for the Elman and gated layers) on products
whose output or inner dimension is the input width when that is small (a few
features); the transposed product gives the same numbers fast.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Input widths up to which the products run transposed.
NARROW_INPUT = 8


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


def input_weight_grad(d: Tensor, x: Tensor) -> Tensor:
    """``d.t() @ x``: the gradient of ``w_ih``.

    Shape:
        d ``(R, G)``, x ``(R, H_in)``; returns ``(G, H_in)`` (a transposed view
        for a narrow input).
    """
    if x.size(1) <= NARROW_INPUT:
        return x.t().mm(d).t()
    return d.t().mm(x)
