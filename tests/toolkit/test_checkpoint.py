"""Checkpoints: round trips, atomic writes, damaged files, and exact resume."""

from __future__ import annotations

import json
import math
import os
import pickle

import pytest
import torch
from torch.utils.data import TensorDataset

from rnnkit.toolkit import checkpoint as checkpoint_module
from rnnkit.toolkit.checkpoint import (
    CheckpointError,
    atomic_write,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    read_tensors,
    save_checkpoint,
    save_model,
)
from rnnkit.toolkit.metrics import loss_for_task, metrics_for_task
from rnnkit.toolkit.models import ModelConfig, build_model
from rnnkit.toolkit.trainer import Callback, TrainConfig, Trainer


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(task="classification", vocab_size=12, hidden_size=6,
                                   num_outputs=3, num_layers=2, dropout=0.25))  # fmt: skip


def trained_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randint(1, 12, (2, 5))).sum().backward()
    optimizer.step()
    return optimizer


def write(directory, model=None, epoch=1):
    model = small_model() if model is None else model
    optimizer = trained_optimizer(model)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)  # holds inf
    return save_checkpoint(
        directory, model_state=model.state_dict(), model_config=vars(model.config).copy(),
        epoch=epoch, optimizer_state=optimizer.state_dict(), scheduler_state=plateau.state_dict(),
        trainer_state={"history": [{"epoch": 1, "val_loss": math.inf}], "best": None},
    )  # fmt: skip


def assert_same(a, b):
    """Equal nested state: tensors bit for bit, floats including inf, tuples as tuples."""
    if isinstance(a, dict):  # a state_dict is an OrderedDict, read back as a dict
        assert isinstance(b, dict), (a, b)
    else:
        assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip_restores_every_state(tmp_path):
    model = small_model()
    optimizer = trained_optimizer(model)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    trainer_state = {"history": [{"epoch": 1, "val_loss": math.inf}], "nan": math.nan}
    save_checkpoint(
        tmp_path / "ckpt", model_state=model.state_dict(), model_config=vars(model.config).copy(),
        epoch=4, optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
        trainer_state=trainer_state,
    )  # fmt: skip
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.epoch == 4
    assert_same(loaded.model_state, model.state_dict())
    assert_same(loaded.optimizer_state, optimizer.state_dict())  # int keys, tuples, tensors
    assert_same(loaded.scheduler_state, scheduler.state_dict())  # inf
    assert math.isnan(loaded.trainer_state.pop("nan"))
    assert loaded.trainer_state == {"history": [{"epoch": 1, "val_loss": math.inf}]}
    assert loaded.best_model_state is None
    fresh = torch.optim.AdamW(small_model(1).parameters(), lr=0.5)
    fresh.load_state_dict(loaded.optimizer_state)
    assert_same(fresh.state_dict(), optimizer.state_dict())
    json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())  # strict JSON, no Infinity


def test_load_model_rebuilds_the_model(tmp_path):
    model = small_model()
    save_model(tmp_path / "model", model)
    rebuilt = load_model(tmp_path / "model")
    assert rebuilt.config == model.config
    tokens = torch.randint(1, 12, (3, 5))
    model.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(tokens), model(tokens))


def test_loading_runs_no_pickle(tmp_path, monkeypatch):
    write(tmp_path / "ckpt")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during a checkpoint load")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_model(tmp_path / "ckpt")


def test_a_failed_replace_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    first = small_model(0)
    write(tmp_path / "ckpt", first, epoch=1)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "ckpt", small_model(1), epoch=2)
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.epoch == 1
    assert_same(loaded.model_state, first.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left


def test_a_failure_after_moving_the_old_checkpoint_aside_puts_it_back(tmp_path, monkeypatch):
    first = small_model(0)
    write(tmp_path / "ckpt", first, epoch=1)
    real = os.replace

    def fail_for_the_new_directory(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("power cut")
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_for_the_new_directory)
    with pytest.raises(OSError, match="power cut"):
        write(tmp_path / "ckpt", small_model(1), epoch=2)
    monkeypatch.undo()
    assert_same(load_checkpoint(tmp_path / "ckpt").model_state, first.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failure_between_files_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    write(tmp_path / "ckpt", epoch=1)
    real = checkpoint_module._write_new_file
    written = []

    def fail_on_second(path, payload):
        if written:
            raise OSError("killed")
        written.append(path)
        real(path, payload)

    monkeypatch.setattr(checkpoint_module, "_write_new_file", fail_on_second)
    with pytest.raises(OSError, match="killed"):
        write(tmp_path / "ckpt", epoch=2)
    assert load_checkpoint(tmp_path / "ckpt").epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    atomic_write(target, "epoch\n1\n")
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        atomic_write(target, "epoch\n1\n2\n")
    assert target.read_text() == "epoch\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_atomic_write_and_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "results.json", "{}\n")
        write(tmp_path / "ckpt", epoch=1)
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "ckpt" / "checkpoint.json").stat().st_mode & 0o777 == 0o644


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    ("damage", "name", "match"),
    [
        (lambda p: flip_byte(p, -3), "model.safetensors", r"does not match the SHA-256.*altered"),
        (lambda p: truncate(p, 100), "model.safetensors", r"100 bytes where checkpoint.json"),
        (lambda p: flip_byte(p, 20), "optimizer.safetensors", "does not match the SHA-256"),
        (lambda p: p.unlink(), "optimizer.safetensors", "file not found"),
        (lambda p: truncate(p, 200), "checkpoint.json", "not valid JSON, truncated or corrupted"),
        (lambda p: p.write_text("[]"), "checkpoint.json", "not an rnnkit checkpoint"),
        (lambda p: p.write_text(p.read_text().replace('"epoch": 1', '"epoch": 7')),
         "checkpoint.json", r"content does not match its checksum \(altered\)"),
        (lambda p: p.write_text(p.read_text().replace('"inf"', "Infinity")),
         "checkpoint.json", "not valid JSON"),
    ],
)  # fmt: skip
def test_damaged_files_raise_checkpoint_error_naming_the_file(tmp_path, damage, name, match):
    write(tmp_path / "ckpt")
    damage(tmp_path / "ckpt" / name)
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'ckpt' / name}: .*{match}"):
        load_checkpoint(tmp_path / "ckpt")


