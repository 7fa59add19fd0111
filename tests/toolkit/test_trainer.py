"""Trainer: config checks, learning, early stopping, metrics.csv, divergence; metrics."""

from __future__ import annotations

import csv
import logging
import math

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from rnnkit.toolkit.checkpoint import load_checkpoint
from rnnkit.toolkit.data.batching import collate_classification, collate_tagging
from rnnkit.toolkit.metrics import (
    MAE,
    RMSE,
    Accuracy,
    Perplexity,
    accuracy,
    cross_entropy_loss,
    loss_for_task,
    mae,
    metrics_for_task,
    mse_loss,
    rmse,
)
from rnnkit.toolkit.models import ModelConfig, build_model
from rnnkit.toolkit.trainer import Callback, TrainConfig, Trainer, TrainingDivergedError

SAMPLES, WINDOW, FEATURES = 64, 6, 2


def regression_data(samples: int = SAMPLES, seed: int = 0) -> TensorDataset:
    """y = mean of feature 0 over the valid steps: learnable by a small RNN."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, WINDOW, FEATURES, generator=generator)
    lengths = torch.randint(2, WINDOW + 1, (samples,), generator=generator)
    valid = torch.arange(WINDOW) < lengths.unsqueeze(1)  # (batch, window)
    y = (x[:, :, 0] * valid).sum(1, keepdim=True) / lengths.unsqueeze(1)  # (batch, 1)
    return TensorDataset(x, lengths, y)


def regressor(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(input_size=FEATURES, hidden_size=8))


def trainer(model=None, train=None, val=None, out_dir=None, **config) -> Trainer:
    fields = {"epochs": 3, "batch_size": 16, "lr": 0.02, "device": "cpu", "progress": False}
    fields.update(config)
    return Trainer(
        TrainConfig(**fields),
        regressor() if model is None else model,
        regression_data() if train is None else train,
        val,
        loss_fn=loss_for_task("regression"), metrics=metrics_for_task("regression"),
        out_dir=out_dir,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"epochs": 0}, "argument `epochs`, expected a positive integer, got 0"),
        ({"batch_size": 2.0}, "`batch_size`, expected a positive integer, got 2.0"),
        ({"lr": 0}, "`lr`, expected a positive number, got 0"),
        ({"lr": float("nan")}, "`lr`, expected a positive number, got nan"),
        ({"weight_decay": -1}, "`weight_decay`, expected a non-negative number"),
        ({"optimizer": "lbfgs"}, r"`optimizer`, expected one of \('adamw', 'adam', 'sgd'\)"),
        ({"lr_schedule": "step"}, r"`lr_schedule`, expected one of \('constant'"),
        ({"grad_clip": 0}, "`grad_clip`, expected a positive number or None, got 0"),
        ({"early_stopping_patience": 0}, "`early_stopping_patience`, expected a positive"),
        ({"seed": -1}, "`seed`, expected a non-negative integer, got -1"),
        ({"num_workers": True}, "`num_workers`, expected a non-negative integer, got True"),
        ({"device": "gpu"}, "`device`, expected 'auto', 'cpu', 'cuda'"),
        ({"monitor": "loss"}, "`monitor`, expected None or a history key"),
        ({"plateau_factor": 1}, r"`plateau_factor`, expected a number in \(0, 1\)"),
        ({"shuffle": 1}, "`shuffle`, expected a bool, got 1"),
        ({"progress": "yes"}, "`progress`, expected a bool or None"),
    ],
)
def test_train_config_errors_name_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**fields)


def test_trainer_checks_its_arguments():
    with pytest.raises(
        ValueError, match=r"`monitor`, expected one of \['train_loss', 'train_rmse'"
    ):
        trainer(monitor="val_loss")  # no validation set
    with pytest.raises(ValueError, match="`monitor`, expected one of"):
        trainer(val=regression_data(8), monitor="val_accuracy")
    with pytest.raises(ValueError, match="`train_dataset`, expected at least one sample"):
        trainer(train=TensorDataset(torch.zeros(0, 1)))
    with pytest.raises(ValueError, match="`metrics`, expected Metric objects with distinct names"):
        Trainer(TrainConfig(device="cpu"), regressor(), regression_data(), loss_fn=mse_loss,
                metrics=[RMSE(), RMSE()])  # fmt: skip


def test_learns_a_tiny_regression_task():
    history = trainer(epochs=6, val=regression_data(32, seed=1)).fit()
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    for row in history:  # epoch metrics are the exact means over the epoch's samples
        assert row["train_rmse"] == pytest.approx(math.sqrt(row["train_loss"]), rel=1e-5)


def tagging_problem():
    """Tag = sign of the token's own feature, steps past each length tagged -100; a
    fresh tagging model. Returns ``(x, lengths, tags, model)``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, WINDOW, 1, generator=generator)
    lengths = torch.randint(1, WINDOW + 1, (SAMPLES,), generator=generator)
    tags = (x[:, :, 0] > 0).long()  # (batch, window)
    tags[torch.arange(WINDOW) >= lengths.unsqueeze(1)] = -100
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="tagging", input_size=1, hidden_size=8, num_outputs=2))
    return x, lengths, tags, model


