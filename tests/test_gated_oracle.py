"""rnnkit.LSTM and rnnkit.GRU against torch.nn.LSTM / torch.nn.GRU holding the same weights.

torch is the oracle. Over random configurations of every constructor argument
(``proj_size`` included) and every input layout (batched, unbatched, packed
sorted and unsorted), with and without initial states, the outputs, the final
states (``h_n`` and, for LSTM, ``c_n``) and the gradients of a random linear
function of them with respect to the input, the initial states and every
parameter must agree: float64 at rtol=atol=1e-10, float32 at torch's default
tolerances. Every test that runs a forward pass runs once per engine
(``$RNNKIT_ENGINE``). Then: long sequences, ``gradcheck``, dropout, the torch
surface (state dicts both ways, default initialisation, repr) and the
keyword-only options torch lacks (``merge_mode``, ``learn_initial_state``).

Error paths are in test_gated_errors.py; the cells, ``torch.compile`` and
``torch.export`` in test_gated_cells.py.

Shape symbols: ``N`` batch, ``L`` length, ``D`` directions, ``H_in`` input
features, ``H_out`` output features (``proj_size`` for a projected LSTM, else
``hidden_size``), ``H_cell`` = ``hidden_size`` (the LSTM cell state).
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from functools import cache

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit

# torch's own LSTM with proj_size warns, once per process, that oneDNN cannot run it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN:UserWarning"
)

ENGINES = ("auto", "compiled", "fused", "reference")
KINDS = ("LSTM", "GRU")
LAYOUTS = ("batched", "unbatched", "packed_sorted", "packed_unsorted")
F64_TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}
# The same text torch warns with; a drop-in must warn the same way.
DROPOUT_ONE_LAYER_WARNING = "non-zero dropout expects num_layers greater than 1"


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch) -> str:
    """Run the test once per engine, selected the way users select it."""
    monkeypatch.setenv("RNNKIT_ENGINE", request.param)
    return request.param


def close(actual, expected, what: str, **kwargs) -> None:
    """float64 at 1e-10; other dtypes at torch's defaults; `what` names the quantity."""
    if isinstance(expected, torch.Tensor) and expected.dtype == torch.float64:
        kwargs = F64_TOLERANCE | kwargs
    torch.testing.assert_close(actual, expected, msg=lambda report: f"{what}: {report}", **kwargs)


# ---------------------------------------------------------------------------
# Pairs of modules, runs and their comparison


def make_pair(kind: str, *, seed: int = 0, scale: float | None = None, **kwargs):
    """``torch.nn.<kind>(**kwargs)`` and ``rnnkit.<kind>(**kwargs)`` holding the same weights.

    The weights are drawn in torch's module, U(-scale, scale) (by default torch's
    own 1/sqrt(hidden_size)), and copied into ours with ``load_state_dict(strict=True)``:
    parameter names and shapes must be torch's.
    """
    if kwargs.get("dropout", 0.0) > 0 and kwargs.get("num_layers", 1) == 1:
        # Legal but odd: torch warns, and a drop-in must too.
        with pytest.warns(UserWarning, match=DROPOUT_ONE_LAYER_WARNING):
            theirs = getattr(nn, kind)(**kwargs)
        with pytest.warns(UserWarning, match=DROPOUT_ONE_LAYER_WARNING):
            ours = getattr(rnnkit, kind)(**kwargs)
    else:
        theirs = getattr(nn, kind)(**kwargs)
        ours = getattr(rnnkit, kind)(**kwargs)
    scale = kwargs["hidden_size"] ** -0.5 if scale is None else scale
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 * scale - scale)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    return theirs, ours


@dataclass
class Inputs:
    """What one forward + backward pass is fed: input, initial states, upstream gradients."""

    x: torch.Tensor  # padded when packed: (L, N, H_in) or (N, L, H_in), (L, H_in) unbatched
    states: tuple[torch.Tensor, ...] | None  # (h_0,) or (h_0, c_0); None: torch's zeros
    upstream: dict[str, torch.Tensor]  # gradient of the loss wrt "output", "h_n", "c_n"
    lengths: list[int] | None = None  # packed: the length of each sequence
    enforce_sorted: bool = True


