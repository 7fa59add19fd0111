"""Every error path of ``rnnkit.RNN`` against ``torch.nn.RNN``.

For each bad constructor argument or bad forward input, torch is called first
with the same arguments; rnnkit must raise the same exception type with the same
message. A few literal messages copied from torch 2.13 pin the wording itself.
Cases where torch's message comes from deep inside its kernels (hx of the wrong
dtype) or from Python itself (``float(None)``) are collected at the end under
"lenient": there rnnkit must raise the same type and name the problem.
"""

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import rnnkit


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
    """rnnkit_fn raises the type torch_fn raises, with the same message."""
    expected = _raised(torch_fn)
    with pytest.raises(type(expected), match=_exactly(str(expected))):
        rnnkit_fn()


def _case_id(args, kwargs):
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "RNN(" + ", ".join(parts) + ")"


def _pair(*args, **kwargs):
    torch.manual_seed(0)
    ref = nn.RNN(*args, **kwargs)
    torch.manual_seed(0)
    ours = rnnkit.RNN(*args, **kwargs)
    return ref, ours


# --------------------------------------------------------------------------- constructor

# (args, kwargs) that torch.nn.RNN refuses. Cases that would first hit the
# dropout-with-one-layer warning are avoided: warnings are errors here.
BAD_CONSTRUCTOR_ARGS = [
    # dropout: outside [0, 1], a bool, or not a number
    ((3, 4, 2), dict(dropout=-0.1)),
    ((3, 4, 2), dict(dropout=1.1)),
    ((3, 4, 2), dict(dropout=1.0000001)),
    ((3, 4, 2), dict(dropout=-1)),
    ((3, 4, 2), dict(dropout=2)),
    ((3, 4, 2), dict(dropout=True)),
    ((3, 4, 2), dict(dropout=False)),
    ((3, 4, 2), dict(dropout="0.5")),
    ((3, 4, 2), dict(dropout=float("nan"))),
    ((3, 4, 2, "tanh", True, False, 1.5), {}),
    # bias / batch_first: not bool
    ((3, 4), dict(bias=1)),
    ((3, 4), dict(bias=0)),
    ((3, 4), dict(bias="yes")),
    ((3, 4), dict(bias=None)),
    ((3, 4), dict(bias=1.0)),
    ((3, 4), dict(batch_first=1)),
    ((3, 4), dict(batch_first="x")),
    ((3, 4), dict(batch_first=None)),
    ((3, 4, 1, "tanh", True, 0), {}),
    # input_size / hidden_size: not int, or not positive
    ((0, 4), {}),
    ((-1, 4), {}),
    ((2.0, 4), {}),
    (("3", 4), {}),
    ((None, 4), {}),
    ((3, 0), {}),
    ((3, -5), {}),
    ((3, 4.0), {}),
    ((3, "4"), {}),
    ((3, None), {}),
    ((), dict(input_size=3, hidden_size=0)),
    # num_layers: not positive
    ((3, 4, 0), {}),
    ((3, 4, -1), {}),
    ((3, 4), dict(num_layers=0)),
    # nonlinearity: unknown, by keyword or by position
    ((3, 4), dict(nonlinearity="gelu")),
    ((3, 4), dict(nonlinearity="TANH")),
    ((3, 4), dict(nonlinearity="Relu")),
    ((3, 4), dict(nonlinearity=None)),
    ((3, 4, 1, "sigmoid"), {}),
    # proj_size: LSTM only, whatever its value
    ((3, 4), dict(proj_size=2)),
    ((3, 4), dict(proj_size=0)),
    ((3, 4, 2, "relu"), dict(proj_size=1)),
    # several bad arguments: torch's order of checks decides which one is reported
    ((3, 4), dict(proj_size=2, nonlinearity="gelu")),
    ((3, 4), dict(nonlinearity="gelu", dropout=5.0)),
    ((3, 4, 2), dict(dropout=5.0, bias=1)),
    ((3, 4), dict(bias=1, batch_first=1)),
    ((), dict(input_size=0, hidden_size=4, batch_first=1)),
    ((0, 0, 0), {}),
    ((3, 0, 0), {}),
    ((3.0, 0), {}),
    ((3, 4, 0), dict(bias=None)),
    ((0, 4), dict(nonlinearity="gelu")),
]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    BAD_CONSTRUCTOR_ARGS,
    ids=[_case_id(a, k) for a, k in BAD_CONSTRUCTOR_ARGS],
)
def test_constructor_rejects_like_torch(args, kwargs):
    _assert_same_error(lambda: nn.RNN(*args, **kwargs), lambda: rnnkit.RNN(*args, **kwargs))


