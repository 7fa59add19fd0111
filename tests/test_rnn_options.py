"""Options of ``rnnkit.RNN`` that torch lacks (issue 18), and ``rnnkit.init``.

merge_mode is checked against the concatenated output of the same weights,
reduced by hand; learn_initial_state against the same module given the
parameter as an explicit ``hx``; the initialisers by the property each promises.
Shape vocabulary: ``N`` batch, ``L`` length, ``D`` directions, ``H_out`` hidden.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

H_IN, H_OUT = 3, 5
REDUCE = {
    "sum": lambda fwd, bwd: fwd + bwd,
    "mul": lambda fwd, bwd: fwd * bwd,
    "ave": lambda fwd, bwd: (fwd + bwd) / 2,
}
INPUT_KINDS = ("padded", "batch_first", "unbatched", "packed")


def _pair(merge_mode, num_layers=2, batch_first=False, nonlinearity="tanh"):
    """A concat module and a merged one with the same weights (float64)."""
    torch.manual_seed(0)
    kwargs = {"bidirectional": True, "batch_first": batch_first, "dtype": torch.float64}
    concat = rnnkit.RNN(H_IN, H_OUT, num_layers, nonlinearity, **kwargs)
    merged = rnnkit.RNN(H_IN, H_OUT, num_layers, nonlinearity, merge_mode=merge_mode, **kwargs)
    merged.load_state_dict(concat.state_dict())
    return concat, merged


def _input(kind, requires_grad=False):
    """An input of the given kind, and the time dimension of its padded output."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, H_IN, dtype=torch.float64, generator=gen)  # (L, N, H_in)
    if kind == "batch_first":
        x = x.transpose(0, 1).contiguous()  # (N, L, H_in)
    elif kind == "unbatched":
        x = x[:, 0]  # (L, H_in)
    x.requires_grad_(requires_grad)
    if kind == "packed":  # unsorted lengths: rnnkit sorts, then restores the order
        return pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False)
    return x


def _halves(out):
    """Forward and backward halves of a concatenated output, padded if packed."""
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = pad_packed_sequence(out)[0]  # (L, N, 2 * H_out)
    return out[..., :H_OUT], out[..., H_OUT:]


def _padded(out):
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return pad_packed_sequence(out)[0]
    return out


# --------------------------------------------------------------------------- merge_mode


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("merge_mode", sorted(REDUCE))
def test_merge_mode_reduces_the_concatenated_directions(engine, merge_mode, kind):
    concat, merged = _pair(merge_mode, batch_first=kind == "batch_first")
    x = _input(kind)
    out_concat, h_concat = concat(x)
    out, h_n = merged(x)
    assert type(out) is type(out_concat)
    if kind == "packed":
        assert out.data.shape == (out_concat.data.size(0), H_OUT)  # merged width
        assert torch.equal(out.batch_sizes, out_concat.batch_sizes)
        assert torch.equal(out.unsorted_indices, out_concat.unsorted_indices)
    else:
        assert out.shape == (*out_concat.shape[:-1], H_OUT)
    torch.testing.assert_close(_padded(out), REDUCE[merge_mode](*_halves(out_concat)))
    torch.testing.assert_close(h_n, h_concat)  # h_n is never merged


@pytest.mark.parametrize("kind", ("padded", "packed"))
@pytest.mark.parametrize("merge_mode", sorted(REDUCE))
def test_merge_mode_gradients_match_the_hand_reduced_concat(merge_mode, kind):
    concat, merged = _pair(merge_mode)
    grads = []
    for module, reduce in ((concat, REDUCE[merge_mode]), (merged, None)):
        x = _input("padded", requires_grad=True)
        inp = pack_padded_sequence(x, torch.tensor([4, 2, 1])) if kind == "packed" else x
        out, _ = module(inp)
        out = reduce(*_halves(out)) if reduce else _padded(out)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([x.grad, *(p.grad for p in module.parameters())])
    for expected, actual in zip(*grads, strict=True):
        assert actual.abs().sum() > 0  # every weight and the input get a gradient
        torch.testing.assert_close(actual, expected)


