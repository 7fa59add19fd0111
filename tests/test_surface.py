"""The public surface of ``rnnkit.RNN`` and ``rnnkit.RNNCell`` against torch's.

rnnkit promises an exact drop-in for ``torch.nn.RNN`` / ``torch.nn.RNNCell``: code
written for torch must run unchanged with the import swapped. Every expectation
here is therefore read off torch at test time (signature, attributes, parameter
names and order, initial values, repr, state_dict, serialisation, the
``nn.Module`` protocols), except the documented constructor signature, which
torch hides behind ``*args, **kwargs``.
"""

import copy
import inspect
import io
import pickle
import re
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import rnnkit

# Configurations covering every axis of the constructor; `ids` keep failures readable.
CONFIGS = [
    dict(input_size=3, hidden_size=4),
    dict(input_size=3, hidden_size=4, num_layers=2),
    dict(input_size=5, hidden_size=2, nonlinearity="relu"),
    dict(input_size=3, hidden_size=4, bias=False),
    dict(input_size=3, hidden_size=4, batch_first=True),
    dict(input_size=3, hidden_size=4, bidirectional=True),
    dict(
        input_size=2,
        hidden_size=3,
        num_layers=3,
        nonlinearity="relu",
        bias=False,
        bidirectional=True,
    ),
    dict(input_size=4, hidden_size=4, num_layers=2, dropout=0.25, batch_first=True),
    dict(input_size=1, hidden_size=1),
    dict(
        input_size=7,
        hidden_size=5,
        num_layers=2,
        bias=False,
        batch_first=True,
        dropout=1.0,
        bidirectional=True,
    ),
]


