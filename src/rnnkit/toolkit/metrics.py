"""Losses and metrics for sequence models, with ``ignore_index`` for padded targets.

Targets of ``-100`` (:data:`IGNORE_INDEX`, torch's ``cross_entropy`` default)
mark steps that are not scored: the padding of a tagging or language-model
batch. Every metric here skips them.

The functions (:func:`rmse`, :func:`mae`, :func:`accuracy`) score one batch.
The :class:`Metric` classes score a whole epoch: each batch gives a ``(sum,
count)`` pair, the trainer adds the pairs over batches and over processes, and
:meth:`Metric.value` turns the totals into the number. An epoch's RMSE is
therefore the RMSE over all its samples, not a mean of batch RMSEs, and is the
same whatever the batch size or number of processes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.toolkit.data.batching import IGNORE_INDEX
from rnnkit.toolkit.models import TASKS

__all__ = [
    "IGNORE_INDEX",
    "MAE",
    "RMSE",
    "Accuracy",
    "Metric",
    "Perplexity",
    "accuracy",
    "cross_entropy_loss",
    "loss_for_task",
    "mae",
    "metrics_for_task",
    "mse_loss",
    "rmse",
]


def _as_output(target: Tensor, output: Tensor) -> Tensor:
    # A single regression target per sequence often arrives as (batch,) while the
    # model gives (batch, 1); same values, so reshape rather than broadcast.
    if target.numel() != output.numel():
        raise ValueError(
            "Received an invalid value for argument `target`, expected "
            f"{output.numel()} values to match output of shape {tuple(output.shape)}, got "
            f"shape {tuple(target.shape)}"
        )
    return target.reshape(output.shape).to(output.dtype)


def mse_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error; `target` may be ``(batch,)`` for output ``(batch, 1)``."""
    return F.mse_loss(output, _as_output(target, output))


def cross_entropy_loss(
    output: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0
) -> Tensor:
    """Cross-entropy of class logits, averaged over the targets that are not `ignore_index`;
    `label_smoothing` as in :func:`torch.nn.functional.cross_entropy`.

    Shape:
        output ``(..., classes)``: ``(batch, classes)`` or ``(batch, window, classes)``;
        target ``(...)`` class ids.
    """
    classes = output.size(-1)
    return F.cross_entropy(
        output.reshape(-1, classes), target.reshape(-1), ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )  # fmt: skip


def rmse(output: Tensor, target: Tensor) -> Tensor:
    """Root mean squared error of one batch (a 0-d tensor)."""
    return torch.sqrt(torch.mean((output.detach() - _as_output(target, output)) ** 2))