@settings(max_examples=8)
@given(
    merge_mode=st.sampled_from(sorted(REDUCE)),
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    num_layers=st.integers(1, 3),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
)
def test_merge_mode_on_packed_batches_of_any_lengths(merge_mode, lengths, num_layers, nonlinearity):
    concat, merged = _pair(merge_mode, num_layers, nonlinearity=nonlinearity)
    x = torch.randn(max(lengths), len(lengths), H_IN, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, h_n = merged(packed)
    out_concat, h_concat = concat(packed)
    torch.testing.assert_close(_padded(out), REDUCE[merge_mode](*_halves(out_concat)))
    torch.testing.assert_close(h_n, h_concat)


def test_merge_mode_sum_by_hand_on_one_unit():
    # One unit, every parameter 0.5: fwd and bwd of a length-1 sequence are both
    # tanh(w x + b_ih + b_hh), so their sum is twice that.
    rnn = rnnkit.RNN(1, 1, bidirectional=True, merge_mode="sum", dtype=torch.float64)
    with torch.no_grad():
        for p in rnn.parameters():
            p.fill_(0.5)
    out, _ = rnn(torch.tensor([[2.0]], dtype=torch.float64))  # (L=1, H_in=1), unbatched
    expected = 2 * torch.tanh(torch.tensor(0.5 * 2.0 + 0.5 + 0.5, dtype=torch.float64))
    torch.testing.assert_close(out, expected.view(1, 1))


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("bidirectional", [False, True])
def test_options_off_keep_torch_state_dict_and_repr(bidirectional):
    kwargs = {"num_layers": 2, "bidirectional": bidirectional}
    ref = nn.RNN(H_IN, H_OUT, **kwargs)
    ours = rnnkit.RNN(H_IN, H_OUT, merge_mode="concat", learn_initial_state=False, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert repr(ours) == repr(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 2, H_IN)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


def test_extra_repr_shows_non_default_options():
    rnn = rnnkit.RNN(H_IN, H_OUT, bidirectional=True, merge_mode="sum", learn_initial_state=True)
    assert rnn.extra_repr() == (
        "3, 5, bidirectional=True, merge_mode='sum', learn_initial_state=True"
    )
    assert "initial_state" in rnn.state_dict()


# --------------------------------------------------------------------------- errors


def test_unknown_merge_mode_is_refused():
    with pytest.raises(
        ValueError,
        match=r"Received an invalid value for argument `merge_mode`, expected one of "
        r"\('concat', 'sum', 'mul', 'ave'\), got 'avg'\.",
    ):
        rnnkit.RNN(H_IN, H_OUT, bidirectional=True, merge_mode="avg")


def test_merge_mode_without_bidirectional_is_refused():
    with pytest.raises(
        ValueError,
        match=r"invalid value for argument `merge_mode`, expected 'concat' with "
        r"bidirectional=False .*got 'sum'\.",
    ):
        rnnkit.RNN(H_IN, H_OUT, merge_mode="sum")
    rnnkit.RNN(H_IN, H_OUT, merge_mode="concat")  # the default is fine either way


def test_learn_initial_state_must_be_a_bool():
    with pytest.raises(
        TypeError, match=r"argument `learn_initial_state`, expected a bool, got 1\."
    ):
        rnnkit.RNN(H_IN, H_OUT, learn_initial_state=1)


def test_other_unknown_keywords_still_fail_as_in_torch():
    with pytest.raises(TypeError, match="unexpected keyword argument 'merge'"):
        rnnkit.RNN(H_IN, H_OUT, merge="sum")


# --------------------------------------------------------------------------- learn_initial_state


def _learned(num_layers=2, bidirectional=True):
    torch.manual_seed(0)
    rnn = rnnkit.RNN(
        H_IN, H_OUT, num_layers, bidirectional=bidirectional, learn_initial_state=True,
        dtype=torch.float64,
    )  # fmt: skip
    with torch.no_grad():  # zeros would hide a state that is never read
        rnn.initial_state.normal_()
    return rnn


def test_initial_state_starts_at_zeros_and_leaves_the_weights_as_torch_draws_them():
    torch.manual_seed(3)
    ref = nn.RNN(H_IN, H_OUT, 2, bidirectional=True)
    torch.manual_seed(3)
    ours = rnnkit.RNN(H_IN, H_OUT, 2, bidirectional=True, learn_initial_state=True)
    assert ours.initial_state.shape == (4, H_OUT)  # (D * num_layers, H_out)
    assert isinstance(ours.initial_state, nn.Parameter)
    assert torch.equal(ours.initial_state, torch.zeros(4, H_OUT))
    for name, param in ref.named_parameters():
        assert torch.equal(getattr(ours, name), param), name
    x = torch.randn(4, 2, H_IN)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])  # zeros: torch's default state