# Literal messages from torch 2.13, so the wording itself is pinned.
CONSTRUCTOR_LITERALS = [
    (
        dict(dropout=1.5, num_layers=2),
        ValueError,
        "dropout should be a number in range [0, 1] representing the probability of an "
        "element being zeroed",
    ),
    (dict(bias=1), TypeError, "bias should be of type bool, got: int"),
    (dict(batch_first="x"), TypeError, "batch_first should be of type bool, got: str"),
    (dict(input_size=2.0), TypeError, "input_size should be of type int, got: float"),
    (dict(input_size=0), ValueError, "input_size must be greater than zero"),
    (dict(hidden_size=None), TypeError, "hidden_size should be of type int, got: NoneType"),
    (dict(hidden_size=-1), ValueError, "hidden_size must be greater than zero"),
    (dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
    (
        dict(nonlinearity="gelu"),
        ValueError,
        "Unknown nonlinearity 'gelu'. Select from 'tanh' or 'relu'.",
    ),
    (
        dict(proj_size=2),
        ValueError,
        "proj_size argument is only supported for LSTM, not RNN or GRU",
    ),
]


@pytest.mark.parametrize(("overrides", "exc_type", "message"), CONSTRUCTOR_LITERALS)
def test_constructor_messages_literal(overrides, exc_type, message):
    kwargs = dict(input_size=3, hidden_size=4) | overrides
    with pytest.raises(exc_type, match=_exactly(message)):
        rnnkit.RNN(**kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((3, 4, 2), dict(dropout=0)),
        ((3, 4, 2), dict(dropout=1)),
        ((3, 4, 2), dict(dropout=0.0)),
        ((3, 4, 2), dict(dropout=1.0)),
        ((True, 4), {}),  # bool is an int to torch
        ((3, 4, True), {}),
    ],
)
def test_constructor_accepts_what_torch_accepts(args, kwargs):
    ref, ours = _pair(*args, **kwargs)
    assert repr(ours) == repr(ref)


# --------------------------------------------------------------------------- input rank


def _module(**kwargs):
    return _pair(3, 4, **kwargs)


@pytest.mark.parametrize("shape", [(), (3,), (1, 2, 3, 3), (1, 1, 1, 1, 3)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_input_rank_rejected_like_torch(shape, batch_first):
    ref, ours = _module(batch_first=batch_first)
    x = torch.randn(shape)
    _assert_same_error(lambda: ref(x), lambda: ours(x))


def test_input_rank_literal():
    _, ours = _module()
    with pytest.raises(
        ValueError, match=_exactly("RNN: Expected input to be 2D or 3D, got 4D tensor instead")
    ):
        ours(torch.randn(1, 2, 3, 3))


def test_input_rank_checked_before_dtype_and_hx():
    ref, ours = _module()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    hx = torch.randn(7)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


# --------------------------------------------------------------------------- input features


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({}, (5, 2, 5)),
        ({}, (5, 2, 1)),
        ({}, (5, 5)),
        ({}, (1, 1, 0)),
        (dict(batch_first=True), (2, 5, 4)),
        (dict(num_layers=2, bidirectional=True), (5, 2, 8)),  # 8 = D * H_out, not H_in
    ],
)
def test_input_size_mismatch_like_torch(kwargs, shape):
    ref, ours = _module(**kwargs)
    x = torch.randn(shape)
    _assert_same_error(lambda: ref(x), lambda: ours(x))


