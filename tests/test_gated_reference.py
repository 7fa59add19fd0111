"""The LSTM and GRU reference loops against torch.nn.LSTM / torch.nn.GRU holding the same weights.

Every comparison is float64 at rtol=1e-10, atol=1e-12 and covers the outputs,
the final states and the gradient of a random linear function of them with
respect to the input, the initial states and every weight. Variable-length
batches are compared against torch on a packed sequence. One-unit cases worked
out with ``math`` pin the gate order independently of torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.functional_gated import (
    gru_cell_reference,
    gru_reference,
    lstm_cell_reference,
    lstm_reference,
)

F64 = torch.float64
TOLERANCE = {"rtol": 1e-10, "atol": 1e-12}


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(
        actual, expected, msg=lambda report: f"{what}: {report}", **TOLERANCE
    )


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@dataclass(frozen=True)
class Case:
    """One configuration of a gated module and its inputs."""

    seq_len: int  # L
    batch: int  # N
    input_size: int  # H_in
    hidden_size: int  # H_cell (LSTM), H_out (GRU)
    num_layers: int
    bidirectional: bool
    bias: bool
    proj_size: int  # LSTM only; 0 for none
    with_state: bool  # give h_0 (and c_0), else torch's default of zeros
    lengths: tuple[int, ...] | None  # None: no padding, not packed
    seed: int

    @property
    def num_states(self) -> int:
        return (2 if self.bidirectional else 1) * self.num_layers  # D * num_layers

    @property
    def h_out(self) -> int:
        return self.proj_size or self.hidden_size


@st.composite
def cases(draw, lstm: bool) -> Case:
    seq_len, batch = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    hidden_size = draw(st.integers(1, 5))
    proj = st.just(0) | st.integers(1, hidden_size - 1) if lstm and hidden_size > 1 else st.just(0)
    lengths = st.none() | st.tuples(*[st.integers(1, seq_len)] * batch)
    return Case(
        seq_len=seq_len,
        batch=batch,
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden_size,
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        bias=draw(st.booleans()),
        proj_size=draw(proj),
        with_state=draw(st.booleans()),
        lengths=draw(lengths),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def build(case: Case, lstm: bool, **kwargs) -> torch.nn.LSTM | torch.nn.GRU:
    """torch's module for `case` in float64, weights U(-1, 1): gates far from their midpoints."""
    if lstm:
        kwargs["proj_size"] = case.proj_size
    module = (torch.nn.LSTM if lstm else torch.nn.GRU)(
        case.input_size,
        case.hidden_size,
        num_layers=case.num_layers,
        bias=case.bias,
        bidirectional=case.bidirectional,
        dtype=F64,
        **kwargs,
    )
    gen = torch.Generator().manual_seed(case.seed)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1, generator=gen)
    return module


def run_torch(module, x, states, lengths):
    """torch's forward; a padded batch is packed unsorted, and the output padded back to L."""
    hx = None if states is None else (states if len(states) == 2 else states[0])
    if lengths is None:
        output, final = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        output, final = module(packed, hx)
        output, _ = pad_packed_sequence(output, total_length=x.shape[0])
    return output, final if isinstance(final, tuple) else (final,)


def run_reference(module, x, states, lengths, case, lstm, **kwargs):
    """The reference on the module's own weights; no given states means zeros, as torch."""
    if states is None:
        h0 = torch.zeros(case.num_states, case.batch, case.h_out, dtype=F64)
        c0 = torch.zeros(case.num_states, case.batch, case.hidden_size, dtype=F64)
        states = (h0, c0) if lstm else (h0,)
    common = {"bidirectional": case.bidirectional, "lengths": lengths, **kwargs}
    if lstm:
        return lstm_reference(x, *states, module.all_weights, proj_size=case.proj_size, **common)
    output, h_n = gru_reference(x, *states, module.all_weights, **common)
    return output, (h_n,)