def _config_id(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


config_params = pytest.mark.parametrize("cfg", CONFIGS, ids=[_config_id(c) for c in CONFIGS])

# Configurations without dropout, so that training-mode forwards are deterministic.
FORWARD_CONFIGS = [c for c in CONFIGS if not c.get("dropout")]
forward_config_params = pytest.mark.parametrize(
    "cfg", FORWARD_CONFIGS, ids=[_config_id(c) for c in FORWARD_CONFIGS]
)

RNN_ATTRIBUTES = [
    "mode",
    "input_size",
    "hidden_size",
    "num_layers",
    "nonlinearity",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
    "proj_size",
    "_flat_weights_names",
    "_all_weights",
    "training",
]


def _pair(seed=0, **cfg):
    """(torch module, rnnkit module), each built right after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    ref = nn.RNN(**cfg)
    torch.manual_seed(seed)
    ours = rnnkit.RNN(**cfg)
    return ref, ours


def _copy_weights(src, dst):
    """Copy parameters by name, independently of state_dict (tested on its own)."""
    dst_params = dict(dst.named_parameters())
    with torch.no_grad():
        for name, param in src.named_parameters():
            dst_params[name].copy_(param)


def _input(cfg, seq_len=4, batch=2, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len) if cfg.get("batch_first") else (seq_len, batch)
    return torch.randn(*shape, cfg["input_size"], generator=gen, dtype=dtype)


def _assert_same_forward(ref, ours, x, hx=None, **tol):
    out_ref, h_ref = ref(x, hx)
    out_ours, h_ours = ours(x, hx)
    torch.testing.assert_close(out_ours, out_ref, **tol)
    torch.testing.assert_close(h_ours, h_ref, **tol)


def _signature_rows(fn_or_cls):
    """(name, kind, default) for each parameter, without self and without **kwargs."""
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(fn_or_cls).parameters.values()
        if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]


# --------------------------------------------------------------------------- RNN signature


DOCUMENTED_RNN_SIGNATURE = [
    ("input_size", inspect.Parameter.empty),
    ("hidden_size", inspect.Parameter.empty),
    ("num_layers", 1),
    ("nonlinearity", "tanh"),
    ("bias", True),
    ("batch_first", False),
    ("dropout", 0.0),
    ("bidirectional", False),
    ("device", None),
    ("dtype", None),
]


@pytest.mark.parametrize("target", ["__init__", "class"])
def test_rnn_signature_matches_documented_torch_signature(target):
    # torch.nn.RNN.__init__ is `(*args, **kwargs)`; this is the signature its docs give.
    obj = rnnkit.RNN.__init__ if target == "__init__" else rnnkit.RNN
    rows = _signature_rows(obj)
    assert [(name, default) for name, _, default in rows] == DOCUMENTED_RNN_SIGNATURE
    # Everything up to `bidirectional` must be usable positionally, as in torch.
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(kind is positional for _, kind, _ in rows[:8])


def test_rnn_positional_arguments_follow_torch_order():
    ref = nn.RNN(10, 20, 2, "relu")
    ours = rnnkit.RNN(10, 20, 2, "relu")
    for attr in RNN_ATTRIBUTES:
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert ours.nonlinearity == "relu"
    assert ours.mode == "RNN_RELU"
    assert ours.num_layers == 2


def test_rnn_all_eight_positional_arguments():
    args = (3, 4, 2, "relu", False, True, 0.5, True)
    ref, ours = nn.RNN(*args), rnnkit.RNN(*args)
    for attr in RNN_ATTRIBUTES:
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert (ours.bias, ours.batch_first, ours.dropout, ours.bidirectional) == (
        False,
        True,
        0.5,
        True,
    )


def test_rnn_all_keyword_arguments():
    kwargs = dict(
        input_size=3,
        hidden_size=4,
        num_layers=2,
        nonlinearity="relu",
        bias=False,
        batch_first=True,
        dropout=0.5,
        bidirectional=True,
        device="cpu",
        dtype=torch.float64,
    )
    ref, ours = nn.RNN(**kwargs), rnnkit.RNN(**kwargs)
    for attr in RNN_ATTRIBUTES:
        assert getattr(ours, attr) == getattr(ref, attr), attr


def test_rnn_is_a_module():
    assert issubclass(rnnkit.RNN, nn.Module)
    assert issubclass(rnnkit.RNNCell, nn.Module)


# --------------------------------------------------------------------------- RNN attributes


@config_params
def test_rnn_attributes_match_torch(cfg):
    ref, ours = _pair(**cfg)
    for attr in RNN_ATTRIBUTES:
        expected = getattr(ref, attr)
        got = getattr(ours, attr)
        assert got == expected, attr
        assert type(got) is type(expected), attr


@pytest.mark.parametrize(("nonlinearity", "mode"), [("tanh", "RNN_TANH"), ("relu", "RNN_RELU")])
def test_rnn_mode_follows_nonlinearity(nonlinearity, mode):
    ours = rnnkit.RNN(3, 4, nonlinearity=nonlinearity)
    assert ours.mode == mode == nn.RNN(3, 4, nonlinearity=nonlinearity).mode


def test_rnn_integer_dropout_is_stored_as_float():
    ref, ours = nn.RNN(3, 4, 2, dropout=1), rnnkit.RNN(3, 4, 2, dropout=1)
    assert type(ours.dropout) is type(ref.dropout) is float
    assert ours.dropout == ref.dropout == 1.0


@config_params
def test_rnn_has_no_buffers_or_children_like_torch(cfg):
    ref, ours = _pair(**cfg)
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in ref.named_children()]


# --------------------------------------------------------------------------- RNN parameters


@config_params
def test_rnn_named_parameters_match_torch(cfg):
    ref, ours = _pair(**cfg)

    def rows(m):
        return [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in m.named_parameters()]

    assert rows(ours) == rows(ref)
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())


@config_params
@pytest.mark.parametrize("seed", [0, 1234])
def test_rnn_default_init_is_bit_identical_to_torch(cfg, seed):
    ref, ours = _pair(seed=seed, **cfg)
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.equal(param, ref_params[name]), name
    # Same draws from the global generator, so code after construction sees the same stream.
    torch.manual_seed(seed)
    nn.RNN(**cfg)
    after_ref = torch.rand(4)
    torch.manual_seed(seed)
    rnnkit.RNN(**cfg)
    after_ours = torch.rand(4)
    assert torch.equal(after_ours, after_ref)


def test_rnn_init_depends_on_seed():
    # Guards the test above against comparing constants.
    _, a = _pair(seed=0, input_size=3, hidden_size=4)
    _, b = _pair(seed=1, input_size=3, hidden_size=4)
    assert not torch.equal(a.weight_ih_l0, b.weight_ih_l0)


@pytest.mark.parametrize("hidden_size", [1, 4, 100])
def test_rnn_init_range_is_one_over_sqrt_hidden(hidden_size):
    ours = rnnkit.RNN(3, hidden_size, 2)
    bound = hidden_size**-0.5
    for name, param in ours.named_parameters():
        assert param.abs().max() <= bound, name


@config_params
def test_rnn_reset_parameters_matches_torch(cfg):
    ref, ours = _pair(**cfg)
    torch.manual_seed(7)
    ref.reset_parameters()
    torch.manual_seed(7)
    ours.reset_parameters()
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.equal(param, ref_params[name]), name


@settings(max_examples=40, deadline=None)
@given(
    input_size=st.integers(1, 9),
    hidden_size=st.integers(1, 9),
    num_layers=st.integers(1, 4),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    batch_first=st.booleans(),
    dropout=st.sampled_from([0.0, 0.5, 1.0]),
    bidirectional=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rnn_random_configs_match_torch(
    input_size,
    hidden_size,
    num_layers,
    nonlinearity,
    bias,
    batch_first,
    dropout,
    bidirectional,
    seed,
):
    cfg = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        bias=bias,
        batch_first=batch_first,
        dropout=dropout if num_layers > 1 else 0.0,  # avoid the (tested) warning
        bidirectional=bidirectional,
    )
    ref, ours = _pair(seed=seed, **cfg)
    assert repr(ours) == repr(ref)
    for attr in RNN_ATTRIBUTES:
        assert getattr(ours, attr) == getattr(ref, attr), attr
    ref_params = list(ref.named_parameters())
    ours_params = list(ours.named_parameters())
    assert [n for n, _ in ours_params] == [n for n, _ in ref_params]
    for (name, param), (_, ref_param) in zip(ours_params, ref_params, strict=True):
        assert torch.equal(param, ref_param), name
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(ref.state_dict(), strict=True)


@config_params
def test_rnn_all_weights_structure_matches_torch(cfg):
    ref, ours = _pair(**cfg)
    assert ours._all_weights == ref._all_weights
    assert len(ours.all_weights) == len(ref.all_weights)
    for names, group, ref_group in zip(
        ours._all_weights, ours.all_weights, ref.all_weights, strict=True
    ):
        assert len(group) == len(ref_group) == len(names)
        for name, param, ref_param in zip(names, group, ref_group, strict=True):
            assert param is getattr(ours, name)
            assert isinstance(param, nn.Parameter)
            assert param.shape == ref_param.shape


@config_params
def test_rnn_flat_weights_names_order_matches_named_parameters(cfg):
    ref, ours = _pair(**cfg)
    assert ours._flat_weights_names == ref._flat_weights_names
    assert ours._flat_weights_names == [n for n, _ in ours.named_parameters()]


@config_params
def test_rnn_parameters_are_visible_to_an_optimizer(cfg):
    ref, ours = _pair(**cfg)
    ref.eval()
    ours.eval()  # dropout off: the step below must be deterministic
    assert len(list(ours.parameters())) == len(list(ref.parameters()))
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.5)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.5)
    x = _input(cfg)
    for module, opt in ((ref, opt_ref), (ours, opt_ours)):
        opt.zero_grad()
        out, h = module(x)
        (out.square().sum() + h.sum()).backward()
        opt.step()
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, ref_params[name].grad, msg=name)
        torch.testing.assert_close(param, ref_params[name], msg=name)
    # The step moved the weights the module actually uses.
    _assert_same_forward(ref, ours, x)


# --------------------------------------------------------------------------- RNN repr


REPR_CASES = [
    *[((), c) for c in CONFIGS],
    ((3, 4, 2, "relu"), {}),
    ((3, 4), dict(nonlinearity="relu")),
    ((3, 4), dict(num_layers=2, dropout=1)),
    ((3, 4, 1, "tanh", True, False, 0.0, False), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), REPR_CASES)
def test_rnn_repr_matches_torch(args, kwargs):
    ref, ours = nn.RNN(*args, **kwargs), rnnkit.RNN(*args, **kwargs)
    assert repr(ours) == repr(ref)
    assert ours.extra_repr() == ref.extra_repr()


def test_rnn_repr_literal():
    # Hard-coded from torch 2.13, so a change on either side is visible.
    assert repr(rnnkit.RNN(10, 20, 2, "relu")) == "RNN(10, 20, num_layers=2)"
    assert (
        repr(rnnkit.RNN(3, 4, 2, "relu", False, True, 0.5, True))
        == "RNN(3, 4, num_layers=2, bias=False, batch_first=True, dropout=0.5, bidirectional=True)"
    )


# --------------------------------------------------------------------------- dropout warning


@pytest.mark.parametrize("dropout", [0.5, 1, 1.0, 1e-3])
def test_rnn_dropout_with_one_layer_warns_like_torch(dropout):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nn.RNN(3, 4, 1, dropout=dropout)
    assert len(caught) == 1
    expected = str(caught[0].message)
    assert expected.startswith("dropout option adds dropout after all but last recurrent layer")
    with pytest.warns(caught[0].category, match=f"^{re.escape(expected)}$") as record:
        ours = rnnkit.RNN(3, 4, 1, dropout=dropout)
    assert len(record) == 1
    assert ours.dropout == float(dropout)


def test_rnn_dropout_warning_literal():
    expected = (
        "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
        "expects num_layers greater than 1, but got dropout=0.5 and num_layers=1"
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(expected)}$"):
        rnnkit.RNN(3, 4, dropout=0.5)


@pytest.mark.parametrize(("num_layers", "dropout"), [(1, 0.0), (1, 0), (2, 0.5), (3, 1.0)])
def test_rnn_no_dropout_warning_when_torch_has_none(num_layers, dropout):
    # filterwarnings=error turns any warning here into a failure.
    nn.RNN(3, 4, num_layers, dropout=dropout)
    rnnkit.RNN(3, 4, num_layers, dropout=dropout)


# --------------------------------------------------------------------------- flatten_parameters


@forward_config_params
def test_rnn_flatten_parameters_is_a_noop_on_cpu(cfg):
    ref, ours = _pair(**cfg)
    before = {n: (p, p.detach().clone()) for n, p in ours.named_parameters()}
    assert ours.flatten_parameters() is None
    for name, param in ours.named_parameters():
        assert param is before[name][0], name
        assert torch.equal(param, before[name][1]), name
    _assert_same_forward(ref, ours, _input(cfg))


# --------------------------------------------------------------------------- state_dict


@config_params
def test_rnn_state_dict_keys_and_shapes_match_torch(cfg):
    ref, ours = _pair(**cfg)
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert list(ours_sd) == list(ref_sd)
    for key, value in ours_sd.items():
        assert value.shape == ref_sd[key].shape, key
        assert value.dtype == ref_sd[key].dtype, key


@config_params
def test_rnn_state_dict_from_torch_loads_strictly(cfg):
    ref, _ = _pair(seed=3, **cfg)
    _, ours = _pair(seed=4, **cfg)
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.equal(param, ref_params[name]), name
    ref.eval()
    ours.eval()
    _assert_same_forward(ref, ours, _input(cfg))


@config_params
def test_rnn_state_dict_from_rnnkit_loads_strictly_into_torch(cfg):
    _, ours = _pair(seed=3, **cfg)
    ref, _ = _pair(seed=4, **cfg)
    result = ref.load_state_dict(ours.state_dict(), strict=True)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    ours_params = dict(ours.named_parameters())
    for name, param in ref.named_parameters():
        assert torch.equal(param, ours_params[name]), name
    ref.eval()
    ours.eval()
    _assert_same_forward(ref, ours, _input(cfg))


def test_rnn_load_state_dict_after_forward_updates_the_forward():
    # A fused engine may cache packed weights; loading new ones must invalidate them.
    cfg = dict(input_size=3, hidden_size=4, num_layers=2)
    ref, ours = _pair(seed=0, **cfg)
    x = _input(cfg)
    _assert_same_forward(ref, ours, x)
    donor, _ = _pair(seed=9, **cfg)
    ref.load_state_dict(donor.state_dict())
    ours.load_state_dict(donor.state_dict())
    _assert_same_forward(ref, ours, x)


@config_params
def test_rnn_state_dict_roundtrips_through_torch_save(cfg):
    _, ours = _pair(seed=5, **cfg)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    _, fresh = _pair(seed=6, **cfg)
    ref, _ = _pair(seed=7, **cfg)
    fresh.load_state_dict(loaded, strict=True)
    ref.load_state_dict(loaded, strict=True)
    for name, param in fresh.named_parameters():
        assert torch.equal(param, getattr(ours, name)), name
    ref.eval()
    fresh.eval()
    _assert_same_forward(ref, fresh, _input(cfg))


def test_rnn_state_dict_shape_mismatch_is_rejected():
    ref = nn.RNN(3, 5)
    ours = rnnkit.RNN(3, 4)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight_ih_l0"):
        ours.load_state_dict(ref.state_dict(), strict=True)


def test_rnn_state_dict_missing_keys_are_rejected_under_strict():
    ref = nn.RNN(3, 4, bias=False)
    ours = rnnkit.RNN(3, 4)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias_ih_l0"'):
        ours.load_state_dict(ref.state_dict(), strict=True)


# --------------------------------------------------------------------------- dtype / device


@forward_config_params
@pytest.mark.parametrize("how", ["to", "double"])
def test_rnn_conversion_to_float64(cfg, how):
    ref, ours = _pair(**cfg)
    x32 = _input(cfg)
    _assert_same_forward(ref, ours, x32)  # warm any cache before converting
    if how == "to":
        assert ours.to(torch.float64) is ours
        ref.to(torch.float64)
    else:
        assert ours.double() is ours
        ref.double()
    for name, param in ours.named_parameters():
        assert param.dtype == torch.float64, name
        assert isinstance(param, nn.Parameter), name
    _assert_same_forward(ref, ours, x32.double(), rtol=0, atol=1e-12)
    # Input dtype the model no longer has is refused, as in torch.
    with pytest.raises(ValueError, match=re.escape("RNN input dtype (torch.float32)")):
        ours(x32)


def test_rnn_float64_then_back_to_float32():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2)
    ref, ours = _pair(**cfg)
    ours.double().float()
    ref.double().float()
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    _assert_same_forward(ref, ours, _input(cfg))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_rnn_device_and_dtype_kwargs(dtype, device):
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ref, ours = _pair(device=device, dtype=dtype, **cfg)
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert param.dtype == dtype, name
        assert param.device == torch.device("cpu"), name
        assert torch.equal(param, ref_params[name]), name


def test_rnn_meta_device():
    ref = nn.RNN(3, 4, 2, device="meta")
    ours = rnnkit.RNN(3, 4, 2, device="meta")
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert param.device.type == "meta", name
        assert param.shape == ref_params[name].shape, name


def test_rnn_float64_forward_matches_torch_tightly():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ref, ours = _pair(dtype=torch.float64, **cfg)
    _assert_same_forward(ref, ours, _input(cfg, dtype=torch.float64), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- copy / pickle


@config_params
def test_rnn_deepcopy(cfg):
    ref, ours = _pair(**cfg)
    x = _input(cfg)
    ours.eval()
    ref.eval()
    ours(x)  # a cache built by a forward must not be shared with the copy
    clone = copy.deepcopy(ours)
    assert type(clone) is type(ours)
    assert repr(clone) == repr(ours)
    for attr in RNN_ATTRIBUTES:
        assert getattr(clone, attr) == getattr(ours, attr), attr
    clone_params = dict(clone.named_parameters())
    for name, param in ours.named_parameters():
        assert clone_params[name] is not param, name
        assert torch.equal(clone_params[name], param), name
    _assert_same_forward(ref, clone, x)
    with torch.no_grad():
        for param in clone.parameters():
            param.mul_(-2.0)
    _assert_same_forward(ref, ours, x)  # the original is untouched
    with torch.no_grad():
        for param in ref.parameters():
            param.mul_(-2.0)
    _assert_same_forward(ref, clone, x)  # and the copy uses its own weights


@config_params
def test_rnn_pickle_whole_module(cfg):
    ref, ours = _pair(**cfg)
    x = _input(cfg)
    ours.eval()
    ref.eval()
    ours(x)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    restored = pickle.loads(pickle.dumps(ours))
    for name, param in saved.named_parameters():
        assert torch.equal(param, getattr(ours, name)), name
    _assert_same_forward(ref, saved, x)
    assert type(restored) is type(ours)
    assert repr(restored) == repr(ours)
    for attr in RNN_ATTRIBUTES:
        assert getattr(restored, attr) == getattr(ours, attr), attr
    for name, param in restored.named_parameters():
        assert torch.equal(param, getattr(ours, name)), name
    _assert_same_forward(ref, restored, x)


# --------------------------------------------------------------------------- weight edits


@forward_config_params
def test_rnn_replacing_a_parameter_is_used_by_forward(cfg):
    ref, ours = _pair(**cfg)
    x = _input(cfg)
    _assert_same_forward(ref, ours, x)  # warm any cache first
    last = cfg.get("num_layers", 1) - 1
    suffix = "_reverse" if cfg.get("bidirectional") else ""
    for name in ("weight_hh_l0", f"weight_ih_l{last}{suffix}"):
        gen = torch.Generator().manual_seed(11)
        new = torch.randn(getattr(ref, name).shape, generator=gen)
        setattr(ref, name, nn.Parameter(new.clone()))
        replacement = nn.Parameter(new.clone())
        setattr(ours, name, replacement)
        assert getattr(ours, name) is replacement
        assert dict(ours.named_parameters())[name] is replacement
        flat = [p for group in ours.all_weights for p in group]
        assert any(p is replacement for p in flat), name
    _assert_same_forward(ref, ours, x)
    # The replacement takes part in autograd.
    out, _ = ours(x)
    out.sum().backward()
    assert replacement.grad is not None


@forward_config_params
def test_rnn_in_place_weight_edit_is_used_by_forward(cfg):
    ref, ours = _pair(**cfg)
    x = _input(cfg)
    _assert_same_forward(ref, ours, x)  # warm any cache first
    with torch.no_grad():
        for module in (ref, ours):
            module.weight_ih_l0.mul_(3.0)
            module.weight_hh_l0.add_(0.25)
    _assert_same_forward(ref, ours, x)


def test_rnn_in_place_edit_actually_changes_output():
    # Guards the test above: the edit must be visible at all.
    cfg = dict(input_size=3, hidden_size=4)
    _, ours = _pair(**cfg)
    x = _input(cfg)
    before, _ = ours(x)
    with torch.no_grad():
        ours.weight_ih_l0.mul_(3.0)
    after, _ = ours(x)
    assert not torch.allclose(before, after)


@forward_config_params
def test_rnn_functional_call_matches_torch(cfg):
    ref, ours = _pair(**cfg)
    x = _input(cfg)
    _assert_same_forward(ref, ours, x)  # warm any cache first
    gen = torch.Generator().manual_seed(21)
    substitutes = {
        name: torch.randn(param.shape, generator=gen) * 0.5
        for name, param in ref.named_parameters()
    }
    ref_subs = {n: t.clone().requires_grad_() for n, t in substitutes.items()}
    our_subs = {n: t.clone().requires_grad_() for n, t in substitutes.items()}
    out_ref, h_ref = functional_call(ref, ref_subs, (x,))
    out_ours, h_ours = functional_call(ours, our_subs, (x,))
    torch.testing.assert_close(out_ours, out_ref)
    torch.testing.assert_close(h_ours, h_ref)
    (out_ref.square().sum() + h_ref.sum()).backward()
    (out_ours.square().sum() + h_ours.sum()).backward()
    for name in substitutes:
        assert our_subs[name].grad is not None, name
        torch.testing.assert_close(our_subs[name].grad, ref_subs[name].grad, msg=name)
    # The module's own weights are back in use afterwards and got no gradient.
    for name, param in ours.named_parameters():
        assert param.grad is None, name
    _assert_same_forward(ref, ours, x)


def test_rnn_functional_call_with_partial_dict():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ref, ours = _pair(**cfg)
    x = _input(cfg)
    hx = torch.randn(4, 2, 4, generator=torch.Generator().manual_seed(2))
    new = {"weight_hh_l1_reverse": torch.full((4, 4), 0.3)}
    out_ref, h_ref = functional_call(ref, new, (x, hx))
    out_ours, h_ours = functional_call(ours, new, (x, hx))
    torch.testing.assert_close(out_ours, out_ref)
    torch.testing.assert_close(h_ours, h_ref)
    plain_ours, _ = ours(x, hx)
    assert not torch.allclose(plain_ours, out_ours)  # the substitution mattered


class _Symmetric(nn.Module):
    """A parametrization: the weight used is ``(W + W^T) / 2``."""

    def forward(self, weight):
        return (weight + weight.t()) / 2


def test_rnn_parametrized_weight_matches_torch():
    """torch.nn.utils.parametrize moves the weight out of ``_parameters`` behind a
    property; the module must use the parametrized value, and its gradient must
    reach the original."""
    from torch.nn.utils import parametrize

    cfg = dict(input_size=3, hidden_size=4, num_layers=2)
    ref, ours = _pair(**cfg)
    for module in (ref, ours):
        parametrize.register_parametrization(module, "weight_hh_l1", _Symmetric())
    x = _input(cfg)
    (out_ref, h_ref), (out_ours, h_ours) = ref(x), ours(x)
    torch.testing.assert_close(out_ours, out_ref)
    torch.testing.assert_close(h_ours, h_ref)
    (out_ref.square().sum() + h_ref.sum()).backward()
    (out_ours.square().sum() + h_ours.sum()).backward()
    original = "parametrizations.weight_hh_l1.original"
    grads = {n: p.grad for n, p in ours.named_parameters()}
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    assert grads.keys() == ref_grads.keys() and original in grads
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, msg=name)


# --------------------------------------------------------------------------- RNNCell surface


CELL_CONFIGS = [
    dict(input_size=3, hidden_size=4),
    dict(input_size=3, hidden_size=4, bias=False),
    dict(input_size=5, hidden_size=2, nonlinearity="relu"),
    dict(input_size=1, hidden_size=1, bias=False, nonlinearity="relu"),
    dict(input_size=6, hidden_size=64),
]
cell_config_params = pytest.mark.parametrize(
    "cfg", CELL_CONFIGS, ids=[_config_id(c) for c in CELL_CONFIGS]
)


def _cell_pair(seed=0, **cfg):
    torch.manual_seed(seed)
    ref = nn.RNNCell(**cfg)
    torch.manual_seed(seed)
    ours = rnnkit.RNNCell(**cfg)
    return ref, ours


def test_cell_signature_matches_torch():
    assert _signature_rows(rnnkit.RNNCell.__init__) == _signature_rows(nn.RNNCell.__init__)
    assert _signature_rows(rnnkit.RNNCell.__init__) == [
        ("input_size", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("hidden_size", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("bias", inspect.Parameter.POSITIONAL_OR_KEYWORD, True),
        ("nonlinearity", inspect.Parameter.POSITIONAL_OR_KEYWORD, "tanh"),
        ("device", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        ("dtype", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
    ]


def test_cell_positional_arguments():
    ref, ours = nn.RNNCell(3, 4, False, "relu"), rnnkit.RNNCell(3, 4, False, "relu")
    for attr in ("input_size", "hidden_size", "bias", "nonlinearity"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert ours.bias is False and ours.nonlinearity == "relu"


@cell_config_params
def test_cell_parameters_match_torch(cfg):
    ref, ours = _cell_pair(**cfg)

    def rows(m):
        return [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in m.named_parameters()]

    assert rows(ours) == rows(ref)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        ref_value = getattr(ref, name)
        if ref_value is None:
            assert getattr(ours, name) is None, name
            assert name in ours._parameters, name  # registered as None, like torch
        else:
            assert isinstance(getattr(ours, name), nn.Parameter), name
    for attr in ("input_size", "hidden_size", "bias", "nonlinearity", "training"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
        assert type(getattr(ours, attr)) is type(getattr(ref, attr)), attr


@cell_config_params
@pytest.mark.parametrize("seed", [0, 99])
@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_cell_default_init_is_bit_identical_to_torch(cfg, seed, dtype):
    ref, ours = _cell_pair(seed=seed, dtype=dtype, **cfg)
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.equal(param, ref_params[name]), name
    torch.manual_seed(seed)
    nn.RNNCell(**cfg)
    after_ref = torch.rand(4)
    torch.manual_seed(seed)
    rnnkit.RNNCell(**cfg)
    after_ours = torch.rand(4)
    assert torch.equal(after_ours, after_ref)


CELL_REPR_CASES = [
    *[((), c) for c in CELL_CONFIGS],
    ((3, 4, False, "relu"), {}),
    ((3, 4, True, "tanh"), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), CELL_REPR_CASES)
def test_cell_repr_matches_torch(args, kwargs):
    ref, ours = nn.RNNCell(*args, **kwargs), rnnkit.RNNCell(*args, **kwargs)
    assert repr(ours) == repr(ref)
    assert ours.extra_repr() == ref.extra_repr()


def test_cell_repr_literal():
    assert repr(rnnkit.RNNCell(3, 4)) == "RNNCell(3, 4)"
    assert (
        repr(rnnkit.RNNCell(3, 4, False, "relu")) == "RNNCell(3, 4, bias=False, nonlinearity=relu)"
    )


@cell_config_params
def test_cell_state_dict_crosses_both_ways(cfg):
    ref, _ = _cell_pair(seed=1, **cfg)
    _, ours = _cell_pair(seed=2, **cfg)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    for name, param in ours.named_parameters():
        assert torch.equal(param, getattr(ref, name)), name
    _, other = _cell_pair(seed=3, **cfg)
    ref.load_state_dict(other.state_dict(), strict=True)
    for name, param in ref.named_parameters():
        assert torch.equal(param, getattr(other, name)), name


def test_cell_device_dtype_and_copies():
    ref, ours = _cell_pair(device="cpu", dtype=torch.float64, input_size=3, hidden_size=4)
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    x = torch.randn(2, 3, dtype=torch.float64)
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        torch.testing.assert_close(clone(x), ref(x), rtol=0, atol=1e-12)
    ours.float()
    ref.float()
    torch.testing.assert_close(ours(x.float()), ref(x.float()))
