"""``rnnkit.LSTMCell`` / ``rnnkit.GRUCell`` against ``torch.nn.LSTMCell`` / ``GRUCell``,
and ``torch.compile`` / ``torch.export`` on ``rnnkit.LSTM`` and ``rnnkit.GRU``.

Both cells get the same weights (torch's state dict, loaded strictly), then see
the same inputs: values and the gradients of the input, the states and every
parameter agree in float64 to 1e-10 and in float32 to torch's default
tolerances. Error paths raise torch's exception type with torch's message. One
constant-weight case per cell is worked out by hand. The layers are custom ops
to torch.compile (one graph, fullgraph=True) and to torch.export.
"""

from __future__ import annotations

import io
import math
import re
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import rnnkit

CELLS = ("LSTMCell", "GRUCell")
F64_TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}


def close(actual, expected, what: str) -> None:
    """float64 at 1e-10, other dtypes at torch's defaults; `what` names the quantity."""
    kwargs = F64_TOLERANCE if expected.dtype == torch.float64 else {}
    torch.testing.assert_close(actual, expected, msg=lambda report: f"{what}: {report}", **kwargs)


def _pair(kind: str, input_size: int = 3, hidden_size: int = 4, *, seed: int = 0,
          scale: float | None = None, **kwargs):  # fmt: skip
    """(torch cell, rnnkit cell) with the same weights, U(-scale, scale), torch's by default."""
    theirs = getattr(nn, kind)(input_size, hidden_size, **kwargs)
    ours = getattr(rnnkit, kind)(input_size, hidden_size, **kwargs)
    if scale is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in theirs.parameters():
                p.copy_((torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1) * scale)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def _inputs(kind, batch, input_size, hidden_size, with_states, dtype, seed, scale=1.0):
    """x and the states argument: None, h (GRUCell) or (h, c) (LSTMCell); batch None: unbatched."""
    generator = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)

    def randn(*shape):
        return torch.randn(*lead, *shape, generator=generator, dtype=dtype) * scale

    x = randn(input_size)
    if not with_states:
        return x, None
    if kind == "LSTMCell":
        return x, (randn(hidden_size), randn(hidden_size))
    return x, randn(hidden_size)


def _states(result) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple) else [result]


def run(cell: nn.Module, x: torch.Tensor, hx) -> dict[str, torch.Tensor | None]:
    """The new states and the gradients of a random linear function of them, by name."""
    cell.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    given_states = None if hx is None else [s.detach().clone().requires_grad_(True)
                                            for s in _states(hx)]  # fmt: skip
    if given_states is not None:
        hx = tuple(given_states) if isinstance(hx, tuple) else given_states[0]
    result = cell(x, hx)
    observed = {}
    generator = torch.Generator().manual_seed(99)
    loss = 0
    for name, state in zip(("h'", "c'"), _states(result), strict=False):
        observed[name] = state
        weight = torch.randn(state.shape, generator=generator, dtype=torch.float64).to(state)
        loss = loss + (state * weight).sum()
    loss.backward()
    observed["input.grad"] = x.grad
    for name, state in zip(("h.grad", "c.grad"), given_states or (), strict=False):
        observed[name] = state.grad
    for name, p in cell.named_parameters():
        observed[f"{name}.grad"] = p.grad
    return observed


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        if want is None:
            assert got is None, name
        else:
            assert got is not None, f"{name} is None"
            close(got, want, name)


