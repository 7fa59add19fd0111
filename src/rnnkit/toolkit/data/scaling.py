"""`StandardScaler`: per-column standardisation that a checkpoint can carry.

``z = (x - mean) / std`` column by column, with ``mean`` and ``std`` (population,
``ddof=0``) fitted on training rows only; ``x = z * std + mean`` undoes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class StandardScaler:
    """Standardisation of named columns with fixed statistics.

    Args:
        columns: Column names, in the order of the last axis of the data.
        mean: Per-column mean, subtracted.
        std: Per-column standard deviation, divided by; must be positive.

    Example:
        >>> scaler = StandardScaler.fit(np.array([[1.0], [3.0]]), ["Close"])
        >>> scaler.mean, scaler.std
        ((2.0,), (1.0,))
        >>> StandardScaler.from_dict(scaler.to_dict()) == scaler
        True
    """

    columns: tuple[str, ...]  # names of the columns, in order of the last axis
    mean: tuple[float, ...]  # per-column mean of the fitting rows
    std: tuple[float, ...]  # per-column population std of the fitting rows (1 where constant)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        n = len(self.columns)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(
                f"Received an invalid value for arguments `mean`, `std`, expected one value per "
                f"column ({n}), got {len(self.mean)} means and {len(self.std)} stds"
            )
        for name, value in zip(self.columns, self.mean, strict=True):
            if not math.isfinite(value):
                raise ValueError(
                    f"Received an invalid value for argument `mean` of column {name!r}, "
                    f"expected a finite number, got {value}"
                )
        for name, value in zip(self.columns, self.std, strict=True):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"Received an invalid value for argument `std` of column {name!r}, "
                    f"expected a positive finite number, got {value}"
                )

    @classmethod
    def fit(cls, values: np.ndarray, columns: Sequence[str]) -> StandardScaler:
        """Fit mean and std per column.

        A constant column gets std 1 (it is then only centred) and a logged
        warning, because dividing by zero would turn it into NaN.

        Args:
            values: The fitting rows, e.g. the rows training windows can see.
            columns: Names of the columns of `values`.

        Returns:
            The fitted scaler.

        Shape:
            values: ``(rows, len(columns))`` with ``rows >= 1``.
        """
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(columns) or values.shape[0] == 0:
            raise ValueError(
                f"Received an invalid value for argument `values`, expected shape "
                f"(rows >= 1, {len(columns)}), got {tuple(values.shape)}"
            )
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        for j, name in enumerate(columns):
            if not std[j] > 0:
                logger.warning("column %r is constant on the fitting rows; scaling it by 1", name)
                std[j] = 1.0
        return cls(tuple(columns), tuple(mean.tolist()), tuple(std.tolist()))

    @classmethod
    def identity(cls, columns: Sequence[str]) -> StandardScaler:
        """A scaler that changes nothing (mean 0, std 1), for unscaled data."""
        return cls(tuple(columns), (0.0,) * len(columns), (1.0,) * len(columns))

    def transform(self, x: ArrayT) -> ArrayT:
        """Standardise: ``(x - mean) / std`` along the last axis.

        Shape:
            x: ``(*, len(columns))``; output the same.
        """
        mean, std = self._statistics(x)
        return (x - mean) / std

    def inverse_transform(self, z: ArrayT) -> ArrayT:
        """Undo :meth:`transform`: ``z * std + mean`` along the last axis.

        Shape:
            z: ``(*, len(columns))``; output the same.
        """
        mean, std = self._statistics(z)
        return z * std + mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"columns": [...], "mean": [...], "std": [...]}``."""
        return {"columns": list(self.columns), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> StandardScaler:
        """Rebuild a scaler from :meth:`to_dict`'s output."""
        missing = [key for key in ("columns", "mean", "std") if key not in state]
        if missing:
            raise ValueError(
                f"Received an invalid value for argument `state`, expected keys "
                f"['columns', 'mean', 'std'], got {sorted(state)!r}"
            )
        return cls(tuple(state["columns"]), tuple(state["mean"]), tuple(state["std"]))

    def _statistics(self, like: ArrayT) -> tuple[ArrayT, ArrayT]:
        if like.shape[-1] != len(self.columns):
            raise ValueError(
                f"Expected the last dimension to hold the {len(self.columns)} columns "
                f"{list(self.columns)!r}, got shape {tuple(like.shape)}"
            )
        if isinstance(like, torch.Tensor):
            return (
                torch.tensor(self.mean, dtype=like.dtype, device=like.device),
                torch.tensor(self.std, dtype=like.dtype, device=like.device),
            )
        return np.asarray(self.mean), np.asarray(self.std)
