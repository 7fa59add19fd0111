"""weight_drop=p (DropConnect on the recurrent weights, AWD-LSTM): torch's layer on the
dropped weights, on every engine; off in evaluation; one mask per forward call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rnnkit

LAYERS = {"RNN": rnnkit.RNN, "LSTM": rnnkit.LSTM, "GRU": rnnkit.GRU}
P = 0.4


def _pair(name: str, **kwargs):
    torch.manual_seed(0)
    ours = LAYERS[name](3, 5, num_layers=2, bidirectional=True, weight_drop=P,
                        dtype=torch.float64, **kwargs)  # fmt: skip
    theirs = getattr(torch.nn, name)(3, 5, num_layers=2, bidirectional=True,
                                     dtype=torch.float64, **kwargs)  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("engine", ["fused", "compiled", "reference"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_training_runs_torch_s_layer_on_the_dropped_recurrent_weights(name, engine, monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", engine)
    ours, theirs = _pair(name)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    recurrent = [n for n in ours._flat_weights_names if n.startswith("weight_hh")]
    torch.manual_seed(7)  # the masks our forward will draw, in the same order
    dropped = {n: F.dropout(getattr(ours, n).detach(), P, training=True) for n in recurrent}
    with torch.no_grad():
        for n, w in dropped.items():
            getattr(theirs, n).copy_(w)
    torch.manual_seed(7)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, state = ours(x_ours)
    expected, expected_state = theirs(x_theirs)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state, expected_state, rtol=1e-10, atol=1e-12)  # h_n (c_n)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-10, atol=1e-12)
    for n, p in ours.named_parameters():
        reference = getattr(theirs, n).grad
        if n in recurrent:  # d(w * mask / (1 - p)) / dw
            reference = reference * (dropped[n] != 0) / (1 - P)
        torch.testing.assert_close(p.grad, reference, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("name", list(LAYERS))
def test_evaluation_is_the_layer_without_it_and_masks_change_per_call(name):
    ours, theirs = _pair(name)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-10, atol=1e-12)
    ours.train()
    first, second = ours(x)[0], ours(x)[0]
    assert not torch.allclose(first, second)  # a new mask every forward call
    assert not torch.allclose(first, theirs(x)[0])
    assert list(ours.state_dict()) == list(theirs.state_dict())  # no new parameters
    assert repr(ours).endswith(f"weight_drop={P})")


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.5", True])
def test_invalid_values_name_the_argument(value):
    with pytest.raises(ValueError, match=r"argument `weight_drop`, expected a number in \[0, 1\)"):
        rnnkit.GRU(3, 5, weight_drop=value)