def compare(case: Case, lstm: bool, *, module=None, **kwargs) -> None:
    """Outputs, final states and every gradient of the reference against torch's module."""
    module = module if module is not None else build(case, lstm)
    gen = torch.Generator().manual_seed(case.seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64)

    # Padding holds random values too: a loop that ran over it would differ.
    x = randn(case.seq_len, case.batch, case.input_size).requires_grad_(True)  # (L, N, H_in)
    states = None
    if case.with_state:
        h0 = randn(case.num_states, case.batch, case.h_out).requires_grad_(True)
        c0 = randn(case.num_states, case.batch, case.hidden_size).requires_grad_(True)
        states = (h0, c0) if lstm else (h0,)
    names = (
        ["input"] + ["h_0", "c_0"][: len(states or ())] + [n for n, _ in module.named_parameters()]
    )
    leaves = [x, *(states or ()), *module.parameters()]

    out_t, final_t = run_torch(module, x, states, case.lengths)
    out_r, final_r = run_reference(module, x, states, case.lengths, case, lstm, **kwargs)
    close(out_r, out_t, "output")
    for what, actual, expected in zip(
        ("h_n", "c_n")[: len(final_t)], final_r, final_t, strict=True
    ):
        close(actual, expected, what)

    # A random linear function of everything observable; its gradient reaches every leaf.
    g_out, g_final = randn(*out_t.shape), [randn(*s.shape) for s in final_t]
    grads = []
    for output, final in ((out_t, final_t), (out_r, final_r)):
        loss = (output * g_out).sum() + sum(
            (s * g).sum() for s, g in zip(final, g_final, strict=True)
        )
        grads.append(torch.autograd.grad(loss, leaves))
    for name, actual, expected in zip(names, grads[1], grads[0], strict=True):
        close(actual, expected, f"{name}.grad")


# ---------------------------------------------------------------------------
# Against torch, by property


@settings(max_examples=300)
@given(cases(lstm=True))
def test_lstm_reference_matches_torch(case):
    compare(case, lstm=True)


@settings(max_examples=300)
@given(cases(lstm=False))
def test_gru_reference_matches_torch(case):
    compare(case, lstm=False)


# ---------------------------------------------------------------------------
# Dropout between layers: training only


# (lstm, proj_size): GRU has no projection
PER_CELL = pytest.mark.parametrize(
    ("lstm", "proj_size"), [(True, 0), (True, 2), (False, 0)], ids=["lstm", "lstm-proj", "gru"]
)


def dropout_case(**kwargs) -> Case:
    fields = dict(
        seq_len=4,
        batch=3,
        input_size=2,
        hidden_size=3,
        num_layers=2,
        bidirectional=True,
        bias=True,
        proj_size=0,
        with_state=True,
        lengths=(4, 2, 3),
        seed=7,
    )
    return Case(**{**fields, **kwargs})


@PER_CELL
def test_dropout_off_outside_training(lstm, proj_size):
    case = dropout_case(proj_size=proj_size)
    module = build(case, lstm, dropout=0.5).eval()
    compare(case, lstm, module=module, dropout=0.5, training=False)


@PER_CELL
def test_dropout_one_in_training_zeroes_the_upper_layers_input(lstm, proj_size):
    """With p=1 the mask is deterministic: torch in training mode is the oracle."""
    case = dropout_case(proj_size=proj_size)
    module = build(case, lstm, dropout=1.0).train()
    compare(case, lstm, module=module, dropout=1.0, training=True)
    # And, without torch: the upper layer is the same layer run alone on zeros.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.seq_len, case.batch, case.input_size, generator=gen, dtype=F64)
    sizes = (case.h_out, case.hidden_size) if lstm else (case.h_out,)  # h_0[, c_0]
    states = [torch.randn(case.num_states, case.batch, n, generator=gen, dtype=F64) for n in sizes]
    reference = lstm_reference if lstm else gru_reference
    common = {"bidirectional": True, "lengths": case.lengths}
    if lstm:
        common["proj_size"] = proj_size
    output = reference(x, *states, module.all_weights, dropout=1.0, training=True, **common)[0]
    zeros = torch.zeros(case.seq_len, case.batch, 2 * case.h_out, dtype=F64)  # (L, N, D * H_out)
    upper = reference(zeros, *[s[2:] for s in states], module.all_weights[2:], **common)[0]
    close(output, upper, "output")
    assert output.abs().sum() > 0  # the upper layer's own biases and states still act


# ---------------------------------------------------------------------------
# Cells: gradcheck, and one-unit cases by hand


