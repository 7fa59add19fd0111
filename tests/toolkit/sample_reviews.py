"""A tiny sentiment data set for tests: ``label<TAB>words`` lines, learnable in two epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = {"1": ["good", "great", "fine", "fun"], "0": ["bad", "dull", "poor", "awful"]}


def write_reviews(root: Path, train: int = 80, dev: int = 20, test: int = 20) -> None:
    """Write ``reviews.train``, ``reviews.dev`` and ``reviews.test`` into `root` (seeded)."""
    rng = np.random.default_rng(0)
    for name, count in (("train", train), ("dev", dev), ("test", test)):
        lines = []
        for _ in range(count):
            label = str(rng.integers(2))
            tokens = [*rng.choice(WORDS[label], size=rng.integers(2, 6)), "film"]
            lines.append(f"{label}\t{' '.join(tokens)}")
        (root / f"reviews.{name}").write_text("\n".join(lines) + "\n")