def run(module: nn.Module, inputs: Inputs, backward: bool = True) -> dict[str, object]:
    """Forward and backward through `module`; every observable tensor, by name.

    The input is packed inside the graph, so ``input.grad`` is the gradient with
    respect to the padded tensor (zero on the padding). Without ``backward``, the
    forward pass alone under ``torch.no_grad`` (the engine's inference path).
    """
    module.zero_grad(set_to_none=True)
    x = inputs.x.detach().clone().requires_grad_(True)
    states = None
    if inputs.states is not None:
        states = tuple(s.detach().clone().requires_grad_(True) for s in inputs.states)
    fed = x
    if inputs.lengths is not None:
        fed = pack_padded_sequence(
            x,
            torch.tensor(inputs.lengths),
            batch_first=module.batch_first,
            enforce_sorted=inputs.enforce_sorted,
        )
    lstm = "c_n" in inputs.upstream
    hx = None if states is None else (states if lstm else states[0])
    with torch.set_grad_enabled(backward):
        output, final = module(fed, hx)
    observed: dict[str, object] = {"output type": type(output)}
    if isinstance(output, PackedSequence):
        observed["output"] = output.data
        observed["output.batch_sizes"] = output.batch_sizes
        observed["output.sorted_indices"] = output.sorted_indices
        observed["output.unsorted_indices"] = output.unsorted_indices
    else:
        observed["output"] = output
    if lstm:
        assert isinstance(final, tuple) and len(final) == 2, type(final)
        observed["h_n"], observed["c_n"] = final
    else:
        assert isinstance(final, torch.Tensor), type(final)
        observed["h_n"] = final
    if not backward:
        return observed
    loss = sum((observed[name] * g).sum() for name, g in inputs.upstream.items())
    loss.backward()
    observed["input.grad"] = x.grad
    for name, state in zip(("h_0", "c_0"), states or (), strict=False):
        observed[f"{name}.grad"] = state.grad
    for name, p in module.named_parameters():
        observed[f"{name}.grad"] = p.grad
    return observed


def assert_same(actual: dict, expected: dict, *, skip: tuple[str, ...] = ()) -> None:
    """Every observable of two runs agrees (`skip`: names the caller compares itself)."""
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        if name in skip:
            assert got is not None, f"{name} is None"
        elif not isinstance(want, torch.Tensor):
            assert got == want, f"{name}: {got!r}, torch {want!r}"
        elif not want.is_floating_point():  # index tensors of a PackedSequence
            assert isinstance(got, torch.Tensor), f"{name}: {got!r}"
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
        else:
            assert got is not None, f"{name} is None"
            close(got, want, name)


def make_inputs(
    module: nn.Module,
    layout: str,
    L: int,
    N: int,
    *,
    seed: int,
    with_states: bool,
    lengths: list[int] | None = None,
) -> Inputs:
    """Random input, initial states and upstream gradients of the shapes the contract promises."""
    generator = torch.Generator().manual_seed(seed)
    dtype = module.weight_ih_l0.dtype

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    lstm = _is_lstm(module)
    D = 2 if module.bidirectional else 1
    layers = D * module.num_layers
    H_out = module.proj_size or module.hidden_size
    lead = () if layout == "unbatched" else (N,)
    state_shapes = [(layers, *lead, H_out)] + ([(layers, *lead, module.hidden_size)] * lstm)
    if layout == "unbatched":
        x = randn(L, module.input_size)  # (L, H_in) whatever batch_first says
        out_shape = (L, D * H_out)
    elif module.batch_first:
        x = randn(N, L, module.input_size)
        out_shape = (N, L, D * H_out)
    else:
        x = randn(L, N, module.input_size)
        out_shape = (L, N, D * H_out)
    if lengths is not None:
        out_shape = (sum(lengths), D * H_out)  # packed data
    states = tuple(randn(*shape) for shape in state_shapes) if with_states else None
    upstream = {"output": randn(*out_shape)}
    upstream |= {
        name: randn(*shape) for name, shape in zip(("h_n", "c_n"), state_shapes, strict=False)
    }
    return Inputs(x, states, upstream, lengths, layout == "packed_sorted")


def _is_lstm(module: nn.Module) -> bool:
    """Ours or torch's LSTM, told by its weights: four gates per unit."""
    return module.weight_ih_l0.size(0) == 4 * module.hidden_size


# ---------------------------------------------------------------------------
# Random configurations


@dataclass
class Case:
    """One drawn configuration: constructor kwargs plus the input it is fed."""

    kind: str
    kwargs: dict
    training: bool
    layout: str
    L: int
    N: int
    lengths: list[int] | None
    with_states: bool
    seed: int
    scale: float  # weights are U(-scale, scale)


@st.composite
def gated_cases(draw, kind: str) -> Case:
    num_layers = draw(st.integers(1, 3))
    hidden_size = draw(st.integers(1, 5))
    training = draw(st.booleans())
    if training:
        # Only the deterministic dropouts can be compared with torch: 0 keeps
        # everything, 1 zeroes every inter-layer activation.
        dropout = draw(st.sampled_from([0.0, 1.0]))
    else:
        dropout = draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
    kwargs = dict(
        input_size=draw(st.integers(1, 5)),
        hidden_size=hidden_size,
        num_layers=num_layers,
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        dropout=dropout,
        bidirectional=draw(st.booleans()),
        device=draw(st.sampled_from([None, "cpu"])),
        dtype=draw(st.sampled_from([torch.float64, torch.float32])),
    )
    if kind == "LSTM" and hidden_size > 1 and draw(st.booleans()):
        kwargs["proj_size"] = draw(st.integers(1, hidden_size - 1))
    layout = draw(st.sampled_from(LAYOUTS))
    L = draw(st.integers(1, 6))
    N = 1 if layout == "unbatched" else draw(st.integers(1, 4))
    lengths = None
    if layout.startswith("packed"):
        lengths = draw(st.lists(st.integers(1, L), min_size=N, max_size=N))
        if layout == "packed_sorted":
            lengths.sort(reverse=True)
    # torch's initialisation, or (in float64) weights that push gates to saturation;
    # float32 sums of large terms would differ between two correct orders
    scale = hidden_size**-0.5
    if kwargs["dtype"] == torch.float64:
        scale = draw(st.sampled_from([scale, 1.5]))
    return Case(
        kind=kind,
        kwargs=kwargs,
        training=training,
        layout=layout,
        L=L,
        N=N,
        lengths=lengths,
        with_states=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
        scale=scale,
    )