# --------------------------------------------------------------------------- values and gradients


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(CELLS),
    batch=st.one_of(st.none(), st.integers(0, 5)),
    input_size=st.integers(1, 5),
    hidden_size=st.integers(1, 5),
    bias=st.booleans(),
    with_states=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    weight_scale=st.sampled_from([None, 1.5]),  # torch's initialisation, or saturating gates
    input_scale=st.sampled_from([1.0, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_cell_matches_torch(
    kind, batch, input_size, hidden_size, bias, with_states, dtype, weight_scale, input_scale, seed
):
    if dtype == torch.float32:  # large float32 terms differ between two correct orders
        weight_scale, input_scale = None, 1.0
    theirs, ours = _pair(kind, input_size, hidden_size, seed=seed, scale=weight_scale, bias=bias,
                         dtype=dtype)  # fmt: skip
    x, hx = _inputs(kind, batch, input_size, hidden_size, with_states, dtype, seed, input_scale)
    expected, actual = run(theirs, x, hx), run(ours, x, hx)
    assert_same(actual, expected)
    assert actual["h'"].shape == ((hidden_size,) if batch is None else (batch, hidden_size))


@pytest.mark.parametrize("kind", CELLS)
def test_float32_at_torch_size_matches_torch(kind):
    theirs, ours = _pair(kind, 16, 32)
    x, hx = _inputs(kind, 8, 16, 32, True, torch.float32, seed=1)
    assert_same(run(ours, x, hx), run(theirs, x, hx))


@pytest.mark.parametrize("kind", CELLS)
def test_unbatched_equals_a_batch_of_one(kind):
    _, ours = _pair(kind, dtype=torch.float64)
    x, hx = _inputs(kind, 1, 3, 4, True, torch.float64, seed=2)
    single = ours(x[0], tuple(s[0] for s in hx) if kind == "LSTMCell" else hx[0])
    batched = ours(x, hx)
    for got, want in zip(_states(single), _states(batched), strict=True):
        close(got, want[0], "state")


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_lstm_cell_by_hand():
    """Constant weights: every gate of every unit sees 0.1 * sum(x) + 0.2 * sum(h) + 0.3 + 0.4."""
    cell = rnnkit.LSTMCell(2, 3, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.fill_(0.1)
        cell.weight_hh.fill_(0.2)
        cell.bias_ih.fill_(0.3)
        cell.bias_hh.fill_(0.4)
        cell.bias_ih[6:9] = -0.3  # the g block (order i, f, g, o): pre-activation 0.1 lower
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    h, c = torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), -1.0, dtype=torch.float64)
    pre = 0.1 * 3.0 + 0.2 * 1.5 + 0.7
    i = f = o = _sigmoid(pre)
    g = math.tanh(pre - 0.6)
    c_new = f * -1.0 + i * g
    h_new = o * math.tanh(c_new)
    got_h, got_c = cell(x, (h, c))
    close(got_h, torch.full((3,), h_new, dtype=torch.float64), "h'")
    close(got_c, torch.full((3,), c_new, dtype=torch.float64), "c'")


def test_gru_cell_by_hand():
    """The reset gate scales the recurrent candidate term, bias included."""
    cell = rnnkit.GRUCell(1, 1, dtype=torch.float64)
    u, w = [0.5, -1.0, 2.0], [0.3, 0.6, -0.4]  # input and recurrent weights, order r, z, n
    b_in, b_hn = 0.1, 0.7
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor(u, dtype=torch.float64)[:, None])
        cell.weight_hh.copy_(torch.tensor(w, dtype=torch.float64)[:, None])
        cell.bias_ih.copy_(torch.tensor([0.0, 0.0, b_in], dtype=torch.float64))
        cell.bias_hh.copy_(torch.tensor([0.0, 0.0, b_hn], dtype=torch.float64))
    x, h = 1.5, -0.5
    r = _sigmoid(u[0] * x + w[0] * h)
    z = _sigmoid(u[1] * x + w[1] * h)
    n = math.tanh(u[2] * x + b_in + r * (w[2] * h + b_hn))
    expected = (1 - z) * n + z * h
    got = cell(torch.tensor([[x]], dtype=torch.float64), torch.tensor([[h]], dtype=torch.float64))
    close(got, torch.tensor([[expected]], dtype=torch.float64), "h'")


@pytest.mark.parametrize("kind", CELLS)
def test_cell_unrolled_equals_torch_s_one_layer_module(kind):
    """Driving the cell over a sequence is a one-layer nn.LSTM / nn.GRU with the same weights."""
    layer = getattr(nn, kind.removesuffix("Cell"))(3, 4, dtype=torch.float64)
    cell = getattr(rnnkit, kind)(3, 4, dtype=torch.float64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    states = [torch.randn(2, 4, dtype=torch.float64) for _ in range(2 if kind == "LSTMCell" else 1)]
    expected, final = layer(
        x, tuple(s[None] for s in states) if kind == "LSTMCell" else states[0][None]
    )
    outputs = []
    for x_t in x:
        states = _states(cell(x_t, tuple(states) if kind == "LSTMCell" else states[0]))
        outputs.append(states[0])
    close(torch.stack(outputs), expected, "outputs")
    for got, want in zip(states, _states(final), strict=True):
        close(got, want[0], "final state")


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(kind, bias):
    _, cell = _pair(kind, 3, 2, bias=bias, dtype=torch.float64, scale=0.8)
    generator = torch.Generator().manual_seed(5)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(True)

    x = leaf(2, 3)
    states = [leaf(2, 2) for _ in range(2 if kind == "LSTMCell" else 1)]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in cell.named_parameters()}
    names = list(params)

    def fn(x, *rest):
        count = len(states)
        hx = tuple(rest[:count]) if kind == "LSTMCell" else rest[0]
        weights = dict(zip(names, rest[count:], strict=True))
        return functional_call(cell, weights, (x, hx))

    assert torch.autograd.gradcheck(fn, (x, *states, *params.values()))


