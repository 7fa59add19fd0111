"""The fused engine: gradcheck in float64, and agreement with the reference loop.

``rnnkit.engine.rnn_layer`` runs one layer and direction over packed rows
``(sum(batch_sizes), H_in)``. It is checked three ways: ``gradcheck`` (its
hand-written backward against finite differences), a plain per-row loop written
here from the contract (so packed and reverse semantics do not depend on any
rnnkit code), and ``rnnkit.functional.rnn_reference``.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.engine import rnn_layer
from rnnkit.functional import rnn_reference

F64 = torch.float64
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}
BATCH_SIZES = {
    "unpacked": [3, 3, 3, 3],  # an (L=4, N=3) batch reshaped to rows
    "packed": [3, 3, 2, 1],  # lengths 4, 3, 2
    "ragged": [4, 1, 1],  # one long sequence, three of length 1
    "one_step": [2],
}


def packed_layer_loop(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity):
    """The contract of rnn_layer, one sequence at a time.

    Row ``n`` of step ``t`` is sequence ``n``; sequence ``n`` has the steps with
    ``batch_sizes[t] > n``. Reverse runs each sequence from its own last step.

    Returns:
        ``(out, h_n, pre)`` with ``pre`` the pre-activation of every packed row.
    """
    offsets = [sum(batch_sizes[:t]) for t in range(len(batch_sizes))]
    out, pre = [None] * sum(batch_sizes), [None] * sum(batch_sizes)
    h_n = []
    for n in range(batch_sizes[0]):
        rows = [offsets[t] + n for t in range(len(batch_sizes)) if batch_sizes[t] > n]
        h = h0[n]
        for r in reversed(rows) if reverse else rows:
            p = x[r] @ w_ih.T + h @ w_hh.T
            if b_ih is not None:
                p = p + b_ih
            if b_hh is not None:
                p = p + b_hh
            h = ACTIVATIONS[nonlinearity](p)
            out[r], pre[r] = h, p
        h_n.append(h)
    return torch.stack(out), torch.stack(h_n), torch.stack(pre)


def layer_inputs(batch_sizes, nonlinearity, bias, seed, H_in=2, H_out=3, dtype=F64):
    """Random (x, h0, w_ih, w_hh, b_ih, b_hh) for rnn_layer, leaves requiring grad.

    For relu, draws again until every pre-activation is at least 1e-2 from the
    kink at 0, where finite differences are meaningless. The biases have mixed
    signs so that both branches of relu are exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    for _ in range(1000):

        def uniform(*shape, low=-1.0, high=1.0):
            return torch.rand(*shape, generator=gen, dtype=dtype) * (high - low) + low

        x = uniform(sum(batch_sizes), H_in)
        h0 = uniform(batch_sizes[0], H_out)
        w_ih = uniform(H_out, H_in, low=-0.6, high=0.6)
        w_hh = uniform(H_out, H_out, low=-0.6, high=0.6)
        b_ih = uniform(H_out, low=-0.5, high=0.5) if bias else None
        b_hh = uniform(H_out, low=-0.5, high=0.5) if bias else None
        if nonlinearity == "tanh":
            break
        *_, pre = packed_layer_loop(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, False, "relu")
        *_, pre_rev = packed_layer_loop(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, True, "relu")
        margin = min(pre.abs().min(), pre_rev.abs().min())
        both_branches = (pre > 0).any() and (pre < 0).any()
        if margin > 1e-2 and both_branches:
            break
    else:
        raise AssertionError("no relu inputs away from the kink; change the seed")
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    return tuple(None if t is None else t.requires_grad_(True) for t in tensors)


# ---------------------------------------------------------------------------
# gradcheck of the layer op