def check_case(case: Case) -> None:
    theirs, ours = make_pair(case.kind, seed=case.seed, scale=case.scale, **case.kwargs)
    theirs.train(case.training)
    ours.train(case.training)
    inputs = make_inputs(
        theirs,
        case.layout,
        case.L,
        case.N,
        seed=case.seed,
        with_states=case.with_states,
        lengths=case.lengths,
    )
    assert_same(run(ours, inputs), run(theirs, inputs))


# ---------------------------------------------------------------------------
# Property: rnnkit.LSTM == torch.nn.LSTM, rnnkit.GRU == torch.nn.GRU

# The engine fixture is set once per test, for all examples: that is intended.
PROPERTY = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(case=gated_cases("LSTM"))
def test_lstm_matches_torch(case, engine):
    check_case(case)


@PROPERTY
@given(case=gated_cases("GRU"))
def test_gru_matches_torch(case, engine):
    check_case(case)


@PROPERTY
@given(case=st.one_of(gated_cases("LSTM"), gated_cases("GRU")))
def test_inference_matches_torch(case, engine):
    """Without gradients the engine keeps no per-row state for a backward pass (the
    compiled LSTM holds two steps' cell states): outputs and final states still agree."""
    theirs, ours = make_pair(case.kind, seed=case.seed, scale=case.scale, **case.kwargs)
    theirs.train(case.training)
    ours.train(case.training)
    inputs = make_inputs(theirs, case.layout, case.L, case.N, seed=case.seed,
                         with_states=case.with_states, lengths=case.lengths)  # fmt: skip
    assert_same(run(ours, inputs, backward=False), run(theirs, inputs, backward=False))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("kind", "proj_size"), [("LSTM", 2), ("GRU", 0)], ids=KINDS)
def test_full_config_matches_torch(kind, proj_size, layout, engine):
    """Every feature switched on at once, float64, in training mode with dropout=1."""
    kwargs = dict(
        input_size=3,
        hidden_size=4,
        num_layers=3,
        bias=True,
        batch_first=True,
        dropout=1.0,
        bidirectional=True,
        dtype=torch.float64,
    )
    if proj_size:
        kwargs["proj_size"] = proj_size
    case = Case(
        kind=kind,
        kwargs=kwargs,
        training=True,
        layout=layout,
        L=5,
        N=1 if layout == "unbatched" else 4,
        lengths={"packed_sorted": [5, 4, 4, 2], "packed_unsorted": [2, 5, 1, 4]}.get(layout),
        with_states=True,
        seed=1234,
        scale=0.8,
    )
    check_case(case)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_at_torch_size_matches_torch(kind, engine):
    """A realistic float32 layer (hidden 32, two layers) at torch's default tolerances."""
    kwargs = dict(input_size=8, hidden_size=32, num_layers=2, batch_first=True)
    if kind == "LSTM":
        kwargs["proj_size"] = 16
    theirs, ours = make_pair(kind, seed=3, **kwargs)
    inputs = make_inputs(theirs, "batched", 12, 5, seed=4, with_states=True)
    assert_same(run(ours, inputs), run(theirs, inputs))


def test_lstm_states_accepted_as_a_list_like_torch(engine):
    """torch only indexes hx: a list [h_0, c_0] works as well as a tuple."""
    theirs, ours = make_pair("LSTM", input_size=2, hidden_size=3, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64)
    hx = [torch.randn(1, 2, 3, dtype=torch.float64), torch.randn(1, 2, 3, dtype=torch.float64)]
    out, (h_n, c_n) = ours(x, hx)
    out_ref, (h_ref, c_ref) = theirs(x, hx)
    close(out, out_ref, "output")
    close(h_n, h_ref, "h_n")
    close(c_n, c_ref, "c_n")


def test_unbatched_equals_a_batch_of_one(engine):
    _, ours = make_pair(
        "LSTM",
        input_size=3,
        hidden_size=4,
        num_layers=2,
        proj_size=2,
        bidirectional=True,
        dtype=torch.float64,
    )
    x = torch.randn(5, 3, dtype=torch.float64)
    h0, c0 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    out, (h_n, c_n) = ours(x, (h0, c0))
    out_b, (h_b, c_b) = ours(x[:, None], (h0[:, None], c0[:, None]))
    assert out.shape == (5, 4) and h_n.shape == (4, 2) and c_n.shape == (4, 4)
    close(out, out_b[:, 0], "output")
    close(h_n, h_b[:, 0], "h_n")
    close(c_n, c_b[:, 0], "c_n")


