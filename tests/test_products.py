"""The weight gradients in the orientation BLAS runs faster (rnnkit.engine.products,
rnnkit.engine.walk.recurrent_weight_grad): the same sums either way, and a whole layer's
gradients are torch's with either orientation forced."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.engine import products
from rnnkit.engine.products import NARROW_WEIGHT_GRAD, transposed_faster, weight_grad
from rnnkit.engine.walk import previous_states, recurrent_weight_grad

F64 = {"dtype": torch.float64}


def test_narrow_widths_run_transposed():
    assert transposed_faster(1) and transposed_faster(NARROW_WEIGHT_GRAD)
    assert not transposed_faster(NARROW_WEIGHT_GRAD + 1)


@pytest.mark.parametrize("width", [1, NARROW_WEIGHT_GRAD, NARROW_WEIGHT_GRAD + 1, 64])
def test_weight_grad_is_d_transposed_times_a(width):
    d = torch.randn(50, 30, **F64)[:, 3:27]  # (R, G) column view
    a = torch.randn(50, width + 5, **F64)[:, 5:]  # (R, K) column view
    grad = weight_grad(d, a)
    assert grad.shape == (24, width)
    torch.testing.assert_close(grad, d.t() @ a, rtol=0, atol=1e-12)


def _recurrent_weight_grad_by_steps(d, states, initial, batch_sizes, reverse):
    """``sum_t d_t^T @ h_prev(t)``, row by row."""
    h_prev = previous_states(states, initial, batch_sizes, reverse)
    return sum(torch.outer(d[r], h_prev[r]) for r in range(d.size(0)))


@pytest.mark.parametrize("width", [1, NARROW_WEIGHT_GRAD, NARROW_WEIGHT_GRAD + 1])
def test_weight_grad_into_rows_of_a_larger_gradient(width):
    d = torch.randn(50, 30, **F64)[:, 3:27]  # (R, G) column view
    a = torch.randn(50, width, **F64)
    grad = torch.full((30, width), float("nan"), **F64)
    assert weight_grad(d, a, out=grad[4:28]).data_ptr() == grad[4:].data_ptr()
    torch.testing.assert_close(grad[4:28], d.t() @ a, rtol=0, atol=1e-12)
    assert grad[:4].isnan().all() and grad[28:].isnan().all()


@pytest.mark.parametrize("width", [3, NARROW_WEIGHT_GRAD + 3])
@pytest.mark.parametrize("batch_sizes", [(4, 4, 4, 4), (4, 3, 3, 1), (4,)])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_weight_grad_sums_every_step(width, batch_sizes, reverse):
    rows = sum(batch_sizes)
    d = torch.randn(rows, 8, **F64)
    states = torch.randn(rows, 2 * width, **F64)[:, width:]  # a direction's columns
    initial = torch.randn(batch_sizes[0], width, **F64)
    grad = recurrent_weight_grad(d, states, initial, batch_sizes, reverse)
    expected = _recurrent_weight_grad_by_steps(d, states, initial, batch_sizes, reverse)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def _grads(module, x, lengths, hx):
    """Every parameter's gradient and the input's, of a packed call from states ``hx``
    (not zeros: the first step's share of a recurrent weight's gradient shows)."""
    x = x.detach().clone().requires_grad_(True)
    output, _ = module(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    output.data.pow(2).sum().backward()
    return [x.grad] + [p.grad for _, p in sorted(module.named_parameters())]


@pytest.mark.parametrize("narrow", [0, 1000])  # every weight gradient as asked, transposed
@pytest.mark.parametrize(
    "cell, kwargs",
    [
        ("LSTM", {"proj_size": 3, "bidirectional": True}),
        ("GRU", {"num_layers": 2}),
        ("RNN", {"bidirectional": True}),
        ("LSTM", {"recurrent_dropout": 0.0, "layer_norm": True}),  # the options engine
    ],
)
@pytest.mark.parametrize("lengths", [[6, 6, 6], [6, 2, 4]])
def test_layer_gradients_are_torchs_in_either_orientation(
    monkeypatch, narrow, cell, kwargs, lengths
):
    monkeypatch.setenv("RNNKIT_ENGINE", "fused")
    monkeypatch.setattr(products, "NARROW_WEIGHT_GRAD", narrow)
    torch.manual_seed(0)
    ours = getattr(rnnkit, cell)(5, 7, **kwargs).double()
    x = torch.randn(6, 3, 5, **F64)
    rows = ours.num_layers * (2 if ours.bidirectional else 1)
    hx = torch.randn(rows, 3, kwargs.get("proj_size") or 7, **F64)
    if cell == "LSTM":
        hx = (hx, torch.randn(rows, 3, 7, **F64))
    if "layer_norm" in kwargs:  # torch has none: the reference loop is the oracle
        monkeypatch.setenv("RNNKIT_ENGINE", "reference")
        expected = _grads(ours, x, lengths, hx)
        monkeypatch.setenv("RNNKIT_ENGINE", "fused")
    else:
        theirs = getattr(torch.nn, cell)(5, 7, **kwargs).double()
        theirs.load_state_dict(ours.state_dict())
        expected = _grads(theirs, x, lengths, hx)
    for grad, want in zip(_grads(ours, x, lengths, hx), expected, strict=True):
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