def test_learns_a_tagging_task_with_padded_targets():
    """Tag = sign of the token's own feature; padded steps carry -100 and are ignored."""
    x, lengths, tags, model = tagging_problem()
    run = Trainer(
        TrainConfig(epochs=5, batch_size=16, lr=0.05, device="cpu", progress=False), model,
        TensorDataset(x, lengths, tags), loss_fn=loss_for_task("tagging"),
        metrics=metrics_for_task("tagging"),
    )  # fmt: skip
    history = run.fit()
    assert history[-1]["train_accuracy"] > 0.9 > history[0]["train_accuracy"]
    assert run.evaluate(TensorDataset(x, lengths, tags))["accuracy"] > 0.9


@pytest.mark.parametrize("batch_size", [5, 16, SAMPLES])
def test_the_loss_of_padded_targets_is_the_mean_over_tokens(batch_size):
    x, lengths, tags, model = tagging_problem()
    run = Trainer(
        TrainConfig(epochs=1, batch_size=batch_size, device="cpu", progress=False), model,
        TensorDataset(x, lengths, tags), loss_fn=loss_for_task("tagging"),
    )  # fmt: skip
    with torch.no_grad():
        expected = cross_entropy_loss(model(x, lengths), tags)  # mean over the real tokens
    assert run.evaluate(TensorDataset(x, lengths, tags))["loss"] == pytest.approx(
        float(expected), rel=1e-5
    )


def test_trains_on_the_data_layers_packed_batches():
    """collate_* give SequenceBatch(packed inputs, lengths, targets): model(packed, lengths)."""
    generator = torch.Generator().manual_seed(0)
    sentences = [torch.randint(1, 9, (int(n),), generator=generator)
                 for n in torch.randint(1, 8, (SAMPLES,), generator=generator)]  # fmt: skip
    labelled = [(s, int(s[0] > 4)) for s in sentences]  # class: is the first token above 4
    tagged = [(s, (s > 4).long()) for s in sentences]  # tag: is each token above 4
    for task, items, collate in (
        ("classification", labelled, collate_classification),
        ("tagging", tagged, collate_tagging),
    ):
        torch.manual_seed(0)
        config = ModelConfig(task=task, vocab_size=9, hidden_size=8, num_outputs=2,
                             bidirectional=True)  # fmt: skip
        history = Trainer(
            TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu", progress=False),
            build_model(config), items, items[:16], loss_fn=loss_for_task(task),
            metrics=metrics_for_task(task), collate_fn=collate,
        ).fit()  # fmt: skip
        assert history[-1]["train_loss"] < history[0]["train_loss"], task


