"""Scratch buffers of the backward passes, kept between calls on CPU.

A training step's backward pass needs a few buffers as large as the layer's gates
(dL/d(pre-activation) of every row) that live only inside the call. Freshly
allocated, every one of their pages faults on first touch (about 1.2 us per 4 KiB)
whenever the allocator has returned such blocks to the system between steps: about
1.5 ms of an 18 ms GRU training step at 50x64x32x128 (one thread). Kept here, the next
step writes into memory already mapped (that GRU's training against torch's, in
alternating processes: 1.52-1.72x with, 1.40-1.59x without).

A buffer belongs to a name and a thread: a caller takes it, uses it and lets it go
before returning, and no two buffers in use at once share a name. Nothing taken
from here may escape into a result. On other devices torch's caching allocator
already reuses memory, so they get a fresh tensor.

Memory: one buffer per name and thread, as large as the largest request so far,
held until :func:`release`; requests below ``KEPT_MIN`` or above ``KEPT_MAX`` bytes
get a fresh tensor.
"""

from __future__ import annotations

import threading

from torch import Tensor

# Buffers larger than this are not kept: memory held between steps would outweigh
# the page faults saved.
KEPT_MAX = 256 << 20
# Nor smaller ones: the allocator reuses small blocks without faults, and looking one up
# here costs more than allocating it (measured: a batch-1 LSTM training step 3% slower).
KEPT_MIN = 256 << 10

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised contiguous tensor of ``shape`` in ``like``'s dtype and device,
    reused by the next request for ``name`` on this thread (see the module doc).

    Args:
        name: whose buffer; distinct for buffers in use at the same time.
        shape: the tensor's shape.
        like: gives the dtype and device.

    Returns:
        The tensor; its contents are whatever the last user left.
    """
    numel = 1
    for size in shape:
        numel *= size
    if (
        not KEPT_MIN <= numel * like.element_size() <= KEPT_MAX
        or like.device.type != "cpu"
        or type(like) is not Tensor  # a fake or wrapped tensor of a tracer or transform
    ):
        return like.new_empty(shape)
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != like.dtype or buffer.numel() < numel:
        buffer = buffers[name] = like.new_empty(numel)
    return buffer[:numel].view(shape)


def release() -> None:
    """Free this thread's kept buffers."""
    _local.buffers = {}