# ---------------------------------------------------------------------------
# Long sequences: thousands of steps expose accumulation error in the engine.
#
# float64 is held to 1e-10 everywhere. In float32, everything computed per step
# (output, final states, the gradients of the input and the initial states) is
# held to torch's default tolerances against torch in float32. The parameter
# gradients are sums over thousands of steps, in an order torch does not
# promise: they are measured against the float64 oracle (torch on the same
# weights), and ours may be off by at most ACCURACY_FACTOR times torch's own
# error, or by torch's default tolerance at the gradient's scale (as for
# rnnkit.RNN in test_oracle.py). A lost step or a half-precision accumulator
# would be off by far more. The engines checked are the two fast ones ("auto"
# picks one of them); the reference engine is a readable loop, not meant for
# thousands of steps, and its per-step math is held to torch above. torch's
# runs are shared by the engines (one takes up to a second on two cores).

LONG_L = 2000
LONG_LENGTHS = [900, LONG_L, 3, 1500]  # unsorted, and very unequal
ACCURACY_FACTOR = 8
FAST_ENGINES = ("compiled", "fused")
# (packed bidirectional, dtype): packing is checked at length in float32 only
LONG_CASES = [(False, torch.float64), (False, torch.float32), (True, torch.float32)]


@cache
def _long_setup(kind: str, dtype: torch.dtype, packed: bool):
    """(torch's module, inputs, torch's run, float64 oracle's run or None)."""
    kwargs = dict(input_size=2, hidden_size=4, dtype=dtype)
    if packed:
        # no proj_size: torch runs a projected LSTM several times slower (no oneDNN)
        kwargs |= dict(bidirectional=True, batch_first=True)
    theirs, _ = make_pair(kind, seed=7, scale=0.5, **kwargs)
    N = len(LONG_LENGTHS) if packed else 3
    layout = "packed_unsorted" if packed else "batched"
    lengths = LONG_LENGTHS if packed else None
    inputs = make_inputs(theirs, layout, LONG_L, N, seed=8, with_states=True, lengths=lengths)
    expected = run(theirs, inputs)
    exact = None
    if dtype == torch.float32:
        oracle = copy.deepcopy(theirs).double()
        exact_inputs = Inputs(
            inputs.x.double(),
            tuple(s.double() for s in inputs.states),
            {k: v.double() for k, v in inputs.upstream.items()},
            inputs.lengths,
            inputs.enforce_sorted,
        )
        exact = run(oracle, exact_inputs)
    return theirs, inputs, expected, exact


@pytest.mark.parametrize(
    ("packed", "dtype"), LONG_CASES, ids=["float64", "float32", "float32-packed-bidirectional"]
)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fast_engine", FAST_ENGINES)
def test_long_sequence_matches_torch(kind, dtype, packed, fast_engine, monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", fast_engine)
    theirs, inputs, expected, exact = _long_setup(kind, dtype, packed)
    ours = getattr(rnnkit, kind)(**_constructor_kwargs(theirs))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    actual = run(ours, inputs)
    if exact is None:
        assert_same(actual, expected)
        return
    grads = tuple(name for name in expected if name.startswith(("weight_", "bias_")))
    assert_same(actual, expected, skip=grads)
    for name in grads:
        err_ours = (actual[name].double() - exact[name]).abs().max().item()
        err_torch = (expected[name].double() - exact[name]).abs().max().item()
        scale = exact[name].abs().max().item()
        default_tolerance = 1e-5 + 1.3e-6 * scale  # torch's float32 atol + rtol * scale
        assert err_ours <= max(ACCURACY_FACTOR * err_torch, default_tolerance), (
            f"{name} in float32 is off the float64 oracle by {err_ours:.3g}, "
            f"torch by {err_torch:.3g} (largest entry {scale:.3g})"
        )


def _constructor_kwargs(module: nn.Module) -> dict:
    """The arguments that rebuild `module` (ours or torch's) as the other."""
    kwargs = dict(
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
        dtype=module.weight_ih_l0.dtype,
    )
    if module.proj_size:
        kwargs["proj_size"] = module.proj_size
    return kwargs


# ---------------------------------------------------------------------------
# gradcheck in float64, through torch.func.functional_call (every parameter a leaf)


GRADCHECK_CASES = [
    # (kind, kwargs, lengths: None for a padded batch, fast_mode)
    ("LSTM", dict(num_layers=1, bidirectional=True, proj_size=2), None, False),
    ("GRU", dict(num_layers=1, bidirectional=True), None, False),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2), [2, 3], True),
    ("GRU", dict(num_layers=2, bidirectional=True, batch_first=True), [2, 3], True),
]