@pytest.mark.parametrize("layout", list(BATCH_SIZES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rnn_layer_gradcheck(reverse, nonlinearity, bias, layout, layer_engine):
    batch_sizes = BATCH_SIZES[layout]
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(batch_sizes, nonlinearity, bias, seed=3)
    inputs = tuple(t for t in (x, h0, w_ih, w_hh, b_ih, b_hh) if t is not None)

    def layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
        return rnn_layer(
            x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, layer_engine
        )

    # check_undefined_grad (default on) also covers losses that use only out or only h_n.
    assert gradcheck(layer, inputs)


def test_rnn_layer_gradcheck_only_out_or_only_h_n_used(layer_engine):
    """Many-to-one and many-to-many losses: backward with one of the two gradients absent."""
    batch_sizes = BATCH_SIZES["packed"]
    inputs = layer_inputs(batch_sizes, "tanh", True, seed=4)
    for pick in (0, 1):
        for reverse in (False, True):

            def one_output(*args, pick=pick, reverse=reverse):
                return rnn_layer(*args, batch_sizes, reverse, "tanh", layer_engine)[pick]

            assert gradcheck(one_output, inputs)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rnn_layer_unpacked_is_a_reshaped_batch(reverse, layer_engine):
    """An (L, N, H_in) batch is rows with batch_sizes=[N]*L; compare with rnn_reference."""
    L, N = 5, 3
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs([N] * L, "tanh", True, seed=5)
    x_batch = x.detach().reshape(L, N, -1)  # (L, N, H_in)
    out, h_n = rnn_layer(
        x_batch.reshape(L * N, -1), h0, w_ih, w_hh, b_ih, b_hh, [N] * L, reverse, "tanh",
        layer_engine,
    )  # fmt: skip
    # rnn_reference has no reverse-only mode: run it bidirectionally with the
    # layer's weights in the direction under test, and keep that half.
    weights = [w_ih, w_hh, b_ih, b_hh]
    hx = torch.stack([h0, h0])  # (D, N, H_out)
    ref_out, ref_h_n = rnn_reference(x_batch, hx, [weights, weights], bidirectional=True)
    half = slice(3, 6) if reverse else slice(0, 3)
    torch.testing.assert_close(out.reshape(L, N, -1), ref_out[..., half], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h_n, ref_h_n[int(reverse)], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layout", list(BATCH_SIZES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rnn_layer_matches_per_sequence_loop(
    dtype, reverse, nonlinearity, bias, layout, close, layer_engine
):
    """Packed semantics: out per row, and h_n is each sequence's state after its last step."""
    batch_sizes = BATCH_SIZES[layout]
    args = layer_inputs(batch_sizes, nonlinearity, bias, seed=6, H_in=3, H_out=4, dtype=dtype)
    out, h_n = rnn_layer(*args, batch_sizes, reverse, nonlinearity, layer_engine)
    ref_out, ref_h_n, _ = packed_layer_loop(*args, batch_sizes, reverse, nonlinearity)
    assert out.shape == (sum(batch_sizes), 4) and h_n.shape == (batch_sizes[0], 4)
    close(out, ref_out)
    close(h_n, ref_h_n)
    gen = torch.Generator().manual_seed(0)
    g_out = torch.randn(out.shape, generator=gen, dtype=dtype)
    g_h_n = torch.randn(h_n.shape, generator=gen, dtype=dtype)
    names = [
        n
        for n, t in zip(["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], args, strict=True)
        if t is not None
    ]
    leaves = [t for t in args if t is not None]
    grads = torch.autograd.grad((out * g_out).sum() + (h_n * g_h_n).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_out * g_out).sum() + (ref_h_n * g_h_n).sum(), leaves)
    for name, g, ref_g in zip(names, grads, ref_grads, strict=True):
        close(g, ref_g, what=f"grad of {name}")


@pytest.mark.parametrize("which", ["b_ih", "b_hh"])
def test_rnn_layer_with_a_single_bias(which):
    """Biases come in pairs, as in torch.nn.RNN; one alone is refused, not ignored."""
    batch_sizes = BATCH_SIZES["packed"]
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(batch_sizes, "tanh", True, seed=7)
    if which == "b_ih":
        b_hh = None
    else:
        b_ih = None
    with pytest.raises(ValueError, match="only one is None; expected both tensors or both None"):
        rnn_layer(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, False, "tanh")


def test_rnn_layer_does_not_modify_its_inputs():
    batch_sizes = BATCH_SIZES["packed"]
    args = layer_inputs(batch_sizes, "tanh", True, seed=8)
    before = [t.detach().clone() for t in args]
    for reverse in (False, True):
        out, h_n = rnn_layer(*args, batch_sizes, reverse, "tanh")
        (out.sum() + h_n.sum()).backward()
    for t, b in zip(args, before, strict=True):
        torch.testing.assert_close(t.detach(), b, rtol=0, atol=0)


@pytest.mark.parametrize("packed", [False, True])
def test_bias_gradients_are_equal_but_separate_tensors(engine, packed):
    """b_ih and b_hh get the same gradient in separate memory: an optimizer or a
    gradient clipper updating one in place must not change the other."""
    torch.manual_seed(0)
    rnn = rnnkit.RNN(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    inputs = pack_padded_sequence(x, torch.tensor([5, 3])) if packed else x
    _, h_n = rnn(inputs)
    (torch.randn_like(h_n) * h_n).sum().backward()
    for suffix in ("l0", "l0_reverse"):
        b_ih, b_hh = (getattr(rnn, f"bias_{name}_{suffix}").grad for name in ("ih", "hh"))
        torch.testing.assert_close(b_ih, b_hh, rtol=0, atol=0)
        expected = b_ih.clone()
        b_hh.mul_(2)
        torch.testing.assert_close(b_ih, expected, rtol=0, atol=0)


def test_one_row_operands_with_odd_row_strides_match_torch(engine, capfd):
    """hidden_size 1 with a weight_ih stored transposed, and a one-sequence h_0
    transposed into shape: tensors torch calls contiguous whose row stride is
    shorter than a row, which BLAS refuses as a leading dimension (it printed
    "parameter number 8 had an illegal value" and skipped the product)."""
    torch.manual_seed(0)
    theirs = torch.nn.RNN(3, 1, dtype=F64)
    ours = rnnkit.RNN(3, 1, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    column = torch.empty(3, 1, dtype=F64)  # strides (1, 1)
    stored_transposed = column.copy_(theirs.weight_ih_l0.detach().t()).t()  # (1, 3), (1, 1)
    assert stored_transposed.is_contiguous() and stored_transposed.stride() == (1, 1)
    ours.weight_ih_l0 = torch.nn.Parameter(stored_transposed)
    x = torch.randn(5, 2, 3, dtype=F64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    wide_ours, wide_theirs = rnnkit.RNN(3, 4, dtype=F64), torch.nn.RNN(3, 4, dtype=F64)
    wide_ours.load_state_dict(wide_theirs.state_dict())
    h0 = torch.randn(1, 4, 1, dtype=F64).transpose(1, 2)  # (1, 1, 4), strides (4, 1, 1)
    x = torch.randn(6, 1, 3, dtype=F64)
    for model in (wide_ours, wide_theirs):
        out, h_n = model(x, h0)
        (out.sum() + h_n.sum()).backward()
    for name, parameter in wide_ours.named_parameters():
        torch.testing.assert_close(parameter.grad, getattr(wide_theirs, name).grad)
    assert "illegal value" not in capfd.readouterr().err


# ---------------------------------------------------------------------------
# gradcheck of the whole module


def test_rnn_module_gradcheck_bidirectional_two_layers_packed(engine):
    torch.manual_seed(0)
    rnn = rnnkit.RNN(2, 3, num_layers=2, bidirectional=True, dtype=F64)
    lengths = torch.tensor([3, 1, 4, 2])  # unsorted
    x = torch.randn(4, len(lengths), 2, dtype=F64, requires_grad=True)  # (L, N, H_in)
    h0 = torch.randn(4, len(lengths), 3, dtype=F64, requires_grad=True)  # (D * layers, N, H_out)
    params = tuple(rnn.parameters())

    # gradcheck perturbs its inputs in place; passing the module's own parameters
    # exercises the module as users call it, with no functional_call in between.
    def forward(x, h0, *_params):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, h_n = rnn(packed, h0)
        return out.data, h_n

    assert gradcheck(forward, (x, h0, *params))


@pytest.mark.parametrize("batch_first", [False, True])
def test_rnn_module_gradcheck_relu_batched(engine, batch_first):
    torch.manual_seed(1)
    rnn = rnnkit.RNN(2, 3, num_layers=2, nonlinearity="relu", batch_first=batch_first, dtype=F64)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("bias"):
                p.uniform_(0.3, 0.6)  # keep pre-activations clear of relu's kink
            else:
                p.uniform_(0.05, 0.3)
    x = torch.rand(3, 4, 2, dtype=F64, requires_grad=True)
    h0 = torch.rand(2, 3 if batch_first else 4, 3, dtype=F64, requires_grad=True)
    assert gradcheck(lambda x, h0, *_p: rnn(x, h0), (x, h0, *rnn.parameters()))


# ---------------------------------------------------------------------------
# Fused engine against the reference function


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    batch_first=st.booleans(),
    training_dropout_one=st.booleans(),
    L=st.integers(1, 6),
    N=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_module_matches_rnn_reference(
    fused,
    num_layers,
    bidirectional,
    bias,
    nonlinearity,
    batch_first,
    training_dropout_one,
    L,
    N,
    seed,
):
    torch.manual_seed(seed)
    D = 2 if bidirectional else 1
    dropout = 1.0 if training_dropout_one and num_layers > 1 else 0.0
    rnn = rnnkit.RNN(
        3, 4, num_layers, nonlinearity, bias, batch_first, dropout, bidirectional, dtype=F64
    )
    rnn.train(training_dropout_one)
    x = torch.randn(L, N, 3, dtype=F64, requires_grad=True)  # time-major, as the reference takes
    hx = torch.randn(D * num_layers, N, 4, dtype=F64, requires_grad=True)
    out, h_n = rnn(x.transpose(0, 1) if batch_first else x, hx)
    if batch_first:
        out = out.transpose(0, 1)
    ref_out, ref_h_n = rnn_reference(
        x, hx, rnn.all_weights, nonlinearity, bidirectional, dropout, rnn.training
    )
    assert_outputs_and_grads_close(out, h_n, ref_out, ref_h_n, [x, hx, *rnn.parameters()])


@pytest.mark.parametrize("lengths_as", ["list", "tensor"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_packed_matches_rnn_reference_lengths(fused, bidirectional, nonlinearity, lengths_as):
    torch.manual_seed(2)
    lengths = [2, 5, 1, 5, 3]  # unsorted, with ties
    L, N, D = max(lengths), len(lengths), 2 if bidirectional else 1
    rnn = rnnkit.RNN(3, 4, 2, nonlinearity, bidirectional=bidirectional, dtype=F64)
    x = torch.randn(L, N, 3, dtype=F64, requires_grad=True)
    hx = torch.randn(D * 2, N, 4, dtype=F64, requires_grad=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    packed_out, h_n = rnn(packed, hx)
    out, out_lengths = pad_packed_sequence(packed_out)  # (L, N, D * H_out), zero padding
    assert out_lengths.tolist() == lengths
    ref_lengths = lengths if lengths_as == "list" else torch.tensor(lengths)
    ref_out, ref_h_n = rnn_reference(
        x, hx, rnn.all_weights, nonlinearity, bidirectional, lengths=ref_lengths
    )
    assert_outputs_and_grads_close(out, h_n, ref_out, ref_h_n, [x, hx, *rnn.parameters()])


def assert_outputs_and_grads_close(out, h_n, ref_out, ref_h_n, leaves):
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h_n, ref_h_n, rtol=1e-9, atol=1e-9)
    gen = torch.Generator().manual_seed(0)
    g_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    g_h_n = torch.randn(h_n.shape, generator=gen, dtype=h_n.dtype)
    grads = torch.autograd.grad((out * g_out).sum() + (h_n * g_h_n).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_out * g_out).sum() + (ref_h_n * g_h_n).sum(), leaves)
    for i, (g, ref_g) in enumerate(zip(grads, ref_grads, strict=True)):
        torch.testing.assert_close(
            g, ref_g, rtol=1e-9, atol=1e-9, msg=lambda report, i=i: f"grad of leaf {i}: {report}"
        )


# ---------------------------------------------------------------------------
# Engine selection


def test_engines_agree_through_the_environment_variable(monkeypatch):
    torch.manual_seed(3)
    rnn = rnnkit.RNN(3, 4, 2, bidirectional=True, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    results = {}
    for name in ("auto", "fused", "compiled", "reference"):
        monkeypatch.setenv("RNNKIT_ENGINE", name)  # read at each forward, not at construction
        results[name] = rnn(x)
    for name in ("auto", "fused", "compiled"):
        for a, b in zip(results[name], results["reference"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_unknown_engine_is_rejected(monkeypatch):
    rnn = rnnkit.RNN(3, 4)
    monkeypatch.setenv("RNNKIT_ENGINE", "bogus")
    with pytest.raises(ValueError, match=r"RNNKIT_ENGINE.*'bogus'"):
        rnn(torch.randn(2, 1, 3))


def test_the_engine_variable_is_read_at_every_call_set_or_unset(monkeypatch):
    """selected_engine reads os.environ's dict directly; a mapping without one (os.environ
    replaced by a plain dict) is read with get."""
    from rnnkit.recurrent import selected_engine

    monkeypatch.delenv("RNNKIT_ENGINE", raising=False)
    assert selected_engine() == "auto"
    monkeypatch.setenv("RNNKIT_ENGINE", "fused")
    assert selected_engine() == "fused"
    monkeypatch.delenv("RNNKIT_ENGINE")
    assert selected_engine() == "auto"
    monkeypatch.setattr(os, "environ", {"RNNKIT_ENGINE": "reference"})
    assert selected_engine() == "reference"
    monkeypatch.setattr(os, "environ", {})
    assert selected_engine() == "auto"


@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_stacked_inference_matches_torch_and_leaves_the_input_alone(
    fused, grad_mode, bidirectional, packed, nonlinearity, rnn_pair, close
):
    """Without autograd, layers above the first project their input in place (a
    layer's output that nothing else reads); the caller's input is never written.
    130 rows: more than one chunk of the in-place projection; one direction on
    the compiled engine: projected step by step in the kernel."""
    theirs, ours = rnn_pair(
        input_size=5, hidden_size=4, num_layers=3, bidirectional=bidirectional,
        nonlinearity=nonlinearity, dtype=torch.float64,
    )  # fmt: skip
    x = torch.randn(13, 10, 5, dtype=torch.float64)
    if packed:
        x = pack_padded_sequence(x, torch.arange(13, 3, -1), enforce_sorted=True)
    before = (x.data if packed else x).clone()
    context = torch.no_grad if grad_mode == "no_grad" else torch.inference_mode
    with context():
        out, h_n = ours(x)
        expected_out, expected_h_n = theirs(x)
    close(out.data if packed else out, expected_out.data if packed else expected_out)
    close(h_n, expected_h_n)
    assert torch.equal(x.data if packed else x, before)


@pytest.mark.parametrize("packed", [False, True])
def test_a_stacked_layer_of_few_rows_by_a_large_weight_projects_before_its_loop(
    monkeypatch, packed, close
):
    """Inference, one direction, compiled engine: a stacked layer's input is projected step
    by step in the kernel, except where a step has at most 8 rows and w_ih at least 2**16
    elements (H = 256 here): then all rows first, through the in-place chunks. Both give
    torch's results, and leave the caller's input alone."""
    from rnnkit import compiled
    from rnnkit.engine import layer

    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    by_step = []
    forward = compiled.forward

    def spy(*args, **kwargs):
        by_step.append(kwargs.get("project_steps", False))
        return forward(*args, **kwargs)

    monkeypatch.setattr(compiled, "forward", spy)
    assert layer._BY_STEP_FEW_ROWS == 8 and layer._BY_STEP_LARGE_WEIGHT == 256**2
    # (batch, hidden): whether the second layer projects step by step
    cases = {(8, 256): False, (9, 256): True, (2, 255): True}
    for (batch, hidden), expected in cases.items():
        torch.manual_seed(0)
        ours = rnnkit.RNN(3, hidden, num_layers=2, dtype=torch.float64)
        theirs = torch.nn.RNN(3, hidden, num_layers=2, dtype=torch.float64)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(6, batch, 3, dtype=torch.float64)
        if packed:  # unequal lengths: the first step has the most rows
            x = pack_padded_sequence(x, torch.linspace(6, 1, batch).round(), enforce_sorted=False)
        before = (x.data if packed else x).clone()
        by_step.clear()
        with torch.no_grad():
            out, h_n = ours(x)
            expected_out, expected_h_n = theirs(x)
        assert by_step == [False, expected], (batch, hidden)
        close(out.data if packed else out, expected_out.data if packed else expected_out)
        close(h_n, expected_h_n)
        assert torch.equal(x.data if packed else x, before)


@pytest.mark.parametrize("hidden_size", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_forward_and_backward_leave_weights_and_input_alone(fused, hidden_size, dtype):
    """Scaled or transposed copies of the weights must be copies: a 1x1 weight's
    transpose is contiguous, so ``.t().contiguous()`` would be the weight itself."""
    model = rnnkit.RNN(2, hidden_size, num_layers=2, bidirectional=True, dtype=dtype)
    x = torch.randn(4, 3, 2, dtype=dtype, requires_grad=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    x_before = x.detach().clone()
    out, h_n = model(x)
    (out.sum() + h_n.sum()).backward()
    with torch.no_grad():
        model(x)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    assert torch.equal(x.detach(), x_before)
