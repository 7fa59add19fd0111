"""One process of the DDP test: ``torchrun --nproc_per_node=2 ddp_worker.py OUT_DIR``.

``test_ddp.py`` also imports :func:`make_run` to train the same model on the
same data in a single process, and compares the weights.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import TensorDataset

from rnnkit.toolkit.metrics import loss_for_task, metrics_for_task
from rnnkit.toolkit.models import ModelConfig, build_model
from rnnkit.toolkit.trainer import TrainConfig, Trainer

SAMPLES, WINDOW, FEATURES = 48, 6, 3
GLOBAL_BATCH = 16


def make_run(out_dir: str | None) -> Trainer:
    """A tiny regression task with variable lengths, float64, no dropout."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, WINDOW, FEATURES, generator=generator, dtype=torch.float64)
    lengths = torch.randint(2, WINDOW + 1, (SAMPLES,), generator=generator)
    y = x[:, :, 0].sum(dim=1, keepdim=True) / 3  # (batch, 1)
    torch.manual_seed(0)
    config = ModelConfig(input_size=FEATURES, hidden_size=8, num_layers=2, bidirectional=True)
    model = build_model(config).double()
    train = TrainConfig(
        epochs=3, batch_size=GLOBAL_BATCH, lr=0.02, device="cpu", progress=False,
        restore_best=False, seed=3,
    )  # fmt: skip
    return Trainer(
        train, model, TensorDataset(x, lengths, y), loss_fn=loss_for_task("regression"),
        metrics=metrics_for_task("regression"), out_dir=out_dir,
    )  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    make_run(sys.argv[1]).fit()