@pytest.mark.parametrize(
    ("kind", "kwargs", "lengths", "fast_mode"),
    GRADCHECK_CASES,
    ids=["lstm-proj", "gru", "lstm-proj-packed-2-layers", "gru-packed-2-layers"],
)
def test_gradcheck(kind, kwargs, lengths, fast_mode, engine):
    _, ours = make_pair(
        kind, seed=5, scale=0.8, input_size=2, hidden_size=3, dtype=torch.float64, **kwargs
    )
    generator = torch.Generator().manual_seed(6)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(True)

    layers = 2 * ours.num_layers
    batch_first = ours.batch_first
    x = leaf(2, 3, 2) if batch_first else leaf(3, 2, 2)  # N=2, L=3, H_in=2
    states = [leaf(layers, 2, ours.proj_size or 3)] + [leaf(layers, 2, 3)] * (kind == "LSTM")
    params = {n: p.detach().clone().requires_grad_(True) for n, p in ours.named_parameters()}
    names = list(params)

    def fn(x, *rest):
        state_count = len(states)
        hx = tuple(rest[:state_count]) if kind == "LSTM" else rest[0]
        weights = dict(zip(names, rest[state_count:], strict=True))
        fed = x
        if lengths is not None:
            fed = pack_padded_sequence(x, torch.tensor(lengths), batch_first, enforce_sorted=False)
        output, final = functional_call(ours, weights, (fed, hx))
        if lengths is not None:
            output = pad_packed_sequence(output, batch_first)[0]
        return (output, *final) if kind == "LSTM" else (output, final)

    assert torch.autograd.gradcheck(fn, (x, *states, *params.values()), fast_mode=fast_mode)


# ---------------------------------------------------------------------------
# Dropout between layers, in training mode only


def _saturating_top_layer(module: nn.Module, scale: float) -> None:
    """Make the top layer output ``g(scale * input)`` with ``g`` invertible and no memory.

    LSTM: i and o saturate at 1 and f at 0, so ``h = tanh(tanh(scale * x))``; GRU: z
    saturates at 0, so ``h = tanh(scale * x)``. (sigmoid(-50) = 2e-22: below float64's
    resolution next to 1.) The input of that layer, after dropout, can then be read back.
    """
    top, hidden = module.num_layers - 1, module.hidden_size
    lstm = _is_lstm(module)
    gates = [50.0, -50.0, 0.0, 50.0] if lstm else [0.0, -50.0, 0.0]  # i, f, g, o / r, z, n
    with torch.no_grad():
        weight_ih = getattr(module, f"weight_ih_l{top}")
        weight_ih.zero_()
        weight_ih[2 * hidden : 3 * hidden] = scale * torch.eye(hidden)  # the g / n block
        getattr(module, f"weight_hh_l{top}").zero_()
        getattr(module, f"bias_hh_l{top}").zero_()
        getattr(module, f"bias_ih_l{top}").copy_(torch.tensor(gates).repeat_interleave(hidden))


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_masks_are_bernoulli_scaled_by_one_over_keep(kind, engine):
    """In training the top layer reads the layer below times 0 or 1 / (1 - p), drawn per element."""
    p, L, N, hidden, scale = 0.3, 40, 5, 6, 0.1
    _, ours = make_pair(
        kind, input_size=3, hidden_size=hidden, num_layers=2, dropout=p, dtype=torch.float64
    )
    _saturating_top_layer(ours, scale)
    bottom = getattr(rnnkit, kind)(3, hidden, dtype=torch.float64)  # the layer below, alone
    bottom.load_state_dict({k: v for k, v in ours.state_dict().items() if "_l0" in k})
    x = torch.randn(L, N, 3, dtype=torch.float64)
    below, _ = bottom(x)  # (L, N, H): the top layer's input before dropout
    ours.train()
    torch.manual_seed(0)
    output, _ = ours(x)
    read = output.detach().atanh()
    read = (read.atanh() if kind == "LSTM" else read) / scale  # the top layer's input
    visible = below.abs() > 1e-3
    ratio = (read / below)[visible]
    kept = (ratio - 1 / (1 - p)).abs() < 1e-6
    dropped = ratio.abs() < 1e-6
    assert bool((kept | dropped).all()), f"ratios besides 0 and 1/(1-p): {ratio[~(kept | dropped)]}"
    fraction = dropped.double().mean().item()
    assert abs(fraction - p) < 0.08, f"dropped {fraction:.3f} of {ratio.numel()} elements, p = {p}"
    # A fresh draw per step, not one mask per sequence (variational dropout).
    zeroed = read.abs() < 1e-9  # (L, N, H)
    assert bool((zeroed.any(0) & (~zeroed).any(0)).any())


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_in_training_differs_from_eval_and_eval_equals_torch(kind, engine):
    theirs, ours = make_pair(
        kind, input_size=3, hidden_size=4, num_layers=3, dropout=0.5, dtype=torch.float64
    )
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    theirs.eval()
    ours.eval()
    out_eval, final_eval = ours(x)
    out_torch, final_torch = theirs(x)
    close(out_eval, out_torch, "output in eval mode")
    h_eval = final_eval[0] if kind == "LSTM" else final_eval
    h_torch = final_torch[0] if kind == "LSTM" else final_torch
    close(h_eval, h_torch, "h_n in eval mode")
    ours.train()
    torch.manual_seed(1)
    out_train, final_train = ours(x)
    out_again, _ = ours(x)
    h_train = final_train[0] if kind == "LSTM" else final_train
    assert not torch.allclose(out_train, out_eval), "dropout had no effect in training"
    assert not torch.allclose(out_train, out_again), "the same mask twice"
    close(h_train[0], h_eval[0], "h_n of the first layer (no dropout before it)")
    assert not torch.allclose(h_train[1:], h_eval[1:])
    torch.manual_seed(1)
    close(ours(x)[0], out_train, "output with the same seed")  # the mask comes from torch's RNG


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_one_cuts_the_input_off_the_upper_layers(kind, engine):
    """With p=1 in training nothing reaches the layers above from the input: their
    outputs, and so the input's gradient through them, vanish; torch agrees."""
    theirs, ours = make_pair(
        kind, input_size=2, hidden_size=3, num_layers=2, dropout=1.0, dtype=torch.float64
    )
    theirs.train()
    ours.train()
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    out, _ = ours(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(grad))
    out_ref, _ = theirs(x)
    close(out, out_ref, "output")


