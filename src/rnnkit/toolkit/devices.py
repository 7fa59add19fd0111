"""Devices: the names a config or an estimator takes, and a batch moved to one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnkit.toolkit.arguments import invalid_argument

DEVICE_NAMES = "'auto', 'cpu', 'cuda', 'cuda:N' or another torch device"


def parses_as_device(name: str) -> bool:
    """Whether `name` is ``"auto"`` or a device name torch reads (present here or not)."""
    if name == "auto":
        return True
    try:
        torch.device(name)
    except RuntimeError:
        return False
    return True


def resolve_device(name: object, local_rank: int | None = None) -> torch.device:
    """The device `name` asks for on this machine.

    Args:
        name: ``"auto"`` (a GPU if there is one, else the CPU) or any name torch reads.
        local_rank: In a distributed run, this process's GPU when the name gives
            no index (``"cuda"`` or ``"auto"``).

    Raises:
        ValueError: `name` is not a device name, or asks for CUDA where there is none.
    """
    if not isinstance(name, str) or not parses_as_device(name):
        raise invalid_argument("device", DEVICE_NAMES, name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise invalid_argument(
                "device", "a device this machine has (no CUDA GPU is available)", name
            )
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
    return device


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """`batch` with every tensor and PackedSequence in it moved to `device`.

    Tensors may sit in dicts, lists, tuples and NamedTuples, nested; anything
    else is returned as it is.
    """
    if isinstance(batch, (Tensor, PackedSequence)):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(to_device(value, device, non_blocking) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device, non_blocking) for value in batch)
    return batch