def test_input_size_literal():
    ours = rnnkit.RNN(4, 3)
    with pytest.raises(
        RuntimeError,
        match=_exactly("input.size(-1) must be equal to input_size. Expected 4, got 5"),
    ):
        ours(torch.randn(6, 2, 5))


# --------------------------------------------------------------------------- input dtype


@pytest.mark.parametrize(
    ("module_dtype", "input_dtype"),
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float32, torch.float16),
        (torch.float32, torch.bfloat16),
        (torch.float32, torch.int64),
        (torch.float64, torch.int32),
    ],
)
@pytest.mark.parametrize("batched", [True, False])
def test_input_dtype_mismatch_like_torch(module_dtype, input_dtype, batched):
    ref, ours = _module(dtype=module_dtype)
    shape = (5, 2, 3) if batched else (5, 3)
    x = torch.ones(shape, dtype=input_dtype)
    _assert_same_error(lambda: ref(x), lambda: ours(x))


def test_input_dtype_literal():
    _, ours = _module()
    message = (
        "RNN input dtype (torch.float64) does not match weight dtype (torch.float32). "
        "Convert input: input.to(torch.float32), or convert model: model.to(torch.float64)"
    )
    with pytest.raises(ValueError, match=_exactly(message)):
        ours(torch.randn(5, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("shape", "hx_shape"),
    [
        ((5, 2, 7), None),  # dtype is checked before input.size(-1)
        ((5, 2, 7), (3, 3, 3)),  # ... and before the hidden size
        ((0, 2, 3), None),  # ... and before the sequence length
    ],
)
def test_input_dtype_checked_first_like_torch(shape, hx_shape):
    ref, ours = _module()
    x = torch.randn(shape, dtype=torch.float64)
    hx = None if hx_shape is None else torch.randn(hx_shape)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


# --------------------------------------------------------------------------- hx rank and shape


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "hx_shape"),
    [
        # batched input needs a 3-D hx
        ({}, (5, 2, 3), (2, 4)),
        ({}, (5, 2, 3), (4,)),
        ({}, (5, 2, 3), (1, 1, 2, 4)),
        ({}, (5, 2, 3), ()),
        # unbatched input needs a 2-D hx
        ({}, (5, 3), (1, 1, 4)),
        ({}, (5, 3), (4,)),
        ({}, (5, 3), ()),
        (dict(batch_first=True), (5, 3), (1, 1, 4)),
        (dict(batch_first=True), (2, 5, 3), (1, 4)),
    ],
)
def test_hx_rank_rejected_like_torch(kwargs, x_shape, hx_shape):
    ref, ours = _module(**kwargs)
    x, hx = torch.randn(x_shape), torch.randn(hx_shape)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "hx_shape"),
    [
        ({}, (5, 2, 3), (1, 3, 4)),  # batch
        ({}, (5, 2, 3), (2, 2, 4)),  # layers
        ({}, (5, 2, 3), (1, 2, 5)),  # hidden
        ({}, (5, 2, 3), (2, 3, 5)),  # everything
        (dict(batch_first=True), (2, 5, 3), (1, 5, 4)),  # batch is dim 0 here
        (dict(batch_first=True), (2, 5, 3), (2, 1, 4)),
        (dict(num_layers=2, bidirectional=True), (5, 2, 3), (2, 2, 4)),
        (dict(num_layers=2, bidirectional=True), (5, 2, 3), (4, 2, 8)),
        (dict(bidirectional=True), (5, 2, 3), (1, 2, 4)),
        ({}, (5, 3), (2, 4)),  # unbatched
        ({}, (5, 3), (1, 5)),
        (dict(num_layers=3), (5, 3), (1, 4)),
        ({}, (5, 0, 3), (1, 1, 4)),  # empty batch still checks hx
        ({}, (0, 2, 3), (1, 3, 4)),  # hx is checked before the sequence length
    ],
)
def test_hx_shape_rejected_like_torch(kwargs, x_shape, hx_shape):
    ref, ours = _module(**kwargs)
    x, hx = torch.randn(x_shape), torch.randn(hx_shape)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


