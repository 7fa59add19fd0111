"""The training loop. It knows nothing about the model (minGPT's ``Trainer``).

A batch from the DataLoader is ``(*inputs, target)``: the model is called as
``model(*inputs)`` and the loss as ``loss_fn(output, target)``. So ``(x,
target)`` gives ``model(x)`` and ``(x, lengths, target)`` gives ``model(x,
lengths)``. A mapping batch ``{"target": target, **inputs}`` calls
``model(**inputs)``. Tensors (and PackedSequences) anywhere in the batch are
moved to the device.

Per epoch the trainer reseeds every generator from ``(seed, epoch, rank)``,
trains, validates, logs ``train_loss``, ``val_loss`` and ``train_``/``val_``
of every metric, and, given ``out_dir``, writes::

    out_dir/
        metrics.csv                  one row per epoch, rewritten atomically
        checkpoints/epoch-NNNN/      the last checkpoints (rnnkit.toolkit.checkpoint)
        model/                       the final weights and config, for load_model

Under ``torchrun --nproc_per_node=K`` (``WORLD_SIZE`` > 1 in the environment)
the same code trains with DistributedDataParallel: gloo on CPU, nccl on GPU,
each process takes ``batch_size / K`` of every global batch, and only rank 0
writes files, logs epochs and shows a progress bar.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from rnnkit.compiled.warmup import compiling_in_place
from rnnkit.toolkit.arguments import invalid_argument, is_int, is_real
from rnnkit.toolkit.checkpoint import (
    EPOCH_DIR,
    MODEL_FILE,
    OPTIMIZER_FILE,
    CheckpointError,
    atomic_write,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    model_config_dict,
    save_checkpoint,
    save_model,
)
from rnnkit.toolkit.data.batching import IGNORE_INDEX
from rnnkit.toolkit.devices import DEVICE_NAMES, parses_as_device, resolve_device, to_device
from rnnkit.toolkit.metrics import Metric
from rnnkit.toolkit.seeding import derive_seed, seed_everything

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "plateau")
METRICS_CSV = "metrics.csv"
CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"

__all__ = [
    "Callback",
    "DistributedEnv",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "distributed_env",
    "join_process_group",
    "require_torch_distributed",
    "shows_progress",
]


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field is checked here, so a bad value fails before any work.

    Example:
        >>> TrainConfig(epochs=20, lr=3e-3, lr_schedule="cosine", early_stopping_patience=3)
    """

    # Passes over the training set.
    epochs: int = 10
    # Sequences per optimizer step over all processes; each of K processes takes
    # batch_size / K, so it must be a multiple of K.
    batch_size: int = 32
    # Learning rate (the starting value of "cosine").
    lr: float = 1e-3
    # Weight decay on every parameter: decoupled for "adamw", an L2 term for "adam" and "sgd".
    weight_decay: float = 0.01
    # "adamw", "adam" or "sgd".
    optimizer: str = "adamw"
    # Momentum of "sgd" (unused otherwise).
    momentum: float = 0.9
    # "constant"; "cosine": anneal from lr to min_lr over the epochs; "plateau": multiply by
    # plateau_factor after plateau_patience epochs without improvement of monitor.
    lr_schedule: str = "constant"
    # Final learning rate of "cosine".
    min_lr: float = 0.0
    # Factor applied to the learning rate by "plateau", in (0, 1).
    plateau_factor: float = 0.5
    # Epochs without improvement before "plateau" lowers the learning rate.
    plateau_patience: int = 2
    # Clip the global L2 norm of the gradient to this before every step; None disables.
    grad_clip: float | None = 1.0
    # Stop after this many epochs without improvement of monitor; None trains every epoch.
    early_stopping_patience: int | None = None
    # Smallest change of monitor that counts as an improvement.
    early_stopping_min_delta: float = 0.0
    # History key watched by early stopping, "plateau" and restore_best, e.g. "val_accuracy"
    # (larger is better for accuracy, smaller for losses and errors); None means "val_loss"
    # when there is a validation set, else "train_loss".
    monitor: str | None = None
    # At the end, load the weights of the epoch with the best monitor value.
    restore_best: bool = True
    # Seed of every random draw in training: shuffling, dropout, DataLoader workers.
    seed: int = 0
    # Reshuffle the training set every epoch.
    shuffle: bool = True
    # Drop each epoch's last, incomplete batch.
    drop_last: bool = False
    # DataLoader worker processes; 0 loads batches in the training process.
    num_workers: int = 0
    # "auto" (a GPU if there is one), "cpu", "cuda", "cuda:N" or "mps"; under torchrun
    # "cuda" and "auto" mean the GPU numbered LOCAL_RANK.
    device: str = "auto"
    # With an out_dir: write a checkpoint every this many epochs and at the end; 0 never.
    checkpoint_every: int = 1
    # How many of the latest checkpoints to keep.
    keep_checkpoints: int = 1
    # tqdm progress bar per epoch; None shows it when stderr is a terminal.
    progress: bool | None = None

    def __post_init__(self) -> None:
        positive_ints = ("epochs", "batch_size", "plateau_patience", "keep_checkpoints")
        for name in positive_ints:
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise invalid_argument(name, "a positive integer", value)
        for name in ("seed", "num_workers", "checkpoint_every"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise invalid_argument(name, "a non-negative integer", value)
        if not is_real(self.lr) or self.lr <= 0:
            raise invalid_argument("lr", "a positive number", self.lr)
        for name in ("weight_decay", "min_lr", "early_stopping_min_delta"):
            value = getattr(self, name)
            if not is_real(value) or value < 0:
                raise invalid_argument(name, "a non-negative number", value)
        if not is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise invalid_argument("momentum", "a number in [0, 1)", self.momentum)
        if not is_real(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise invalid_argument("plateau_factor", "a number in (0, 1)", self.plateau_factor)
        if self.optimizer not in OPTIMIZERS:
            raise invalid_argument("optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        if self.lr_schedule not in LR_SCHEDULES:
            raise invalid_argument("lr_schedule", f"one of {LR_SCHEDULES}", self.lr_schedule)
        if self.grad_clip is not None and (not is_real(self.grad_clip) or self.grad_clip <= 0):
            raise invalid_argument("grad_clip", "a positive number or None", self.grad_clip)
        patience = self.early_stopping_patience
        if patience is not None and (not is_int(patience) or patience < 1):
            raise invalid_argument(
                "early_stopping_patience", "a positive integer or None", patience
            )
        if self.monitor is not None and (
            not isinstance(self.monitor, str) or not re.fullmatch(r"(train|val)_\w+", self.monitor)
        ):
            raise invalid_argument(
                "monitor", "None or a history key such as 'val_loss' or 'val_accuracy'",
                self.monitor,
            )  # fmt: skip
        for name in ("restore_best", "shuffle", "drop_last"):
            if not isinstance(getattr(self, name), bool):
                raise invalid_argument(name, "a bool", getattr(self, name))
        if self.progress is not None and not isinstance(self.progress, bool):
            raise invalid_argument("progress", "a bool or None", self.progress)
        if not isinstance(self.device, str) or not parses_as_device(self.device):
            raise invalid_argument("device", DEVICE_NAMES, self.device)


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient became NaN or infinite; training stopped before the update."""


class Callback:
    """Hooks into :meth:`Trainer.fit`; override any of them.

    A callback may set ``trainer.should_stop = True`` to end training after the
    current epoch. When ``on_epoch_end`` runs, the epoch's row of metrics.csv and
    its checkpoint are on disk.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after resuming, if resuming)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch `epoch` (counted from 1) trains."""

    def on_batch_end(self, trainer: Trainer, step: int, loss: float) -> None:
        """After the optimizer step of batch `step` (from 1) of the epoch."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, float]) -> None:
        """After epoch `epoch` with its row of the history."""

    def on_fit_end(self, trainer: Trainer, history: Sequence[Mapping[str, float]]) -> None:
        """After training, with the best weights restored if asked for."""


class DistributedEnv(NamedTuple):
    """This process's place in a distributed run (one process: ``(1, 0, 0)``)."""

    world_size: int
    rank: int
    local_rank: int


def shows_progress(progress: bool | None) -> bool:
    """Whether to show progress: `progress` itself, or None for "when stderr is a terminal"."""
    return sys.stderr.isatty() if progress is None else progress


def distributed_env() -> DistributedEnv:
    """World size, rank and local rank from the process group or torchrun's environment."""
    values = {}
    for name, default in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)):
        raw = os.environ.get(name)
        try:
            values[name] = default if raw is None else int(raw)
        except ValueError:
            raise ValueError(
                f"Received an invalid value for environment variable {name}, expected an "
                f"integer, got {raw!r}"
            ) from None
    if dist.is_available() and dist.is_initialized():
        return DistributedEnv(dist.get_world_size(), dist.get_rank(), values["LOCAL_RANK"])
    world_size, rank, local_rank = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            "Received invalid values for environment variables WORLD_SIZE, RANK and "
            "LOCAL_RANK, expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, "
            f"got {world_size}, {rank} and {local_rank}"
        )
    if world_size > 1 and "RANK" not in os.environ:  # else every process would be rank 0
        raise ValueError(
            f"Received WORLD_SIZE={world_size} without RANK; expected both (torchrun sets them)"
        )
    return DistributedEnv(world_size, rank, local_rank)