@pytest.mark.parametrize("kind", CELLS)
def test_zero_batch_like_torch(kind):
    theirs, ours = _pair(kind)
    x = torch.randn(0, 3, requires_grad=True)
    for hx in (None, (torch.zeros(0, 4),) * 2 if kind == "LSTMCell" else torch.zeros(0, 4)):
        got, want = _states(ours(x, hx)), _states(theirs(x, hx))
        assert [s.shape for s in got] == [s.shape for s in want]


# --------------------------------------------------------------------------- surface


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_parameters_repr_and_init_match_torch(kind, bias):
    torch.manual_seed(4)
    theirs = getattr(nn, kind)(3, 5, bias=bias)
    torch.manual_seed(4)
    ours = getattr(rnnkit, kind)(3, 5, bias=bias)
    assert repr(ours) == repr(theirs)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in theirs.named_parameters()
    ]
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert torch.equal(p, q), f"{name}: not torch's draw for the same seed"
    assert (ours.input_size, ours.hidden_size, ours.bias) == (3, 5, bias)
    if not bias:  # torch registers the missing biases as None
        assert ours.bias_ih is None and ours.bias_hh is None


@pytest.mark.parametrize("kind", CELLS)
def test_default_init_is_uniform_within_one_over_sqrt_hidden(kind):
    hidden = 100
    cell = getattr(rnnkit, kind)(20, hidden)
    bound = 1 / math.sqrt(hidden)
    values = torch.cat([p.detach().flatten() for p in cell.parameters()]).double()
    assert values.abs().max().item() <= bound
    assert values.max().item() > 0.99 * bound and values.min().item() < -0.99 * bound
    assert abs(values.mean().item()) < 0.02 * bound
    assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize("kind", CELLS)
def test_state_dict_crosses_both_ways(kind):
    theirs, ours = _pair(kind, dtype=torch.float64)
    x, hx = _inputs(kind, 2, 3, 4, True, torch.float64, seed=3)
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(0.5)  # weights torch's cell has not seen
    theirs.load_state_dict(ours.state_dict(), strict=True)
    for got, want in zip(_states(ours(x, hx)), _states(theirs(x, hx)), strict=True):
        close(got, want, "state with our state dict in torch's cell")
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    again = getattr(rnnkit, kind)(3, 4, dtype=torch.float64)
    again.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    for got, want in zip(_states(again(x, hx)), _states(ours(x, hx)), strict=True):
        close(got, want, "state after torch.save / torch.load")


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((3, 4), dict(bias=1)), ((0, 4), {}), ((3, 4, False, "cpu", torch.float64), {})],
    ids=["bias=1", "input_size=0", "positional"],
)
def test_constructor_accepts_what_torch_accepts(kind, args, kwargs):
    """torch's cells check nothing: bias=1 and input_size=0 make cells too."""
    theirs = getattr(nn, kind)(*args, **kwargs)
    ours = getattr(rnnkit, kind)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]


# --------------------------------------------------------------------------- errors


def _raised(fn) -> Exception:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception, got none")


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _assert_same_error(torch_fn, rnnkit_fn) -> None:
    expected = _raised(torch_fn)
    with pytest.raises(type(expected), match=_exactly(str(expected))):
        rnnkit_fn()


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((3, -1), {}), ((-2, 4), {}), ((3.0, 4), {}), ((3, "4"), {}), ((3,), {}), ((3, 4), {"x": 1})],
)
def test_constructor_rejects_like_torch(kind, args, kwargs):
    """torch.empty's words for the sizes, Python's for the signature (naming the class)."""
    _assert_same_error(
        lambda: getattr(nn, kind)(*args, **kwargs), lambda: getattr(rnnkit, kind)(*args, **kwargs)
    )


