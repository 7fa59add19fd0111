"""The reference loop and both engines on hand-computed answers, and the loop against torch.

Constant-weight cases are small enough to work out with ``math.tanh`` (or
exactly, for relu); every one is checked through ``rnn_reference``, through
``rnn_cell_reference`` step by step, and through ``rnnkit.RNN`` on both engines.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.functional import rnn_cell_reference, rnn_reference

F64 = torch.float64


def constant_rnn(input_size, hidden_size, values, **kwargs) -> rnnkit.RNN:
    """An rnnkit.RNN in float64 whose parameters are filled per name prefix.

    ``values`` maps a parameter-name prefix (``"weight_ih_l0"``, ``"bias"``) to
    the constant it is filled with; the longest matching prefix wins.
    """
    rnn = rnnkit.RNN(input_size, hidden_size, dtype=F64, **kwargs)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            prefix = max((k for k in values if name.startswith(k)), key=len)
            p.fill_(values[prefix])
    return rnn


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------------------
# One unit, tanh: h_1 = tanh(0.5 x_1), h_2 = tanh(0.5 x_2 + 0.5 h_1)

X12 = (1.0, -2.0)
H1 = math.tanh(0.5 * X12[0])
H2 = math.tanh(0.5 * X12[1] + 0.5 * H1)


def one_unit_tanh() -> rnnkit.RNN:
    return constant_rnn(1, 1, {"weight": 0.5, "bias": 0.0})


def test_one_unit_tanh_reference_by_hand(close):
    rnn = one_unit_tanh()
    x = t64(X12).reshape(2, 1, 1)  # (L, N, H_in)
    out, h_n = rnn_reference(x, torch.zeros(1, 1, 1, dtype=F64), rnn.all_weights)
    close(out, t64([H1, H2]).reshape(2, 1, 1))
    close(h_n, t64([H2]).reshape(1, 1, 1))


def test_one_unit_tanh_cell_reference_by_hand(close):
    w = t64([[0.5]])
    h1 = rnn_cell_reference(t64([[X12[0]]]), t64([[0.0]]), w, w)
    h2 = rnn_cell_reference(t64([[X12[1]]]), h1, w, w, t64([0.0]), t64([0.0]))
    close(h1, t64([[H1]]))
    close(h2, t64([[H2]]))


def test_one_unit_tanh_module_by_hand(engine, close):
    rnn = one_unit_tanh()
    x = t64(X12).reshape(2, 1).requires_grad_(True)  # unbatched (L, H_in)
    out, h_n = rnn(x)
    close(out, t64([[H1], [H2]]))
    close(h_n, t64([[H2]]))
    # Backward by hand for loss = h_2 (tanh' = 1 - h^2, h_0 = 0 so step 1 adds nothing to dW_hh):
    h_n.sum().backward()
    d2 = 1 - H2**2  # dL/dpre_2
    d1 = d2 * 0.5 * (1 - H1**2)  # dL/dpre_1, through w_hh = 0.5
    close(x.grad, t64([[0.5 * d1], [0.5 * d2]]))
    close(rnn.weight_ih_l0.grad, t64([[d1 * X12[0] + d2 * X12[1]]]))
    close(rnn.weight_hh_l0.grad, t64([[d2 * H1]]))
    close(rnn.bias_ih_l0.grad, t64([d1 + d2]))
    close(rnn.bias_hh_l0.grad, t64([d1 + d2]))


def test_one_unit_tanh_with_h0_by_hand(engine, close):
    rnn = one_unit_tanh()
    h0 = 0.75
    h1 = math.tanh(0.5 * X12[0] + 0.5 * h0)
    h2 = math.tanh(0.5 * X12[1] + 0.5 * h1)
    out, h_n = rnn(t64(X12).reshape(2, 1, 1), t64([[[h0]]]))
    close(out, t64([h1, h2]).reshape(2, 1, 1))
    close(h_n, t64([h2]).reshape(1, 1, 1))


# ---------------------------------------------------------------------------
# One unit, relu, exact in binary: w_ih = 1, w_hh = 0.5, b_ih = 0.25, b_hh = -0.5
#   h_1 = relu( 1 + 0.25 - 0.5)          = 0.75
#   h_2 = relu(-2 + 0.25 - 0.5 + 0.375)  = 0      (-1.875)
#   h_3 = relu( 3 + 0.25 - 0.5 + 0)      = 2.75


def test_one_unit_relu_by_hand(engine, close):
    rnn = constant_rnn(
        1,
        1,
        {"weight_ih": 1.0, "weight_hh": 0.5, "bias_ih": 0.25, "bias_hh": -0.5},
        nonlinearity="relu",
    )
    x = t64([1.0, -2.0, 3.0]).reshape(3, 1, 1).requires_grad_(True)
    expected = t64([0.75, 0.0, 2.75]).reshape(3, 1, 1)
    out, h_n = rnn(x)
    close(out, expected, rtol=0, atol=0)
    close(h_n, expected[-1:], rtol=0, atol=0)
    ref_out, ref_h_n = rnn_reference(x, torch.zeros(1, 1, 1, dtype=F64), rnn.all_weights, "relu")
    close(ref_out, expected, rtol=0, atol=0)
    close(ref_h_n, expected[-1:], rtol=0, atol=0)
    # The zero at step 2 cuts the gradient: dh_3/dx = [0, 0, 1].
    h_n.sum().backward()
    close(x.grad, t64([0.0, 0.0, 1.0]).reshape(3, 1, 1), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# Bidirectional by hand: forward as above, reverse w_ih = -1, w_hh = 0.25
#   r_2 = tanh(-x_2), r_1 = tanh(-x_1 + 0.25 r_2); output_t = [h_t, r_t]


def test_bidirectional_by_hand(engine, close):
    rnn = constant_rnn(
        1,
        1,
        {"weight": 0.5, "bias": 0.0, "weight_ih_l0_reverse": -1.0, "weight_hh_l0_reverse": 0.25},
        bidirectional=True,
    )
    r2 = math.tanh(-X12[1])
    r1 = math.tanh(-X12[0] + 0.25 * r2)
    expected_out = t64([[H1, r1], [H2, r2]]).reshape(2, 1, 2)  # (L, N, D * H_out)
    expected_h_n = t64([H2, r1]).reshape(2, 1, 1)  # (D, N, H_out): reverse ends at step 1
    x = t64(X12).reshape(2, 1, 1)
    out, h_n = rnn(x)
    close(out, expected_out)
    close(h_n, expected_h_n)
    ref_out, ref_h_n = rnn_reference(
        x, torch.zeros(2, 1, 1, dtype=F64), rnn.all_weights, bidirectional=True
    )
    close(ref_out, expected_out)
    close(ref_h_n, expected_h_n)


# ---------------------------------------------------------------------------
# All-ones weights, H_in = 3, H_out = 4, every input 1: all units stay equal.
#   relu, no bias:  h_t = relu(3 + 4 h_{t-1})   =>  h_t = 4^t - 1
#   second layer:   g_t = relu(4 h_t + 4 g_{t-1}) => g_t = 4 (t 4^t - (4^t - 1) / 3)
#   tanh, bias 1:   h_t = tanh(3 + 2 + 4 h_{t-1})


def relu_ones_layer1(t: int) -> float:
    return 4.0**t - 1


def relu_ones_layer2(t: int) -> float:
    return 4 * (t * 4.0**t - (4.0**t - 1) / 3)


def test_all_ones_relu_closed_form(engine, close):
    L, N = 4, 2
    rnn = constant_rnn(3, 4, {"weight": 1.0}, num_layers=2, nonlinearity="relu", bias=False)
    out, h_n = rnn(torch.ones(L, N, 3, dtype=F64))
    layer1 = t64([relu_ones_layer1(t) for t in range(1, L + 1)])
    layer2 = t64([relu_ones_layer2(t) for t in range(1, L + 1)])
    assert layer2[:3].tolist() == [12.0, 108.0, 684.0]  # the closed form, unrolled by hand
    close(out, layer2[:, None, None].expand(L, N, 4), rtol=0, atol=0)
    close(h_n, torch.stack([layer1[-1], layer2[-1]])[:, None, None].expand(2, N, 4), rtol=0, atol=0)


def test_all_ones_tanh_with_bias(engine, close):
    L = 5
    rnn = constant_rnn(3, 4, {"weight": 1.0, "bias": 1.0})
    x = torch.linspace(-1, 1, L, dtype=F64)[:, None, None].expand(L, 1, 3)  # x_t = c_t per feature
    h, expected = 0.0, []
    for c in x[:, 0, 0].tolist():
        h = math.tanh(3 * c + 2 + 4 * h)
        expected.append(h)
    out, h_n = rnn(x)
    close(out, t64(expected)[:, None, None].expand(L, 1, 4))
    close(h_n, t64(expected[-1:])[:, None, None].expand(1, 1, 4))


def test_all_ones_relu_lengths_closed_form(engine, close):
    """Padding is skipped: each direction of each sequence sees only its own steps.

    With every valid input 1, step k of a sequence (counted from where that
    direction starts) holds 4^k - 1. The padding is filled with 5, so an engine
    that ran over it, or started the reverse pass at step L - 1, would differ.
    """
    lengths = [2, 4, 1]
    L, N = max(lengths), len(lengths)
    rnn = constant_rnn(3, 4, {"weight": 1.0}, nonlinearity="relu", bias=False, bidirectional=True)
    x = torch.full((L, N, 3), 5.0, dtype=F64)
    for n, length in enumerate(lengths):
        x[:length, n] = 1.0
    expected = torch.zeros(L, N, 2, dtype=F64)  # (L, N, D) per unit
    for n, length in enumerate(lengths):
        for t in range(length):
            expected[t, n, 0] = relu_ones_layer1(t + 1)
            expected[t, n, 1] = relu_ones_layer1(length - t)
    expected_h_n = torch.stack([expected.new_tensor([relu_ones_layer1(k) for k in lengths])] * 2)

    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    packed_out, h_n = rnn(packed)
    out, _ = pad_packed_sequence(packed_out, total_length=L)
    close(out, expected.repeat_interleave(4, dim=2), rtol=0, atol=0)
    close(h_n, expected_h_n[..., None].expand(2, N, 4), rtol=0, atol=0)

    hx = torch.zeros(2, N, 4, dtype=F64)
    ref_out, ref_h_n = rnn_reference(
        x, hx, rnn.all_weights, "relu", bidirectional=True, lengths=lengths
    )
    close(ref_out, expected.repeat_interleave(4, dim=2), rtol=0, atol=0)
    close(ref_h_n, expected_h_n[..., None].expand(2, N, 4), rtol=0, atol=0)


def test_reference_dropout_one_in_training_by_hand():
    """dropout=1 zeroes layer 1's input: with all-ones relu and no bias, layer 2 stays 0."""
    rnn = constant_rnn(3, 4, {"weight": 1.0}, num_layers=2, nonlinearity="relu", bias=False)
    x = torch.ones(3, 1, 3, dtype=F64)
    hx = torch.zeros(2, 1, 4, dtype=F64)
    out, h_n = rnn_reference(x, hx, rnn.all_weights, "relu", dropout=1.0, training=True)
    assert torch.equal(out, torch.zeros(3, 1, 4, dtype=F64))
    assert h_n[0, 0, 0].item() == relu_ones_layer1(3) and h_n[1].abs().sum().item() == 0
    # Not in training: no dropout, the closed form of two layers.
    out, _ = rnn_reference(x, hx, rnn.all_weights, "relu", dropout=1.0, training=False)
    assert out[-1, 0, 0].item() == relu_ones_layer2(3)


