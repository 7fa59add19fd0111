"""The processes of a distributed run meet first, and stop together if one fails before training.

torch.distributed's ``init_process_group`` waits until every process has
joined. A process that fails before it (rank 0 refusing the run directory, a
config or data file missing on one node, a device one node lacks) leaves the
others waiting there until the 30-minute timeout. torchrun stops them itself;
a scheduler that starts the processes (Slurm's ``srun``, ``mpirun``) does not.

So ``rnnkit train`` meets first, through the same ``MASTER_ADDR``/``MASTER_PORT``
rendezvous and key-value store the process group then uses. Until training,
a process that fails writes its reason to the store; every process posts that
it is ready and reads the others' posts before it joins the process group, so
one failure stops all of them at that point, each naming the failed process::

    with Rendezvous(distributed_env()) as run:
        with run.failures_told():
            ...                      # loading, checking, preparing: may fail
            run.all_ready()          # raises if another process failed
            run.join(device)         # the process group, on the same store
            ...                      # training
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import TracebackType

import torch
import torch.distributed as dist

from rnnkit.toolkit.trainer import DistributedEnv, join_process_group

__all__ = ["OtherProcessFailedError", "Rendezvous"]


class OtherProcessFailedError(RuntimeError):
    """Another process of the run failed before training; its reason is in the message."""


class Rendezvous:
    """This process's meeting with the others of a distributed run (with one
    process, every method does nothing).

    Args:
        env: this process's place in the run; with ``world_size > 1`` the
            constructor waits until every process has reached its own
            rendezvous (``MASTER_ADDR``/``MASTER_PORT``, as torchrun or a
            scheduler set them).
    """

    def __init__(self, env: DistributedEnv) -> None:
        self.env = env
        self.store: dist.Store | None = None
        self._posted = False  # this process posted its state: ready, or its failure
        self._joined = False
        if env.world_size > 1:
            if not dist.is_available():
                raise RuntimeError(
                    f"WORLD_SIZE is {env.world_size} but this torch build has no torch.distributed"
                )
            self.store, _, _ = next(dist.rendezvous("env://", env.rank, env.world_size))

    def __enter__(self) -> Rendezvous:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._joined:
            dist.destroy_process_group()

    @contextlib.contextmanager
    def failures_told(self) -> Iterator[None]:
        """Inside, an exception raised before :meth:`all_ready` is posted for the
        others (they raise :class:`OtherProcessFailedError` naming it) before it
        propagates here."""
        try:
            yield
        except BaseException as error:
            if self.store is not None and not self._posted:
                # best effort: should the store be gone too, this error is the one to show
                with contextlib.suppress(Exception):
                    self._post(_reason(error))
                    if self._hosts_store():
                        self._keep_store_until_read([self._read(rank) for rank in self._ranks()])
            raise

    def all_ready(self) -> None:
        """Post that this process is ready to train and wait for every other one's post.

        Raises:
            OtherProcessFailedError: another process posted a failure instead.
        """
        if self.store is None:
            return
        self._post("")
        states = [self._read(rank) for rank in self._ranks()]
        self.store.set(self._key(self.env.rank, "read"), "")
        failed = [(rank, reason) for rank, reason in enumerate(states) if reason]
        if failed:
            self._keep_store_until_read(states)
            rank, reason = failed[0]
            raise OtherProcessFailedError(
                f"process {rank} of {self.env.world_size} (RANK={rank}) stopped before "
                f"training: {reason}"
            )

    def join(self, device: torch.device) -> None:
        """Join the process group (after :meth:`all_ready`), on the rendezvous' store.

        Args:
            device: where this process trains (NCCL for CUDA, else Gloo).
        """
        if self.store is not None:
            self._joined = join_process_group(self.env, device, self.store)

    def _ranks(self) -> range:
        return range(self.env.world_size)

    def _post(self, reason: str) -> None:
        self._posted = True
        self.store.set(self._key(self.env.rank), reason)

    def _read(self, rank: int) -> str:
        """Process `rank`'s post ("" ready, else its failure), waiting for it;
        "" for this process itself (whose own failure is not news to it)."""
        return "" if rank == self.env.rank else self.store.get(self._key(rank)).decode()

    def _hosts_store(self) -> bool:
        """Whether the store lives in this process: rank 0's, unless torchrun's agent hosts it."""
        return self.env.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"

    def _keep_store_until_read(self, states: list[str]) -> None:
        """Before the process hosting the store leaves a failed run, wait until every
        ready process has read the posts: without the store their reads would fail
        with a broken connection."""
        if not self._hosts_store():
            return
        for rank, state in enumerate(states):
            if rank != self.env.rank and not state:
                self.store.get(self._key(rank, "read"))

    @staticmethod
    def _key(rank: int, what: str = "ready") -> str:
        # torchrun makes a new store for each restart; a scheduler's retry meets afresh
        return f"rnnkit/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{what}/{rank}"


def _reason(error: BaseException) -> str:
    """One line for an exception, as the other processes will show it."""
    if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit (SIGTERM)
        return f"it was stopped ({type(error).__name__})"
    return " ".join(str(error).split()) or type(error).__name__
