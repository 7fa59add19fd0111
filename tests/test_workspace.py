"""The backward passes' kept scratch buffers (rnnkit.engine.workspace): reuse by name
and thread, growth, and that results never alias them."""

from __future__ import annotations

import threading

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import rnnkit
from rnnkit.engine import workspace


def test_a_name_reuses_its_buffer_and_grows_when_asked_for_more(monkeypatch):
    monkeypatch.setattr(workspace, "KEPT_MIN", 0)
    workspace.release()
    like = torch.zeros(1)
    first = workspace.scratch("test.a", (4, 3), like)
    again = workspace.scratch("test.a", (2, 5), like)
    assert again.shape == (2, 5) and again.is_contiguous()
    assert again.data_ptr() == first.data_ptr()
    other = workspace.scratch("test.b", (4, 3), like)
    assert other.data_ptr() != first.data_ptr()
    bigger = workspace.scratch("test.a", (10, 10), like)
    assert bigger.shape == (10, 10)
    assert workspace.scratch("test.a", (4, 3), like).data_ptr() == bigger.data_ptr()
    doubles = workspace.scratch("test.a", (4, 3), like.double())
    assert doubles.dtype == torch.float64
    workspace.release()
    assert workspace.scratch("test.a", (4, 3), like).data_ptr() != bigger.data_ptr()


def test_each_thread_has_its_own_buffers(monkeypatch):
    monkeypatch.setattr(workspace, "KEPT_MIN", 0)
    like = torch.zeros(1)
    mine = workspace.scratch("test.thread", (8,), like).data_ptr()
    theirs = []
    worker = threading.Thread(
        target=lambda: theirs.append(workspace.scratch("test.thread", (8,), like).data_ptr())
    )
    worker.start()
    worker.join()
    assert theirs[0] != mine


def test_small_large_fake_and_wrapped_tensors_get_fresh_memory(monkeypatch):
    like = torch.zeros(1)
    monkeypatch.setattr(workspace, "KEPT_MIN", 16)
    monkeypatch.setattr(workspace, "KEPT_MAX", 64)
    workspace.scratch("test.small", (2,), like)
    big = workspace.scratch("test.big", (100,), like)
    assert workspace.scratch("test.big", (100,), like).data_ptr() != big.data_ptr()
    assert "test.small" not in getattr(workspace._local, "buffers", {})
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(like)
        assert type(workspace.scratch("test.fake", (4,), fake)) is not torch.Tensor
    assert "test.fake" not in getattr(workspace._local, "buffers", {})


def _grads(module, x):
    x = x.clone().requires_grad_()
    out = module(x)[0]
    (out * out).sum().backward()
    return [x.grad] + [p.grad.clone() for p in module.parameters()]


def test_successive_backward_passes_of_every_cell_match_torch(monkeypatch):
    """Two layers of different sizes trained one after the other, twice: each backward
    pass writes over the buffers the last one used, and every gradient stays torch's."""
    monkeypatch.setenv("RNNKIT_ENGINE", "compiled")
    monkeypatch.setattr(workspace, "KEPT_MIN", 0)
    for name in ("RNN", "LSTM", "GRU"):
        torch.manual_seed(0)
        pairs = []
        for size in (8, 16):
            ours = getattr(rnnkit, name)(3, size, num_layers=2, bidirectional=True).double()
            theirs = getattr(torch.nn, name)(3, size, num_layers=2, bidirectional=True).double()
            theirs.load_state_dict(ours.state_dict())
            pairs.append((ours, theirs, torch.randn(6 + size, 4, 3, dtype=torch.float64)))
        for _ in range(2):
            for ours, theirs, x in pairs:
                for module in (ours, theirs):
                    module.zero_grad()
                for a, b in zip(_grads(ours, x), _grads(theirs, x), strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