def test_read_tensors_refuses_a_file_that_is_not_safetensors(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match=f"{path}: not a valid safetensors file"):
        read_tensors(path)
    with pytest.raises(CheckpointError, match="file not found"):
        read_tensors(tmp_path / "missing.safetensors")


def test_weights_of_another_architecture_are_refused(tmp_path):
    write(tmp_path / "ckpt")
    document = tmp_path / "ckpt" / "checkpoint.json"
    model = build_model(ModelConfig(task="classification", vocab_size=12, hidden_size=7,
                                    num_outputs=3))  # fmt: skip
    config = TrainConfig(device="cpu", lr_schedule="plateau")  # as the checkpoint's
    trainer = Trainer(config, model, TensorDataset(torch.zeros(2)),
                      loss_fn=loss_for_task("classification"))  # fmt: skip
    with pytest.raises(CheckpointError, match=f"{document.parent / 'model.safetensors'}: does "
                       "not fit the model"):  # fmt: skip
        trainer.fit(resume=tmp_path / "ckpt")


def test_resume_refuses_a_model_without_training_state_or_another_schedule(tmp_path):
    save_model(tmp_path / "model", small_model())
    write(tmp_path / "ckpt")  # saved with a plateau scheduler
    trainer = Trainer(TrainConfig(device="cpu"), small_model(), classification_data(8, 0),
                      loss_fn=loss_for_task("classification"))  # fmt: skip
    with pytest.raises(CheckpointError, match="holds no training state"):
        trainer.fit(resume=tmp_path / "model")
    with pytest.raises(CheckpointError, match="different lr_schedule than 'constant'"):
        trainer.fit(resume=tmp_path / "ckpt")


def test_latest_checkpoint_takes_the_highest_complete_epoch(tmp_path):
    assert latest_checkpoint(tmp_path / "none") is None
    for epoch in (2, 10):
        write(tmp_path / f"epoch-{epoch:04d}", epoch=epoch)
    (tmp_path / "epoch-0011").mkdir()  # no checkpoint.json: not a checkpoint
    (tmp_path / ".epoch-0012.abc.tmp").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch-0010"


def classification_data(samples: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 12, (samples, 6), generator=generator)
    lengths = torch.randint(1, 7, (samples,), generator=generator)
    labels = (tokens[:, 0] % 3).long()
    return TensorDataset(tokens, lengths, labels)


class Interrupt(Exception):
    pass


class InterruptAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            raise Interrupt


def run(out_dir, seed, callbacks=(), resume=False, min_delta=0.0):
    config = TrainConfig(
        epochs=5, batch_size=8, lr=0.02, lr_schedule="cosine", early_stopping_patience=4,
        early_stopping_min_delta=min_delta, device="cpu", progress=False, seed=3,
        keep_checkpoints=2,
    )  # fmt: skip
    trainer = Trainer(
        config, small_model(seed), classification_data(40, 0), classification_data(16, 1),
        loss_fn=loss_for_task("classification"), metrics=metrics_for_task("classification"),
        callbacks=callbacks, out_dir=out_dir,
    )  # fmt: skip
    return trainer, trainer.fit(resume=resume)


@pytest.mark.parametrize("min_delta", [0.0, 1e9], ids=["best-late", "best-epoch-1"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, min_delta):
    """Dropout, shuffling, AdamW moments, the cosine schedule and the best weights must
    all resume exactly; on the CPU the result is identical to the bit. With a huge
    min_delta the best epoch is 1, so the final (restored) weights come from the
    checkpoint's best_model.safetensors."""
    straight, history = run(tmp_path / "straight", seed=0, min_delta=min_delta)

    with pytest.raises(Interrupt):
        run(tmp_path / "resumed", seed=0, callbacks=[InterruptAt(3)], min_delta=min_delta)
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0001", "epoch-0002"]
    # A different initialisation: everything must come from the checkpoint.
    resumed, resumed_history = run(tmp_path / "resumed", seed=1, resume=True, min_delta=min_delta)

    assert resumed.epoch == straight.epoch == 5
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert_same(resumed.optimizer.state_dict(), straight.optimizer.state_dict())
    drop_time = [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed_history] == (
        drop_time
    )
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0004", "epoch-0005"]
    lines = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 6


def test_resume_true_without_a_checkpoint_starts_from_scratch(tmp_path):
    _, history = run(tmp_path, seed=0, resume=True)
    assert len(history) == 5