@pytest.mark.parametrize("kind", ("padded", "batch_first", "unbatched", "packed"))
def test_learned_state_equals_it_given_as_hx(engine, kind):
    rnn = _learned()
    rnn.batch_first = kind == "batch_first"
    x = _input(kind)
    batch = 1 if kind == "unbatched" else 3
    hx = rnn.initial_state.detach().unsqueeze(1).expand(-1, batch, -1)  # (D*layers, N, H_out)
    if kind == "unbatched":
        hx = hx[:, 0]  # (D * num_layers, H_out)
    out, h_n = rnn(x)
    out_hx, h_n_hx = rnn(x, hx)
    torch.testing.assert_close(_padded(out), _padded(out_hx))
    torch.testing.assert_close(h_n, h_n_hx)
    zeros_out, _ = rnn(x, torch.zeros_like(hx))
    assert not torch.allclose(_padded(out), _padded(zeros_out))  # the state is read


def test_learned_state_gets_the_gradient_of_hx_summed_over_the_batch(engine):
    rnn = _learned()
    x = _input("packed")
    out, h_n = rnn(x)
    (out.data.sum() + h_n.square().sum()).backward()
    grad = rnn.initial_state.grad
    assert grad is not None and grad.abs().sum() > 0
    hx = rnn.initial_state.detach().unsqueeze(1).expand(-1, 3, -1).clone().requires_grad_()
    out, h_n = rnn(x, hx)
    (out.data.sum() + h_n.square().sum()).backward()
    torch.testing.assert_close(grad, hx.grad.sum(1))


def test_explicit_hx_wins_over_the_learned_state():
    rnn = _learned(num_layers=1, bidirectional=False)
    ref = nn.RNN(H_IN, H_OUT, dtype=torch.float64)
    ref.load_state_dict(rnn.state_dict(), strict=False)
    x = _input("padded")
    hx = torch.randn(1, 3, H_OUT, dtype=torch.float64)
    out, h_n = rnn(x, hx)
    out_ref, h_ref = ref(x, hx)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h_n, h_ref)
    out.sum().backward()
    assert rnn.initial_state.grad is None


def test_learned_state_round_trips_through_state_dict_and_trains():
    rnn = _learned()
    copy = rnnkit.RNN(
        H_IN, H_OUT, 2, bidirectional=True, learn_initial_state=True, dtype=torch.float64
    )
    copy.load_state_dict(rnn.state_dict(), strict=True)
    assert torch.equal(copy.initial_state, rnn.initial_state)
    before = copy.initial_state.detach().clone()
    optimizer = torch.optim.SGD(copy.parameters(), lr=0.1)
    copy(_input("padded"))[0].square().sum().backward()
    optimizer.step()
    assert not torch.equal(copy.initial_state, before)


def test_learned_state_works_with_merge_mode():
    rnn = rnnkit.RNN(H_IN, H_OUT, bidirectional=True, merge_mode="ave", learn_initial_state=True)
    out, h_n = rnn(torch.randn(4, 2, H_IN))
    assert out.shape == (4, 2, H_OUT) and h_n.shape == (2, 2, H_OUT)


# --------------------------------------------------------------------------- rnnkit.init


def _gate_blocks(module):
    """Every (H_out-row) gate block of every weight_hh in the module."""
    hidden = module.hidden_size
    return [
        (name, block)
        for name, weight in module.named_parameters()
        if name.startswith("weight_hh")
        for block in weight.detach().split(hidden)
    ]


RECURRENT_MODULES = {
    "rnnkit.RNN": lambda: rnnkit.RNN(H_IN, H_OUT, 2, bidirectional=True),
    "torch.RNN": lambda: nn.RNN(H_IN, H_OUT),
    "torch.LSTM": lambda: nn.LSTM(H_IN, H_OUT, 2, bidirectional=True),
    "torch.GRU": lambda: nn.GRU(H_IN, H_OUT, 2),
    "torch.LSTMCell": lambda: nn.LSTMCell(H_IN, H_OUT),
}


@pytest.mark.parametrize("make", RECURRENT_MODULES.values(), ids=RECURRENT_MODULES.keys())
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal_recurrent_makes_each_gate_block_orthogonal(make, gain):
    module = make()
    others = {n: p.detach().clone() for n, p in module.named_parameters() if "weight_hh" not in n}
    assert rnnkit.init.orthogonal_recurrent_(module, gain=gain) is module
    blocks = _gate_blocks(module)
    assert len(blocks) >= 1
    for name, block in blocks:
        expected = gain**2 * torch.eye(H_OUT)
        torch.testing.assert_close(block @ block.T, expected, atol=1e-5, rtol=0, msg=name)
    for name, before in others.items():  # only the recurrent weights change
        assert torch.equal(dict(module.named_parameters())[name], before), name


