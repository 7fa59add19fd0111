"""Every error path of ``rnnkit.LSTM`` and ``rnnkit.GRU`` against ``torch.nn.LSTM`` / ``GRU``.

For each bad constructor argument or bad forward input, torch is called first
with the same arguments; rnnkit must raise the same exception type with the same
message, after the same warnings. A few literal messages copied from torch 2.13
pin the wording itself. Where torch's message comes from deep inside its
kernels (states of the wrong dtype, the states of a packed LSTM) or from Python
itself (``'<' not supported``), the case is "lenient": rnnkit must raise the
same type and name the problem. One deliberate difference: torch's LSTM skips
its Python checks on a PackedSequence (it sometimes runs one with the wrong
number of features, reading past the input); rnnkit checks a packed LSTM input
as torch checks every other input, with those checks' types and messages.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import rnnkit

KINDS = ("LSTM", "GRU")
ENGINES = ("auto", "compiled", "fused", "reference")

# torch's own LSTM with proj_size warns that oneDNN cannot run it; that is not
# an error path, and rnnkit need not say it.
ONEDNN_WARNING = "LSTM with projections is not supported with oneDNN"
pytestmark = pytest.mark.filterwarnings(f"ignore:{ONEDNN_WARNING}:UserWarning")


def _outcome(fn) -> tuple[Exception | None, list[tuple[type, str]]]:
    """What `fn` raises (None if nothing) and the warnings it gives on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except Exception as exc:
            error = exc
        else:
            error = None
    given = [(w.category, str(w.message)) for w in caught if ONEDNN_WARNING not in str(w.message)]
    return error, given


def _raised(fn) -> Exception:
    """The exception `fn` raises; fails the test if it raises none."""
    error, _ = _outcome(fn)
    assert error is not None, "expected an exception, got none"
    return error


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _assert_same_error(torch_fn, rnnkit_fn) -> None:
    """rnnkit_fn raises the type torch_fn raises, with the same message and warnings."""
    expected, expected_warnings = _outcome(torch_fn)
    assert expected is not None, "torch raised nothing: the case is wrong"
    actual, actual_warnings = _outcome(rnnkit_fn)
    assert actual is not None, f"torch raised {expected!r}, rnnkit raised nothing"
    assert type(actual) is type(expected), f"rnnkit raised {actual!r}, torch {expected!r}"
    assert str(actual) == str(expected), f"rnnkit: {str(actual)!r}\ntorch:  {str(expected)!r}"
    assert actual_warnings == expected_warnings


def _assert_lenient_error(torch_fn, rnnkit_fn, words) -> None:
    """Same type as torch; the message is torch's or contains one of `words`."""
    expected = _raised(torch_fn)
    with pytest.raises(type(expected)) as info:
        rnnkit_fn()
    message = str(info.value)
    assert message == str(expected) or any(w in message for w in words), (message, expected)


def _case_id(kind, args, kwargs) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{kind}(" + ", ".join(parts) + ")"


# --------------------------------------------------------------------------- constructor

# (args, kwargs) that torch.nn.LSTM and torch.nn.GRU both refuse. Positional
# arguments follow their order: input_size, hidden_size, num_layers, bias,
# batch_first, dropout, bidirectional (no nonlinearity).
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
    ((3, 4, 2, True, False, 1.5), {}),
    # bias / batch_first: not bool
    ((3, 4), dict(bias=1)),
    ((3, 4), dict(bias=0)),
    ((3, 4), dict(bias="yes")),
    ((3, 4), dict(bias=None)),
    ((3, 4), dict(bias=1.0)),
    ((3, 4, 1, 1), {}),
    ((3, 4), dict(batch_first=1)),
    ((3, 4), dict(batch_first="x")),
    ((3, 4), dict(batch_first=None)),
    ((3, 4, 1, True, 0), {}),
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
    # several bad arguments: torch's order of checks decides which one is reported
    ((3, 4, 2), dict(dropout=5.0, bias=1)),
    ((3, 4), dict(bias=1, batch_first=1)),
    ((), dict(input_size=0, hidden_size=4, batch_first=1)),
    ((0, 0, 0), {}),
    ((3, 0, 0), {}),
    ((3.0, 0), {}),
    ((3, 4, 0), dict(bias=None)),
    # a legal but odd dropout warns before the bad bias is refused
    ((3, 4), dict(dropout=0.5, bias=1)),
    ((3, 4, 1, True, "no", 0.25), {}),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    BAD_CONSTRUCTOR_ARGS,
    ids=[_case_id("", a, k) for a, k in BAD_CONSTRUCTOR_ARGS],
)
def test_constructor_rejects_like_torch(kind, args, kwargs):
    _assert_same_error(
        lambda: getattr(nn, kind)(*args, **kwargs), lambda: getattr(rnnkit, kind)(*args, **kwargs)
    )