def require_torch_distributed(env: DistributedEnv) -> None:
    """Refuse a run of several processes where this torch build has no torch.distributed."""
    if env.world_size > 1 and not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE is {env.world_size} but this torch build has no torch.distributed"
        )


def join_process_group(
    env: DistributedEnv, device: torch.device, store: dist.Store | None = None
) -> bool:
    """Start torch.distributed's default process group for a run of `env.world_size`
    processes, unless there is one process or the group already exists.

    Args:
        env: this process's place in the run (see :func:`distributed_env`).
        device: where this process trains: NCCL for CUDA, else Gloo.
        store: the run's key-value store from an earlier rendezvous (see
            :mod:`rnnkit.toolkit.rendezvous`), or None to meet through
            ``MASTER_ADDR``/``MASTER_PORT`` here.

    Returns:
        Whether this call created the group (its caller then destroys it).
    """
    if env.world_size == 1:
        return False
    require_torch_distributed(env)
    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if store is None:
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    else:  # under the prefix the env:// rendezvous gives the group's own keys
        store = dist.PrefixStore("default_pg", store)
        dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size)
    logger.info("process group: %s, %d processes", backend, env.world_size)
    return True


class _ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`, in order, without DistributedSampler's padding.

    Validation needs no equal shards (there is no gradient to synchronise), and
    padding would count some samples twice.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class _Best:
    """Early stopping's memory: the best monitor value, its epoch and weights."""

    value: float | None = None
    epoch: int | None = None
    bad_epochs: int = 0
    state: dict[str, Tensor] | None = None


class Trainer:
    """Train any ``nn.Module`` on map-style datasets; see the module docstring for batches.

    Args:
        config: a :class:`TrainConfig`.
        model: the model; moved to the configured device.
        train_dataset: a map-style dataset (``__len__`` and ``__getitem__``).
        val_dataset: scored after every epoch, if given.
        loss_fn: ``loss_fn(output, target)``, a scalar averaged over the batch
            (e.g. :func:`rnnkit.toolkit.metrics.loss_for_task`).
        metrics: :class:`rnnkit.toolkit.metrics.Metric` objects with distinct names.
        collate_fn: the DataLoader's collate_fn, e.g. to pad variable-length sequences.
        callbacks: :class:`Callback` objects.
        out_dir: where metrics.csv, checkpoints and the final model go; None writes nothing.

    Attributes:
        history: one dict per completed epoch, as in metrics.csv.
        epoch: epochs completed.
        optimizer, scheduler: the torch optimizer and learning-rate scheduler (or None).
        should_stop: set True (e.g. from a callback) to stop after the current epoch.

    Example:
        >>> model = build_model(ModelConfig(input_size=4))
        >>> trainer = Trainer(TrainConfig(epochs=5), model, train, val,
        ...                   loss_fn=loss_for_task("regression"),
        ...                   metrics=metrics_for_task("regression"), out_dir="runs/goog")
        >>> history = trainer.fit()  # fit(resume=True) continues from runs/goog/checkpoints
        >>> history[-1]["val_rmse"]
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        *,
        loss_fn: Callable[[Any, Any], Tensor],
        metrics: Sequence[Metric] = (),
        collate_fn: Callable[[list[Any]], Any] | None = None,
        callbacks: Sequence[Callback] = (),
        out_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise invalid_argument("config", "a TrainConfig", type(config).__name__)
        if not isinstance(model, nn.Module):
            raise invalid_argument("model", "a torch.nn.Module", type(model).__name__)
        for name, dataset in (("train_dataset", train_dataset), ("val_dataset", val_dataset)):
            if dataset is not None and not hasattr(dataset, "__len__"):
                raise invalid_argument(
                    name, "a map-style dataset (with __len__ and __getitem__)",
                    type(dataset).__name__,
                )  # fmt: skip
        if len(train_dataset) == 0:
            raise invalid_argument("train_dataset", "at least one sample", "an empty dataset")
        if not callable(loss_fn):
            raise invalid_argument("loss_fn", "a callable loss_fn(output, target)", loss_fn)
        metrics = tuple(metrics)
        names = [getattr(metric, "name", None) for metric in metrics]
        if not all(isinstance(m, Metric) for m in metrics) or len(set(names)) != len(names):
            raise invalid_argument("metrics", "Metric objects with distinct names", metrics)
        self.config = config
        self.model = model
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.loss_fn = loss_fn
        self.metrics = metrics
        self.collate_fn = collate_fn
        self.callbacks = tuple(callbacks)
        self.out_dir = None if out_dir is None else Path(out_dir)

        self.env = distributed_env()
        if config.batch_size % self.env.world_size:
            raise invalid_argument(
                "batch_size",
                f"a multiple of the number of processes ({self.env.world_size})",
                config.batch_size,
            )
        self.device = resolve_device(config.device, self.env.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.model.to(self.device)
        self.monitor = config.monitor or ("val_loss" if val_dataset is not None else "train_loss")
        self._check_monitor()
        self.optimizer = _make_optimizer(config, self.model)
        self.scheduler = _make_scheduler(config, self.optimizer, self._monitor_mode)
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.should_stop = False
        self._stopped_early = False
        self._best = _Best()
        self._last_checkpoint: Path | None = None
        self._loader_generator = torch.Generator()

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the process that writes files, logs and shows progress."""
        return self.env.rank == 0

    def fit(self, resume: bool | str | os.PathLike[str] = False) -> list[dict[str, float]]:
        """Train until ``config.epochs`` epochs are done or early stopping triggers.

        Args:
            resume: False starts from the model as it is; True continues from the
                latest checkpoint in ``out_dir/checkpoints`` (or starts afresh if
                there is none); a path continues from that checkpoint directory.
                A resumed run ends with the same weights as an uninterrupted one.

        Returns:
            The history: one dict per epoch (also the rows of metrics.csv).

        Raises:
            TrainingDivergedError: the loss or gradient became NaN or infinite.
            CheckpointError: the checkpoint to resume from is unreadable or does not fit.
        """
        created_group = join_process_group(self.env, self.device)
        try:
            if resume is not False:
                self._resume(resume)
            elif self.out_dir is not None:  # every rank, so that all of them raise
                self._check_fresh_out_dir()
            # Every step on one engine: a fresh cache must not change the result.
            with compiling_in_place():
                history = self._fit()
            if self.env.world_size > 1:  # whoever made the group: all finish together
                on_gpu = self.device.type == "cuda"
                dist.barrier(device_ids=[self.device.index] if on_gpu else None)
            return history
        finally:
            if created_group:
                dist.destroy_process_group()

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Loss and metrics of the model on `dataset`, e.g. a test set.

        Returns:
            ``{"loss": ..., <metric name>: ...}``, over every sample (every non-ignored
            target for class ids) and every process.
        """
        return self._logs(self._evaluate(self._eval_loader(dataset)), prefix="")

    def _fit(self) -> list[dict[str, float]]:
        config = self.config
        model = self._distributed_model()
        train_loader = self._train_loader()
        val_loader = None if self.val_dataset is None else self._eval_loader(self.val_dataset)
        if self.out_dir is not None and self.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale(self.out_dir)  # metrics.csv's, the final model's
            _remove_stale(self.out_dir / CHECKPOINTS_DIR)
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.epoch < config.epochs and not self._stopped_early and not self.should_stop:
            epoch = self.epoch + 1
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            logs: dict[str, float] = {"epoch": epoch, "lr": lr}
            logs.update(self._train_epoch(model, train_loader, epoch))
            if val_loader is not None:
                logs.update(self._logs(self._evaluate(val_loader), prefix="val_"))
            logs["seconds"] = time.perf_counter() - started
            self._end_epoch(epoch, logs)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
        if config.restore_best and self._best.state is not None:
            self.model.load_state_dict(self._best.state)
            logger.info(
                "restored the weights of epoch %d (%s %.6g)",
                self._best.epoch, self.monitor, self._best.value,
            )  # fmt: skip
        if self.out_dir is not None and self.is_main_process:
            save_model(self.out_dir / MODEL_DIR, self.model)
        for callback in self.callbacks:
            callback.on_fit_end(self, self.history)
        return [dict(row) for row in self.history]

    def _train_epoch(self, model: nn.Module, loader: DataLoader, epoch: int) -> dict[str, float]:
        config = self.config
        # The epoch's random state depends on (seed, epoch, rank) only: exact resume.
        seed_everything(derive_seed(config.seed, epoch, self.env.rank))
        self._loader_generator.manual_seed(derive_seed(config.seed, epoch, self.env.rank, 1))
        loader.sampler.set_epoch(epoch)
        model.train()
        totals = self._zero_totals()
        show = self.is_main_process and shows_progress(config.progress)
        bar = tqdm(
            loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
            disable=not show, dynamic_ncols=True,
        )  # fmt: skip
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        for step, batch in enumerate(bar, start=1):
            args, kwargs, target = _split_batch(to_device(batch, self.device, non_blocking=True))
            output = model(*args, **kwargs)
            loss = self.loss_fn(output, target)
            loss_value = loss.item()
            self._check_finite(loss_value, "loss", epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                # After backward the gradients are averaged over processes, so the
                # norm, and this check, agree on every rank.
                norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
                self._check_finite(float(norm), "gradient norm", epoch, step)
            self.optimizer.step()
            totals += self._batch_totals(loss.detach(), output, target)
            bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
            for callback in self.callbacks:
                callback.on_batch_end(self, step, loss_value)
        bar.close()
        return self._logs(totals, prefix="train_")

    @torch.no_grad()
    def _evaluate(self, loader: DataLoader) -> Tensor:
        # The bare model: no DDP hooks, so shards of unequal size cannot hang.
        was_training = self.model.training
        self.model.eval()
        totals = self._zero_totals()
        try:
            for batch in loader:
                args, kwargs, target = _split_batch(
                    to_device(batch, self.device, non_blocking=True)
                )
                output = self.model(*args, **kwargs)
                totals += self._batch_totals(self.loss_fn(output, target), output, target)
        finally:
            self.model.train(was_training)
        return totals

    def _zero_totals(self) -> Tensor:
        # (loss sum, what the loss averaged over (samples, or non-ignored targets), then a
        # (sum, count) pair per metric), summed over batches
        return torch.zeros(2 + 2 * len(self.metrics), dtype=torch.float64, device=self.device)

    def _batch_totals(self, loss: Tensor, output: Any, target: Any) -> Tensor:
        # The loss is a batch mean: weight it by what it averaged over for the epoch mean.
        count = _loss_weight(target)
        loss_total = loss.detach().to(torch.float64).reshape(1) * count
        if count == 0:
            loss_total = torch.zeros_like(loss_total)  # a mean over no targets is NaN
        parts = [loss_total, torch.tensor([count], dtype=torch.float64, device=self.device)]
        parts += [metric.totals(output, target).to(self.device) for metric in self.metrics]
        return torch.cat(parts)  # (2 + 2 * metrics,)

    def _logs(self, totals: Tensor, prefix: str) -> dict[str, float]:
        """Epoch values from totals summed over this process's batches and every process."""
        if dist.is_available() and dist.is_initialized() and self.env.world_size > 1:
            dist.all_reduce(totals)
        values = totals.tolist()
        loss_sum, weight = values[0], values[1]
        logs = {f"{prefix}loss": loss_sum / weight if weight else math.nan}
        for i, metric in enumerate(self.metrics):
            logs[f"{prefix}{metric.name}"] = metric.value(values[2 + 2 * i], values[3 + 2 * i])
        return logs

    def _check_finite(self, value: float, what: str, epoch: int, step: int) -> None:
        problem = None if math.isfinite(value) else f"the {what} is {value}"
        if self.env.world_size > 1 and what == "loss":
            # A NaN loss on one rank only would leave the others waiting in backward.
            flag = torch.tensor([float(problem is not None)], device=self.device)
            dist.all_reduce(flag)
            if flag.item() > 0 and problem is None:
                problem = f"the {what} is not finite on another process"
        if problem is None:
            return
        where = (
            f"the last good checkpoint, {self._last_checkpoint}, is kept"
            if self._last_checkpoint is not None
            else "no checkpoint was written yet"
        )
        raise TrainingDivergedError(
            f"Training diverged at epoch {epoch}, batch {step}: {problem}. The weights are "
            f"those before this batch and {where}. Try a smaller lr "
            f"(now {self.optimizer.param_groups[0]['lr']:g})"
            + (" or grad_clip (now off)." if self.config.grad_clip is None else ".")
        )

    def _end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """Early stopping, the schedule, the history, metrics.csv and the checkpoint."""
        config = self.config
        value = logs.get(self.monitor, math.nan)
        best = self._best
        delta = config.early_stopping_min_delta
        if math.isfinite(value) and (
            best.value is None
            or (self._monitor_mode == "min" and value < best.value - delta)
            or (self._monitor_mode == "max" and value > best.value + delta)
        ):
            best.value, best.epoch, best.bad_epochs = value, epoch, 0
            if config.restore_best:
                best.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            best.bad_epochs += 1
        patience = config.early_stopping_patience
        self._stopped_early = patience is not None and best.bad_epochs >= patience
        if self.scheduler is not None:
            if config.lr_schedule == "plateau":
                self.scheduler.step(value)
            else:
                self.scheduler.step()
        self.history.append(logs)
        self.epoch = epoch
        if self.is_main_process:
            summary = ", ".join(f"{k} {v:.6g}" for k, v in logs.items() if k != "epoch")
            logger.info("epoch %d/%d: %s", epoch, config.epochs, summary)
            if self._stopped_early:
                logger.info(
                    "early stopping: %s has not improved for %d epochs (best %.6g at epoch %d)",
                    self.monitor, best.bad_epochs, best.value, best.epoch,
                )  # fmt: skip
        if self.out_dir is None or not self.is_main_process:
            return
        atomic_write(self.out_dir / METRICS_CSV, _csv(self.history))
        every = config.checkpoint_every
        if every and (epoch % every == 0 or epoch == config.epochs or self._stopped_early):
            self._save_checkpoint(epoch)

    def _save_checkpoint(self, epoch: int) -> None:
        best = self._best
        # The best weights ride along when they are not this epoch's own.
        separate_best = self.config.restore_best and best.epoch not in (None, epoch)
        directory = self.out_dir / CHECKPOINTS_DIR / f"epoch-{epoch:04d}"
        save_checkpoint(
            directory,
            model_state=self.model.state_dict(),
            model_config=model_config_dict(self.model),
            epoch=epoch,
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=None if self.scheduler is None else self.scheduler.state_dict(),
            trainer_state={
                "history": self.history,
                "best_value": best.value,
                "best_epoch": best.epoch,
                "bad_epochs": best.bad_epochs,
                "stopped_early": self._stopped_early,
                "monitor": self.monitor,
                "seed": self.config.seed,
                "world_size": self.env.world_size,
                "train_config": dataclasses.asdict(self.config),
            },
            best_model_state=best.state if separate_best else None,
        )
        self._last_checkpoint = directory
        _prune(directory.parent, keep=self.config.keep_checkpoints, newest=epoch)

    def _resume(self, resume: bool | str | os.PathLike[str]) -> None:
        if resume is True:
            if self.out_dir is None:
                raise invalid_argument(
                    "resume", "False or a checkpoint path when out_dir is None", True
                )
            path = latest_checkpoint(self.out_dir / CHECKPOINTS_DIR)
            if path is None:
                logger.info("no checkpoint in %s: starting from scratch", self.out_dir)
                return
        else:
            path = Path(resume)
        checkpoint = load_checkpoint(path)
        if checkpoint.optimizer_state is None or checkpoint.epoch is None:
            raise CheckpointError(
                f"{path}: holds no training state (a saved model?) to resume from"
            )
        if (self.scheduler is None) != (checkpoint.scheduler_state is None):
            raise CheckpointError(
                f"{path}: was written with a different lr_schedule than {self.config.lr_schedule!r}"
            )
        load_weights(self.model, checkpoint.model_state, path / MODEL_FILE)
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(
                f"{path / OPTIMIZER_FILE}: does not fit the optimizer ({error})"
            ) from None
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.scheduler_state)
        state = checkpoint.trainer_state
        try:
            self.history = [dict(row) for row in state["history"]]
            self._best = _Best(state["best_value"], state["best_epoch"], state["bad_epochs"])
            self._stopped_early = bool(state["stopped_early"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: malformed trainer state ({error!r})") from None
        if self.config.restore_best:
            if checkpoint.best_model_state is not None:
                self._best.state = checkpoint.best_model_state
            elif self._best.epoch == checkpoint.epoch:
                self._best.state = {k: v.clone() for k, v in checkpoint.model_state.items()}
        self.epoch = checkpoint.epoch
        self._last_checkpoint = path
        if state.get("seed") != self.config.seed:
            logger.warning(
                "resuming a run seeded %s with seed %s: the rest of the run differs from the "
                "original", state.get("seed"), self.config.seed,
            )  # fmt: skip
        logger.info("resumed from %s after epoch %d", path, self.epoch)

    def _check_fresh_out_dir(self) -> None:
        existing = latest_checkpoint(self.out_dir / CHECKPOINTS_DIR)
        if existing is not None:
            raise ValueError(
                "Received an invalid value for argument `out_dir`, expected a directory "
                "without checkpoints (or fit(resume=True) to continue from them), got "
                f"{str(self.out_dir)!r} holding {existing.name}"
            )

    def _check_monitor(self) -> None:
        stage, _, name = self.monitor.partition("_")
        names = {"loss": "min"} | {
            m.name: "max" if m.higher_is_better else "min" for m in self.metrics
        }
        if name not in names or (stage == "val" and self.val_dataset is None):
            known = [f"train_{n}" for n in names]
            known += [f"val_{n}" for n in names] if self.val_dataset is not None else []
            raise invalid_argument("monitor", f"one of {known}", self.monitor)
        self._monitor_mode = names[name]

    def _distributed_model(self) -> nn.Module:
        if self.env.world_size == 1:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _train_loader(self) -> DataLoader:
        # DistributedSampler also for one process: the order of samples in the
        # global batches is then the same for any number of processes.
        sampler = DistributedSampler(
            self.train_dataset, num_replicas=self.env.world_size, rank=self.env.rank,
            shuffle=self.config.shuffle, seed=self.config.seed,
        )  # fmt: skip
        return self._loader(self.train_dataset, sampler, drop_last=self.config.drop_last)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        world_size = self.env.world_size if dist.is_available() and dist.is_initialized() else 1
        rank = self.env.rank if world_size > 1 else 0
        return self._loader(dataset, _ShardSampler(len(dataset), rank, world_size), False)

    def _loader(self, dataset: Dataset, sampler: Sampler, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size // self.env.world_size,
            sampler=sampler,
            num_workers=self.config.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            generator=self._loader_generator,
        )


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise invalid_argument("model", "a module with trainable parameters", type(model).__name__)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, mode: str) -> Any:
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=config.min_lr
        )
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=config.plateau_factor, patience=config.plateau_patience
        )
    return None


def _split_batch(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """``(*inputs, target)`` or ``{"target": target, **inputs}`` -> (args, kwargs, target)."""
    if isinstance(batch, Mapping) and "target" in batch:
        kwargs = {key: value for key, value in batch.items() if key != "target"}
        return (), kwargs, batch["target"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return tuple(batch[:-1]), {}, batch[-1]
    size = f" of length {len(batch)}" if hasattr(batch, "__len__") else ""
    raise TypeError(
        "A batch must be (*inputs, target) or a mapping with a 'target' key, got "
        f"{type(batch).__name__}{size}"
    )


def _loss_weight(target: Any) -> int:
    """How many values a mean loss of `target` averages over.

    Class ids: the targets that are not IGNORE_INDEX, as cross-entropy averages over those
    (tokens for tagging and language models, so padded sequences weigh by their length).
    Anything else: the samples.
    """
    if isinstance(target, Tensor) and not target.is_floating_point() and not target.is_complex():
        return int((target != IGNORE_INDEX).sum())
    return _num_samples(target)


def _num_samples(target: Any) -> int:
    if isinstance(target, Tensor):
        return target.size(0) if target.dim() else 1
    return len(target)


def _csv(history: Sequence[Mapping[str, float]]) -> str:
    fields: dict[str, None] = {}
    for row in history:
        fields.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _prune(directory: Path, keep: int, newest: int) -> None:
    """Keep the `keep` latest checkpoints up to epoch `newest`; later ones belong to an
    abandoned run that was resumed from an earlier checkpoint."""
    epochs = sorted(
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if (match := EPOCH_DIR.fullmatch(entry.name))
    )
    kept = {entry for _, entry in [pair for pair in epochs if pair[0] <= newest][-keep:]}
    for _, entry in epochs:
        if entry not in kept:
            shutil.rmtree(entry, ignore_errors=True)


def _remove_stale(directory: Path) -> None:
    """Clean up after a write that was interrupted (a killed process) in `directory`.

    Temporary files and directories (``.NAME.XXXX.tmp``) go. A previous version
    moved aside (``.NAME.XXXX.old``) goes too, unless the kill came before the new
    version took its place: then it is put back, as the write would have done.
    """
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        name = entry.name
        if not name.startswith(".") or not name.endswith((".tmp", ".old")):
            continue
        original = directory / name[1:].rsplit(".", 2)[0]  # .epoch-0003.<hex>.old -> epoch-0003
        if name.endswith(".old") and not original.exists():
            os.replace(entry, original)
            logger.warning("put back %s, moved aside by an interrupted write", original)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
