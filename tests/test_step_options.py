"""The per-step options of ``rnnkit.RNN``, ``rnnkit.LSTM`` and ``rnnkit.GRU``:
``recurrent_dropout=p``, ``zoneout=p`` and ``layer_norm=True``.

Oracles, each independent of the code it checks:

- the options engine, torch ops (``RNNKIT_ENGINE=fused``) and compiled loops
  (``compiled``), against the readable loop
  (:func:`rnnkit.functional_options.options_reference`, ``RNNKIT_ENGINE=reference``)
  over random configurations (hypothesis): every cell, option subset, layout,
  mode, with and without initial states, with ``weight_drop`` and ``merge_mode``;
  outputs, final states and the gradients of a random linear function of them,
  float64 at 1e-10, every run reseeded so that they draw the same masks; the
  forward without gradients too;
- the readable loop against ``torch.nn.RNN/LSTM/GRU`` with every option off, and
  every engine against a loop written here by hand (``F.layer_norm`` per gate,
  the masks applied explicitly) with the masks :func:`rnnkit.masks.draw_masks`
  draws for the same seed; the masks' own distribution;
- ``torch.autograd.gradcheck`` through both engines;
- behaviour: evaluation mode (recurrent dropout off, zoneout's expectation, a
  loop over ``torch.nn.*Cell`` here) and a learned initial state on every engine
  (conftest.py's ``engine`` fixture); state dicts, repr, argument errors,
  ``torch.compile`` and ``torch.export``, a long sequence.

Shape symbols: ``L`` steps, ``N`` batch, ``D`` directions, ``H_in`` input
features, ``H`` hidden features, ``G`` gates (Elman 1, GRU 3, LSTM 4), ``R`` packed rows.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.functional_options import options_reference
from rnnkit.masks import LayerMasks, draw_masks

F64 = torch.float64
TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}
ENGINE_ENV = "RNNKIT_ENGINE"
# cell name -> (rnnkit/torch class name, extra constructor kwargs)
CELLS = {
    "RNN_TANH": ("RNN", {"nonlinearity": "tanh"}),
    "RNN_RELU": ("RNN", {"nonlinearity": "relu"}),
    "LSTM": ("LSTM", {}),
    "GRU": ("GRU", {}),
}
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
LAYOUTS = ("batched", "unbatched", "packed_sorted", "packed_unsorted")
# The options engine's two implementations; "auto" picks one of them.
ENGINES = ("fused", "compiled")
ALL_OPTIONS = {"recurrent_dropout": 0.3, "zoneout": 0.25, "layer_norm": True}


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def engine_env(name: str):
    """``$RNNKIT_ENGINE`` set to `name` inside the block, restored after."""
    old = os.environ.get(ENGINE_ENV)
    os.environ[ENGINE_ENV] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ[ENGINE_ENV]
        else:
            os.environ[ENGINE_ENV] = old


def close(actual, expected, what: str, **kwargs) -> None:
    """float64 at 1e-10 unless told; `what` names the quantity in the report."""
    kwargs = TOLERANCE | kwargs
    torch.testing.assert_close(actual, expected, msg=lambda report: f"{what}: {report}", **kwargs)


def make_module(
    cell: str,
    input_size: int = 3,
    hidden_size: int = 4,
    *,
    seed: int = 0,
    perturb_norm: bool = True,
    dtype: torch.dtype = F64,
    **kwargs,
) -> rnnkit.RNN | rnnkit.LSTM | rnnkit.GRU:
    """``rnnkit.<cell>`` with every weight U(-1/sqrt(H), 1/sqrt(H)) from `seed`, and the
    layer norm's gain ``1 + U(-0.5, 0.5)`` and bias ``U(-0.5, 0.5)`` (its init,
    ones and zeros, without `perturb_norm`)."""
    kind, extra = CELLS[cell]
    module = getattr(rnnkit, kind)(input_size, hidden_size, dtype=dtype, **extra, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    scale = hidden_size**-0.5
    with torch.no_grad():
        for name, p in module.named_parameters():
            u = torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1  # U(-1, 1)
            if name.startswith("layer_norm_weight"):
                if perturb_norm:
                    p.copy_(1 + 0.5 * u)
            elif name.startswith("layer_norm_bias"):
                if perturb_norm:
                    p.copy_(0.5 * u)
            elif not name.startswith("initial_"):
                p.copy_(scale * u)
    return module


def plain_torch(module: nn.Module) -> nn.Module:
    """``torch.nn.<kind>`` of `module`'s shape holding its torch-named weights."""
    kwargs = dict(
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        bidirectional=module.bidirectional,
        dtype=module.weight_ih_l0.dtype,
    )
    if module.mode.startswith("RNN"):
        kwargs["nonlinearity"] = module.mode[4:].lower()
    kind = module.mode.split("_")[0]
    theirs = getattr(nn, kind)(module.input_size, module.hidden_size, **kwargs)
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("layer_norm_")}
    theirs.load_state_dict(state, strict=True)
    return theirs