# ---------------------------------------------------------------------------
# The torch surface: constructor, parameters, initialisation, state dicts, repr

SURFACE_CONFIGS = [
    ("LSTM", dict(input_size=3, hidden_size=4)),
    ("LSTM", dict(input_size=3, hidden_size=5, num_layers=3, proj_size=2, bidirectional=True)),
    (
        "LSTM",
        dict(
            input_size=2,
            hidden_size=4,
            num_layers=2,
            bias=False,
            batch_first=True,
            dropout=0.25,
            proj_size=1,
        ),
    ),
    ("LSTM", dict(input_size=1, hidden_size=1)),
    ("GRU", dict(input_size=3, hidden_size=4)),
    ("GRU", dict(input_size=3, hidden_size=5, num_layers=3, bidirectional=True)),
    (
        "GRU",
        dict(input_size=2, hidden_size=4, num_layers=2, bias=False, batch_first=True, dropout=1.0),
    ),
]
SURFACE_IDS = [
    f"{k}(" + ",".join(f"{a}={v}" for a, v in c.items()) + ")" for k, c in SURFACE_CONFIGS
]
surface = pytest.mark.parametrize(("kind", "config"), SURFACE_CONFIGS, ids=SURFACE_IDS)


@surface
def test_parameters_match_torch_in_name_shape_and_order(kind, config):
    theirs = getattr(nn, kind)(**config)
    ours = getattr(rnnkit, kind)(**config)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in theirs.named_parameters()
    ]
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert [[p.shape for p in layer] for layer in ours.all_weights] == [
        [p.shape for p in layer] for layer in theirs.all_weights
    ]
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())
    assert list(ours.buffers()) == [] and list(ours.children()) == []
    for attribute in (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "mode",
    ):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
        assert type(getattr(ours, attribute)) is type(getattr(theirs, attribute)), attribute


@surface
def test_repr_matches_torch(kind, config):
    assert repr(getattr(rnnkit, kind)(**config)) == repr(getattr(nn, kind)(**config))


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("LSTM", (3, 4, 2, False, True, 0.5, True, 2)),  # ..., bidirectional, proj_size
        ("LSTM", (3, 4, 1, True, False, 0, False, 0, "cpu", torch.float64)),
        ("GRU", (3, 4, 2, False, True, 0.5, True)),
    ],
)
def test_positional_arguments_follow_torch_order(kind, args):
    theirs = getattr(nn, kind)(*args)
    ours = getattr(rnnkit, kind)(*args)
    assert repr(ours) == repr(theirs)
    assert ours.weight_hh_l0.dtype == theirs.weight_hh_l0.dtype
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]


@surface
@pytest.mark.parametrize("seed", [0, 1])
def test_default_init_is_torch_s_draws(kind, config, seed):
    """The same seed gives the same weights as torch: seeded experiments carry over."""
    torch.manual_seed(seed)
    theirs = getattr(nn, kind)(**config)
    torch.manual_seed(seed)
    ours = getattr(rnnkit, kind)(**config)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("kind", KINDS)
def test_default_init_is_uniform_within_one_over_sqrt_hidden(kind):
    """Every parameter lies in U(-k, k), k = 1/sqrt(hidden_size), and fills it."""
    hidden = 64
    kwargs = dict(num_layers=2, bidirectional=True) | ({"proj_size": 16} if kind == "LSTM" else {})
    module = getattr(rnnkit, kind)(8, hidden, **kwargs)
    bound = 1 / math.sqrt(hidden)
    values = []
    for name, p in module.named_parameters():
        p = p.detach()
        assert p.abs().max().item() <= bound, f"{name} outside +-1/sqrt(hidden)"
        assert p.max().item() > 0.9 * bound and p.min().item() < -0.9 * bound, name
        values.append(p.flatten())
    values = torch.cat(values).double()  # tens of thousands of draws
    assert abs(values.mean().item()) < 0.02 * bound
    assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    module.reset_parameters()  # torch's method, same distribution
    assert all(p.abs().max().item() <= bound for p in module.parameters())