# (input shape, hidden shape or None, cell shape or None); torch decides type and message.
LSTM_CELL_ERRORS = [
    ((1, 2, 3), None, None),  # input rank
    ((), None, None),
    ((1, 2, 3), (2, 4), (2, 4)),  # input rank is checked first
    ((2, 3), (1, 2, 4), (2, 4)),  # hx[0] rank
    ((2, 3), (2, 4), (1, 2, 4)),  # hx[1] rank
    ((2, 3), (), (2, 4)),
    ((2, 5), None, None),  # input features
    ((5,), None, None),
    ((2, 5), (3, 4), (3, 4)),  # features are checked before the batch
    ((2, 3), (3, 4), (2, 4)),  # batch of hx[0]
    ((2, 3), (2, 4), (3, 4)),  # batch of hx[1]
    ((2, 3), (2, 5), (2, 4)),  # features of hx[0]
    ((2, 3), (2, 4), (2, 5)),  # features of hx[1]
    ((3,), (1, 4), (1, 4)),  # mixed ranks: torch unsqueezes only one side
    ((3,), (4,), (1, 4)),
    ((2, 3), (4,), (2, 4)),
    ((0, 3), (1, 4), (1, 4)),
]
GRU_CELL_ERRORS = [
    ((1, 2, 3), None),
    ((), None),
    ((1, 2, 3), (2, 4)),
    ((1, 2, 3), (1, 2, 4)),  # input rank is checked first, then hidden's
    ((2, 3), (1, 2, 4)),
    ((2, 3), ()),
    ((2, 5), None),
    ((5,), None),
    ((2, 5), (3, 4)),
    ((2, 3), (3, 4)),
    ((2, 3), (3, 5)),  # batch is checked before the features
    ((2, 3), (2, 5)),
    ((3,), (5,)),
    ((3,), (1, 4)),
    ((2, 3), (4,)),
    ((0, 3), (1, 4)),
]


@pytest.mark.parametrize(("shape", "h_shape", "c_shape"), LSTM_CELL_ERRORS, ids=str)
def test_lstm_cell_errors_like_torch(shape, h_shape, c_shape):
    theirs, ours = _pair("LSTMCell")
    x = torch.randn(shape)
    hx = None if h_shape is None else (torch.randn(h_shape), torch.randn(c_shape))
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize(("shape", "h_shape"), GRU_CELL_ERRORS, ids=str)
def test_gru_cell_errors_like_torch(shape, h_shape):
    theirs, ours = _pair("GRUCell")
    x = torch.randn(shape)
    hx = None if h_shape is None else torch.randn(h_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


CELL_ERROR_LITERALS = [
    ("LSTMCell", (1, 2, 3), None, ValueError,
     "LSTMCell: Expected input to be 1D or 2D, got 3D instead"),
    ("LSTMCell", (2, 3), [(2, 4), (1, 2, 4)], ValueError,
     "LSTMCell: Expected hx[1] to be 1D or 2D, got 3D instead"),
    ("LSTMCell", (2, 3), [(2, 4), (3, 4)], RuntimeError,
     "Input batch size 2 doesn't match hidden1 batch size 3"),
    ("LSTMCell", (2, 3), [(2, 5), (2, 4)], RuntimeError,
     "hidden0 has inconsistent hidden_size: got 5, expected 4"),
    ("GRUCell", (2, 3), [(1, 2, 4)], ValueError,
     "GRUCell: Expected hidden to be 1D or 2D, got 3D instead"),
    ("GRUCell", (2, 5), None, RuntimeError, "input has inconsistent input_size: got 5 expected 3"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "shape", "hx_shapes", "exc_type", "message"), CELL_ERROR_LITERALS)
def test_error_messages_literal(kind, shape, hx_shapes, exc_type, message):
    cell = getattr(rnnkit, kind)(3, 4)
    hx = None
    if hx_shapes is not None:
        states = [torch.randn(s) for s in hx_shapes]
        hx = tuple(states) if kind == "LSTMCell" else states[0]
    with pytest.raises(exc_type, match=_exactly(message)):
        cell(torch.randn(shape), hx)


# Lenient: torch's messages for these come from its kernels (a matmul for a
# dtype clash, the argument parser for an hx that is not a tuple).
@pytest.mark.parametrize(
    ("kind", "cell_dtype", "x_dtype", "hx_dtype"),
    [
        ("LSTMCell", torch.float32, torch.float64, None),
        ("LSTMCell", torch.float32, torch.float32, torch.float64),
        ("LSTMCell", torch.float64, torch.float32, torch.float32),
        ("GRUCell", torch.float32, torch.float64, None),
        ("GRUCell", torch.float64, torch.float64, torch.float32),
    ],
)
def test_lenient_dtype_mismatch(kind, cell_dtype, x_dtype, hx_dtype):
    theirs, ours = _pair(kind, dtype=cell_dtype)
    x = torch.randn(2, 3, dtype=x_dtype)
    hx = None
    if hx_dtype is not None:
        hx = torch.randn(2, 4, dtype=hx_dtype)
        hx = (hx, torch.randn(2, 4, dtype=hx_dtype)) if kind == "LSTMCell" else hx
    expected = _raised(lambda: theirs(x, hx))
    with pytest.raises(type(expected)) as info:
        ours(x, hx)
    message = str(info.value)
    assert message == str(expected) or "dtype" in message.lower(), message


@pytest.mark.parametrize(
    "hx",
    [lambda: torch.randn(2, 4), lambda: (torch.randn(2, 4),)],
    ids=["tensor", "1-tuple"],
)
def test_lenient_lstm_cell_hx_that_is_not_a_pair(hx):
    theirs, ours = _pair("LSTMCell")
    x, hx = torch.randn(2, 3), hx()
    expected = _raised(lambda: theirs(x, hx))
    with pytest.raises(type(expected)) as info:
        ours(x, hx)
    message = str(info.value)
    assert message == str(expected) or any(w in message for w in ("hx", "tuple", "two")), message


@pytest.mark.parametrize(
    ("x_shape", "hx"),
    [((4,), lambda: torch.randn(2, 4)), ((4,), lambda: torch.randn(1, 4)),
     ((4,), lambda: torch.randn(3, 4)), ((4,), lambda: (torch.randn(4),) * 3),
     ((4,), lambda: (torch.randn(4),)), ((2, 3), lambda: torch.randn(2, 3, 4)),
     ((2, 3, 3), lambda: torch.randn(2, 3, 4, 1)), ((2, 3), lambda: (torch.randn(2, 4),) * 3)],
    ids=["2-rows", "1-row", "3-rows", "3-tuple", "1-tuple", "batched-tensor", "3-D-input",
         "batched-3-tuple"],
)  # fmt: skip
def test_lstm_cell_indexes_hx_as_torch_does(x_shape, hx):
    """torch's LSTMCell reads an unbatched call's hx as ``hx[0], hx[1]`` (a tensor's rows
    too, extra entries ignored): the same result, or the same error, as torch's."""
    theirs, ours = _pair("LSTMCell", 3 if len(x_shape) > 1 else 4)
    x, hx = torch.randn(x_shape), hx()
    try:
        expected = theirs(x, hx)
    except Exception:  # torch refuses the case: ours must raise the same error
        _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))
        return
    for actual, wanted in zip(ours(x, hx), expected, strict=True):
        torch.testing.assert_close(actual, wanted)