BAD_LSTM_PROJ_SIZE = [
    ((3, 4), dict(proj_size=-1)),
    ((3, 4), dict(proj_size=-7)),
    ((3, 4), dict(proj_size=4)),  # equal to hidden_size
    ((3, 4), dict(proj_size=5)),
    ((3, 1), dict(proj_size=1)),
    ((3, 4, 1, True, False, 0.0, False, 4), {}),  # proj_size is the eighth positional
    ((3, 4, 2, True, False, 0.0, True, -2), {}),
    # the order of checks: dropout, bias, sizes, num_layers, then proj_size
    ((3, 4), dict(proj_size=9, dropout=2.0)),
    ((3, 4), dict(proj_size=9, bias=1)),
    ((3, 0), dict(proj_size=-1)),
    ((3, 4, 0), dict(proj_size=9)),
    ((3, 4), dict(proj_size=-1, batch_first=None)),
]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    BAD_LSTM_PROJ_SIZE,
    ids=[_case_id("LSTM", a, k) for a, k in BAD_LSTM_PROJ_SIZE],
)
def test_lstm_proj_size_rejected_like_torch(args, kwargs):
    _assert_same_error(lambda: nn.LSTM(*args, **kwargs), lambda: rnnkit.LSTM(*args, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(proj_size=2),
        dict(proj_size=0),  # whatever its value
        dict(proj_size=-1),
        dict(proj_size=2, dropout=5.0),  # checked before everything else
        dict(proj_size=2, bias=1),
    ],
)
def test_gru_refuses_proj_size_like_torch(kwargs):
    _assert_same_error(lambda: nn.GRU(3, 4, **kwargs), lambda: rnnkit.GRU(3, 4, **kwargs))


# Literal messages from torch 2.13, so the wording itself is pinned.
CONSTRUCTOR_LITERALS = [
    (
        "LSTM",
        dict(proj_size=-1),
        ValueError,
        "proj_size should be a positive integer or zero to disable projections",
    ),
    ("LSTM", dict(proj_size=4), ValueError, "proj_size has to be smaller than hidden_size"),
    (
        "GRU",
        dict(proj_size=2),
        ValueError,
        "proj_size argument is only supported for LSTM, not RNN or GRU",
    ),
    (
        "LSTM",
        dict(dropout=1.5, num_layers=2),
        ValueError,
        "dropout should be a number in range [0, 1] representing the probability of an "
        "element being zeroed",
    ),
    ("GRU", dict(bias=1), TypeError, "bias should be of type bool, got: int"),
    ("LSTM", dict(batch_first="x"), TypeError, "batch_first should be of type bool, got: str"),
    ("GRU", dict(input_size=2.0), TypeError, "input_size should be of type int, got: float"),
    ("LSTM", dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    ("GRU", dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
]


@pytest.mark.parametrize(("kind", "overrides", "exc_type", "message"), CONSTRUCTOR_LITERALS)
def test_constructor_messages_literal(kind, overrides, exc_type, message):
    kwargs = dict(input_size=3, hidden_size=4) | overrides
    with pytest.raises(exc_type, match=_exactly(message)):
        getattr(rnnkit, kind)(**kwargs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((3, 4, 2), dict(dropout=0)),
        ((3, 4, 2), dict(dropout=1)),
        ((3, 4, 2), dict(dropout=1.0)),
        ((True, 4), {}),  # bool is an int to torch
        ((3, 4, True), {}),
        ((3, 4, 2, False, True, 0.5, True), {}),
    ],
)
def test_constructor_accepts_what_torch_accepts(kind, args, kwargs):
    theirs = getattr(nn, kind)(*args, **kwargs)
    ours = getattr(rnnkit, kind)(*args, **kwargs)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("proj_size", [0, 1, 3])
def test_lstm_accepts_every_proj_size_torch_accepts(proj_size):
    theirs = nn.LSTM(3, 4, proj_size=proj_size)
    ours = rnnkit.LSTM(3, 4, proj_size=proj_size)
    assert repr(ours) == repr(theirs)
    assert ours.proj_size == proj_size


# --------------------------------------------------------------------------- warnings


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((3, 4), dict(dropout=0.5)),
        ((3, 4), dict(dropout=1)),
        ((3, 4, 1, True, False, 0.25), {}),
        ((3, 4), dict(dropout=1e-9, bidirectional=True)),
    ],
)
def test_dropout_with_one_layer_warns_like_torch(kind, args, kwargs):
    _, expected = _outcome(lambda: getattr(nn, kind)(*args, **kwargs))
    error, actual = _outcome(lambda: getattr(rnnkit, kind)(*args, **kwargs))
    assert error is None
    assert len(expected) == 1
    assert actual == expected


