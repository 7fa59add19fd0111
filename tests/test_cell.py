"""``rnnkit.RNNCell`` against ``torch.nn.RNNCell``: values, gradients and errors.

Both cells get the same weights (by name), then see the same inputs. float64 is
compared to 1e-12; float32 with ``assert_close``'s defaults. Error paths must
raise torch's exception type with torch's message; a few messages are also
pinned literally as torch 2.13 words them.
"""

import itertools
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import rnnkit

TIGHT = dict(rtol=0.0, atol=1e-12)


def _pair(input_size=3, hidden_size=4, seed=0, **kwargs):
    """(torch cell, rnnkit cell) with the same weights, copied by name."""
    torch.manual_seed(seed)
    ref = nn.RNNCell(input_size, hidden_size, **kwargs)
    ours = rnnkit.RNNCell(input_size, hidden_size, **kwargs)
    ours_params = dict(ours.named_parameters())
    assert set(ours_params) == {n for n, _ in ref.named_parameters()}
    with torch.no_grad():
        for name, param in ref.named_parameters():
            ours_params[name].copy_(param)
    return ref, ours


def _raised(fn):
    """The exception `fn` raises; fails the test if it raises none."""
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception, got none")


def _exactly(message):
    return f"^{re.escape(message)}$"


def _assert_same_error(torch_fn, rnnkit_fn):
    expected = _raised(torch_fn)
    with pytest.raises(type(expected), match=_exactly(str(expected))):
        rnnkit_fn()


# --------------------------------------------------------------------------- forward values

FORWARD_GRID = list(
    itertools.product(
        ["tanh", "relu"],  # nonlinearity
        [True, False],  # bias
        [True, False],  # batched
        [True, False],  # hx given
    )
)
FORWARD_IDS = [
    f"{nl}-bias={b}-{'batched' if bt else 'unbatched'}-{'hx' if h else 'no_hx'}"
    for nl, b, bt, h in FORWARD_GRID
]


def _inputs(batched, with_hx, dtype, input_size=3, hidden_size=4, batch=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if batched else ()
    x = torch.randn(*lead, input_size, generator=gen, dtype=dtype)
    hx = torch.randn(*lead, hidden_size, generator=gen, dtype=dtype) if with_hx else None
    return x, hx


@pytest.mark.parametrize(
    ("nonlinearity", "bias", "batched", "with_hx"), FORWARD_GRID, ids=FORWARD_IDS
)
def test_forward_float64_matches_torch(nonlinearity, bias, batched, with_hx):
    ref, ours = _pair(nonlinearity=nonlinearity, bias=bias, dtype=torch.float64)
    x, hx = _inputs(batched, with_hx, torch.float64)
    expected = ref(x, hx)
    got = ours(x, hx)
    assert got.shape == expected.shape == ((5, 4) if batched else (4,))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, **TIGHT)


@pytest.mark.parametrize(
    ("nonlinearity", "bias", "batched", "with_hx"), FORWARD_GRID, ids=FORWARD_IDS
)
def test_forward_float32_matches_torch(nonlinearity, bias, batched, with_hx):
    ref, ours = _pair(7, 16, nonlinearity=nonlinearity, bias=bias)
    x, hx = _inputs(batched, with_hx, torch.float32, input_size=7, hidden_size=16)
    got = ours(x, hx)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref(x, hx))


