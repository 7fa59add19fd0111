"""The compiled CPU engine: its own pieces (fast tanh, dispatch, argument checks, cold cache).

Its agreement with torch.nn.RNN is tested with the other engines in
test_oracle.py, test_engine.py and test_reference.py (the ``fused`` and
``layer_engine`` fixtures run both fast engines).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from rnnkit import compiled
from rnnkit.engine import (
    AUTO_COMPILED_MAX,
    AUTO_COMPILED_MAX_ONE_THREAD,
    resolve_engine,
    rnn_layer,
)

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba or scipy not installed")


def test_fast_tanh_is_within_1e_6_of_torch_tanh():
    from rnnkit.compiled import kernels

    x = torch.linspace(-20, 20, 400_001, dtype=torch.float32)
    x = torch.cat([x, torch.tensor([1e-30, -1e-30, 0.0, 3e-4, -3e-4])])
    rows = x.numpy().reshape(1, -1).copy()
    kernels._activate(rows, 0, 1, 0, np.zeros(rows.shape[1], np.float32), kernels.FAST_TANH)
    error = (torch.from_numpy(rows[0]) - torch.tanh(x)).abs().max().item()
    assert error <= 1e-6


def test_fast_tanh_and_relu_propagate_nan_and_saturate_at_infinity():
    from rnnkit.compiled import kernels

    special = np.array([[np.nan, np.inf, -np.inf]], np.float32)
    tanh = special.copy()
    kernels._activate(tanh, 0, 1, 0, np.zeros(3, np.float32), kernels.FAST_TANH)
    assert np.isnan(tanh[0, 0])
    np.testing.assert_allclose(tanh[0, 1:], [1.0, -1.0], atol=1e-6)
    relu = special.copy()
    kernels._activate(relu, 0, 1, 0, np.zeros(3, np.float32), kernels.RELU)
    assert np.isnan(relu[0, 0]) and relu[0, 1] == np.inf and relu[0, 2] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (7, 13), (17, 9), (64, 33), (256, 256)])
def test_the_transposed_copy_of_a_weight_is_its_transpose(shape, dtype):
    """Whole 8 x 8 blocks and the edges past them: every entry, C-contiguous."""
    from rnnkit.compiled import kernels

    w = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    result = kernels._transposed(w)
    assert result.flags.c_contiguous and result.dtype == w.dtype
    np.testing.assert_array_equal(result, w.T)


@pytest.mark.parametrize(
    ("dtype", "batch", "hidden", "threads", "expected"),
    [
        (torch.float32, 30, 64, 2, "compiled"),
        (torch.float64, 1, 64, 2, "compiled"),
        (torch.float32, 30, 128, 2, "compiled"),
        (torch.float32, 64, 128, 2, "fused"),  # torch parallelises a step this large
        (torch.float32, 64, 128, 1, "compiled"),  # ... unless it runs on one thread
        (torch.float32, 30, 256, 1, "fused"),  # a step's product too large to gain
        (torch.bfloat16, 30, 64, 1, "fused"),  # the compiled loops have no bfloat16
    ],
)
@pytest.mark.parametrize("large_gemm_library", ["scipy", "torch"])
def test_auto_picks_compiled_only_where_it_runs_and_wins(
    monkeypatch, dtype, batch, hidden, threads, expected, large_gemm_library
):
    """With only SciPy's BLAS, large steps stay on torch ops; with torch's BLAS
    for large products, the compiled loops take every CPU float32/float64 step."""
    limit = AUTO_COMPILED_MAX_ONE_THREAD if threads == 1 else AUTO_COMPILED_MAX
    assert (batch * hidden * hidden <= limit) == (expected == "compiled") or (
        dtype == torch.bfloat16
    )
    monkeypatch.setattr(compiled, "large_gemm_library", lambda: large_gemm_library)
    if large_gemm_library == "torch" and dtype != torch.bfloat16:
        expected = "compiled"
    x = torch.zeros(2, 3, dtype=dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert resolve_engine("auto", x, batch, hidden) == expected
        assert resolve_engine("fused", x, batch, hidden) == "fused"
    finally:
        torch.set_num_threads(before)


def test_compiled_engine_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match=r"CPU in float32 or float64; received .* torch.float16"):
        resolve_engine("compiled", torch.zeros(2, 3, dtype=torch.float16), 2, 4)
    with pytest.raises(ValueError, match=r"argument `engine`, expected one of .* got 'gpu'"):
        resolve_engine("gpu", torch.zeros(2, 3), 2, 4)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("x", torch.zeros(6, 2)),  # one row short of sum(batch_sizes)
        ("h0", torch.zeros(2, 4)),
        ("w_ih", torch.zeros(4, 3)),
        ("w_hh", torch.zeros(4, 5)),
        ("b_ih", torch.zeros(5)),
    ],
)
def test_rnn_layer_checks_shapes_before_any_kernel_runs(layer_operands, name, bad):
    args = layer_operands()
    args[name] = bad
    with pytest.raises(ValueError, match=rf"argument `{name}`, expected shape"):
        rnn_layer(*args.values(), (3, 2, 2), False, "tanh", "compiled")


@pytest.mark.parametrize("batch_sizes", [(3, 2, 4), (3, 0, 0), (3, 2.0, 2)])
def test_rnn_layer_checks_batch_sizes(layer_operands, batch_sizes):
    args = layer_operands()
    with pytest.raises(ValueError, match=r"argument `batch_sizes`, expected positive"):
        rnn_layer(*args.values(), batch_sizes, False, "tanh", "compiled")


def test_cold_start_with_an_empty_compile_cache(tmp_path):
    """A fresh process with an empty numba cache compiles, caches, and matches torch."""
    script = textwrap.dedent(
        """
        import torch, rnnkit
        torch.manual_seed(0)
        for dtype in (torch.float32, torch.float64):
            ours = rnnkit.RNN(3, 5, 2, bidirectional=True, dtype=dtype)
            theirs = torch.nn.RNN(3, 5, 2, bidirectional=True, dtype=dtype)
            theirs.load_state_dict(ours.state_dict())
            x = torch.randn(7, 4, 3, dtype=dtype, requires_grad=True)
            (out, h_n), (ref_out, ref_h_n) = ours(x), theirs(x)
            torch.testing.assert_close(out, ref_out)
            torch.testing.assert_close(h_n, ref_h_n)
            grads = torch.autograd.grad(out.sum() + h_n.sum(), [x, *ours.parameters()])
            ref_grads = torch.autograd.grad(
                ref_out.sum() + ref_h_n.sum(), [x, *theirs.parameters()]
            )
            for grad, ref_grad in zip(grads, ref_grads):
                torch.testing.assert_close(grad, ref_grad)
        print("ok")
        """
    )
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "RNNKIT_ENGINE": "compiled"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert any(cache.rglob("*.nbi")), "numba wrote no cache index"


def test_cell_bodies_compile_only_for_the_dtype_they_run_in():
    """per_dtype picks the body's compilation while the caller is typed: float32 calls
    compile only the fastmath one, float64 calls only the exact one (before, both were
    compiled for each dtype: a runtime flag chose between them)."""
    from numba import njit

    from rnnkit.compiled.kernels import per_dtype

    def scale_rows_body(rows, factor):
        for i in range(rows.shape[0]):
            rows[i] = rows[i] * factor

    scale_rows = per_dtype(scale_rows_body)

    @njit
    def caller(rows, factor):
        scale_rows(rows, factor)

    single, double = np.ones(3, np.float32), np.ones(3, np.float64)
    caller(single, np.float32(2.0))
    assert [str(sig[0].dtype) for sig in scale_rows.fast.signatures] == ["float32"]
    assert scale_rows.exact.signatures == []
    caller(double, 3.0)
    assert [str(sig[0].dtype) for sig in scale_rows.exact.signatures] == ["float64"]
    assert len(scale_rows.fast.signatures) == 1
    np.testing.assert_array_equal(single, 2.0)
    np.testing.assert_array_equal(double, 3.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_call_of_one_step_is_torchs(monkeypatch, dtype, bidirectional):
    """One step at a batch above 1 (a step-by-step decoder's call) reads W_hh in place,
    transposed, in the compiled loop: its outputs are torch's."""
    import rnnkit

    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    torch.manual_seed(0)
    ours = rnnkit.RNN(5, 9, num_layers=2, bidirectional=bidirectional).to(dtype)
    theirs = torch.nn.RNN(5, 9, num_layers=2, bidirectional=bidirectional).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    rows = 4 if bidirectional else 2
    x, h0 = torch.randn(1, 6, 5, dtype=dtype), torch.randn(rows, 6, 9, dtype=dtype)
    tolerance = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {}
    with torch.no_grad():
        for result, expected in zip(ours(x, h0), theirs(x, h0), strict=True):
            torch.testing.assert_close(result, expected, **tolerance)