def test_dropout_warning_literal():
    with pytest.warns(UserWarning) as record:
        rnnkit.LSTM(3, 4, dropout=0.5)
    assert [str(w.message) for w in record] == [
        "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
        "expects num_layers greater than 1, but got dropout=0.5 and num_layers=1"
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("num_layers", "dropout"), [(1, 0.0), (1, 0), (2, 0.5), (3, 1.0)])
def test_no_dropout_warning_where_torch_gives_none(kind, num_layers, dropout):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(rnnkit, kind)(3, 4, num_layers, dropout=dropout)


# --------------------------------------------------------------------------- lenient constructor
#
# torch's message comes from Python (a comparison of str with int, a signature
# mismatch in torch's private RNNBase) or from torch.empty.

LENIENT_CONSTRUCTOR_ARGS = [
    # (kind, args, kwargs, words any one of which the message must contain)
    ("LSTM", (3, 4), dict(proj_size=1.5), ("proj_size", "float")),
    ("LSTM", (3, 4), dict(proj_size="1"), ("proj_size", "str")),
    ("LSTM", (3, 4), dict(proj_size=None), ("proj_size", "NoneType")),
    ("LSTM", (3, 4), dict(nonlinearity="tanh"), ("nonlinearity",)),
    ("GRU", (3, 4), dict(nonlinearity="relu"), ("nonlinearity",)),
    ("LSTM", (3, 4), dict(foo=1), ("foo",)),
    ("GRU", (3, 4), dict(foo=1), ("foo",)),
    ("LSTM", (3, 4), dict(input_size=3), ("input_size",)),
    ("GRU", (3,), {}, ("hidden_size",)),
    ("LSTM", (), {}, ("input_size",)),
    ("GRU", (3, 4, 2.0), {}, ("num_layers", "float")),
    ("LSTM", (3, 4, None), {}, ("num_layers", "NoneType")),
    ("LSTM", (3, 4, 2), dict(dropout=None), ("dropout", "NoneType")),
]


@pytest.mark.parametrize(
    ("kind", "args", "kwargs", "words"),
    LENIENT_CONSTRUCTOR_ARGS,
    ids=[_case_id(k, a, kw) for k, a, kw, _ in LENIENT_CONSTRUCTOR_ARGS],
)
def test_lenient_constructor_errors(kind, args, kwargs, words):
    _assert_lenient_error(
        lambda: getattr(nn, kind)(*args, **kwargs),
        lambda: getattr(rnnkit, kind)(*args, **kwargs),
        words,
    )


# --------------------------------------------------------------------------- forward: input