def test_hx_shape_literal():
    _, ours = _module()
    with pytest.raises(
        RuntimeError, match=_exactly("Expected hidden size (1, 2, 4), got [1, 3, 4]")
    ):
        ours(torch.randn(5, 2, 3), torch.randn(1, 3, 4))


def test_hx_rank_literals():
    _, ours = _module()
    with pytest.raises(
        RuntimeError,
        match=_exactly("For batched 3-D input, hx should also be 3-D but got 2-D tensor"),
    ):
        ours(torch.randn(5, 2, 3), torch.randn(2, 4))
    with pytest.raises(
        RuntimeError,
        match=_exactly("For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"),
    ):
        ours(torch.randn(5, 3), torch.randn(1, 1, 4))


# --------------------------------------------------------------------------- packed input


def _packed(enforce_sorted=True, features=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randn(n, features, generator=gen, dtype=dtype) for n in (4, 2, 3)]
    if enforce_sorted:
        seqs.sort(key=len, reverse=True)
    return pack_sequence(seqs, enforce_sorted=enforce_sorted)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize(
    ("kwargs", "hx_shape"),
    [
        ({}, (1, 2, 4)),
        ({}, (1, 3, 5)),
        ({}, (2, 3, 4)),
        ({}, (3, 4)),  # a packed batch has no unbatched form
        (dict(num_layers=2), (1, 3, 4)),
        (dict(bidirectional=True), (1, 3, 4)),
    ],
)
def test_packed_input_with_wrong_hx_like_torch(enforce_sorted, kwargs, hx_shape):
    ref, ours = _module(**kwargs)
    x, hx = _packed(enforce_sorted), torch.randn(hx_shape)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


def test_packed_wrong_hx_literal():
    _, ours = _module()
    with pytest.raises(
        RuntimeError, match=_exactly("Expected hidden size (1, 3, 4), got [1, 2, 4]")
    ):
        ours(_packed(), torch.randn(1, 2, 4))


@pytest.mark.parametrize(
    "make",
    [
        lambda: _packed(features=5),
        lambda: _packed(dtype=torch.float64),
        lambda: _packed(enforce_sorted=False, features=2),
        lambda: pack_padded_sequence(torch.randn(4, 2, 6), [4, 2]),
    ],
)
def test_packed_input_checks_like_torch(make):
    ref, ours = _module()
    x = make()
    _assert_same_error(lambda: ref(x), lambda: ours(x))


# --------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize(
    ("kwargs", "shape", "with_hx"),
    [
        ({}, (0, 2, 3), False),
        ({}, (0, 2, 3), True),
        ({}, (0, 3), False),
        ({}, (0, 3), True),
        (dict(batch_first=True), (2, 0, 3), False),
        (dict(num_layers=2, bidirectional=True), (0, 2, 3), False),
        ({}, (0, 0, 3), False),
    ],
)
def test_zero_length_sequence_rejected_like_torch(kwargs, shape, with_hx):
    ref, ours = _module(**kwargs)
    x = torch.randn(shape)
    hx = None
    if with_hx:
        num_directions = 2 if kwargs.get("bidirectional") else 1
        layers = kwargs.get("num_layers", 1) * num_directions
        batch_dim = 0 if kwargs.get("batch_first") else 1
        hx = torch.zeros(layers, shape[batch_dim], 4) if len(shape) == 3 else torch.zeros(layers, 4)
    _assert_same_error(lambda: ref(x, hx), lambda: ours(x, hx))


def test_zero_length_literal():
    _, ours = _module()
    with pytest.raises(
        RuntimeError, match=_exactly("Expected sequence length to be larger than 0 in RNN")
    ):
        ours(torch.randn(0, 2, 3))


