"""Shared fixtures: engine selection, torch/rnnkit module pairs, forward+backward runs.

Shape vocabulary as in the library: ``N`` batch, ``L`` length, ``D`` directions,
``H_in`` input features, ``H_out`` hidden features.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from hypothesis import settings
from torch.nn.utils.rnn import PackedSequence

import rnnkit
from rnnkit import compiled
from rnnkit.compiled import warmup

# When a property fails, hypothesis's pytest plugin lazily imports its patch
# writer, which imports libcst, which raises a DeprecationWarning (from
# mypy_extensions); under filterwarnings=error that turns the failure report into
# an INTERNALERROR that hides the falsifying example. Import it once, here.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    importlib.import_module("hypothesis.extra._patching")

# Each property sets its own max_examples; runs vary between invocations
# (derandomize=False) so that CI keeps exploring new cases over time.
settings.register_profile("ci", deadline=None, derandomize=False)
# Reproducible runs for bisecting a failure: HYPOTHESIS_PROFILE=repro.
settings.register_profile("repro", parent=settings.get_profile("ci"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ENGINES = ("fused", "compiled", "reference")
# The engines rnn_stack/rnn_layer run (the reference is a separate loop).
LAYER_ENGINES = ("fused", "compiled")

# The same text torch.nn.RNN warns with; rnnkit must warn the same way.
DROPOUT_ONE_LAYER_WARNING = "non-zero dropout expects num_layers greater than 1"


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels_ready() -> None:
    """Load (or compile) the compiled engine's kernels before any test, as
    ``rnnkit warmup`` does: ``auto`` then picks its engine by shape alone, as the
    tests expect, and processes the tests start find the cache complete, so
    they run the compiled loops from their first call. (The cold start, where
    ``auto`` runs torch ops meanwhile, is tested in a new process: test_warmup.py.)"""
    if compiled.available():
        for dtype in warmup.DTYPES:
            for cell in warmup.CELLS:
                warmup.wait(dtype, cell)


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch) -> str:
    """Run the test once per engine, selected the way users select it."""
    monkeypatch.setenv("RNNKIT_ENGINE", request.param)
    return request.param


@pytest.fixture(params=LAYER_ENGINES)
def fused(request, monkeypatch) -> str:
    """Run the test on each fast engine (torch ops, compiled), whatever the shell set."""
    monkeypatch.setenv("RNNKIT_ENGINE", request.param)
    return request.param


@pytest.fixture
def layer_operands():
    """A factory of valid ``rnn_layer`` operands, a fresh dict per call, to spoil one of.

    Returns ``x, h0, w_ih, w_hh, b_ih, b_hh`` for `batch_sizes` (default (3, 2, 2)):
    x ``(sum(batch_sizes), h_in)``, h0 ``(batch_sizes[0], hidden)``.
    """

    def make(batch_sizes=(3, 2, 2), h_in=2, hidden=4) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(sum(batch_sizes), h_in, generator=gen)
        h0 = torch.randn(batch_sizes[0], hidden, generator=gen)
        w_ih = torch.randn(hidden, h_in, generator=gen)
        w_hh = torch.randn(hidden, hidden, generator=gen)
        b = torch.randn(hidden, generator=gen)
        return {"x": x, "h0": h0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b, "b_hh": b.clone()}

    return make


@pytest.fixture(params=LAYER_ENGINES)
def layer_engine(request) -> str:
    """The ``engine`` argument of ``rnnkit.engine.rnn_layer``, once per fast engine."""
    return request.param


def assert_close(actual, expected, what: str | None = None, **kwargs) -> None:
    """float64 at rtol=atol=1e-9; other dtypes at torch's defaults for that dtype.

    `what` names the compared quantity in the failure message, which keeps
    torch's report of the mismatch (count, greatest differences, tolerances).
    """
    if what is not None:
        kwargs["msg"] = lambda report: f"{what}: {report}"
    if isinstance(expected, torch.Tensor) and expected.dtype == torch.float64:
        kwargs.setdefault("rtol", 1e-9)
        kwargs.setdefault("atol", 1e-9)
    torch.testing.assert_close(actual, expected, **kwargs)


def randomize_(module: torch.nn.Module, scale: float, generator: torch.Generator) -> None:
    """Overwrite every parameter with U(-scale, scale) drawn from `generator`."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 * scale - scale)