def _pair(kind: str, *args, **kwargs):
    torch.manual_seed(0)
    theirs = getattr(nn, kind)(*args, **kwargs)
    torch.manual_seed(0)
    ours = getattr(rnnkit, kind)(*args, **kwargs)
    return theirs, ours


def _module(kind: str, **kwargs):
    """A (torch, rnnkit) pair with H_in = 3, hidden_size = 4."""
    return _pair(kind, 3, 4, **kwargs)


def _hx(kind: str, h_shape, c_shape=None, dtype=torch.float32):
    """The hx argument: a tensor (GRU) or an (h_0, c_0) tuple (LSTM; c_0 shaped like h_0
    unless `c_shape` says otherwise)."""
    h = torch.randn(h_shape, dtype=dtype)
    if kind == "GRU":
        return h
    return h, torch.randn(h_shape if c_shape is None else c_shape, dtype=dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(), (3,), (1, 2, 3, 3), (1, 1, 1, 1, 3)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_input_rank_rejected_like_torch(kind, shape, batch_first):
    theirs, ours = _module(kind, batch_first=batch_first)
    x = torch.randn(shape)
    _assert_same_error(lambda: theirs(x), lambda: ours(x))


@pytest.mark.parametrize("kind", KINDS)
def test_input_rank_checked_before_dtype_and_hx(kind):
    theirs, ours = _module(kind)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    hx = _hx(kind, (7,))
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("LSTM", "LSTM: Expected input to be 2D or 3D, got 4D instead"),
        ("GRU", "GRU: Expected input to be 2D or 3D, got 1D instead"),
    ],
)
def test_input_rank_literal(kind, message):
    _, ours = _module(kind)
    shape = (1, 2, 3, 3) if kind == "LSTM" else (3,)
    with pytest.raises(ValueError, match=_exactly(message)):
        ours(torch.randn(shape))


@pytest.mark.parametrize("kind", KINDS)
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
def test_input_size_mismatch_like_torch(kind, kwargs, shape):
    theirs, ours = _module(kind, **kwargs)
    x = torch.randn(shape)
    _assert_same_error(lambda: theirs(x), lambda: ours(x))


def test_input_size_mismatch_with_projection_like_torch():
    theirs, ours = _module("LSTM", num_layers=2, bidirectional=True, proj_size=2)
    x = torch.randn(5, 2, 4)  # 4 = D * proj_size, the upper layers' input, not H_in
    _assert_same_error(lambda: theirs(x), lambda: ours(x))


def test_input_size_literal():
    with pytest.raises(
        RuntimeError,
        match=_exactly("input.size(-1) must be equal to input_size. Expected 4, got 5"),
    ):
        rnnkit.GRU(4, 3)(torch.randn(6, 2, 5))


@pytest.mark.parametrize("kind", KINDS)
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
def test_input_dtype_mismatch_like_torch(kind, module_dtype, input_dtype, batched):
    theirs, ours = _module(kind, dtype=module_dtype)
    x = torch.ones((5, 2, 3) if batched else (5, 3), dtype=input_dtype)
    _assert_same_error(lambda: theirs(x), lambda: ours(x))