@surface
def test_state_dict_crosses_both_ways(kind, config, engine):
    config = config | {"dtype": torch.float64}
    theirs = getattr(nn, kind)(**config).eval()
    ours = getattr(rnnkit, kind)(**config).eval()
    # torch's weights into ours
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 2, config["input_size"], dtype=torch.float64)
    if config.get("batch_first"):
        x = x.transpose(0, 1)
    out_ours, _ = ours(x)
    close(out_ours, theirs(x)[0], "output with torch's state dict")
    # ours into a fresh torch module
    fresh = getattr(nn, kind)(**config).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(0.5)  # weights torch's module has not seen
    fresh.load_state_dict(ours.state_dict(), strict=True)
    close(ours(x)[0], fresh(x)[0], "output of torch with our state dict")
    # and through torch.save / torch.load
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    again = getattr(rnnkit, kind)(**config).eval()
    again.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    close(again(x)[0], ours(x)[0], "output after torch.save/torch.load")


@pytest.mark.parametrize("kind", KINDS)
def test_flatten_parameters_exists_and_changes_nothing(kind, engine):
    theirs, ours = make_pair(kind, input_size=3, hidden_size=4, num_layers=2, dtype=torch.float64)
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    assert ours.flatten_parameters() is None
    for name, p in ours.named_parameters():
        assert torch.equal(p, before[name]), name
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    close(ours(x)[0], theirs(x)[0], "output after flatten_parameters")