# --------------------------------------------------------------------------- compile and export
#
# torch.nn.LSTM / GRU graph-break under torch.compile; rnnkit's layers are
# custom ops with fake implementations and autograd, one opaque node per layer.


class Forecaster(nn.Module):
    """Encoder + head, the shape of the reference example, on a gated encoder."""

    def __init__(self, kind: str):
        super().__init__()
        kwargs = dict(num_layers=2, batch_first=True, bidirectional=True)
        if kind == "LSTM":
            kwargs["proj_size"] = 3
        self.kind = kind
        self.encoder = getattr(rnnkit, kind)(4, 8, **kwargs)
        H_out = self.encoder.proj_size or self.encoder.hidden_size
        self.head = nn.Linear(2 * H_out, 1)

    def forward(self, x):
        output, final = self.encoder(x)  # (N, L, D * H_out), states (D * num_layers, N, ...)
        states = final if self.kind == "LSTM" else (final,)
        return self.head(output[:, -1]) + sum(s.sum() for s in states)  # (N, 1)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("engine", ["auto", "fused"])
def test_compile_fullgraph_forward_and_backward_match_eager(kind, engine, monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", engine)
    torch.manual_seed(0)
    model = Forecaster(kind)
    x = torch.randn(3, 6, 4, requires_grad=True)  # (batch, window, features)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.sum(), [x, *model.parameters()])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    actual = compiled(x)
    actual_grads = torch.autograd.grad(actual.sum(), [x, *model.parameters()])
    torch.testing.assert_close(actual, expected)
    for got, want in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_export_produces_a_program_that_matches_eager(kind):
    torch.manual_seed(2)
    model = Forecaster(kind)
    x = torch.randn(3, 6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program = torch.export.export(model, (x,))
    ops = re.findall(r"torch\.ops\.rnnkit\.\w+", program.graph_module.code)
    assert len(ops) == model.encoder.num_layers, ops  # one opaque node per layer
    fresh = torch.randn(3, 6, 4)
    torch.testing.assert_close(program.module()(fresh), model(fresh))