def is_lstm(module: nn.Module) -> bool:
    return module.mode == "LSTM"


def as_states(final, lstm: bool) -> tuple[torch.Tensor, ...]:
    return tuple(final) if lstm else (final,)


def as_hx(states, lstm: bool):
    if not states:
        return None
    return tuple(states) if lstm else states[0]


def fresh(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


# --------------------------------------------------------------------------- 1. engine vs loop


@dataclass
class Case:
    """One drawn configuration and its input."""

    cell: str
    options: dict
    kwargs: dict  # constructor arguments besides the options
    training: bool
    layout: str
    L: int
    N: int
    lengths: list[int] | None
    with_states: bool
    seed: int


@st.composite
def option_cases(draw) -> Case:
    cell = draw(st.sampled_from(list(CELLS)))
    names = draw(st.sets(st.sampled_from(sorted(ALL_OPTIONS)), min_size=1))
    options = {
        name: True if name == "layer_norm" else draw(st.sampled_from([0.2, 0.5])) for name in names
    }
    layout = draw(st.sampled_from(LAYOUTS))
    L = draw(st.integers(1, 5))
    N = 1 if layout == "unbatched" else draw(st.integers(1, 3))
    lengths = None
    if layout.startswith("packed"):
        lengths = draw(st.lists(st.integers(1, L), min_size=N, max_size=N))
        if layout == "packed_sorted":
            lengths.sort(reverse=True)
    num_layers = draw(st.integers(1, 2))
    dropout = 0.0
    if num_layers == 2:
        # The loop drops padded (L, N, D * H) outputs, the engine packed rows: the same
        # draws only where every sequence is as long. p = 1 draws nothing that matters.
        equal = lengths is None or len(set(lengths)) == 1
        dropout = draw(st.sampled_from([0.0, 1.0, 0.3] if equal else [0.0, 1.0]))
    kwargs = dict(
        input_size=draw(st.integers(1, 4)),
        hidden_size=draw(st.integers(1, 4)),
        num_layers=num_layers,
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        dropout=dropout,
        # drawn before the masks, from the same RNG, by every engine
        weight_drop=draw(st.sampled_from([0.0, 0.0, 0.3])),
    )
    if kwargs["bidirectional"]:
        kwargs["merge_mode"] = draw(st.sampled_from(["concat", "concat", "sum", "mul"]))
    return Case(
        cell=cell,
        options=options,
        kwargs=kwargs,
        training=draw(st.booleans()),
        layout=layout,
        L=L,
        N=N,
        lengths=lengths,
        with_states=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def observe(
    module: nn.Module, case: Case, engine: str, backward: bool = True
) -> dict[str, torch.Tensor]:
    """Forward under `engine` (reseeded first, so the masks are the case's), then the
    gradients of a random linear function of the outputs and final states with
    respect to the input, the initial states and every parameter. Without
    `backward`, the forward alone under ``torch.no_grad`` (the inference path)."""
    gen = torch.Generator().manual_seed(case.seed)
    lstm = is_lstm(module)
    D = 2 if module.bidirectional else 1
    H, H_in = module.hidden_size, module.input_size
    lead = () if case.layout == "unbatched" else (case.N,)
    state_shape = (D * module.num_layers, *lead, H)  # (D * num_layers, [N,] H)
    if case.layout == "unbatched":
        x = torch.randn(case.L, H_in, generator=gen, dtype=F64)  # (L, H_in)
    elif module.batch_first:
        x = torch.randn(case.N, case.L, H_in, generator=gen, dtype=F64)  # (N, L, H_in)
    else:
        x = torch.randn(case.L, case.N, H_in, generator=gen, dtype=F64)  # (L, N, H_in)
    states = [torch.randn(state_shape, generator=gen, dtype=F64) for _ in range(1 + lstm)]
    (x,) = fresh(x)
    states = fresh(*states) if case.with_states else []
    fed = x
    if case.lengths is not None:
        fed = pack_padded_sequence(
            x,
            torch.tensor(case.lengths),
            batch_first=module.batch_first,
            enforce_sorted=case.layout == "packed_sorted",
        )
    with engine_env(engine), torch.set_grad_enabled(backward):
        torch.manual_seed(case.seed)
        output, final = module(fed, as_hx(states, lstm))
    finals = as_states(final, lstm)
    out = output.data if isinstance(output, PackedSequence) else output
    observed = {"output": out, "h_n": finals[0]}
    if lstm:
        observed["c_n"] = finals[1]
    if not backward:
        return observed
    # upstream gradients from their own generator: the same for both engines
    up = torch.Generator().manual_seed(case.seed + 1)
    loss = (out * torch.randn(out.shape, generator=up, dtype=F64)).sum()
    for s in finals:
        loss = loss + (s * torch.randn(s.shape, generator=up, dtype=F64)).sum()
    params = dict(module.named_parameters())
    wrt = [x, *states, *params.values()]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    names = ["input", "h_0", "c_0"][: 1 + len(states)] + list(params)
    for name, g, t in zip(names, grads, wrt, strict=True):
        observed[f"{name}.grad"] = torch.zeros_like(t) if g is None else g
    return observed


@settings(max_examples=25, deadline=None)
@given(case=option_cases())
def test_engines_match_the_reference_loop(case):
    module = make_module(
        case.cell, seed=case.seed % 1000, **case.kwargs, **case.options
    )  # random layer-norm gains and biases
    module.train(case.training)
    reference = observe(module, case, "reference")
    for engine in ENGINES:
        actual = observe(module, case, engine)
        assert actual.keys() == reference.keys()
        for name, want in reference.items():
            close(actual[name], want, f"{engine} {name}")
        for name, got in observe(module, case, engine, backward=False).items():
            close(got, reference[name], f"{engine} {name} without grad")


@pytest.mark.parametrize("cell", list(CELLS))
def test_auto_runs_the_options_engine(cell):
    """``auto`` (whichever implementation it picks) with the options: the reference loop."""
    module = make_module(cell, num_layers=2, bidirectional=True, **ALL_OPTIONS)
    x = torch.randn(4, 3, 3, dtype=F64)  # (L, N, H_in)
    results = {}
    for engine in ("auto", "reference"):
        with engine_env(engine):
            torch.manual_seed(5)
            out, final = module(x)
        results[engine] = (out, *as_states(final, is_lstm(module)))
    for got, want in zip(results["auto"], results["reference"], strict=True):
        close(got, want, "auto")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_float32_engines_match_the_reference_loop(cell, engine):
    module = make_module(cell, 3, 8, num_layers=2, dtype=torch.float32, **ALL_OPTIONS)
    x = torch.randn(6, 3, 3)  # (L, N, H_in)
    runs = []
    for name in (engine, "reference"):
        with engine_env(name):
            torch.manual_seed(9)
            (xx,) = fresh(x)
            out, _ = module(xx)
            out.square().sum().backward()
            runs.append((out, xx.grad))
    torch.testing.assert_close(runs[0], runs[1])


# --------------------------------------------------------------------------- 2. the loop's math


@pytest.mark.parametrize("lengths", [None, [3, 5, 1]], ids=["padded", "packed"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_reference_with_every_option_off_is_torch(cell, bias, lengths):
    kind, extra = CELLS[cell]
    torch.manual_seed(0)
    theirs = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True, bias=bias, dtype=F64,
                               **extra)  # fmt: skip
    x = torch.randn(5, 3, 3, dtype=F64)  # (L, N, H_in)
    states = tuple(torch.randn(4, 3, 4, dtype=F64) for _ in range(1 + (kind == "LSTM")))
    fed = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths),
                                                         enforce_sorted=False)  # fmt: skip
    with torch.no_grad():
        expected, final = theirs(fed, as_hx(states, kind == "LSTM"))
        if lengths is not None:
            expected = pad_packed_sequence(expected, total_length=5)[0]  # (L, N, D * H)
        out, finals = options_reference(
            kind.lower(), x, states, theirs.all_weights, [LayerMasks()] * 2, False,
            extra.get("nonlinearity", "tanh"), bidirectional=True, lengths=lengths,
        )  # fmt: skip
    close(out, expected, "output")
    expected_finals = as_states(final, kind == "LSTM")  # (D * num_layers, N, H) each
    for got, want, name in zip(finals, expected_finals, ("h_n", "c_n"), strict=False):
        close(got, want, name)


def hand_step(mode, x_t, h, c, w, norm, rec_mask):
    """One step written out here, from torch's equations plus the options.

    Shape:
        x_t ``(N, H_in)``, h and c ``(N, H)``, w ``(w_ih, w_hh, b_ih, b_hh)`` (biases
        None if absent), norm ``(gain, bias)`` ``(G * H,)`` or None, rec_mask ``(N, H)``
        or None; returns ``(h_new, c_new)`` (c_new None but for the LSTM).
    """
    w_ih, w_hh, b_ih, b_hh = w
    H = h.size(1)
    h_in = h if rec_mask is None else h * rec_mask
    products = h_in @ w_hh.T  # (N, G * H)
    chunks = list(products.split(H, dim=1))  # G of (N, H)
    if norm is not None:
        gains, biases = norm[0].split(H), norm[1].split(H)
        chunks = [
            F.layer_norm(p, (H,), weight=g, bias=b, eps=1e-5)
            for p, g, b in zip(chunks, gains, biases, strict=True)
        ]
    rec = torch.cat(chunks, dim=1)  # (N, G * H)
    pre = x_t @ w_ih.T  # (N, G * H)
    if b_ih is not None:
        rec, pre = rec + b_hh, pre + b_ih
    if mode == "RNN_TANH":
        return torch.tanh(pre + rec), None
    if mode == "RNN_RELU":
        return torch.relu(pre + rec), None
    if mode == "LSTM":
        i, f, g, o = (pre + rec).split(H, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new
    x_r, x_z, x_n = pre.split(H, dim=1)
    h_r, h_z, h_n = rec.split(H, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, None


def hand_layer(module, x, states, masks: LayerMasks):
    """One layer (both directions if bidirectional) by :func:`hand_step`, zoneout as
    ``u * old + (1 - u) * new``.

    Shape:
        x ``(L, N, H_in)``, states ``(D, N, H)`` each, masks as drawn (hidden and cell
        ``(D, L * N, H)``); returns output ``(L, N, D * H)`` and finals ``(D, N, H)`` each.
    """
    L, N = x.shape[:2]
    H, lstm = module.hidden_size, is_lstm(module)
    outputs, finals = [], []
    for d in range(2 if module.bidirectional else 1):
        sfx = "_reverse" if d else ""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        w = tuple(getattr(module, f"{n}_l0{sfx}", None) if module.bias or n[0] == "w" else None
                  for n in names)  # fmt: skip
        norm = None
        if module.layer_norm:
            norm = (getattr(module, f"layer_norm_weight_l0{sfx}"),
                    getattr(module, f"layer_norm_bias_l0{sfx}"))  # fmt: skip

        def keep(mask, t, d=d):  # (N, H) or None: zoneout's weight of the old value
            return None if mask is None else mask[d].reshape(L, N, H)[t]

        rec_mask = None if masks.recurrent is None else masks.recurrent[d]  # (N, H)
        h, c = states[0][d], states[1][d] if lstm else None
        out = [None] * L
        for t in reversed(range(L)) if d else range(L):
            h_new, c_new = hand_step(module.mode, x[t], h, c, w, norm, rec_mask)
            u = keep(masks.hidden, t)
            h = h_new if u is None else u * h + (1 - u) * h_new
            if lstm:
                u = keep(masks.cell, t)
                c = c_new if u is None else u * c + (1 - u) * c_new
            out[t] = h
        outputs.append(torch.stack(out))  # (L, N, H)
        finals.append((h, c) if lstm else (h,))
    return torch.cat(outputs, dim=2), tuple(torch.stack(s) for s in zip(*finals, strict=True))


OPTION_SETS = {
    "recurrent_dropout": ({"recurrent_dropout": 0.4}, True),
    "zoneout": ({"zoneout": 0.3}, True),
    "layer_norm_init": ({"layer_norm": True}, False),  # gain 1, bias 0
    "layer_norm": ({"layer_norm": True}, True),
    "all": (ALL_OPTIONS, True),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_every_engine_matches_a_hand_written_loop(cell, option_set, training):
    """Outputs, final states and the input's and states' gradients, with the masks
    draw_masks gives for the seed the module is run with."""
    options, perturb = OPTION_SETS[option_set]
    module = make_module(cell, seed=11, perturb_norm=perturb, bidirectional=True, **options)
    module.train(training)
    lstm = is_lstm(module)
    L, N, H = 3, 2, module.hidden_size
    x = torch.randn(L, N, 3, dtype=F64)  # (L, N, H_in)
    states = [torch.randn(2, N, H, dtype=F64) for _ in range(1 + lstm)]  # (D, N, H) each
    torch.manual_seed(21)
    (masks,) = draw_masks(1, 2, [N] * L, (H,) * (1 + lstm), module.recurrent_dropout,
                          module.zoneout, training, x)  # fmt: skip
    xs, *ss = fresh(x, *states)
    out, finals = hand_layer(module, xs, ss, masks)
    loss_weights = [torch.randn(t.shape, dtype=F64) for t in (out, *finals)]
    loss = sum((t * g).sum() for t, g in zip((out, *finals), loss_weights, strict=True))
    expected = [out, *finals, *torch.autograd.grad(loss, [xs, *ss])]
    for engine in (*ENGINES, "reference"):
        xs, *ss = fresh(x, *states)
        with engine_env(engine):
            torch.manual_seed(21)
            out, final = module(xs, as_hx(ss, lstm))
        finals = as_states(final, lstm)
        loss = sum((t * g).sum() for t, g in zip((out, *finals), loss_weights, strict=True))
        actual = [out, *finals, *torch.autograd.grad(loss, [xs, *ss])]
        names = [*("output", "h_n", "c_n")[: 1 + len(finals)], "x.grad", "h_0.grad", "c_0.grad"]
        for got, want, name in zip(actual, expected, names, strict=False):
            close(got, want, f"{engine} {name}")


def test_a_single_step_of_recurrent_dropout_by_hand():
    """``h_1 = tanh(x W_ih^T + b_ih + (m * h_0) W_hh^T + b_hh)`` with the mask of the seed."""
    module = make_module("RNN_TANH", recurrent_dropout=0.5).train()
    x = torch.randn(1, 4, 3, dtype=F64)  # (L=1, N, H_in)
    h0 = torch.randn(1, 4, 4, dtype=F64)  # (D * num_layers, N, H)
    torch.manual_seed(3)
    m = torch.empty(1, 4, 4, dtype=F64).bernoulli_(0.5) * 2  # (D, N, H): 0 or 1 / (1 - p)
    expected = torch.tanh(
        x[0] @ module.weight_ih_l0.T + module.bias_ih_l0
        + (m[0] * h0[0]) @ module.weight_hh_l0.T + module.bias_hh_l0
    )  # fmt: skip
    for engine in (*ENGINES, "reference"):
        with engine_env(engine), torch.no_grad():
            torch.manual_seed(3)
            out, _ = module(x, h0)
        close(out[0], expected, engine)
    assert 0 < (m == 0).sum() < m.numel()  # the seed drops some units, not all


def test_masks_have_the_documented_distribution():
    torch.manual_seed(0)
    like = torch.empty(0, dtype=F64)
    batch_sizes = [200, 200, 150, 100]
    masks = draw_masks(2, 2, batch_sizes, (40, 30), 0.25, 0.4, True, like)
    assert len(masks) == 2
    for m in masks:
        assert m.recurrent.shape == (2, 200, 40)  # (D, N, H_out): one draw per sequence
        assert m.hidden.shape == (2, 650, 40) and m.cell.shape == (2, 650, 30)  # (D, R, H)
        values = set(m.recurrent.unique().tolist())
        assert values == {0.0, 1 / 0.75}
        assert abs(m.recurrent.mean().item() - 1) < 0.03  # E[mask] = 1
        for zoned in (m.hidden, m.cell):
            assert set(zoned.unique().tolist()) == {0.0, 1.0}
            assert abs(zoned.mean().item() - 0.4) < 0.02
    assert not torch.equal(masks[0].hidden, masks[1].hidden)  # each layer its own draw
    evaluation = draw_masks(1, 1, [3, 2], (4,), 0.25, 0.4, False, like)[0]
    assert evaluation.recurrent is None  # recurrent dropout off
    assert evaluation.hidden.shape == (1, 5, 4) and bool((evaluation.hidden == 0.4).all())
    assert evaluation.cell is None  # one state: no cell
    off = draw_masks(1, 1, [3], (4, 4), 0.0, 0.0, True, like)[0]
    assert off == LayerMasks()


# --------------------------------------------------------------------------- 3. gradcheck


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell", ["RNN_TANH", "LSTM", "GRU"])
def test_gradcheck_through_the_engine(cell, training, engine):
    module = make_module(cell, 2, 3, seed=4, bidirectional=True, **ALL_OPTIONS)
    module.train(training)
    lstm = is_lstm(module)
    params = {n: p.detach() for n, p in module.named_parameters()}
    chosen = ["weight_hh_l0", "layer_norm_weight_l0_reverse", "layer_norm_bias_l0", "weight_ih_l0"]
    x = torch.randn(4, 2, 2, dtype=F64)  # (L, N, H_in)
    states = [torch.randn(2, 2, 3, dtype=F64) for _ in range(1 + lstm)]  # (D, N, H)
    inputs = fresh(x, *states, *(params[n] for n in chosen))

    def f(x, *rest):
        states, weights = rest[: 1 + lstm], rest[1 + lstm :]
        torch.manual_seed(8)  # the same masks at every evaluation
        out, final = functional_call(
            module, {**params, **dict(zip(chosen, weights, strict=True))},
            (x, as_hx(states, lstm)),
        )  # fmt: skip
        return out, *as_states(final, lstm)

    with engine_env(engine):
        assert torch.autograd.gradcheck(f, inputs)


# --------------------------------------------------------------------------- 4. behaviour


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_options_off_keep_torch_s_state_dict(kind):
    ours = getattr(rnnkit, kind)(3, 4, num_layers=2, bidirectional=True)
    zeros = getattr(rnnkit, kind)(3, 4, recurrent_dropout=0.0, zoneout=0, layer_norm=False)
    theirs = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(zeros.state_dict()) == list(getattr(nn, kind)(3, 4).state_dict())
    for module in (ours, zeros):
        assert not any("layer_norm" in n for n, _ in module.named_parameters())
        assert not re.search("recurrent_dropout|zoneout|layer_norm", repr(module))


@pytest.mark.parametrize("cell", list(CELLS))
def test_recurrent_dropout_is_off_in_evaluation(cell, engine):
    module = make_module(cell, num_layers=2, bidirectional=True, recurrent_dropout=0.5)
    theirs = plain_torch(module)
    x = torch.randn(5, 3, 3, dtype=F64)  # (L, N, H_in)
    module.eval()
    out, final = module(x)
    expected, expected_final = theirs(x)
    close(out, expected, "output")
    lstm = is_lstm(module)
    for got, want in zip(as_states(final, lstm), as_states(expected_final, lstm), strict=True):
        close(got, want, "final state")
    module.train()
    torch.manual_seed(1)
    first = module(x)[0]
    torch.manual_seed(1)
    again = module(x)[0]
    torch.manual_seed(2)
    second = module(x)[0]
    assert torch.equal(first, again)  # the masks come from torch's RNG
    assert not torch.allclose(first, out)
    assert not torch.allclose(first, second)
    # With zero initial states each direction's first step reads nothing to drop.
    single = make_module(cell, bidirectional=True, recurrent_dropout=0.5)
    expected = single.eval()(x)[0]  # (L, N, D * H)
    torch.manual_seed(1)
    dropped = single.train()(x)[0]
    H = single.hidden_size
    close(dropped[0, :, :H], expected[0, :, :H], "forward direction's first step")
    close(dropped[-1, :, H:], expected[-1, :, H:], "reverse direction's first step")
    assert not torch.allclose(dropped, expected)


@pytest.mark.parametrize("cell", list(CELLS))
def test_zoneout_takes_its_expectation_in_evaluation(cell, engine):
    p = 0.3
    module = make_module(cell, zoneout=p).eval()
    lstm = is_lstm(module)
    L, N, H = 5, 3, module.hidden_size
    x = torch.randn(L, N, 3, dtype=F64)  # (L, N, H_in)
    states = [torch.randn(1, N, H, dtype=F64) for _ in range(1 + lstm)]  # (D, N, H)
    out, final = module(x, as_hx(states, lstm))
    assert torch.equal(module(x, as_hx(states, lstm))[0], out)  # deterministic
    # torch's own cell, stepped here: h_t = p * h_{t-1} + (1 - p) * cell(x_t, h_{t-1})
    kind, extra = CELLS[cell]
    torch_cell = getattr(nn, f"{kind}Cell")(3, H, dtype=F64, **extra)
    torch_cell.load_state_dict({k[:-3]: v for k, v in module.state_dict().items()})
    h, c = states[0][0], states[1][0] if lstm else None
    expected = []
    with torch.no_grad():
        for t in range(L):
            if lstm:
                h_new, c_new = torch_cell(x[t], (h, c))
                c = p * c + (1 - p) * c_new
            else:
                h_new = torch_cell(x[t], h)
            h = p * h + (1 - p) * h_new
            expected.append(h)
    close(out, torch.stack(expected), "output")  # (L, N, H)
    close(as_states(final, lstm)[0][0], h, "h_n")
    if lstm:
        close(final[1][0], c, "c_n")
    # and the reference loop handed masks filled with p
    filled = [torch.full((1, L, N, H), p, dtype=F64)] * (1 + lstm)  # (D, L, N, H)
    masks = [LayerMasks(None, *filled)]
    with torch.no_grad():
        loop_out, _ = options_reference(
            kind.lower(), x, states, module.all_weights, masks, False,
            extra.get("nonlinearity", "tanh"),
        )  # fmt: skip
    close(out, loop_out, "reference with masks p")
    assert not torch.allclose(out, plain_torch(module)(x, as_hx(states, lstm))[0])
    module.train()
    torch.manual_seed(0)
    assert not torch.allclose(module(x, as_hx(states, lstm))[0], out)


def _layer_norm_names(num_layers: int, bidirectional: bool) -> list[str]:
    names = []
    for layer in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names += [f"layer_norm_weight_l{layer}{sfx}", f"layer_norm_bias_l{layer}{sfx}"]
    return names


@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
@pytest.mark.parametrize("cell", list(CELLS))
def test_layer_norm_parameters_and_state_dict(cell, num_layers, bidirectional):
    kind, extra = CELLS[cell]
    torch.manual_seed(0)
    fresh_module = getattr(rnnkit, kind)(3, 4, num_layers=num_layers, bidirectional=bidirectional,
                                         layer_norm=True, dtype=F64, **extra)  # fmt: skip
    names = _layer_norm_names(num_layers, bidirectional)
    params = dict(fresh_module.named_parameters())
    torch_names = list(plain_torch(fresh_module).state_dict())
    assert list(fresh_module.state_dict()) == torch_names + names
    for name in names:  # (G * H,): gain ones, bias zeros at first
        assert params[name].shape == (GATES[cell] * 4,)
        fill = 1.0 if "weight" in name else 0.0
        assert torch.equal(params[name], torch.full_like(params[name], fill)), name
    x = torch.randn(5, 2, 3, dtype=F64)  # (L, N, H_in)
    theirs = plain_torch(fresh_module)
    for training in (False, True):  # layer norm changes the layer in both modes
        fresh_module.train(training)
        assert not torch.allclose(fresh_module(x)[0], theirs(x)[0])
    # deterministic: training and evaluation agree without the random options
    close(fresh_module.train()(x)[0], fresh_module.eval()(x)[0], "train vs eval")
    module = make_module(cell, num_layers=num_layers, bidirectional=bidirectional,
                         layer_norm=True, seed=3)  # fmt: skip
    copy = getattr(rnnkit, kind)(3, 4, num_layers=num_layers, bidirectional=bidirectional,
                                 layer_norm=True, dtype=F64, **extra)  # fmt: skip
    copy.load_state_dict(module.state_dict())
    assert torch.equal(copy(x)[0], module(x)[0])
    assert not torch.equal(fresh_module(x)[0], module(x)[0])  # the loaded values matter
    plain = getattr(rnnkit, kind)(3, 4, num_layers=num_layers, bidirectional=bidirectional,
                                  dtype=F64, **extra)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict") as info:
        plain.load_state_dict(module.state_dict())
    assert all(name in str(info.value) for name in names)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict"):
        copy.load_state_dict(theirs.state_dict())


class _Positive(nn.Module):
    def forward(self, w):
        return w.abs()


def test_a_parametrized_layer_norm_gain_is_used():
    """torch.nn.utils.parametrize moves a parameter out of ``_parameters``; the layer must
    read the parametrised value, as it does for its torch-named weights."""
    module = make_module("GRU", layer_norm=True)
    gain = module.layer_norm_weight_l0.detach().clone()  # (G * H,)
    x = torch.randn(4, 2, 3, dtype=F64)  # (L, N, H_in)
    with torch.no_grad():
        module.layer_norm_weight_l0.neg_()
    torch.nn.utils.parametrize.register_parametrization(module, "layer_norm_weight_l0", _Positive())
    expected = make_module("GRU", layer_norm=True)
    with torch.no_grad():
        expected.layer_norm_weight_l0.copy_(gain.abs())
    close(module(x)[0], expected(x)[0], "output")


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_repr_shows_the_options(kind):
    text = repr(getattr(rnnkit, kind)(3, 5, recurrent_dropout=0.25, zoneout=0.1, layer_norm=True))
    assert text == f"{kind}(3, 5, recurrent_dropout=0.25, zoneout=0.1, layer_norm=True)"
    assert repr(getattr(rnnkit, kind)(3, 5, zoneout=0.1)) == f"{kind}(3, 5, zoneout=0.1)"


# --------------------------------------------------------------------------- 5. compile, export


class Model(nn.Module):
    """An encoder with every option, and a linear head on its last step."""

    def __init__(self, cell: str):
        super().__init__()
        self.encoder = make_module(cell, 4, 5, seed=6, batch_first=True, bidirectional=True,
                                   **ALL_OPTIONS)  # fmt: skip
        self.head = nn.Linear(10, 1, dtype=F64)

    def forward(self, x):  # x (N, L, H_in) -> (N, 1)
        out, final = self.encoder(x)  # (N, L, D * H)
        states = final if isinstance(final, tuple) else (final,)
        return self.head(out[:, -1]) + sum(s.sum() for s in states)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cell", ["RNN_TANH", "LSTM", "GRU"])
def test_compile_and_export_match_eager(cell, engine, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, engine)
    torch.manual_seed(0)
    model = Model(cell)
    x = torch.randn(3, 6, 4, dtype=F64, requires_grad=True)  # (N, L, H_in)
    wrt = [x, *model.parameters()]
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for training in (False, True):
        model.train(training)
        torch.manual_seed(1)
        expected = model(x)  # (N, 1)
        expected_grads = torch.autograd.grad(expected.sum(), wrt)
        torch.manual_seed(1)
        actual = compiled(x)
        actual_grads = torch.autograd.grad(actual.sum(), wrt)
        close(actual, expected, f"compiled output, training={training}")
        for got, want in zip(actual_grads, expected_grads, strict=True):
            close(got, want, f"compiled gradient, training={training}")
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program = torch.export.export(model, (x.detach(),))
    assert "torch.ops.rnnkit.options_layer" in program.graph_module.code
    other = torch.randn(3, 6, 4, dtype=F64)
    close(program.module()(other), model(other), "exported output")


# --------------------------------------------------------------------------- 6. errors


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.5", True])
@pytest.mark.parametrize("name", ["recurrent_dropout", "zoneout"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_invalid_probabilities_name_the_argument(kind, name, value):
    with pytest.raises(ValueError, match=rf"argument `{name}`, expected a number in \[0, 1\)"):
        getattr(rnnkit, kind)(3, 5, **{name: value})


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_layer_norm_must_be_a_bool(value):
    with pytest.raises(TypeError, match="layer_norm"):
        rnnkit.GRU(3, 5, layer_norm=value)


@pytest.mark.parametrize("option", [{"zoneout": 0.1}, {"recurrent_dropout": 0.2},
                                    {"layer_norm": True}])  # fmt: skip
def test_options_refuse_a_projected_lstm(option):
    with pytest.raises(ValueError, match="proj_size"):
        rnnkit.LSTM(3, 5, proj_size=2, **option)


# --------------------------------------------------------------------------- 7, 8


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_learned_initial_state_with_layer_norm_and_zoneout(cell, engine):
    module = make_module(cell, num_layers=2, bidirectional=True, layer_norm=True, zoneout=0.2,
                         learn_initial_state=True)  # fmt: skip
    lstm = is_lstm(module)
    learned = [module.initial_state, *([module.initial_cell_state] if lstm else [])]
    with torch.no_grad():
        for s in learned:  # (D * num_layers, H): away from zeros
            s.copy_(torch.randn(s.shape, dtype=F64))
    x = torch.randn(5, 3, 3, dtype=F64)  # (L, N, H_in)
    torch.manual_seed(4)
    out, final = module(x)
    (out.sum() + sum(s.sum() for s in as_states(final, lstm))).backward()
    for s in learned:
        assert s.grad is not None and s.grad.abs().sum() > 0
    given = fresh(*(s.unsqueeze(1).expand(-1, 3, -1) for s in learned))  # (D * layers, N, H)
    torch.manual_seed(4)
    out_given, final_given = module(x, as_hx(given, lstm))
    close(out, out_given, "output with the learned state given as hx")
    (out_given.sum() + sum(s.sum() for s in as_states(final_given, lstm))).backward()
    for s, g in zip(learned, given, strict=True):
        close(s.grad, g.grad.sum(1), "learned state's gradient")


def test_a_long_sequence_matches_the_reference_loop():
    """Both engines against the loop, 500 steps each way: output and the input's gradient."""
    module = make_module("LSTM", 3, 4, bidirectional=True, **ALL_OPTIONS).train()
    x = torch.randn(500, 2, 3, dtype=F64)  # (L, N, H_in)
    g = torch.randn(500, 2, 8, dtype=F64)  # upstream gradient of the output (L, N, D * H)
    runs = []
    for engine in ("reference", *ENGINES):
        (xs,) = fresh(x)
        with engine_env(engine):
            torch.manual_seed(12)
            out, _ = module(xs)
        runs.append((out, *torch.autograd.grad((out * g).sum(), [xs])))
    for engine, (out, grad) in zip(ENGINES, runs[1:], strict=True):
        close(out, runs[0][0], f"{engine} output")
        close(grad, runs[0][1], f"{engine} x.grad")
