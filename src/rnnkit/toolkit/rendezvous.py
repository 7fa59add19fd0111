"""The processes of a distributed run meet first, and stop together if one fails before training.

torch.distributed's ``init_process_group`` waits until every process has
joined. A process that fails before it (rank 0 refusing the run directory, a
config or data file missing on one node, a device one node lacks) leaves the
others waiting there until the 30-minute timeout. torchrun stops them itself;
a scheduler that starts the processes (Slurm's ``srun``, ``mpirun``) does not.

So ``rnnkit train`` meets first, through the same ``MASTER_ADDR``/``MASTER_PORT``
rendezvous and key-value store the process group then uses. Until training,
a process that fails writes its reason to the store; every process posts that
it is ready (with the backend it would use) and reads the others' posts before
it joins the process group, so one failure, or processes that would use
different backends, stop all of them at that point, each naming the cause::

    with Rendezvous(distributed_env()) as run:
        with run.failures_told():
            ...                      # loading, checking, preparing: may fail
            run.all_ready(device)    # raises if another process failed
            run.join(device)         # the process group, on the same store
            ...                      # training

Not covered: a failure inside ``init_process_group`` itself (a network
interface missing on one node), which torch reports after its own timeout.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import torch
import torch.distributed as dist

from rnnkit.toolkit.trainer import DistributedEnv, join_process_group, require_torch_distributed

__all__ = ["OtherProcessFailedError", "Rendezvous"]

# How long a process waits for the others' posts: torch's own default for the group.
WAIT_S = 30 * 60
# How long the store's host stays, after a failed meeting, for the others to read it
# (its error is printed first); one slower than this fails on the broken connection.
OUTLAST_S = 5 * 60
# Between two looks at the store: short waits let Ctrl-C and SIGTERM through.
_POLL_S = 0.05
_READY = "ready "  # a ready process's post: this, then its backend


class OtherProcessFailedError(RuntimeError):
    """Another process of the run failed before training, or they disagree; the message says how."""


class Rendezvous:
    """This process's meeting with the others of a distributed run (with one
    process, every method does nothing).

    Args:
        env: this process's place in the run; with ``world_size > 1`` the
            constructor waits until every process has reached its own
            rendezvous (``MASTER_ADDR``/``MASTER_PORT``, as torchrun or a
            scheduler set them).
        store: the key-value store to meet on instead (tests: a ``HashStore``
            shared by threads).
    """

    def __init__(self, env: DistributedEnv, store: dist.Store | None = None) -> None:
        self.env = env
        self.store = store
        self._meeting = 0  # this process's how-manieth meeting on the store (each rank counts)
        self._posted = self._acknowledged = self._joined = False
        self._outlast_readers = False  # host of the store of a failed meeting: stay a while
        if env.world_size > 1 and store is None:
            require_torch_distributed(env)
            self.store, _, _ = next(dist.rendezvous("env://", env.rank, env.world_size))
        if self.store is not None:  # one process may train twice: count, so as not to mix posts
            self._meeting = self.store.add(self._key(env.rank, "meetings", counted=False), 1)

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
        if self._outlast_readers:  # not a daemon: the process exits when it is done
            threading.Thread(target=self.wait_for_readers, name="rnnkit-rendezvous").start()

    @contextlib.contextmanager
    def failures_told(self) -> Iterator[None]:
        """Inside, an exception raised before :meth:`all_ready` has posted is posted
        for the others (they raise :class:`OtherProcessFailedError` naming it)."""
        try:
            yield
        except BaseException as error:
            if self.store is not None:
                # best effort: should the store be gone too, this error is the one to show
                with contextlib.suppress(Exception):
                    if not self._posted:
                        self._post(_reason(error))
                        self._outlast_readers = self._hosts_store()
                    elif not self._acknowledged:  # posted ready, stopped before reading
                        self._acknowledge()
            raise

    def all_ready(self, device: torch.device) -> None:
        """Post that this process is ready to train on `device` and read every other post.

        Args:
            device: where this process trains; it decides the backend (NCCL for
                CUDA, else Gloo), which must be built into torch and be the
                same in every process.

        Raises:
            OtherProcessFailedError: another process posted a failure, or the
                processes would use different backends.
        """
        if self.store is None:
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        built = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
        if not built:
            raise RuntimeError(f"this torch build has no {backend} backend (for {device})")
        self._post(_READY + backend)
        posts = {rank: self._read(rank) for rank in self._others()}
        self._acknowledge()
        failed = {rank: post for rank, post in posts.items() if not post.startswith(_READY)}
        backends = {rank: post[len(_READY) :] for rank, post in posts.items() if rank not in failed}
        backends[self.env.rank] = backend
        if failed or len(set(backends.values())) > 1:
            self._outlast_readers = self._hosts_store()
        if failed:
            rank, reason = min(failed.items())
            raise OtherProcessFailedError(
                f"process {rank} of {self.env.world_size} (RANK={rank}) stopped before "
                f"training: {reason}"
            )
        if len(set(backends.values())) > 1:
            by_backend = {name: [r for r, b in sorted(backends.items()) if b == name]
                          for name in sorted(set(backends.values()))}  # fmt: skip
            raise OtherProcessFailedError(
                "the processes would train with different backends (NCCL on CUDA, else "
                f"Gloo): {'; '.join(f'{name}: RANK {ranks}' for name, ranks in by_backend.items())}"
                "; set train.device to the same kind of device on every node"
            )

    def join(self, device: torch.device) -> None:
        """Join the process group (after :meth:`all_ready`), on the rendezvous' store.

        Args:
            device: where this process trains (NCCL for CUDA, else Gloo).
        """
        if self.store is not None:
            self._joined = join_process_group(self.env, device, self.store)

    def wait_for_readers(self) -> None:
        """Wait until every other process has posted and, if it posted ready, read
        the posts (at most :data:`OUTLAST_S`): without the store they could not."""
        deadline = time.monotonic() + OUTLAST_S
        with contextlib.suppress(Exception):  # out of time, or the store broke: leave quietly
            for rank in self._others():
                self._wait_for(self._key(rank), deadline)
                if self.store.get(self._key(rank)).decode().startswith(_READY):
                    self._wait_for(self._key(rank, "read"), deadline)

    def _others(self) -> list[int]:
        return [rank for rank in range(self.env.world_size) if rank != self.env.rank]

    def _post(self, post: str) -> None:
        self._posted = True
        self.store.set(self._key(self.env.rank), post)

    def _acknowledge(self) -> None:
        self._acknowledged = True
        self.store.set(self._key(self.env.rank, "read"), "")

    def _read(self, rank: int) -> str:
        """Process `rank`'s post, waiting for it."""
        key = self._key(rank)
        self._wait_for(key, time.monotonic() + WAIT_S)
        return self.store.get(key).decode()

    def _wait_for(self, key: str, deadline: float) -> None:
        # short looks rather than one long blocking get: signals are handled in between
        while not self.store.check([key]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing at {key} in the run's store: a process is missing")
            time.sleep(_POLL_S)

    def _hosts_store(self) -> bool:
        """Whether the store lives in this process: rank 0's, unless torchrun's agent hosts it."""
        return self.env.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"

    def _key(self, rank: int, what: str = "post", counted: bool = True) -> str:
        # torchrun's store lives across restarts
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        meeting = f"{self._meeting}/" if counted else ""
        return f"rnnkit/{restart}/{meeting}{what}/{rank}"


def _reason(error: BaseException) -> str:
    """One line for an exception, as the other processes will show it."""
    if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit (SIGTERM)
        return f"it was stopped ({type(error).__name__})"
    return " ".join(str(error).split()) or type(error).__name__