# ---------------------------------------------------------------------------
# The reference loop against torch.nn.RNN (using torch's own all_weights)

REFERENCE_CONFIGS = {
    "one_layer_tanh": dict(input_size=3, hidden_size=4),
    "two_layer_relu_bidir_no_bias": dict(
        input_size=2,
        hidden_size=3,
        num_layers=2,
        nonlinearity="relu",
        bias=False,
        bidirectional=True,
    ),
    "three_layer_tanh_bidir": dict(input_size=4, hidden_size=2, num_layers=3, bidirectional=True),
}


def torch_rnn(seed: int, scale: float = 0.5, **kwargs) -> torch.nn.RNN:
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(**kwargs, dtype=F64)
    with torch.no_grad():
        for p in rnn.parameters():
            p.uniform_(-scale, scale)
    return rnn.eval()


@pytest.mark.parametrize("config", list(REFERENCE_CONFIGS))
def test_reference_matches_torch(config, close):
    kwargs = REFERENCE_CONFIGS[config]
    theirs = torch_rnn(seed=11, **kwargs)
    D = 2 if kwargs.get("bidirectional") else 1
    x = torch.randn(6, 3, kwargs["input_size"], dtype=F64, requires_grad=True)
    hx = torch.randn(D * kwargs.get("num_layers", 1), 3, kwargs["hidden_size"], dtype=F64)
    hx.requires_grad_(True)
    out, h_n = theirs(x, hx)
    ref_out, ref_h_n = rnn_reference(
        x,
        hx,
        theirs.all_weights,
        kwargs.get("nonlinearity", "tanh"),
        kwargs.get("bidirectional", False),
    )
    close(ref_out, out)
    close(ref_h_n, h_n)
    leaves = [x, hx, *theirs.parameters()]
    g_out, g_h_n = torch.randn_like(out), torch.randn_like(h_n)
    grads = torch.autograd.grad((out * g_out).sum() + (h_n * g_h_n).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_out * g_out).sum() + (ref_h_n * g_h_n).sum(), leaves)
    for g, ref_g in zip(grads, ref_grads, strict=True):
        close(ref_g, g)


