"""Device names and moving batches: rnnkit.toolkit.devices."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from rnnkit.toolkit.devices import parses_as_device, resolve_device, to_device


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:1", "mps", "meta"])
def test_names_torch_reads_parse_whether_or_not_present(name):
    assert parses_as_device(name)


@pytest.mark.parametrize("name", ["gpu", "", "cuda:x", "cpu "])
def test_other_names_do_not_parse(name):
    assert not parses_as_device(name)


@pytest.mark.parametrize("name", ["gpu", 3, None])
def test_resolve_refuses_what_is_not_a_device_name_naming_the_argument(name):
    with pytest.raises(ValueError, match=r"argument `device`, expected 'auto', 'cpu'.*got "):
        resolve_device(name)


def test_auto_is_a_gpu_if_there_is_one_else_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_where_there_is_none_is_refused():
    with pytest.raises(ValueError, match=r"no CUDA GPU is available\), got 'cuda:1'"):
        resolve_device("cuda:1")


def test_a_distributed_process_gets_its_local_gpu_unless_the_name_gives_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda:0", local_rank=2) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda")  # one process: the current GPU


class _Pair(NamedTuple):
    ids: torch.Tensor
    label: str


def test_every_tensor_of_a_nested_batch_moves_and_nothing_else_changes():
    packed = pack_sequence([torch.ones(3, 2), torch.ones(1, 2)])
    batch = {"x": [torch.zeros(2), (packed, 7)], "pair": _Pair(torch.ones(1), "a")}
    moved = to_device(batch, torch.device("meta"))
    assert moved["x"][0].is_meta and moved["x"][1][0].data.is_meta and moved["x"][1][1] == 7
    assert isinstance(moved["x"], list) and isinstance(moved["x"][1], tuple)
    assert isinstance(moved["pair"], _Pair) and moved["pair"].ids.is_meta
    assert moved["pair"].label == "a" and not batch["x"][0].is_meta  # the input is untouched