def test_input_dtype_literal():
    message = (
        "RNN input dtype (torch.float64) does not match weight dtype (torch.float32). "
        "Convert input: input.to(torch.float32), or convert model: model.to(torch.float64)"
    )
    with pytest.raises(ValueError, match=_exactly(message)):
        rnnkit.LSTM(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("shape", "hx_shape"),
    [
        ((5, 2, 7), None),  # dtype is checked before input.size(-1)
        ((5, 2, 7), (3, 3, 3)),  # ... and before the hidden size
        ((0, 2, 3), None),  # ... and before the sequence length
    ],
)
def test_input_dtype_checked_first_like_torch(kind, shape, hx_shape):
    theirs, ours = _module(kind)
    x = torch.randn(shape, dtype=torch.float64)
    hx = None if hx_shape is None else _hx(kind, hx_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


# --------------------------------------------------------------------------- forward: states


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
        (dict(batch_first=True), (5, 3), (1, 1, 4)),
        (dict(batch_first=True), (2, 5, 3), (1, 4)),
    ],
)
def test_gru_hx_rank_rejected_like_torch(kwargs, x_shape, hx_shape):
    theirs, ours = _module("GRU", **kwargs)
    x, hx = torch.randn(x_shape), torch.randn(hx_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "h_shape", "c_shape"),
    [
        ({}, (5, 2, 3), (2, 4), (1, 2, 4)),  # (2-D, 3-D)
        ({}, (5, 2, 3), (1, 2, 4), (2, 4)),  # (3-D, 2-D)
        ({}, (5, 2, 3), (2, 4), (2, 4)),
        ({}, (5, 2, 3), (1, 1, 2, 4), (1, 2, 4)),
        ({}, (5, 2, 3), (4,), (4,)),
        ({}, (5, 3), (1, 1, 4), (1, 4)),
        ({}, (5, 3), (1, 4), (1, 1, 4)),
        ({}, (5, 3), (4,), (1, 4)),
        (dict(batch_first=True), (2, 5, 3), (1, 4), (1, 4)),
        (dict(proj_size=2), (5, 2, 3), (1, 2), (1, 2, 4)),
    ],
)
def test_lstm_state_ranks_rejected_like_torch(kwargs, x_shape, h_shape, c_shape):
    theirs, ours = _module("LSTM", **kwargs)
    x, hx = torch.randn(x_shape), _hx("LSTM", h_shape, c_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


def test_state_rank_literals():
    lstm, gru = rnnkit.LSTM(3, 4), rnnkit.GRU(3, 4)
    with pytest.raises(
        RuntimeError,
        match=_exactly(
            "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 3-D) tensors"
        ),
    ):
        lstm(torch.randn(5, 2, 3), (torch.randn(2, 4), torch.randn(1, 2, 4)))
    with pytest.raises(
        RuntimeError,
        match=_exactly(
            "For unbatched 2-D input, hx and cx should also be 2-D but got (2-D, 3-D) tensors"
        ),
    ):
        lstm(torch.randn(5, 3), (torch.randn(1, 4), torch.randn(1, 1, 4)))
    with pytest.raises(
        RuntimeError,
        match=_exactly("For batched 3-D input, hx should also be 3-D but got 2-D tensor"),
    ):
        gru(torch.randn(5, 2, 3), torch.randn(2, 4))


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "hx_shape"),
    [
        ({}, (5, 2, 3), (1, 3, 4)),  # batch
        ({}, (5, 2, 3), (2, 2, 4)),  # layers
        ({}, (5, 2, 3), (1, 2, 5)),  # hidden
        ({}, (5, 2, 3), (2, 3, 5)),  # everything
        (dict(batch_first=True), (2, 5, 3), (1, 5, 4)),  # batch is dim 0 here
        (dict(num_layers=2, bidirectional=True), (5, 2, 3), (2, 2, 4)),
        (dict(num_layers=2, bidirectional=True), (5, 2, 3), (4, 2, 8)),
        (dict(bidirectional=True), (5, 2, 3), (1, 2, 4)),
        ({}, (5, 3), (2, 4)),  # unbatched
        ({}, (5, 3), (1, 5)),
        (dict(num_layers=3), (5, 3), (1, 4)),
        ({}, (5, 0, 3), (1, 1, 4)),  # an empty batch still checks hx
        ({}, (0, 2, 3), (1, 3, 4)),  # hx is checked before the sequence length
    ],
)
def test_gru_hx_shape_rejected_like_torch(kwargs, x_shape, hx_shape):
    theirs, ours = _module("GRU", **kwargs)
    x, hx = torch.randn(x_shape), torch.randn(hx_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize(
    ("kwargs", "x_shape", "h_shape", "c_shape"),
    [
        ({}, (5, 2, 3), (1, 3, 4), (1, 2, 4)),  # hidden[0]: batch
        ({}, (5, 2, 3), (2, 2, 4), (1, 2, 4)),  # hidden[0]: layers
        ({}, (5, 2, 3), (1, 2, 5), (1, 2, 4)),  # hidden[0]: features
        ({}, (5, 2, 3), (1, 2, 4), (1, 3, 4)),  # hidden[1]: batch
        ({}, (5, 2, 3), (1, 2, 4), (1, 2, 5)),  # hidden[1]: features
        ({}, (5, 2, 3), (1, 3, 4), (1, 3, 5)),  # both: hidden[0] is reported
        (dict(batch_first=True), (2, 5, 3), (1, 5, 4), (1, 5, 4)),
        (dict(num_layers=2, bidirectional=True), (5, 2, 3), (4, 2, 4), (2, 2, 4)),
        (dict(bidirectional=True), (5, 2, 3), (1, 2, 4), (1, 2, 4)),
        # with a projection h has proj_size features and c hidden_size
        (dict(proj_size=2), (5, 2, 3), (1, 2, 4), (1, 2, 4)),
        (dict(proj_size=2), (5, 2, 3), (1, 2, 2), (1, 2, 2)),
        (dict(proj_size=3, num_layers=2), (5, 2, 3), (2, 2, 3), (2, 2, 3)),
        ({}, (5, 3), (2, 4), (1, 4)),  # unbatched
        ({}, (5, 3), (1, 4), (1, 5)),
        (dict(proj_size=2), (5, 3), (1, 2), (1, 2)),
        ({}, (5, 0, 3), (1, 1, 4), (1, 0, 4)),  # an empty batch still checks hx
        ({}, (0, 2, 3), (1, 2, 4), (1, 3, 4)),  # hx is checked before the sequence length
    ],
)
def test_lstm_state_shapes_rejected_like_torch(kwargs, x_shape, h_shape, c_shape):
    theirs, ours = _module("LSTM", **kwargs)
    x, hx = torch.randn(x_shape), _hx("LSTM", h_shape, c_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


def test_state_shape_literals():
    lstm = rnnkit.LSTM(3, 4, proj_size=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(
        RuntimeError, match=_exactly("Expected hidden[0] size (1, 2, 2), got [1, 2, 4]")
    ):
        lstm(x, (torch.randn(1, 2, 4), torch.randn(1, 2, 4)))
    with pytest.raises(
        RuntimeError, match=_exactly("Expected hidden[1] size (1, 2, 4), got [1, 2, 2]")
    ):
        lstm(x, (torch.randn(1, 2, 2), torch.randn(1, 2, 2)))
    with pytest.raises(
        RuntimeError, match=_exactly("Expected hidden size (1, 2, 4), got [1, 3, 4]")
    ):
        rnnkit.GRU(3, 4)(x, torch.randn(1, 3, 4))


# Lenient: an LSTM's hx that is not a pair. torch indexes hx[0] and hx[1] and
# leaves the rest to its kernel ("lstm expects two hidden states").
@pytest.mark.parametrize(
    "make_hx",
    [
        lambda: torch.randn(1, 2, 4),  # a tensor, as for GRU
        lambda: (torch.randn(1, 2, 4),),
        lambda: (torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4)),
    ],
    ids=["tensor", "1-tuple", "3-tuple"],
)
def test_lenient_lstm_hx_that_is_not_a_pair(make_hx):
    theirs, ours = _module("LSTM")
    x, hx = torch.randn(5, 2, 3), make_hx()
    _assert_lenient_error(
        lambda: theirs(x, hx), lambda: ours(x, hx), ("hx", "hidden", "two", "tuple", "index")
    )


@pytest.mark.parametrize(
    ("kind", "kwargs", "x_shape", "h_dtype", "c_dtype"),
    [
        ("GRU", {}, (5, 2, 3), torch.float64, None),
        ("GRU", {}, (5, 3), torch.float64, None),
        ("GRU", dict(num_layers=2, bidirectional=True), (5, 2, 3), torch.float16, None),
        ("GRU", dict(dtype=torch.float64), (5, 2, 3), torch.float32, None),
        ("LSTM", {}, (5, 2, 3), torch.float64, torch.float32),
        ("LSTM", {}, (5, 2, 3), torch.float32, torch.float64),
        ("LSTM", {}, (5, 3), torch.float64, torch.float64),
        ("LSTM", dict(dtype=torch.float64), (5, 2, 3), torch.float32, torch.float32),
    ],
)
def test_lenient_state_dtype_mismatch(kind, kwargs, x_shape, h_dtype, c_dtype):
    """torch's message comes from its kernels (a matmul or oneDNN); rnnkit must say dtype."""
    theirs, ours = _module(kind, **kwargs)
    dtype = kwargs.get("dtype", torch.float32)
    x = torch.randn(x_shape, dtype=dtype)
    shape = (kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1),)
    shape += x_shape[1:2] if len(x_shape) == 3 else ()
    hx = torch.randn(*shape, 4, dtype=h_dtype)
    if kind == "LSTM":
        hx = (hx, torch.randn(*shape, 4, dtype=c_dtype))
    _assert_lenient_error(lambda: theirs(x, hx), lambda: ours(x, hx), ("dtype", "Double"))


# --------------------------------------------------------------------------- packed input


def _packed(enforce_sorted=True, features=3, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randn(n, features, generator=generator, dtype=dtype) for n in (4, 2, 3)]
    if enforce_sorted:
        sequences.sort(key=len, reverse=True)
    return pack_sequence(sequences, enforce_sorted=enforce_sorted)


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
def test_gru_packed_input_with_wrong_hx_like_torch(enforce_sorted, kwargs, hx_shape):
    theirs, ours = _module("GRU", **kwargs)
    x, hx = _packed(enforce_sorted), torch.randn(hx_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize(
    "make",
    [
        lambda: _packed(features=5),
        lambda: _packed(dtype=torch.float64),
        lambda: _packed(enforce_sorted=False, features=2),
        lambda: pack_padded_sequence(torch.randn(4, 2, 6), [4, 2]),
    ],
    ids=["features", "dtype", "unsorted-features", "padded-features"],
)
def test_gru_packed_input_checks_like_torch(make):
    theirs, ours = _module("GRU")
    x = make()
    _assert_same_error(lambda: theirs(x), lambda: ours(x))


# torch's LSTM skips its Python checks on a packed input and leaves the states
# to its kernels, whose messages do not name the problem ("got an incorrect
# number of RNN parameters" for a wrong c_0). Lenient: the same type, and a
# message that names it.
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize(
    ("kwargs", "h_shape", "c_shape"),
    [
        ({}, (1, 2, 4), (1, 3, 4)),
        ({}, (1, 3, 4), (1, 3, 5)),
        (dict(proj_size=2), (1, 3, 4), (1, 3, 4)),
    ],
)
def test_lenient_lstm_packed_input_with_wrong_states(enforce_sorted, kwargs, h_shape, c_shape):
    theirs, ours = _module("LSTM", **kwargs)
    x, hx = _packed(enforce_sorted), _hx("LSTM", h_shape, c_shape)
    words = ("hidden", "size", "Dimension", "dimension", "INDICES", "index")
    _assert_lenient_error(lambda: theirs(x, hx), lambda: ours(x, hx), words)


@pytest.mark.parametrize(
    ("x_shape", "hx_shape"),
    [((5, 3, 3), (1, 3, 4)), ((5, 3), (1, 3, 4)), ((5, 3, 3), (2, 3, 4)), ((5, 3), (2, 3, 4)),
     ((5, 3, 3), (3, 4)), ((5, 3), (1, 4)), ((5, 3, 3), ())],
    ids=str,
)  # fmt: skip
def test_lstm_given_one_tensor_as_hx_raises_what_torch_raises(x_shape, hx_shape):
    """torch's LSTM indexes ``hx`` (``hx[0]``, ``hx[1]``): one tensor of one row raises
    its IndexError, of two rows the message for states of the wrong rank."""
    theirs, ours = _module("LSTM")
    x, hx = torch.randn(x_shape), torch.randn(hx_shape)
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_lstm_state_of_the_wrong_rank_gets_the_unpacked_message(enforce_sorted):
    """torch's LSTM fails inside its kernel (IndexError); rnnkit says what is wrong."""
    x, hx = _packed(enforce_sorted), _hx("LSTM", (3, 4), (1, 3, 4))
    # Unsorted input permutes the states before the check, as torch's GRU does.
    got = "[3, 4]" if enforce_sorted else "[3, 3]"
    with pytest.raises(
        RuntimeError, match=_exactly(f"Expected hidden[0] size (1, 3, 4), got {got}")
    ):
        rnnkit.LSTM(3, 4)(x, hx)


def test_packed_lstm_input_of_the_wrong_dtype_is_checked_as_gru_s():
    """torch's LSTM fails in a matmul; rnnkit raises what torch's GRU raises for it."""
    x = _packed(dtype=torch.float64)
    _, gru = _module("GRU")
    _assert_same_error(lambda: gru(x), lambda: rnnkit.LSTM(3, 4)(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: _packed(features=2),
        lambda: _packed(enforce_sorted=False, features=5),
        lambda: pack_sequence([torch.randn(2, 5)]),  # torch runs this one
    ],
    ids=["fewer", "more-unsorted", "one-sequence"],
)
def test_lstm_refuses_packed_input_with_the_wrong_features(make):
    """torch's LSTM skips the check on a packed input: its matmul refuses the
    shapes, or (oneDNN, some shapes) it runs, reading past the input. rnnkit
    refuses: a RuntimeError that says the input's size is wrong."""
    _, ours = _module("LSTM")
    with pytest.raises(RuntimeError, match=r"must be equal to input_size|cannot be multiplied"):
        ours(make())


# --------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize("kind", KINDS)
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
def test_zero_length_sequence_rejected_like_torch(kind, kwargs, shape, with_hx):
    theirs, ours = _module(kind, **kwargs)
    x = torch.randn(shape)
    hx = None
    if with_hx:
        layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
        batch = shape[0 if kwargs.get("batch_first") else 1] if len(shape) == 3 else None
        hx = _hx(kind, (layers, 4) if batch is None else (layers, batch, 4))
    _assert_same_error(lambda: theirs(x, hx), lambda: ours(x, hx))


def test_zero_length_literal():
    with pytest.raises(
        RuntimeError, match=_exactly("Expected sequence length to be larger than 0 in RNN")
    ):
        rnnkit.LSTM(3, 4)(torch.randn(0, 2, 3))


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch) -> str:
    monkeypatch.setenv("RNNKIT_ENGINE", request.param)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("kwargs", "shape", "with_hx"),
    [
        ({}, (5, 0, 3), False),
        ({}, (5, 0, 3), True),
        (dict(batch_first=True), (0, 5, 3), True),
        (dict(num_layers=2, bidirectional=True), (5, 0, 3), False),
        (dict(num_layers=3, bias=False), (1, 0, 3), True),
    ],
)
def test_zero_batch_returns_empty_outputs_like_torch(kind, kwargs, shape, with_hx, engine):
    theirs, ours = _module(kind, **kwargs)
    x = torch.randn(shape, requires_grad=True)
    hx = None
    if with_hx:
        layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
        hx = _hx(kind, (layers, 0, 4))
    out_ref, final_ref = theirs(x, hx)
    out, final = ours(x, hx)
    assert out.shape == out_ref.shape and out.dtype == out_ref.dtype
    finals = final if kind == "LSTM" else (final,)
    finals_ref = final_ref if kind == "LSTM" else (final_ref,)
    assert [s.shape for s in finals] == [s.shape for s in finals_ref]
    # gradients flow through an empty batch without error, as in torch
    (out.sum() + sum(s.sum() for s in finals)).backward()
    assert x.grad is not None and x.grad.shape == x.shape


# --------------------------------------------------------------------------- engine choice


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_engine_is_refused(kind, monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", "fastest")
    module = getattr(rnnkit, kind)(3, 4)
    with pytest.raises(ValueError, match=r"RNNKIT_ENGINE.*'fastest'"):
        module(torch.randn(5, 2, 3))