def mae(output: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error of one batch (a 0-d tensor)."""
    return torch.mean(torch.abs(output.detach() - _as_output(target, output)))


def accuracy(output: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Share of argmax predictions equal to `target`, over targets not equal to `ignore_index`.

    NaN when every target is ignored.

    Shape:
        output ``(..., classes)`` logits, target ``(...)`` class ids.
    """
    correct, count = Accuracy(ignore_index).totals(output, target)
    return correct / count


class Metric:
    """An epoch metric: per-batch ``(sum, count)`` totals, then a value from their sums."""

    name: str = "metric"
    # Whether a larger value is better; early stopping on this metric maximises it if so.
    higher_is_better: bool = False

    def totals(self, output: Tensor, target: Tensor) -> Tensor:
        """``(sum, count)`` of one batch, a float64 tensor of shape ``(2,)``."""
        raise NotImplementedError

    def value(self, total: float, count: float) -> float:
        """The metric from totals summed over batches (NaN for an empty count)."""
        return total / count if count else math.nan

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _pair(total: Tensor, count: int | Tensor) -> Tensor:
    count = torch.as_tensor(count, device=total.device)
    return torch.stack([total.to(torch.float64), count.to(torch.float64)])  # (2,)


class RMSE(Metric):
    """Root mean squared error over every target value of the epoch."""

    name = "rmse"

    def totals(self, output: Tensor, target: Tensor) -> Tensor:
        error = output.detach() - _as_output(target, output)
        return _pair((error**2).sum(), error.numel())

    def value(self, total: float, count: float) -> float:
        return math.sqrt(total / count) if count else math.nan


class MAE(Metric):
    """Mean absolute error over every target value of the epoch."""

    name = "mae"

    def totals(self, output: Tensor, target: Tensor) -> Tensor:
        error = output.detach() - _as_output(target, output)
        return _pair(error.abs().sum(), error.numel())


class Accuracy(Metric):
    """Share of correct argmax predictions, skipping targets equal to `ignore_index`."""

    name = "accuracy"
    higher_is_better = True

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index

    def totals(self, output: Tensor, target: Tensor) -> Tensor:
        predicted = output.detach().argmax(dim=-1)  # (...)
        target = target.reshape(predicted.shape)
        scored = target != self.ignore_index
        return _pair((predicted.eq(target) & scored).sum(), scored.sum())

    def __repr__(self) -> str:
        return f"Accuracy(ignore_index={self.ignore_index})"


class Perplexity(Metric):
    """``exp`` of the mean cross-entropy per scored token (a language model's usual score)."""

    name = "perplexity"

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index

    def totals(self, output: Tensor, target: Tensor) -> Tensor:
        logits = output.detach().reshape(-1, output.size(-1))
        target = target.reshape(-1)
        total = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        return _pair(total, (target != self.ignore_index).sum())

    def value(self, total: float, count: float) -> float:
        return math.exp(total / count) if count else math.nan

    def __repr__(self) -> str:
        return f"Perplexity(ignore_index={self.ignore_index})"


def translation_loss(output: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of a translation model's logits at the real target steps.

    Shape:
        output ``(tokens, V)``: logits for the steps where ``target != -100``, in
        row-major order (what :class:`~rnnkit.toolkit.translation.model.TranslationModel`
        returns); target ``(batch, T)`` target ids + EOS, ``-100`` on padding.
    """
    gold = target[target != IGNORE_INDEX]  # (tokens,)
    return F.cross_entropy(output, gold, label_smoothing=label_smoothing)


class TokenAccuracy(Metric):
    """Teacher-forced next-subword accuracy of a translation model over the real target
    steps (shapes as :func:`translation_loss`)."""

    name = "accuracy"
    higher_is_better = True

    def totals(self, output: Tensor, target: Tensor) -> Tensor:
        gold = target[target != IGNORE_INDEX]
        return _pair((output.argmax(dim=-1) == gold).sum(), gold.numel())


def loss_for_task(task: str, label_smoothing: float = 0.0) -> Callable[[Tensor, Tensor], Tensor]:
    """The usual loss of a :class:`~rnnkit.toolkit.models.ModelConfig` task.

    Mean squared error for ``"regression"``; cross-entropy (ignoring ``-100``) for the
    others, at the real target steps for ``"translation"`` (:func:`translation_loss`),
    with `label_smoothing` (Szegedy et al. 2016: the target is ``1 - label_smoothing``
    on the true class and the rest spread evenly; 0 is none).

    Raises:
        ValueError: `label_smoothing` is outside [0, 1), or not 0 for regression.
    """
    _check_task(task)
    if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
        raise ValueError(
            "Received an invalid value for argument `label_smoothing`, expected a number in "
            f"[0, 1), got {label_smoothing!r}"
        )
    if task == "regression":
        if label_smoothing:
            raise ValueError(
                "Received an invalid value for argument `label_smoothing`, expected 0 for task "
                f"'regression' (it has no classes), got {label_smoothing!r}"
            )
        return mse_loss
    loss = translation_loss if task == "translation" else cross_entropy_loss
    return functools.partial(loss, label_smoothing=label_smoothing) if label_smoothing else loss


def metrics_for_task(task: str) -> tuple[Metric, ...]:
    """The usual epoch metrics of a task: RMSE and MAE, accuracy, or accuracy and perplexity."""
    _check_task(task)
    if task == "regression":
        return (RMSE(), MAE())
    if task == "language_model":
        return (Accuracy(), Perplexity())
    if task == "translation":
        return (TokenAccuracy(),)
    return (Accuracy(),)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(
            f"Received an invalid value for argument `task`, expected one of {TASKS}, got {task!r}"
        )
