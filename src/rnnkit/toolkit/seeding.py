"""Seeds for reproducible runs: one integer fixes Python's, NumPy's and torch's generators.

The trainer reseeds every generator at the start of each epoch from
``derive_seed(seed, epoch, rank)``. The random state of an epoch is then a
function of the run's seed, the epoch and the process alone, so a run resumed
from a checkpoint draws exactly the numbers the uninterrupted run drew,
whatever happened before, on any number of processes.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]


def derive_seed(seed: int, *keys: int) -> int:
    """A seed in ``[0, 2**63)`` determined by `seed` and `keys` (e.g. epoch and rank).

    NumPy's ``SeedSequence`` hashes the inputs, so seeds derived for
    neighbouring keys give unrelated streams (unlike ``seed + epoch``).

    Example:
        >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
        True
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seed is 32-bit
    torch.manual_seed(seed)