@pytest.mark.parametrize("kind", KINDS)
def test_functional_call_and_edited_weights_are_used(kind, engine):
    theirs, ours = make_pair(kind, input_size=3, hidden_size=4, dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    swap = {"weight_hh_l0": torch.full_like(theirs.weight_hh_l0, 0.25)}
    close(
        functional_call(ours, swap, (x,))[0],
        functional_call(theirs, swap, (x,))[0],
        "output under functional_call",
    )
    with torch.no_grad():
        ours.bias_ih_l0.add_(1.0)
        theirs.bias_ih_l0.add_(1.0)
    close(ours(x)[0], theirs(x)[0], "output after an in-place edit")


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_conversion_like_torch(kind, engine):
    theirs, ours = make_pair(kind, input_size=3, hidden_size=4)
    theirs.double()
    ours.double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    close(ours(x)[0], theirs(x)[0], "output after .double()")


# ---------------------------------------------------------------------------
# Options torch lacks: merge_mode and learn_initial_state (keyword-only, off by default)

REDUCE = {
    "sum": lambda fwd, bwd: fwd + bwd,
    "mul": lambda fwd, bwd: fwd * bwd,
    "ave": lambda fwd, bwd: (fwd + bwd) / 2,
}


def _states(final) -> list[torch.Tensor]:
    """The final states, (h_n, c_n) of an LSTM or h_n of a GRU, as a list."""
    return list(final) if isinstance(final, tuple) else [final]


def _padded(output):
    return pad_packed_sequence(output)[0] if isinstance(output, PackedSequence) else output


@pytest.mark.parametrize("layout", ["batched", "unbatched", "packed_unsorted"])
@pytest.mark.parametrize("merge_mode", sorted(REDUCE))
@pytest.mark.parametrize("kind", KINDS)
def test_merge_mode_reduces_the_concatenated_directions(kind, merge_mode, layout, engine):
    kwargs = dict(num_layers=2, bidirectional=True, dtype=torch.float64)
    kwargs |= {"proj_size": 2} if kind == "LSTM" else {}
    torch.manual_seed(0)
    concat = getattr(rnnkit, kind)(3, 4, **kwargs)
    merged = getattr(rnnkit, kind)(3, 4, merge_mode=merge_mode, **kwargs)
    merged.load_state_dict(concat.state_dict(), strict=True)
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    fed = x[:, 0] if layout == "unbatched" else x
    if layout == "packed_unsorted":
        fed = pack_padded_sequence(x, torch.tensor([3, 5, 1]), enforce_sorted=False)
    out, final = merged(fed)
    out_concat, final_concat = concat(fed)
    assert type(out) is type(out_concat)
    H_out = concat.proj_size or concat.hidden_size
    full = _padded(out_concat)
    expected = REDUCE[merge_mode](full[..., :H_out], full[..., H_out:])
    close(_padded(out), expected, "merged output")
    for got, want in zip(_states(final), _states(final_concat), strict=True):
        close(got, want, "final state (never merged)")
    weight = torch.linspace(-1, 1, expected.numel(), dtype=torch.float64).view_as(expected)
    # Both layers read the same packed input: keep its packing graph for the second pass.
    grads = torch.autograd.grad(
        (_padded(out) * weight).sum(), [x, *merged.parameters()], retain_graph=True
    )
    grads_concat = torch.autograd.grad((expected * weight).sum(), [x, *concat.parameters()])
    for got, want in zip(grads, grads_concat, strict=True):
        close(got, want, "gradient through the merge")


@pytest.mark.parametrize("kind", KINDS)
def test_options_off_keep_torch_s_module(kind):
    kwargs = dict(num_layers=2, bidirectional=True)
    theirs = getattr(nn, kind)(3, 4, **kwargs)
    ours = getattr(rnnkit, kind)(3, 4, merge_mode="concat", learn_initial_state=False, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)


def _learned(kind: str):
    torch.manual_seed(0)
    kwargs = dict(num_layers=2, bidirectional=True, dtype=torch.float64)
    kwargs |= {"proj_size": 2} if kind == "LSTM" else {}
    module = getattr(rnnkit, kind)(3, 4, learn_initial_state=True, **kwargs)
    with torch.no_grad():  # zeros would hide a state that is never read
        for name, p in module.named_parameters():
            if name.startswith("initial_"):
                p.normal_()
    return module


def _learned_states(module) -> list[nn.Parameter]:
    names = ["initial_state"] + ["initial_cell_state"] * _is_lstm(module)
    return [getattr(module, name) for name in names]


@pytest.mark.parametrize("kind", KINDS)
def test_learned_initial_states_have_their_shapes_and_start_at_zeros(kind):
    torch.manual_seed(3)
    kwargs = dict(num_layers=2, bidirectional=True) | ({"proj_size": 2} if kind == "LSTM" else {})
    theirs = getattr(nn, kind)(3, 4, **kwargs)
    torch.manual_seed(3)
    ours = getattr(rnnkit, kind)(3, 4, learn_initial_state=True, **kwargs)
    assert ours.initial_state.shape == (4, 2 if kind == "LSTM" else 4)  # (D * layers, H_out)
    if kind == "LSTM":
        assert ours.initial_cell_state.shape == (4, 4)  # (D * layers, H_cell)
    for state in _learned_states(ours):
        assert isinstance(state, nn.Parameter)
        assert torch.equal(state, torch.zeros_like(state))
    for name, p in theirs.named_parameters():  # the weights still torch's draws
        assert torch.equal(getattr(ours, name), p), name
    extra = {n for n, _ in ours.named_parameters()} - {n for n, _ in theirs.named_parameters()}
    assert extra == {"initial_state"} | ({"initial_cell_state"} if kind == "LSTM" else set())
    assert "learn_initial_state=True" in repr(ours)


@pytest.mark.parametrize("layout", ["batched", "unbatched", "packed_unsorted"])
@pytest.mark.parametrize("kind", KINDS)
def test_learned_initial_states_equal_them_given_as_hx(kind, layout, engine):
    module = _learned(kind)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    fed, batch = x, 3
    if layout == "unbatched":
        fed, batch = x[:, 0], None
    elif layout == "packed_unsorted":
        fed = pack_padded_sequence(x, torch.tensor([3, 5, 1]), enforce_sorted=False)
    given_states = []
    for state in _learned_states(module):
        state = state.detach()
        given_states.append(state if batch is None else state[:, None].expand(-1, batch, -1))
    hx = tuple(given_states) if kind == "LSTM" else given_states[0]
    out, final = module(fed)
    out_hx, final_hx = module(fed, hx)
    close(_padded(out), _padded(out_hx), "output")
    for got, want in zip(_states(final), _states(final_hx), strict=True):
        close(got, want, "final state")
    zeros = tuple(torch.zeros_like(s) for s in given_states)
    out_zeros, _ = module(fed, zeros if kind == "LSTM" else zeros[0])
    assert not torch.allclose(_padded(out), _padded(out_zeros)), "the learned state is not read"


@pytest.mark.parametrize("kind", KINDS)
def test_learned_initial_states_get_the_batch_sum_of_the_hx_gradient(kind, engine):
    module = _learned(kind)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    fed = pack_padded_sequence(x, torch.tensor([3, 5, 1]), enforce_sorted=False)

    def loss(output, final):
        states = final if kind == "LSTM" else (final,)
        return output.data.sum() + sum(s.square().sum() for s in states)

    loss(*module(fed)).backward()
    learned = [s.grad for s in _learned_states(module)]
    given_states = [
        s.detach()[:, None].expand(-1, 3, -1).clone().requires_grad_(True)
        for s in _learned_states(module)
    ]
    hx = tuple(given_states) if kind == "LSTM" else given_states[0]
    loss(*module(fed, hx)).backward()
    for grad, state in zip(learned, given_states, strict=True):
        assert grad is not None and grad.abs().sum() > 0
        close(grad, state.grad.sum(1), "learned state's gradient")


@pytest.mark.parametrize("kind", KINDS)
def test_explicit_hx_wins_over_the_learned_state(kind, engine):
    module = _learned(kind)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    states = [torch.randn(4, 3, s.size(1), dtype=torch.float64) for s in _learned_states(module)]
    out, _ = module(x, tuple(states) if kind == "LSTM" else states[0])
    plain = getattr(nn, kind)(**_constructor_kwargs(module))
    plain.load_state_dict(module.state_dict(), strict=False)
    close(out, plain(x, tuple(states) if kind == "LSTM" else states[0])[0], "output")
    out.sum().backward()
    assert all(s.grad is None for s in _learned_states(module))


def test_torch_s_state_dict_lacks_the_learned_states():
    """Loaded into a module with learned states, torch's state dict misses them under strict."""
    ours = rnnkit.LSTM(3, 4, learn_initial_state=True)
    with pytest.raises(RuntimeError, match="initial_state"):
        ours.load_state_dict(nn.LSTM(3, 4).state_dict(), strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ours.load_state_dict(nn.LSTM(3, 4).state_dict(), strict=False)
    assert set(result.missing_keys) == {"initial_state", "initial_cell_state"}