def test_reference_dropout_one_matches_torch_in_training(close):
    theirs = torch_rnn(seed=12, input_size=3, hidden_size=4, num_layers=3, dropout=1.0).train()
    x = torch.randn(5, 2, 3, dtype=F64)
    hx = torch.randn(3, 2, 4, dtype=F64)
    out, h_n = theirs(x, hx)
    ref_out, ref_h_n = rnn_reference(x, hx, theirs.all_weights, dropout=1.0, training=True)
    close(ref_out, out)
    close(ref_h_n, h_n)


@pytest.mark.parametrize("config", list(REFERENCE_CONFIGS))
def test_reference_lengths_match_torch_packed(config, close):
    """lengths on a padded batch == torch on the packed batch, padded back with zeros."""
    kwargs = REFERENCE_CONFIGS[config]
    theirs = torch_rnn(seed=13, **kwargs)
    lengths = [3, 6, 1, 4]  # unsorted
    L, N, D = max(lengths), len(lengths), 2 if kwargs.get("bidirectional") else 1
    x = torch.randn(L, N, kwargs["input_size"], dtype=F64)
    hx = torch.randn(D * kwargs.get("num_layers", 1), N, kwargs["hidden_size"], dtype=F64)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    packed_out, h_n = theirs(packed, hx)
    out, _ = pad_packed_sequence(packed_out, total_length=L)
    ref_out, ref_h_n = rnn_reference(
        x,
        hx,
        theirs.all_weights,
        kwargs.get("nonlinearity", "tanh"),
        kwargs.get("bidirectional", False),
        lengths=torch.tensor(lengths),
    )
    close(ref_out, out)
    close(ref_h_n, h_n)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_cell_reference_matches_torch_cell(nonlinearity, bias, close):
    torch.manual_seed(14)
    cell = torch.nn.RNNCell(3, 4, bias=bias, nonlinearity=nonlinearity, dtype=F64)
    x, hx = torch.randn(5, 3, dtype=F64), torch.randn(5, 4, dtype=F64)
    biases = (cell.bias_ih, cell.bias_hh) if bias else ()
    close(
        rnn_cell_reference(
            x, hx, cell.weight_ih, cell.weight_hh, *biases, nonlinearity=nonlinearity
        ),
        cell(x, hx),
    )
