"""The two BLAS libraries of the compiled loops: SciPy's and torch's bundled one.

Large products go to torch's BLAS only after a probe checks it; these tests
check the probe can refuse, that both libraries compute the same products, and
that with torch's BLAS refused (``RNNKIT_BLAS=scipy``) the compiled engine still
matches torch.nn.RNN on steps large enough to have used it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import compiled
from rnnkit.cpu import has_avx512

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba or scipy not installed")


@pytest.fixture(scope="module")
def blas():
    from rnnkit.compiled import blas

    return blas


@pytest.fixture(scope="module")
def gemm(blas):
    """``gemm(a, b, c, transpose_a, beta, transpose_b, tall_rows)`` through the
    compiled ``gemm_accumulate``."""
    from numba import njit

    @njit
    def call(a, b, c, transpose_a, beta, transpose_b, tall_rows):
        int_args, scalar_args = blas.scratch(c.dtype, tall_rows)
        blas.gemm_accumulate(a, b, c, int_args, scalar_args, transpose_a, beta, transpose_b)

    return call


# (m, k, n): small; large; large and narrow (SciPy's BLAS); large with 320 rows
# (SciPy's when tall_rows is TALL_ROWS_ONE_THREAD and a is not transposed)
PRODUCTS = [(3, 5, 7), (30, 64, 64), (64, 128, 128), (33, 257, 130), (256, 1024, 4), (320, 64, 64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("transpose_a", "transpose_b"), [(False, False), (True, False), (False, True)]
)
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("tall_rows", ["one thread", "none"])
@pytest.mark.parametrize(("m", "k", "n"), PRODUCTS)
def test_products_small_and_large_match_numpy(
    blas, gemm, dtype, transpose_a, transpose_b, beta, tall_rows, m, k, n
):
    """Each product in whichever library it goes to (see goes_to_large_library),
    strided rows and transposed operands read in place."""
    rng = np.random.default_rng(m * k * n)
    a_full = rng.standard_normal((k, 2 * m) if transpose_a else (m, 2 * k)).astype(dtype)
    a = a_full[:, :m] if transpose_a else a_full[:, :k]  # rows strided, columns unit
    b_full = rng.standard_normal((n, 2 * k) if transpose_b else (k, 2 * n)).astype(dtype)
    b = b_full[:, :k] if transpose_b else b_full[:, :n]
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    expected += beta * c
    limit = blas.TALL_ROWS_ONE_THREAD if tall_rows == "one thread" else blas.NO_TALL_LIMIT
    gemm(a, b, c, transpose_a, beta, transpose_b, limit)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tolerance, atol=tolerance * k)


@pytest.mark.parametrize("operand", ["a", "b transposed", "c"])
def test_one_row_operands_with_any_row_stride(blas, gemm, operand):
    """A ``(1, n)`` array is contiguous whatever its row stride (here 1 element, from
    transposing a column); BLAS refuses a leading dimension under the row length,
    so the arguments must not pass that stride on (it printed "parameter number
    8 had an illegal value" and left the output unwritten)."""
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((1, 3)), rng.standard_normal((3, 5)), np.zeros((1, 5))
    transpose_b = operand == "b transposed"
    if transpose_b:
        a, b = rng.standard_normal((4, 3)), rng.standard_normal((1, 3))  # b.T: (3, 1)
        c = np.zeros((4, 1))

    def one_row_stride_one(array):  # a (1, n) view with a row stride of one element
        return np.lib.stride_tricks.as_strided(array.copy(), array.shape, (8, 8))

    a_in = one_row_stride_one(a) if operand == "a" else a
    b_in = one_row_stride_one(b) if transpose_b else b
    c_in = one_row_stride_one(c) if operand == "c" else c
    assert (a_in if operand == "a" else b_in if transpose_b else c_in).strides[0] == 8
    expected = a @ (b.T if transpose_b else b)
    gemm(a_in, b_in, c_in, False, 0.0, transpose_b, blas.NO_TALL_LIMIT)
    np.testing.assert_allclose(c_in, expected, rtol=1e-12, atol=1e-12)


def test_products_go_to_the_library_measured_faster_for_them(blas):
    """With AVX-512, large products to torch's BLAS, except narrow ones, and (at one
    thread) tall ones not transposed: the choices measured in blas.py."""
    one_thread, none = blas.TALL_ROWS_ONE_THREAD, blas.NO_TALL_LIMIT

    def choose(m, k, n, transpose_a, tall_rows):
        return blas.goes_to_large_library(m, k, n, transpose_a, tall_rows, True)

    assert not choose(32, 128, 128, False, none)  # small: 2**19
    assert choose(64, 128, 128, False, none) and choose(64, 128, 128, False, one_thread)
    assert not choose(3000, 256, 8, False, none)  # narrow output
    assert not choose(256, 3000, 4, True, none)  # narrow, transposed
    assert choose(3000, 4, 256, False, none)  # narrow inner dimension: fine
    assert choose(3000, 256, 512, False, none)
    assert not choose(3000, 256, 512, False, one_thread)  # tall, one thread
    assert choose(256, 3000, 512, True, one_thread)  # a weight gradient: transposed
    assert choose(255, 128, 64, False, one_thread)
    assert not choose(256, 128, 64, False, one_thread)


def test_tall_rows_follow_torch_threads(blas):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert blas.tall_rows() == blas.TALL_ROWS_ONE_THREAD
        torch.set_num_threads(2)
        assert blas.tall_rows() == blas.NO_TALL_LIMIT
    finally:
        torch.set_num_threads(threads)


def test_large_products_go_to_torch_blas_where_the_probe_accepts_it(blas):
    expected = "scipy" if blas._TORCH_BLAS is None else "torch"
    assert expected == blas.LARGE_GEMM_LIBRARY
    assert compiled.large_gemm_library() == blas.LARGE_GEMM_LIBRARY
    bundles_mkl = torch.backends.mkl.is_available() and platform.machine() == "x86_64"
    if bundles_mkl and os.environ.get("RNNKIT_BLAS", "auto") == "auto":
        # torch's x86 wheels link MKL into libtorch_cpu and export its Fortran GEMMs
        assert blas.LARGE_GEMM_LIBRARY == "torch"


def test_probe_accepts_a_correct_gemm_and_refuses_a_wrong_one(blas):
    single = blas._scipy_address("sgemm")
    assert blas._gemm_is_correct(single, np.float32)
    # single precision reading double precision numbers: a wrong product
    assert not blas._gemm_is_correct(single, np.float64)


def test_a_library_without_blas_symbols_leaves_every_product_to_scipy(blas, monkeypatch):
    without_blas = next((Path(torch.__file__).parent / "lib").glob("*c10*"))
    monkeypatch.setattr(blas, "_torch_library", lambda: without_blas)
    assert blas.torch_blas_addresses() is None


def test_rnnkit_blas_selects_or_refuses(blas, monkeypatch):
    monkeypatch.setenv("RNNKIT_BLAS", "scipy")
    assert blas.torch_blas_addresses() is None
    monkeypatch.setenv("RNNKIT_BLAS", "mkl")
    with pytest.raises(ValueError, match=r"RNNKIT_BLAS: expected 'auto' or 'scipy', got 'mkl'"):
        blas.torch_blas_addresses()


LARGE_STEPS = """
import torch, rnnkit
import rnnkit
from rnnkit import compiled
from rnnkit.engine import resolve_engine
print(compiled.large_gemm_library())
torch.manual_seed(0)
# N * H * H = 64 * 128 * 128 = 2**20: every step's product is a large one
ours = rnnkit.RNN(32, 128, 2, bidirectional=True, dtype=torch.float64)
theirs = torch.nn.RNN(32, 128, 2, bidirectional=True, dtype=torch.float64)
theirs.load_state_dict(ours.state_dict())
# 6 steps of 64: 384 rows, so at one thread the products over all steps that
# are not transposed go to SciPy's BLAS, at two to torch's
x = torch.randn(6, 64, 32, dtype=torch.float64, requires_grad=True)
for threads in (1, 2):
    torch.set_num_threads(threads)
    (out, h_n), (ref_out, ref_h_n) = ours(x), theirs(x)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_n, ref_h_n, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad((out ** 2).sum() + h_n.sum(), [x, *ours.parameters()])
    ref_grads = torch.autograd.grad((ref_out ** 2).sum() + ref_h_n.sum(), [x, *theirs.parameters()])
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)
print(resolve_engine("auto", x, 64, 128))
"""


@pytest.mark.parametrize("library", ["auto", "scipy"])
def test_large_steps_match_torch_with_either_blas(library):
    """In a fresh process (the library is chosen at import): the compiled engine
    on steps of 2**20 multiply-adds matches torch.nn.RNN in float64; with SciPy's
    BLAS only, ``auto`` leaves such steps to the torch-ops engine at 2 threads."""
    env = {**os.environ, "RNNKIT_BLAS": library, "RNNKIT_ENGINE": "compiled"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LARGE_STEPS)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    used, auto = result.stdout.split()
    if library == "scipy":
        assert (used, auto) == ("scipy", "fused")
    else:
        assert auto == ("compiled" if used == "torch" else "fused")


def test_per_step_products_go_to_brgemm_at_one_thread_and_few_rows_at_more(blas):
    """With AVX-512, torch's brgemm takes the float32 products of BRGEMM_MIN multiply-adds
    or more with fewer than tall_rows rows when torch runs on one thread, and on more those
    of at most FEW_ROWS rows and a weight of at most FEW_ROWS_MAX_WEIGHT."""
    one_thread, none = blas.TALL_ROWS_ONE_THREAD, blas.NO_TALL_LIMIT

    def choose(m, k, n, tall_rows, itemsize=4):
        return blas.goes_to_brgemm(m, k, n, itemsize, tall_rows, True)

    assert choose(16, 64, 256, one_thread)  # 2**18: an LSTM step of batch 16, H = 64
    assert not choose(16, 64, 256, one_thread, itemsize=8)  # float64: BLAS
    assert not choose(30, 64, 64, one_thread)  # an Elman step at H = 64: BLAS is faster
    assert choose(30, 256, 768, one_thread) and not choose(30, 256, 768, none)
    assert not choose(256, 64, 64, one_thread)  # tall: the products over all steps
    assert not choose(3000, 256, 8, one_thread)  # narrow
    # Two threads or more: a step of a few sequences.
    assert choose(blas.FEW_ROWS, 512, 1536, none) and choose(4, 256, 1024, none)
    assert not choose(blas.FEW_ROWS + 1, 512, 1536, none)
    assert not choose(4, 1024, 4096, none)  # a 16 MiB weight: MKL's two threads win
    assert not choose(4, 64, 256, none)  # under BRGEMM_MIN: SciPy's
    assert not choose(4, 512, 1536, none, itemsize=8)


def test_without_avx512_per_step_products_go_to_brgemm_by_rows_and_weight(blas):
    """Without AVX-512, brgemm takes products of a few rows whatever their weight, small
    products, and products of up to AVX2_FEW_ROWS rows of a small weight (smaller at two
    threads, where MKL uses both); no minimum size."""
    one_thread, none = blas.TALL_ROWS_ONE_THREAD, blas.NO_TALL_LIMIT

    def choose(m, k, n, tall_rows, itemsize=4):
        return blas.goes_to_brgemm(m, k, n, itemsize, tall_rows, False)

    for tall_rows in (one_thread, none):
        assert choose(4, 650, 1950, tall_rows) and choose(1, 256, 1024, tall_rows)
        assert choose(1, 32, 128, tall_rows)  # no minimum size
        assert choose(32, 32, 128, tall_rows)  # AVX2_SMALL_PRODUCT
        assert not choose(64, 32, 128, tall_rows)
        assert not choose(8, 256, 1024, tall_rows)  # a large weight: MKL
        assert not choose(32, 256, 1024, tall_rows) and not choose(64, 650, 1950, tall_rows)
        assert not choose(4, 650, 1950, tall_rows, itemsize=8)  # float64: BLAS
        assert not choose(3000, 256, 8, tall_rows)  # narrow
    assert choose(16, 128, 512, one_thread) and not choose(16, 128, 512, none)
    assert not choose(17, 128, 512, one_thread)
    assert choose(16, 64, 256, none) and not choose(16, 128, 256, none)
    assert not choose(17, 64, 256, none)
    # A tiny weight at one thread: up to twice AVX2_FEW_ROWS (a GRU step at H = 64).
    assert choose(32, 64, 192, one_thread) and not choose(33, 64, 192, one_thread)
    assert not choose(30, 64, 192, none)
    # A part of a split loop (its products run beside the other parts'): up to
    # AVX2_PART_ROWS rows by a weight under AVX2_PART_WEIGHT.
    part = blas.TALL_ROWS_PART
    assert choose(32, 128, 384, part) and choose(15, 256, 768, part)
    assert not choose(33, 128, 384, part) and not choose(15, 256, 1024, part)
    assert not choose(32, 128, 384, one_thread)


def test_without_avx512_products_go_to_the_large_library_at_any_size(blas):
    """Without AVX-512, SciPy's OpenBLAS keeps only narrow products and, at one thread,
    tall ones not transposed: it was the slowest on every other size measured."""
    one_thread, none = blas.TALL_ROWS_ONE_THREAD, blas.NO_TALL_LIMIT

    def choose(m, k, n, transpose_a, tall_rows):
        return blas.goes_to_large_library(m, k, n, transpose_a, tall_rows, False)

    assert choose(32, 128, 128, False, none) and choose(2, 16, 16, False, one_thread)
    assert choose(64, 30, 256, True, one_thread)  # a small weight gradient
    assert not choose(3000, 256, 8, False, none)  # narrow output
    assert not choose(3000, 256, 512, False, one_thread)  # tall, one thread
    assert choose(3000, 256, 512, False, none)


def test_the_rules_follow_this_cpu(blas):
    """``AVX512`` is what llvmlite reads off the host, the features numba compiles for."""
    import llvmlite.binding as llvm

    host_has_avx512 = bool(llvm.get_host_cpu_features().get("avx512f", False))
    assert host_has_avx512 is blas.AVX512 is has_avx512()


def test_wide_matrix_vector_products_read_in_place_go_to_the_large_library(blas):
    """SciPy's OpenBLAS slows down 3-4x on one row by a transposed weight of more than
    ONE_ROW_WIDE columns (a GRU's W_hh read in place at batch 1, H > 400)."""
    wide = blas.ONE_ROW_WIDE + 1
    assert blas.wide_matrix_vector(1, wide, True)
    assert not blas.wide_matrix_vector(1, blas.ONE_ROW_WIDE, True)
    assert not blas.wide_matrix_vector(2, wide, True)  # more rows: the size rules
    assert not blas.wide_matrix_vector(1, wide, False)  # a copy, not read in place


def _brgemm_like(function) -> int:
    """The address of a Python function with brgemm's C signature (kept alive)."""
    signature = [ctypes.c_int64] * 6 + [ctypes.c_bool, *[ctypes.c_void_p] * 3, ctypes.c_bool]
    callback = ctypes.CFUNCTYPE(None, *signature)(function)
    _CALLBACKS.append(callback)
    return ctypes.cast(callback, ctypes.c_void_p).value


_CALLBACKS: list = []


def test_brgemm_probe_accepts_torchs_and_the_stand_in_and_refuses_a_wrong_one(blas):
    if blas._TORCH_BRGEMM is not None:
        assert blas._brgemm_is_correct(blas._TORCH_BRGEMM)
    assert blas._brgemm_is_correct(blas.brgemm_stand_in_address())

    def overwrites_always(m, n, k, ld_a, ld_b, ld_c, add_c, a, b, c, is_vnni):
        rows = [(c + i * ld_c * 4) for i in range(m)]  # float32 rows of c
        for row in rows:
            ctypes.memset(row, 0, n * 4)  # ignores add_C and the operands: wrong

    assert not blas._brgemm_is_correct(_brgemm_like(overwrites_always))


def test_a_library_without_brgemm_gets_the_stand_in(blas, monkeypatch):
    without = next((Path(torch.__file__).parent / "lib").glob("*c10*"))
    monkeypatch.setattr(blas, "_torch_library", lambda: without)
    assert blas.torch_brgemm_address() is None
    monkeypatch.undo()
    monkeypatch.setenv("RNNKIT_BLAS", "scipy")
    assert blas.torch_brgemm_address() is None


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("threads, batch", [(1, 32), (2, 8)])
def test_brgemm_steps_match_torch(cell, packed, threads, batch, monkeypatch):
    """Steps of 2**18 multiply-adds or more run on brgemm at one thread, and at two
    with few sequences (forward and backward): float32 outputs and every gradient as
    torch's layer's, dense and packed."""
    from torch.nn.utils.rnn import pack_padded_sequence

    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        # N * H * gates * H >= 2**18
        hidden = (128 if cell == "RNN" else 64) * (1 if batch == 32 else 2)
        ours = getattr(rnnkit, cell)(8, hidden, 2, bidirectional=True)
        theirs = getattr(torch.nn, cell)(8, hidden, 2, bidirectional=True)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(12, batch, 8, requires_grad=True)
        lengths = torch.randint(1, 13, (batch,)).tolist() if packed else [12] * batch

        def run(layer):
            inputs = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
            out, state = layer(inputs)
            out = out.data if packed else out
            h_n = state[0] if cell == "LSTM" else state
            loss = (out * out).sum() + h_n.sum()
            return [out, h_n, *torch.autograd.grad(loss, [x, *layer.parameters()])]

        for mine, reference in zip(run(ours), run(theirs), strict=True):
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(before)