def test_early_stopping_restores_the_best_weights(tmp_path):
    weights = {}

    class Snapshot(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            weights[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    run = trainer(
        epochs=10, val=regression_data(16, seed=1), out_dir=tmp_path,
        early_stopping_patience=2, early_stopping_min_delta=1e9,  # nothing beats epoch 1
    )  # fmt: skip
    run.callbacks = (Snapshot(),)
    history = run.fit()
    assert len(history) == 3  # epoch 1 sets the best, 2 and 3 do not improve on it
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, weights[1][name]), name
    assert not torch.equal(weights[3]["head.linear.weight"], weights[1]["head.linear.weight"])
    final = load_checkpoint(tmp_path / "model")  # the exported model holds the best weights
    assert torch.equal(final.model_state["head.linear.weight"], weights[1]["head.linear.weight"])
    last = load_checkpoint(tmp_path / "checkpoints" / "epoch-0003")  # written at the stop
    assert last.trainer_state["stopped_early"] and last.trainer_state["best_epoch"] == 1
    assert torch.equal(
        last.best_model_state["head.linear.weight"], weights[1]["head.linear.weight"]
    )


def test_a_callback_can_stop_training():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.should_stop = epoch == 2

    run = trainer(epochs=5)
    run.callbacks = (StopAfterTwo(),)
    assert len(run.fit()) == 2


def test_metrics_csv_has_one_row_per_epoch(tmp_path):
    history = trainer(epochs=2, val=regression_data(16, seed=1), out_dir=tmp_path).fit()
    with open(tmp_path / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    columns = ["epoch", "lr", "train_loss", "train_rmse", "train_mae", "val_loss", "val_rmse",
               "val_mae", "seconds"]  # fmt: skip
    assert list(rows[0]) == columns
    assert len(rows) == 2
    for row, logged in zip(rows, history, strict=True):
        assert {k: float(v) for k, v in row.items()} == pytest.approx(logged, rel=0, abs=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "metrics.csv", "model"]


def test_progress_bar_on_stderr_and_epoch_log(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="rnnkit.toolkit.trainer"):
        trainer(epochs=1, progress=True).fit()
    assert "epoch 1/1" in capsys.readouterr().err
    assert any(r.getMessage().startswith("epoch 1/1: lr 0.02, train_loss") for r in caplog.records)
    trainer(epochs=1, progress=False).fit()
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_gpu_is_reported():
    with pytest.raises(ValueError, match="`device`, expected a device this machine has"):
        trainer(device="cuda")


def test_schedules_change_the_learning_rate():
    cosine = trainer(epochs=4, lr_schedule="cosine", min_lr=0.001).fit()
    lrs = [row["lr"] for row in cosine]
    assert lrs[0] == 0.02 and lrs == sorted(lrs, reverse=True) and lrs[-1] > 0.001
    plateau = trainer(
        epochs=4, lr_schedule="plateau", plateau_patience=1, plateau_factor=0.5,
        val=regression_data(16, seed=1),
    )  # fmt: skip
    plateau.loss_fn = lambda output, target: 0 * mse_loss(output, target) + 1  # a flat loss
    lrs = [row["lr"] for row in plateau.fit()]
    assert lrs == [0.02, 0.02, 0.02, 0.01]  # epochs 2 and 3 do not improve: halved after 3


class NaNAfter:
    """mse_loss that turns NaN from call `after` + 1 on."""

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def __call__(self, output, target):
        self.calls += 1
        loss = mse_loss(output, target)
        return loss * math.nan if self.calls > self.after else loss


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    weights = {}

    class Snapshot(Callback):
        def on_batch_end(self, trainer, step, loss):
            weights["last"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    run = trainer(epochs=3, out_dir=tmp_path)  # 4 batches per epoch
    run.loss_fn = NaNAfter(6)
    run.callbacks = (Snapshot(),)
    good = tmp_path / "checkpoints" / "epoch-0001"
    match = (
        r"Training diverged at epoch 2, batch 3: the loss is nan\. The weights "
        rf"are those before this batch and the last good checkpoint, {good}, is kept\. "
        r"Try a smaller lr \(now 0\.02\)\."
    )
    with pytest.raises(TrainingDivergedError, match=match):
        run.fit()
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, weights["last"][name]), name
    assert load_checkpoint(good).epoch == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-0001"]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1


def test_divergence_without_checkpoints_says_so():
    run = trainer(grad_clip=None)
    run.loss_fn = NaNAfter(0)
    with pytest.raises(TrainingDivergedError, match=r"no checkpoint was written yet.*or grad_clip"):
        run.fit()


class DictItems(Dataset):
    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        x, lengths, y = self.data[i]
        return {"x": x, "lengths": lengths, "target": y}


def test_batches_as_tuples_or_mappings_train_the_same():
    data = regression_data()
    from_tuples = trainer(train=data, epochs=1)
    from_mappings = trainer(train=DictItems(data), epochs=1)
    assert from_tuples.fit() and from_mappings.fit()
    for (name, a), b in zip(from_tuples.model.state_dict().items(),
                            from_mappings.model.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(a, b), name


def test_a_batch_without_a_target_is_refused():
    with pytest.raises(TypeError, match=r"A batch must be \(\*inputs, target\) or a mapping"):
        trainer(train=TensorDataset(torch.zeros(4, 3, 2))).fit()


def test_a_fresh_run_refuses_an_out_dir_with_checkpoints(tmp_path):
    trainer(epochs=1, out_dir=tmp_path).fit()
    with pytest.raises(ValueError, match=r"`out_dir`, expected a directory without checkpoints"):
        trainer(epochs=1, out_dir=tmp_path).fit()


def test_batch_size_must_split_over_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"`batch_size`, expected a multiple of the number of "
                       r"processes \(3\), got 16"):  # fmt: skip
        trainer()


def test_regression_metrics_accumulate_to_the_full_batch_values():
    generator = torch.Generator().manual_seed(0)
    output, target = torch.randn(10, 1, generator=generator), torch.randn(10, generator=generator)
    for metric, function in ((RMSE(), rmse), (MAE(), mae)):
        totals = metric.totals(output[:3], target[:3]) + metric.totals(output[3:], target[3:])
        assert metric.value(*totals.tolist()) == pytest.approx(float(function(output, target)))
    assert float(rmse(output, target)) ** 2 == pytest.approx(float(mse_loss(output, target)))


def test_accuracy_and_perplexity_skip_ignored_targets():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]]])  # (batch, window, classes)
    target = torch.tensor([[0, 0, -100]])  # the third step is padding
    assert float(accuracy(logits, target)) == 0.5
    assert Accuracy().value(*Accuracy().totals(logits, target).tolist()) == 0.5
    loss = cross_entropy_loss(logits, target)
    perplexity = Perplexity()
    assert perplexity.value(*perplexity.totals(logits, target).tolist()) == pytest.approx(
        math.exp(float(loss))
    )
    assert math.isnan(float(accuracy(logits, torch.full((1, 3), -100))))


def test_task_defaults():
    assert loss_for_task("regression") is mse_loss
    assert loss_for_task("tagging") is cross_entropy_loss
    assert [m.name for m in metrics_for_task("language_model")] == ["accuracy", "perplexity"]
    with pytest.raises(ValueError, match=r"`task`, expected one of \('regression'"):
        metrics_for_task("forecast")
    with pytest.raises(ValueError, match="expected 4 values to match output of shape"):
        mse_loss(torch.zeros(4, 1), torch.zeros(3))
