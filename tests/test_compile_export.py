"""torch.compile(fullgraph=True) and torch.export trace rnnkit.RNN as custom ops.

torch.nn.RNN graph-breaks under torch.compile and fails torch.export; rnnkit
registers its layer as the ``rnnkit::rnn_layer`` custom op (with a fake
implementation and autograd) so both see one opaque node per layer.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.engine.layer import _rnn_layer_backward_op, _rnn_layer_op

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


class Forecaster(nn.Module):
    """Encoder + head, the shape of the reference example."""

    def __init__(self, nonlinearity: str = "tanh"):
        super().__init__()
        self.encoder = rnnkit.RNN(
            4, 8, num_layers=2, batch_first=True, bidirectional=True, nonlinearity=nonlinearity
        )
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        output, h_n = self.encoder(x)  # (N, L, 2 * 8), (4, N, 8)
        return self.head(output[:, -1]) + h_n.sum()  # (N, 1)


@pytest.mark.parametrize("engine", ["auto", "fused"])
def test_compile_fullgraph_forward_and_backward_match_eager(engine, monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", engine)
    torch.manual_seed(0)
    model = Forecaster()
    x = torch.randn(3, 6, 4, requires_grad=True)  # (batch, window, features)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.sum(), [x, *model.parameters()])

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    actual = compiled(x)
    actual_grads = torch.autograd.grad(actual.sum(), [x, *model.parameters()])
    torch.testing.assert_close(actual, expected)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


# Inductor's CPU backend imports a torch module that warns about its own use of
# torch.jit.script_method; that is torch's business, not this test's.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_with_inductor_runs_the_custom_op():
    torch.manual_seed(1)
    model = Forecaster("relu")
    x = torch.randn(2, 5, 4)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_export_produces_a_program_that_matches_eager():
    torch.manual_seed(2)
    model = Forecaster()
    x = torch.randn(3, 6, 4)
    program = torch.export.export(model, (x,))
    code = program.graph_module.code
    assert code.count("torch.ops.rnnkit.rnn_layer.default") == 2  # a node per layer
    fresh = torch.randn(3, 6, 4)
    torch.testing.assert_close(program.module()(fresh), model(fresh))


# opcheck's own aot_dispatch test reads .grad of intermediate tensors.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) implementation and autograd registration agree."""
    gen = torch.Generator().manual_seed(3)
    batch_sizes = [3, 3, 2, 1]
    x = torch.randn(sum(batch_sizes), 2, dtype=torch.float64, generator=gen)
    h0 = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    w_ih = torch.randn(4, 2, dtype=torch.float64, generator=gen)
    w_hh = torch.randn(4, 4, dtype=torch.float64, generator=gen) * 0.5
    b = torch.randn(4, dtype=torch.float64, generator=gen)
    cases = [((False,), [w_ih, w_hh, b, b.clone()]), ((True,), [w_ih, w_hh])]
    cases.append(((False, True), [w_ih, w_hh, b, b.clone(), w_ih.clone(), w_hh.clone(), b, b]))
    for directions, weights in cases:
        h0_all = h0.expand(len(directions), 3, 4).clone().requires_grad_()
        weights = [w.detach().clone().requires_grad_() for w in weights]
        args = [x.requires_grad_(), h0_all, weights, batch_sizes, list(directions), "tanh", "auto"]
        torch.library.opcheck(_rnn_layer_op, args)
        out, h_n = _rnn_layer_op(*args)
        grads = (torch.randn_like(out), torch.randn_like(h_n))
        saved = [x.detach(), h0_all.detach(), [w.detach() for w in weights], out.detach()]
        backward_args = [*grads, *saved, batch_sizes, list(directions), "tanh", "auto"]
        torch.library.opcheck(_rnn_layer_backward_op, backward_args)
