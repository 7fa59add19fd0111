"""The meeting before training (rnnkit.toolkit.rendezvous), with threads as processes.

The processes share one in-memory store (``HashStore``), as the real ones share
the TCP store of their rendezvous; the end-to-end runs with real processes are
in test_ddp.py.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.distributed as dist

from rnnkit.toolkit import rendezvous
from rnnkit.toolkit.rendezvous import OtherProcessFailedError, Rendezvous
from rnnkit.toolkit.trainer import DistributedEnv, distributed_env

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def meet(world_size: int, work, store=None) -> dict[int, BaseException | None]:
    """Run ``work(rank, run)`` inside the meeting of each of `world_size` threads;
    returns what each raised (None: nothing)."""
    store = dist.HashStore() if store is None else store
    outcomes: dict[int, BaseException | None] = {}
    runs = [Rendezvous(DistributedEnv(world_size, rank, rank), store) for rank in range(world_size)]

    def process(rank: int) -> None:
        try:
            with runs[rank], runs[rank].failures_told():
                work(rank, runs[rank])
            outcomes[rank] = None
        except BaseException as error:  # recorded for the test to inspect
            outcomes[rank] = error

    before = set(threading.enumerate())
    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a process is still waiting"
    for waiter in new_waiters(before):  # the store host's, once everyone has read
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "the store's host is still waiting"
    return outcomes


def new_waiters(before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads in which a store's host waits for readers, started since `before`."""
    return [t for t in threading.enumerate() if t.name == "rnnkit-rendezvous" and t not in before]


def test_processes_that_are_all_ready_go_on():
    assert meet(3, lambda rank, run: run.all_ready(CPU)) == {0: None, 1: None, 2: None}


def test_a_failure_before_training_stops_every_process_naming_it():
    def work(rank, run):
        if rank == 2:
            raise FileNotFoundError("config.toml: no such file")
        run.all_ready(CPU)

    outcomes = meet(3, work)
    assert isinstance(outcomes[2], FileNotFoundError)  # its own error, unchanged
    for rank in (0, 1):
        assert isinstance(outcomes[rank], OtherProcessFailedError)
        assert str(outcomes[rank]) == (
            "process 2 of 3 (RANK=2) stopped before training: config.toml: no such file"
        )


def test_an_interrupted_process_is_named_as_stopped():
    def work(rank, run):
        if rank == 0:
            raise KeyboardInterrupt
        run.all_ready(CPU)

    outcomes = meet(2, work)
    assert "process 0 of 2 (RANK=0) stopped before training: it was stopped" in str(outcomes[1])


def test_processes_that_would_use_different_backends_all_stop(monkeypatch):
    """Say device "auto" found a GPU on one node only: NCCL there, Gloo elsewhere,
    and init_process_group would wait forever."""
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    outcomes = meet(3, lambda rank, run: run.all_ready(torch.device("cuda" if rank else "cpu")))
    for rank in range(3):
        assert isinstance(outcomes[rank], OtherProcessFailedError), outcomes
        assert "different backends" in str(outcomes[rank])
        assert "gloo: RANK [0]; nccl: RANK [1, 2]" in str(outcomes[rank])


def test_a_backend_missing_from_torch_is_this_process_failure(monkeypatch):
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    outcomes = meet(2, lambda rank, run: run.all_ready(torch.device("cuda" if rank else "cpu")))
    assert "no nccl backend" in str(outcomes[1])
    assert "process 1 of 2 (RANK=1) stopped before training" in str(outcomes[0])


def test_the_store_host_stays_until_the_ready_processes_have_read(monkeypatch):
    """Rank 0 hosts the store; had it left at once after failing, a process still
    reading would fail on the broken connection instead of naming the cause."""
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    store = dist.HashStore()
    host = Rendezvous(DistributedEnv(2, 0, 0), store)
    other = Rendezvous(DistributedEnv(2, 1, 1), store)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError), host, host.failures_told():
        raise RuntimeError("refused")
    (waiter,) = new_waiters(before)
    assert waiter.is_alive() and not waiter.daemon  # the process may not exit yet
    with pytest.raises(OtherProcessFailedError, match="refused"):
        other.all_ready(CPU)  # posts ready, reads, acknowledges
    waiter.join(timeout=10)
    assert not waiter.is_alive()


def test_a_host_under_torchrun_does_not_wait(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # torchrun's agent hosts it
    host = Rendezvous(DistributedEnv(2, 0, 0), dist.HashStore())
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError), host, host.failures_told():
        raise RuntimeError("refused")
    assert new_waiters(before) == []


def test_a_process_that_never_posts_is_reported_after_the_wait(monkeypatch):
    monkeypatch.setattr(rendezvous, "WAIT_S", 0.2)
    run = Rendezvous(DistributedEnv(2, 1, 1), dist.HashStore())
    with pytest.raises(TimeoutError, match="a process is missing"):
        run.all_ready(CPU)


def test_two_meetings_in_one_process_do_not_read_each_others_posts():
    store = dist.HashStore()

    def first(rank, run):
        if rank == 1:
            raise ValueError("first try failed")
        run.all_ready(CPU)

    assert isinstance(meet(2, first, store)[0], OtherProcessFailedError)
    assert meet(2, lambda rank, run: run.all_ready(CPU), store) == {0: None, 1: None}


def test_one_process_meets_nobody():
    run = Rendezvous(DistributedEnv(1, 0, 0))
    with run, run.failures_told():
        run.all_ready(CPU)
        run.join(CPU)
    assert run.store is None and not dist.is_initialized()


@pytest.mark.parametrize(
    ("environment", "match"),
    [
        ({"WORLD_SIZE": "2", "RANK": "2"}, "0 <= RANK < WORLD_SIZE"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE >= 1"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1"}, "LOCAL_RANK >= 0"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 without RANK"),
    ],
)
def test_a_distributed_environment_that_does_not_add_up_is_refused(monkeypatch, environment, match):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        distributed_env()