@pytest.mark.parametrize(
    ("kwargs", "shape", "with_hx"),
    [
        ({}, (5, 0, 3), False),
        ({}, (5, 0, 3), True),
        (dict(batch_first=True), (0, 5, 3), False),
        (dict(batch_first=True), (0, 5, 3), True),
        (dict(num_layers=2, bidirectional=True, nonlinearity="relu"), (5, 0, 3), False),
        (dict(num_layers=3, bias=False), (1, 0, 3), True),
    ],
)
def test_zero_batch_returns_empty_outputs_like_torch(kwargs, shape, with_hx):
    ref, ours = _module(**kwargs)
    x = torch.randn(shape, requires_grad=True)
    hx = None
    if with_hx:
        num_directions = 2 if kwargs.get("bidirectional") else 1
        hx = torch.zeros(kwargs.get("num_layers", 1) * num_directions, 0, 4)
    out_ref, h_ref = ref(x, hx)
    out_ours, h_ours = ours(x, hx)
    assert out_ours.shape == out_ref.shape
    assert h_ours.shape == h_ref.shape
    assert out_ours.dtype == out_ref.dtype and h_ours.dtype == h_ref.dtype
    # and gradients flow through an empty batch without error, as in torch
    (out_ours.sum() + h_ours.sum()).backward()
    assert x.grad is not None and x.grad.shape == x.shape


# --------------------------------------------------------------------------- lenient cases
#
# Here torch's message is not an RNN message: it comes from Python (`float(None)`,
# `range(2.0)`, a signature mismatch in torch's private RNNBase) or from a matmul
# deep in its kernels. rnnkit may word these better, but must raise the same type
# and say what is wrong.


LENIENT_CONSTRUCTOR_ARGS = [
    # (args, kwargs, words any one of which the message must contain)
    ((3, 4, 2), dict(dropout="a"), ("dropout", "could not convert")),
    ((3, 4, 2), dict(dropout=None), ("dropout", "NoneType")),
    ((3, 4, 2), dict(dropout=[0.5]), ("dropout", "list")),
    ((3, 4, 2.0), {}, ("num_layers", "float")),
    ((3, 4, "2"), {}, ("num_layers", "str")),
    ((3, 4, None), {}, ("num_layers", "NoneType")),
    ((3, 4), dict(foo=1), ("foo",)),
    ((3, 4), dict(input_size=3), ("input_size",)),
    ((3,), {}, ("hidden_size",)),
    ((), {}, ("input_size",)),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "names"),
    LENIENT_CONSTRUCTOR_ARGS,
    ids=[_case_id(a, k) for a, k, _ in LENIENT_CONSTRUCTOR_ARGS],
)
def test_lenient_constructor_errors(args, kwargs, names):
    expected = _raised(lambda: nn.RNN(*args, **kwargs))
    with pytest.raises(type(expected)) as info:
        rnnkit.RNN(*args, **kwargs)
    message = str(info.value)
    assert message == str(expected) or any(name in message for name in names), message


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "hx_shape", "hx_dtype"),
    [
        ({}, (5, 2, 3), (1, 2, 4), torch.float64),
        ({}, (5, 3), (1, 4), torch.float64),
        (dict(num_layers=2, bidirectional=True), (5, 2, 3), (4, 2, 4), torch.float16),
        (dict(dtype=torch.float64), (5, 2, 3), (1, 2, 4), torch.float32),
    ],
)
def test_lenient_hx_dtype_mismatch(kwargs, x_shape, hx_shape, hx_dtype):
    ref, ours = _module(**kwargs)
    x = torch.randn(x_shape, dtype=kwargs.get("dtype", torch.float32))
    hx = torch.randn(hx_shape, dtype=hx_dtype)
    expected = _raised(lambda: ref(x, hx))
    with pytest.raises(type(expected), match=r"(?i)dtype|double|float|half") as info:
        ours(x, hx)
    assert "dtype" in str(info.value).lower() or str(info.value) == str(expected)


def test_lenient_hx_dtype_on_packed_input():
    ref, ours = _module()
    x, hx = _packed(), torch.randn(1, 3, 4, dtype=torch.float64)
    expected = _raised(lambda: ref(x, hx))
    with pytest.raises(type(expected)) as info:
        ours(x, hx)
    assert "dtype" in str(info.value).lower() or str(info.value) == str(expected)