def make_rnn_pair(
    *,
    seed: int = 0,
    scale: float | None = None,
    **kwargs,
) -> tuple[torch.nn.RNN, rnnkit.RNN]:
    """Build ``torch.nn.RNN(**kwargs)`` and ``rnnkit.RNN(**kwargs)`` holding the same weights.

    Weights are drawn in torch's module (U(-scale, scale), by default torch's own
    1/sqrt(hidden_size)) and copied into ours with ``load_state_dict(strict=True)``,
    so parameter names and shapes must match torch's exactly.
    """
    num_layers = kwargs.get("num_layers", 1)
    dropout = kwargs.get("dropout", 0.0)
    if dropout > 0 and num_layers == 1:
        # Legal but odd: torch warns, and a drop-in must too.
        with pytest.warns(UserWarning, match=DROPOUT_ONE_LAYER_WARNING):
            theirs = torch.nn.RNN(**kwargs)
        with pytest.warns(UserWarning, match=DROPOUT_ONE_LAYER_WARNING):
            ours = rnnkit.RNN(**kwargs)
    else:
        theirs = torch.nn.RNN(**kwargs)
        ours = rnnkit.RNN(**kwargs)
    if scale is None:
        scale = kwargs["hidden_size"] ** -0.5
    randomize_(theirs, scale, torch.Generator().manual_seed(seed))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    return theirs, ours


@pytest.fixture(scope="session")
def rnn_pair() -> Callable[..., tuple[torch.nn.RNN, rnnkit.RNN]]:
    return make_rnn_pair


@dataclass
class Run:
    """Everything observable from one forward + backward pass."""

    output: torch.Tensor | PackedSequence
    h_n: torch.Tensor
    input_grad: torch.Tensor
    hx_grad: torch.Tensor | None
    param_grads: dict[str, torch.Tensor | None]


def forward_backward(
    module: torch.nn.Module,
    input: torch.Tensor,
    hx: torch.Tensor | None,
    g_out: torch.Tensor,
    g_hn: torch.Tensor,
    *,
    pack_lengths: Sequence[int] | None = None,
    enforce_sorted: bool = True,
) -> Run:
    """Run `module` on fresh leaf copies of `input`/`hx` and backprop a random upstream gradient.

    With `pack_lengths`, `input` is a padded batch that is packed here (inside the
    graph, so ``input_grad`` is the gradient wrt the padded tensor) and `g_out`
    is the upstream gradient of the packed output's ``data``.
    """
    module.zero_grad(set_to_none=True)
    x = input.detach().clone().requires_grad_(True)
    h = None if hx is None else hx.detach().clone().requires_grad_(True)
    if pack_lengths is not None:
        batch_first = getattr(module, "batch_first", False)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(pack_lengths), batch_first=batch_first, enforce_sorted=enforce_sorted
        )
        output, h_n = module(packed, h)
        out_data = output.data
    else:
        output, h_n = module(x, h)
        out_data = output
    loss = (out_data * g_out).sum() + (h_n * g_hn).sum()
    loss.backward()
    return Run(
        output=output,
        h_n=h_n,
        input_grad=x.grad,
        hx_grad=None if h is None else h.grad,
        param_grads={name: p.grad for name, p in module.named_parameters()},
    )


def assert_runs_close(ours: Run, theirs: Run, *, param_grads: bool = True) -> None:
    """Compare every field of two runs; packed outputs compare data and all index tensors.

    `param_grads=False` leaves the parameter gradients to the caller (only their
    names and presence are checked).
    """
    if isinstance(theirs.output, PackedSequence):
        assert isinstance(ours.output, PackedSequence), type(ours.output)
        assert_close(ours.output.data, theirs.output.data, what="output.data")
        torch.testing.assert_close(ours.output.batch_sizes, theirs.output.batch_sizes)
        for field in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(ours.output, field), getattr(theirs.output, field)
            assert (a is None) == (b is None), field
            if b is not None:
                torch.testing.assert_close(a, b, msg=lambda report, f=field: f"{f}: {report}")
    else:
        assert_close(ours.output, theirs.output, what="output")
    assert_close(ours.h_n, theirs.h_n, what="h_n")
    assert_close(ours.input_grad, theirs.input_grad, what="input.grad")
    if theirs.hx_grad is None:
        assert ours.hx_grad is None
    else:
        assert_close(ours.hx_grad, theirs.hx_grad, what="h_0.grad")
    assert ours.param_grads.keys() == theirs.param_grads.keys()
    for name, expected in theirs.param_grads.items():
        actual = ours.param_grads[name]
        assert actual is not None, f"{name}.grad is None"
        if param_grads:
            assert_close(actual, expected, what=f"{name}.grad")


@pytest.fixture(scope="session")
def run_module() -> Callable[..., Run]:
    return forward_backward


@pytest.fixture(scope="session")
def run_pair() -> Callable[..., tuple[Run, Run]]:
    """Run the same inputs and upstream gradients through (theirs, ours); returns both runs."""

    def run(theirs, ours, input, hx, g_out, g_hn, **kwargs) -> tuple[Run, Run]:
        return (
            forward_backward(theirs, input, hx, g_out, g_hn, **kwargs),
            forward_backward(ours, input, hx, g_out, g_hn, **kwargs),
        )

    return run


@pytest.fixture(scope="session")
def check_runs() -> Callable[..., None]:
    return assert_runs_close


@pytest.fixture(scope="session")
def close() -> Callable[..., None]:
    return assert_close


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches reset before and after the test: compiled graphs of one
    test must not serve another's."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