def test_forward_hand_computed_tanh():
    # Constant weights: every unit sees 0.1 * sum(x) + 0.2 * sum(h) + 0.3 + 0.4.
    cell = rnnkit.RNNCell(2, 3, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.fill_(0.1)
        cell.weight_hh.fill_(0.2)
        cell.bias_ih.fill_(0.3)
        cell.bias_hh.fill_(0.4)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    hx = torch.tensor([[0.5, 0.5, 0.5], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    out = cell(x, hx)
    first = math.tanh(0.1 * 3.0 + 0.2 * 1.5 + 0.7)
    second = math.tanh(0.1 * -0.5 + 0.2 * 0.0 + 0.7)
    expected = torch.tensor([[first] * 3, [second] * 3], dtype=torch.float64)
    torch.testing.assert_close(out, expected, **TIGHT)


def test_forward_hand_computed_relu_and_hx_none_means_zeros():
    cell = rnnkit.RNNCell(2, 2, bias=False, nonlinearity="relu", dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        cell.weight_hh.copy_(torch.tensor([[2.0, 2.0], [2.0, 2.0]]))
    x = torch.tensor([3.0, 4.0], dtype=torch.float64)
    # unbatched, hx None: relu([3, -4]) = [3, 0]
    torch.testing.assert_close(cell(x), torch.tensor([3.0, 0.0], dtype=torch.float64), **TIGHT)
    # with hx = [1, 1]: relu([3 + 4, -4 + 4]) = [7, 0]
    hx = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(cell(x, hx), torch.tensor([7.0, 0.0], dtype=torch.float64), **TIGHT)


def test_forward_unbatched_equals_batch_of_one():
    ref, ours = _pair(dtype=torch.float64)
    x, hx = _inputs(True, True, torch.float64, batch=1)
    torch.testing.assert_close(ours(x[0], hx[0]), ours(x, hx)[0], **TIGHT)
    torch.testing.assert_close(ours(x[0], hx[0]), ref(x[0], hx[0]), **TIGHT)


def test_forward_zero_batch_like_torch():
    ref, ours = _pair()
    for hx in (None, torch.zeros(0, 4)):
        x = torch.randn(0, 3)
        got, expected = ours(x, hx), ref(x, hx)
        assert got.shape == expected.shape == (0, 4)


def test_forward_non_contiguous_inputs():
    ref, ours = _pair(dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64).t()  # (6, 3), not contiguous
    hx = torch.randn(4, 6, dtype=torch.float64).t()  # (6, 4), not contiguous
    assert not x.is_contiguous() and not hx.is_contiguous()
    torch.testing.assert_close(ours(x, hx), ref(x, hx), **TIGHT)


def test_forward_leaves_hx_untouched_and_unaliased():
    _, ours = _pair()
    x, hx = _inputs(True, True, torch.float32)
    before = hx.clone()
    out = ours(x, hx)
    assert torch.equal(hx, before)
    assert out.data_ptr() != hx.data_ptr()


def test_cell_unrolled_matches_torch_rnn():
    # Driving the cell over a sequence is a one-layer nn.RNN with the same weights.
    for nonlinearity in ("tanh", "relu"):
        torch.manual_seed(3)
        rnn = nn.RNN(3, 4, nonlinearity=nonlinearity, dtype=torch.float64)
        cell = rnnkit.RNNCell(3, 4, nonlinearity=nonlinearity, dtype=torch.float64)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(rnn, f"{name}_l0"))
        x = torch.randn(6, 2, 3, dtype=torch.float64)
        h = torch.randn(2, 4, dtype=torch.float64)
        expected_out, expected_h = rnn(x, h.unsqueeze(0))
        outs = []
        for x_t in x:
            h = cell(x_t, h)
            outs.append(h)
        torch.testing.assert_close(torch.stack(outs), expected_out, **TIGHT)
        torch.testing.assert_close(h, expected_h[0], **TIGHT)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.one_of(st.none(), st.integers(0, 6)),
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    bias=st.booleans(),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    with_hx=st.booleans(),
    scale=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
)
def test_forward_random_shapes_match_torch(
    batch, input_size, hidden_size, bias, nonlinearity, with_hx, scale, seed
):
    ref, ours = _pair(
        input_size, hidden_size, seed=seed, bias=bias, nonlinearity=nonlinearity,
        dtype=torch.float64,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    x = torch.randn(*lead, input_size, generator=gen, dtype=torch.float64) * scale
    hx = torch.randn(*lead, hidden_size, generator=gen, dtype=torch.float64) if with_hx else None
    expected = ref(x, hx)
    got = ours(x, hx)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **TIGHT)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("nonlinearity", "bias", "batched", "with_hx"), FORWARD_GRID, ids=FORWARD_IDS
)
def test_gradients_match_torch(nonlinearity, bias, batched, with_hx):
    ref, ours = _pair(nonlinearity=nonlinearity, bias=bias, dtype=torch.float64)
    x, hx = _inputs(batched, with_hx, torch.float64)
    grads = {}
    for label, cell in (("ref", ref), ("ours", ours)):
        xi = x.clone().requires_grad_()
        hi = hx.clone().requires_grad_() if with_hx else None
        out = cell(xi, hi)
        # A non-uniform upstream gradient, so every element matters.
        weight = torch.linspace(-1.0, 2.0, out.numel(), dtype=torch.float64).view(out.shape)
        (out * weight).sum().backward()
        grads[label] = {"input": xi.grad, **{n: p.grad for n, p in cell.named_parameters()}}
        if with_hx:
            grads[label]["hx"] = hi.grad
    assert grads["ours"].keys() == grads["ref"].keys()
    for name, expected in grads["ref"].items():
        assert grads["ours"][name] is not None, name
        torch.testing.assert_close(grads["ours"][name], expected, **TIGHT, msg=name)


def test_gradients_float32_match_torch():
    ref, ours = _pair(5, 8)
    x, hx = _inputs(True, True, torch.float32, input_size=5, hidden_size=8)
    for cell in (ref, ours):
        cell(x, hx).square().sum().backward()
    for (name, p_ours), (_, p_ref) in zip(
        ours.named_parameters(), ref.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, msg=name)


def test_relu_gradient_at_exact_zero_matches_torch():
    # Pre-activation exactly 0: torch's relu passes no gradient there.
    ref, ours = _pair(2, 2, bias=False, nonlinearity="relu", dtype=torch.float64)
    with torch.no_grad():
        for cell in (ref, ours):
            cell.weight_ih.copy_(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
            cell.weight_hh.zero_()
    grads = []
    for cell in (ref, ours):
        x = torch.tensor([[2.0, 2.0]], dtype=torch.float64, requires_grad=True)
        out = cell(x)
        out.sum().backward()
        grads.append((out.detach(), x.grad, cell.weight_ih.grad))
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, **TIGHT)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(nonlinearity, bias):
    _, cell = _pair(3, 4, nonlinearity=nonlinearity, bias=bias, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    params = {n: p.detach().clone().requires_grad_() for n, p in cell.named_parameters()}
    names = list(params)

    def fn(x, hx, *weights):
        return functional_call(cell, dict(zip(names, weights, strict=True)), (x, hx))

    assert torch.autograd.gradcheck(fn, (x, hx, *params.values()))


# --------------------------------------------------------------------------- weight edits


def test_functional_call_matches_torch():
    ref, ours = _pair(dtype=torch.float64)
    x, hx = _inputs(True, True, torch.float64)
    subs = {"weight_hh": torch.full((4, 4), 0.25, dtype=torch.float64)}
    torch.testing.assert_close(
        functional_call(ours, subs, (x, hx)), functional_call(ref, subs, (x, hx)), **TIGHT
    )
    torch.testing.assert_close(ours(x, hx), ref(x, hx), **TIGHT)


def test_replaced_and_edited_weights_are_used():
    ref, ours = _pair(dtype=torch.float64)
    x, hx = _inputs(True, True, torch.float64)
    torch.testing.assert_close(ours(x, hx), ref(x, hx), **TIGHT)
    new = torch.randn(4, 3, dtype=torch.float64)
    ref.weight_ih = nn.Parameter(new.clone())
    ours.weight_ih = nn.Parameter(new.clone())
    torch.testing.assert_close(ours(x, hx), ref(x, hx), **TIGHT)
    with torch.no_grad():
        ref.bias_hh.add_(1.0)
        ours.bias_hh.add_(1.0)
    torch.testing.assert_close(ours(x, hx), ref(x, hx), **TIGHT)


# --------------------------------------------------------------------------- errors

# (cell kwargs, input shape, hx shape or None); torch decides type and message.
CELL_ERRORS = [
    # rank of input and hidden
    ({}, (1, 2, 3), None),
    ({}, (1, 2, 3), (2, 4)),
    ({}, (), None),
    ({}, (2, 3), (1, 2, 4)),
    ({}, (3,), (1, 1, 4)),
    ({}, (2, 3), ()),
    ({}, (1, 2, 3), (1, 2, 4)),  # input rank is checked first
    # input features
    ({}, (2, 5), None),
    ({}, (5,), None),
    ({}, (2, 5), (3, 4)),  # input size is checked before the batch
    # batch of input vs hidden
    ({}, (2, 3), (3, 4)),
    ({}, (2, 3), (3, 5)),  # batch is checked before hidden size
    ({}, (0, 3), (1, 4)),
    # hidden features
    ({}, (2, 3), (2, 5)),
    ({}, (3,), (5,)),
    (dict(bias=False, nonlinearity="relu"), (2, 3), (2, 1)),
    # mixed ranks, where torch unsqueezes only one of the two
    ({}, (3,), (1, 4)),
    ({}, (2, 3), (4,)),
    ({}, (1, 3), (4,)),
    ({}, (4, 3), (4,)),
    # an unknown nonlinearity is accepted by the constructor and refused by forward,
    # before any shape check
    (dict(nonlinearity="gelu"), (2, 3), None),
    (dict(nonlinearity="TANH"), (3,), (4,)),
    (dict(nonlinearity="gelu"), (2, 5), (3, 4)),
]


def _cell_case_id(case):
    kwargs, shape, hx_shape = case
    extra = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"x{list(shape)}-hx{list(hx_shape) if hx_shape is not None else None}-{extra}"


@pytest.mark.parametrize("case", CELL_ERRORS, ids=[_cell_case_id(c) for c in CELL_ERRORS])
def test_errors_like_torch(case):
    kwargs, shape, hx_shape = case
    ref, ours = _pair(**kwargs)
    x = torch.randn(shape)
    hx = None if hx_shape is None else torch.randn(hx_shape)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


CELL_ERROR_LITERALS = [
    ((1, 2, 3), None, ValueError, "RNNCell: Expected input to be 1D or 2D, got 3D instead"),
    ((2, 3), (1, 2, 4), ValueError, "RNNCell: Expected hidden to be 1D or 2D, got 3D instead"),
    ((2, 5), None, RuntimeError, "input has inconsistent input_size: got 5 expected 3"),
    ((2, 3), (3, 4), RuntimeError, "Input batch size 2 doesn't match hidden0 batch size 3"),
    ((2, 3), (2, 5), RuntimeError, "hidden0 has inconsistent hidden_size: got 5, expected 4"),
]


@pytest.mark.parametrize(("shape", "hx_shape", "exc_type", "message"), CELL_ERROR_LITERALS)
def test_error_messages_literal(shape, hx_shape, exc_type, message):
    cell = rnnkit.RNNCell(3, 4)
    hx = None if hx_shape is None else torch.randn(hx_shape)
    with pytest.raises(exc_type, match=_exactly(message)):
        cell(torch.randn(shape), hx)


def test_unknown_nonlinearity_accepted_by_constructor_like_torch():
    ref = nn.RNNCell(3, 4, nonlinearity="gelu")
    ours = rnnkit.RNNCell(3, 4, nonlinearity="gelu")
    assert ours.nonlinearity == ref.nonlinearity == "gelu"
    assert repr(ours) == repr(ref)
    with pytest.raises(RuntimeError, match=_exactly("Unknown nonlinearity: gelu")):
        ours(torch.randn(2, 3))


# Lenient: torch's message for a dtype clash comes from its matmul kernel
# ("mat1 and mat2 must have the same dtype, ..."). rnnkit must raise the same
# type and say that the dtypes differ.
@pytest.mark.parametrize(
    ("cell_dtype", "x_dtype", "hx_dtype"),
    [
        (torch.float32, torch.float64, None),
        (torch.float32, torch.float32, torch.float64),
        (torch.float64, torch.float32, torch.float32),
        (torch.float64, torch.float64, torch.float32),
    ],
)
def test_lenient_dtype_mismatch(cell_dtype, x_dtype, hx_dtype):
    ref, ours = _pair(dtype=cell_dtype)
    x = torch.randn(2, 3, dtype=x_dtype)
    hx = None if hx_dtype is None else torch.randn(2, 4, dtype=hx_dtype)
    expected = _raised(lambda: ref(x, hx))
    with pytest.raises(type(expected)) as info:
        ours(x, hx)
    message = str(info.value)
    assert message == str(expected) or "dtype" in message.lower(), message