def test_orthogonal_recurrent_on_a_projected_lstm_is_semi_orthogonal():
    lstm = nn.LSTM(H_IN, H_OUT, proj_size=2)
    rnnkit.init.orthogonal_recurrent_(lstm)
    for _, block in _gate_blocks(lstm):  # (H_out, proj_size): orthonormal columns
        torch.testing.assert_close(block.T @ block, torch.eye(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("module", [nn.Linear(2, 2), nn.Module()], ids=["Linear", "Module"])
def test_orthogonal_recurrent_refuses_non_recurrent_modules(module):
    with pytest.raises(ValueError, match="argument `module`, expected a recurrent module"):
        rnnkit.init.orthogonal_recurrent_(module)


@pytest.mark.parametrize(
    "make",
    [lambda: rnnkit.RNN(H_IN, H_OUT, 2, "relu", bidirectional=True), lambda: nn.RNNCell(2, 5)],
    ids=["rnnkit.RNN", "torch.RNNCell"],
)
def test_identity_recurrent_sets_scaled_identity_and_zero_biases(make):
    module = make()
    assert rnnkit.init.identity_recurrent_(module, scale=0.5) is module
    for name, param in module.named_parameters():
        if name.startswith("weight_hh"):
            assert torch.equal(param, 0.5 * torch.eye(H_OUT)), name
        elif name.startswith("bias"):
            assert torch.equal(param, torch.zeros(H_OUT)), name


def test_identity_relu_rnn_carries_a_positive_state_through_zero_input():
    # IRNN's point: h_t = relu(h_{t-1} I + 0) = h_{t-1} for h >= 0.
    rnn = rnnkit.init.identity_recurrent_(rnnkit.RNN(H_IN, H_OUT, nonlinearity="relu"))
    hx = torch.rand(1, 2, H_OUT)
    out, h_n = rnn(torch.zeros(6, 2, H_IN), hx)
    torch.testing.assert_close(h_n, hx)
    torch.testing.assert_close(out, hx.expand(6, -1, -1))


@pytest.mark.parametrize(
    ("module", "rows"), [(nn.LSTM(H_IN, H_OUT), 20), (nn.GRU(H_IN, H_OUT), 15)], ids=["LSTM", "GRU"]
)
def test_identity_recurrent_refuses_gated_modules(module, rows):
    with pytest.raises(
        ValueError, match=rf"expected an Elman RNN \(weight_hh_l0 with 5 rows\), .* {rows} rows"
    ):
        rnnkit.init.identity_recurrent_(module)


@pytest.mark.parametrize(
    "make",
    [lambda: nn.LSTM(H_IN, H_OUT, 2, bidirectional=True), lambda: nn.LSTMCell(H_IN, H_OUT)],
    ids=["LSTM", "LSTMCell"],
)
def test_forget_gate_bias_sets_only_the_forget_quarter(make):
    module = make()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    assert rnnkit.init.forget_gate_bias_(module, value=2.0) is module
    forget = slice(H_OUT, 2 * H_OUT)  # gate order i, f, g, o
    for name, param in module.named_parameters():
        expected = before[name].clone()
        if name.startswith("bias_ih"):
            expected[forget] = 2.0
        elif name.startswith("bias_hh"):
            expected[forget] = 0.0
        assert torch.equal(param, expected), name


def test_forget_gate_bias_gives_sigmoid_of_value_at_zero_input():
    lstm = nn.LSTM(1, 1, bias=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.zero_()
        lstm.bias_hh_l0.fill_(0.3)  # the forget part must be cleared, the rest kept
    rnnkit.init.forget_gate_bias_(lstm, value=1.0)
    assert lstm.bias_ih_l0.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert lstm.bias_hh_l0.tolist() == pytest.approx([0.3, 0.0, 0.3, 0.3])


@pytest.mark.parametrize(
    ("module", "got"),
    [
        (nn.GRU(H_IN, H_OUT), "bias_ih_l0 of 15 rows"),
        (rnnkit.RNN(H_IN, H_OUT), "bias_ih_l0 of 5 rows"),
        (nn.LSTM(H_IN, H_OUT, bias=False), "no biases"),
    ],
    ids=["GRU", "RNN", "LSTM-no-bias"],
)
def test_forget_gate_bias_refuses_modules_without_lstm_layout(module, got):
    with pytest.raises(
        ValueError, match=rf"expected LSTM biases of 4 \* hidden_size = 20 rows, got .* {got}\."
    ):
        rnnkit.init.forget_gate_bias_(module)