def test_lstm_cell_gradcheck():
    gen = torch.Generator().manual_seed(0)
    n, h_in, h_cell, h_out = 2, 3, 3, 2

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_(True)

    args = (
        leaf(n, h_in),  # input
        leaf(n, h_out),  # hx
        leaf(n, h_cell),  # cx
        leaf(4 * h_cell, h_in),  # w_ih
        leaf(4 * h_cell, h_out),  # w_hh
        leaf(4 * h_cell),  # b_ih
        leaf(4 * h_cell),  # b_hh
        leaf(h_out, h_cell),  # w_hr
    )
    assert torch.autograd.gradcheck(lstm_cell_reference, args)


def test_gru_cell_gradcheck():
    gen = torch.Generator().manual_seed(0)
    n, h_in, h_out = 2, 3, 2

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_(True)

    args = (
        leaf(n, h_in),
        leaf(n, h_out),
        leaf(3 * h_out, h_in),
        leaf(3 * h_out, h_out),
        leaf(3 * h_out),
        leaf(3 * h_out),
    )
    assert torch.autograd.gradcheck(gru_cell_reference, args)


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def test_lstm_one_unit_by_hand():
    """One unit, no bias: each gate has its own input and recurrent weight."""
    u = {"i": 0.5, "f": -1.0, "g": 2.0, "o": 0.25}  # input weights, gate order i, f, g, o
    w = {"i": 0.3, "f": 0.6, "g": -0.4, "o": 1.2}  # recurrent weights
    h, c, expected = 0.5, -1.0, []
    for x in (1.0, -2.0):
        i = sigmoid(u["i"] * x + w["i"] * h)
        f = sigmoid(u["f"] * x + w["f"] * h)
        g = math.tanh(u["g"] * x + w["g"] * h)
        o = sigmoid(u["o"] * x + w["o"] * h)
        c = f * c + i * g
        h = o * math.tanh(c)
        expected.append((h, c))
    w_ih, w_hh = t64(list(u.values()))[:, None], t64(list(w.values()))[:, None]  # (4, 1)
    out, (h_n, c_n) = lstm_reference(
        t64([1.0, -2.0]).reshape(2, 1, 1), t64([[[0.5]]]), t64([[[-1.0]]]), [[w_ih, w_hh]]
    )
    close(out, t64([h for h, _ in expected]).reshape(2, 1, 1), "output")
    close(h_n, t64([[[expected[-1][0]]]]), "h_n")
    close(c_n, t64([[[expected[-1][1]]]]), "c_n")
    # A projection scales the hidden state, not the cell state.
    h1, c1 = lstm_cell_reference(
        t64([[1.0]]), t64([[0.5]]), t64([[-1.0]]), w_ih, w_hh, w_hr=t64([[3.0]])
    )
    close(h1, t64([[3 * expected[0][0]]]), "projected h")
    close(c1, t64([[expected[0][1]]]), "c")


def test_gru_one_unit_by_hand():
    """One unit: the reset gate scales the recurrent candidate term with its bias, not the input."""
    u = {"r": 0.5, "z": -1.0, "n": 2.0}  # input weights, gate order r, z, n
    w = {"r": 0.3, "z": 0.6, "n": -0.4}  # recurrent weights
    b_in, b_hn = 0.1, 0.7  # only the candidate's biases are non-zero
    h, expected = 0.5, []
    for x in (1.0, -2.0):
        r = sigmoid(u["r"] * x + w["r"] * h)
        z = sigmoid(u["z"] * x + w["z"] * h)
        n = math.tanh(u["n"] * x + b_in + r * (w["n"] * h + b_hn))
        h = (1 - z) * n + z * h
        expected.append(h)
    weights = [
        t64(list(u.values()))[:, None],
        t64(list(w.values()))[:, None],
        t64([0.0, 0.0, b_in]),
        t64([0.0, 0.0, b_hn]),
    ]
    out, h_n = gru_reference(t64([1.0, -2.0]).reshape(2, 1, 1), t64([[[0.5]]]), [weights])
    close(out, t64(expected).reshape(2, 1, 1), "output")
    close(h_n, t64([[[expected[-1]]]]), "h_n")


def test_wrong_weight_count_names_the_entry():
    w = torch.zeros(4, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"all_weights\[0\] must hold 3 or 5 tensors .* got 2"):
        lstm_reference(
            torch.zeros(1, 1, 1, dtype=F64),
            torch.zeros(1, 1, 1, dtype=F64),
            torch.zeros(1, 1, 1, dtype=F64),
            [[w, w]],
            proj_size=1,
        )
