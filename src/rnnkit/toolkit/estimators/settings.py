"""Settings that ``fit`` derives from the data when the caller leaves them at ``"auto"``.

Most people pass nothing but their data, so each of these is chosen from it at
fit time, shown (``fitted_settings_``, and one logged line) and saved with the
model; an explicit argument always wins:

- :class:`~rnnkit.toolkit.estimators.input_scaling.InputScaling`: per-channel
  standardisation fitted on the training series only, after ``log1p`` on
  channels of heavy-tailed non-negative values (raw counts in the tens of
  thousands), applied again at predict time;
- :func:`choose_patch_size` and :func:`patch`: ``k`` consecutive steps fed as
  one input vector (as PatchTST and SegRNN do), so the recurrence runs over
  about :data:`TARGET_STEPS` steps, not hundreds;
- :func:`step_budget`: training measured in optimiser steps, not epochs, so
  small data sets get enough updates and large ones do not take hours;
- :func:`validation_split`: a seeded (stratified, for labels) validation part
  carved from the training data for early stopping;
- :func:`choose_ensemble_size`, :func:`member_splits` and
  :func:`choose_hidden_size`: on small data several smaller models, each with
  its own seeded validation part, averaged.

``scripts/defaults_cv.py`` chose them by cross-validation on training splits
(``docs/defaults_cv.md``); ``scripts/defaults_panel.py`` measures them on test
splits (``docs/defaults.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.arguments import invalid_argument, is_int, is_real
from rnnkit.toolkit.seeding import derive_seed

AUTO = "auto"
TARGET_STEPS = 32  # the recurrence length patching aims for: tens of steps, not hundreds
# The step budget: EPOCHS_IN_BUDGET passes over the training data, kept within
# [MIN_STEPS, MAX_STEPS] optimiser steps.
EPOCHS_IN_BUDGET = 50
MIN_STEPS, MAX_STEPS = 1000, 4000
PATIENCE_SHARE = 0.25  # early stopping waits this share of the budget for an improvement
VALIDATION_SHARE = 0.2  # of the training sequences, when validation is carved out
MIN_TO_CARVE = 20  # fewer training sequences than this: no validation part is carved
# Fewer training sequences than ENSEMBLE_BELOW: up to ENSEMBLE_MEMBERS models, each holding
# out its own seeded fifth for early stopping, averaged (one model's score swings most on
# small data), as many as ENSEMBLE_STEPS optimiser steps allow.
ENSEMBLE_BELOW = 1000
ENSEMBLE_MEMBERS = 10
ENSEMBLE_STEPS = 10_000
# Hidden features: SMALL_DATA_HIDDEN below ENSEMBLE_BELOW training sequences (it
# cross-validated at least as well as 64 on the panel's training splits), else HIDDEN.
SMALL_DATA_HIDDEN, HIDDEN = 32, 64

__all__ = [
    "AUTO",
    "choose_ensemble_size",
    "choose_hidden_size",
    "choose_patch_size",
    "member_splits",
    "patch",
    "patience_epochs",
    "step_budget",
    "validation_split",
]


def choose_patch_size(lengths: Sequence[int]) -> int:
    """Steps per input vector so that the median sequence runs about TARGET_STEPS steps.

    Example:
        >>> choose_patch_size([251] * 10), choose_patch_size([7, 29])  # 251 steps -> 31
        (8, 1)
    """
    return max(1, round(float(np.median(lengths)) / TARGET_STEPS))


def patch(x: Tensor, size: int) -> Tensor:
    """Feed `size` consecutive steps as one vector; a short last patch repeats the last step.

    Shape:
        x: ``(length, channels)``; returns ``(ceil(length / size), size * channels)``,
        each row the steps of its patch in time order.

    Example:
        >>> patch(torch.arange(5.0)[:, None], 2)  # (5, 1) -> (3, 2)
        tensor([[0., 1.],
                [2., 3.],
                [4., 4.]])
    """
    if size == 1:
        return x
    length, channels = x.shape
    padded_length = math.ceil(length / size) * size
    if padded_length > length:
        x = torch.cat([x, x[-1:].expand(padded_length - length, channels)])
    return x.reshape(padded_length // size, size * channels)


def step_budget(num_sequences: int, batch_size: int) -> int:
    """Optimiser steps to train for: EPOCHS_IN_BUDGET passes, within [MIN_STEPS, MAX_STEPS].

    Example:
        >>> step_budget(50, 32), step_budget(100_000, 32)  # 2 batches a pass; 3,125
        (1000, 4000)
    """
    per_epoch = math.ceil(num_sequences / batch_size)
    return min(MAX_STEPS, max(MIN_STEPS, EPOCHS_IN_BUDGET * per_epoch))


def patience_epochs(epochs: int) -> int:
    """Epochs without improvement before early stopping: PATIENCE_SHARE of the budget."""
    return max(1, math.ceil(PATIENCE_SHARE * epochs))


def validation_split(
    count: int, fraction: float, seed: int, labels: Sequence[Any] | None = None
) -> tuple[list[int], list[int]]:
    """Seeded training and validation indices; stratified when `labels` are given.

    With labels, every class with at least two sequences gives
    ``round(fraction * its count)`` of them (at least one) to validation and
    keeps at least one for training; a class seen once stays in training.

    Returns:
        ``(train_indices, validation_indices)``, each sorted.

    Example:
        >>> validation_split(10, 0.2, seed=0, labels=["a"] * 5 + ["b"] * 5)[1]  # one per class
        [1, 8]
    """
    if fraction <= 0:
        return list(range(count)), []
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(count)
        held = round(fraction * count)
        return sorted(order[held:].tolist()), sorted(order[:held].tolist())
    val: list[int] = []
    for members in _by_class(labels).values():
        if len(members) < 2:
            continue
        held = min(len(members) - 1, max(1, round(fraction * len(members))))
        val.extend(rng.permutation(members)[:held].tolist())
    held_set = set(val)
    return [i for i in range(count) if i not in held_set], sorted(val)


def choose_ensemble_size(num_sequences: int, steps: int) -> int:
    """How many models to average: below ENSEMBLE_BELOW training sequences, as many as fit
    in ENSEMBLE_STEPS optimiser steps of `steps` each (at most ENSEMBLE_MEMBERS), else one.

    Example:
        >>> choose_ensemble_size(50, 1000), choose_ensemble_size(900, 1450)
        (10, 6)
        >>> choose_ensemble_size(6920, 4000)
        1
    """
    if num_sequences >= ENSEMBLE_BELOW:
        return 1
    return max(1, min(ENSEMBLE_MEMBERS, ENSEMBLE_STEPS // max(1, steps)))


def choose_hidden_size(num_sequences: int) -> int:
    """SMALL_DATA_HIDDEN features on small data, else HIDDEN.

    Example:
        >>> choose_hidden_size(50), choose_hidden_size(6920)
        (32, 64)
    """
    return SMALL_DATA_HIDDEN if num_sequences < ENSEMBLE_BELOW else HIDDEN


def member_splits(
    count: int, fraction: float, members: int, seed: int, labels: Sequence[Any] | None = None
) -> list[tuple[list[int], list[int]]]:
    """Training and validation indices for each member of an ensemble.

    One member gets :func:`validation_split`. When ``members`` equals
    ``round(1 / fraction)`` the validation parts are disjoint folds (stratified
    by label, every sequence validates exactly one member, a class seen once
    validates none); otherwise each member draws its own seeded split.

    Returns:
        ``members`` pairs ``(train_indices, validation_indices)``, each sorted.

    Example:
        >>> [len(val) for _, val in member_splits(10, 0.2, 5, seed=0)]
        [2, 2, 2, 2, 2]
    """
    if members == 1 or fraction <= 0:
        return [validation_split(count, fraction, seed, labels)] * members
    if round(1 / fraction) != members:
        return [validation_split(count, fraction, derive_seed(seed, k), labels)
                for k in range(members)]  # fmt: skip
    rng = np.random.default_rng(seed)
    fold = np.full(count, -1)
    groups = [list(range(count))] if labels is None else _by_class(labels).values()
    offset = 0  # classes start where the last one ended, so the folds stay even in size
    for members_of_group in groups:
        if len(members_of_group) < 2:
            continue
        order = rng.permutation(members_of_group)
        fold[order] = (np.arange(len(order)) + offset) % members
        offset = (offset + len(order)) % members
    return [
        ([i for i in range(count) if fold[i] != k], [i for i in range(count) if fold[i] == k])
        for k in range(members)
    ]


def _by_class(labels: Sequence[Any]) -> dict[Any, list[int]]:
    by_class: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    return by_class


def check_auto_int(name: str, value: object, minimum: int = 1) -> None:
    """`value` is "auto" or an integer >= `minimum`."""
    if value != AUTO and (not is_int(value) or value < minimum):
        raise invalid_argument(name, f"'auto' or an integer >= {minimum}", value)


def check_validation_fraction(value: object) -> None:
    if value != AUTO and (not is_real(value) or not 0 <= value < 1):
        raise invalid_argument("validation_fraction", "'auto' or a number in [0, 1)", value)
