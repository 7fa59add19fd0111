"""`InputScaling`: per-channel standardisation of numeric sequences, log1p on counts first.

Fitted on every step of the training sequences, saved with the estimator and
applied again at predict time. ``log1p`` is taken on a channel whose training
values are non-negative and heavy tailed (sample skewness above
:data:`SKEW_FOR_LOG`: raw counts, prices, volumes), so that counts in the tens
of thousands do not squash every other value to zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.arguments import is_real

SCALINGS = ("auto", "standard", "none")
SKEW_FOR_LOG = 2.0  # sample skewness above which a non-negative channel is read as log1p

__all__ = ["SCALINGS", "InputScaling"]


@dataclass(frozen=True)
class InputScaling:
    """Per-channel ``z = (f(x) - mean) / std`` with ``f = log1p`` on some channels.

    Example:
        >>> rows = np.array([[1.0, 0.0], [3.0, 20000.0], [5.0, 3.0]])  # (rows, channels)
        >>> scaling = InputScaling.fit(rows, "auto")
        >>> scaling.log  # the second channel is non-negative and heavy tailed
        (False, True)
    """

    log: tuple[bool, ...]  # per channel: log1p before standardising
    mean: tuple[float, ...]  # per channel, of the (logged) training values
    std: tuple[float, ...]  # per channel, population std (1 where constant)

    @classmethod
    def fit(cls, rows: np.ndarray, mode: str) -> InputScaling:
        """Fit on every step of the training sequences.

        Args:
            rows: The training steps.
            mode: ``"auto"`` (log1p where a channel is heavy tailed, then
                standardise), ``"standard"`` (standardise only) or ``"none"``.

        Shape:
            rows: ``(steps, channels)``.
        """
        rows = np.asarray(rows, dtype=np.float64)
        if mode == "none":
            return cls.identity(rows.shape[1])
        log = tuple(mode == "auto" and _heavy_tailed(column) for column in rows.T)
        logged = np.where(np.array(log), np.log1p(np.abs(rows)), rows)
        mean, std = logged.mean(axis=0), logged.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(log, tuple(mean.tolist()), tuple(std.tolist()))

    @classmethod
    def identity(cls, channels: int) -> InputScaling:
        """The scaling that changes nothing (mode "none")."""
        return cls((False,) * channels, (0.0,) * channels, (1.0,) * channels)

    @property
    def is_identity(self) -> bool:
        return not any(self.log) and all(m == 0 for m in self.mean) and set(self.std) <= {1.0}

    def transform(self, x: Tensor) -> Tensor:
        """Scale one sequence.

        Shape:
            x: ``(length, channels)``; returns the same shape, float32.
        """
        if self.is_identity:
            return x
        x = x.double()
        if any(self.log):
            # A log channel saw only values >= 0 in training; later negatives keep their sign.
            log = torch.tensor(self.log)
            x = torch.where(log, torch.sign(x) * torch.log1p(x.abs()), x)
        mean = torch.tensor(self.mean, dtype=torch.float64)
        std = torch.tensor(self.std, dtype=torch.float64)
        return ((x - mean) / std).float()

    def describe(self) -> str:
        """``"standardised"``, ``"log1p on channels 2, 5, then standardised"`` or ``"none"``."""
        if self.is_identity:
            return "none"
        logged = [str(j + 1) for j, flag in enumerate(self.log) if flag]
        if not logged:
            return "standardised per channel"
        return f"log1p on channel {', '.join(logged)}, then standardised per channel"

    def to_dict(self) -> dict[str, Any]:
        return {"log": list(self.log), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> InputScaling:
        log, mean, std = state["log"], state["mean"], state["std"]
        if not (len(log) == len(mean) == len(std)) or not all(isinstance(f, bool) for f in log):
            raise ValueError(f"malformed input scaling: {dict(state)!r}")
        if not all(is_real(m) for m in mean) or not all(is_real(s) and s > 0 for s in std):
            raise ValueError(f"malformed input scaling: {dict(state)!r}")
        return cls(tuple(log), tuple(float(m) for m in mean), tuple(float(s) for s in std))


def _heavy_tailed(column: np.ndarray) -> bool:
    """Non-negative values whose skewness log1p would tame (counts, prices, volumes)."""
    if column.min() < 0 or column.max() <= 0:
        return False
    std = column.std()
    if std == 0:
        return False
    skew = float(np.mean(((column - column.mean()) / std) ** 3))
    return skew > SKEW_FOR_LOG
