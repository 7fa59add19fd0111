"""``rnnkit train`` with ``model.ensemble_size``: members trained one after another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sample_reviews import write_reviews
from test_cli import SMALL_TRAIN, assert_one_line_error, assert_png, run, write_prices

from rnnkit.toolkit import trainer as trainer_module
from rnnkit.toolkit.checkpoint import load_model
from rnnkit.toolkit.ensemble import EnsembleModel
from rnnkit.toolkit.seeding import derive_seed


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_reviews(root)
    (root / "classify.toml").write_text(
        f'task = "classify"\n[data]\npath = "{root / "reviews.train"}"\n'
        f'val_path = "{root / "reviews.dev"}"\ntest_path = "{root / "reviews.test"}"\n'
        + SMALL_TRAIN
    )
    write_prices(root / "prices.csv")
    (root / "forecast.toml").write_text(
        f'[data]\npath = "{root / "prices.csv"}"\nlookback = 10\n' + SMALL_TRAIN
    )
    return root


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    a_state, b_state = a.state_dict(), b.state_dict()
    return a_state.keys() == b_state.keys() and all(
        torch.equal(a_state[k], b_state[k]) for k in a_state
    )


def test_each_member_trains_in_its_own_directory_and_the_first_is_the_single_model(
    files, tmp_path, capsys
):
    single, ensemble = tmp_path / "single", tmp_path / "ensemble"
    config = files / "classify.toml"
    monitor = "train.monitor=val_accuracy"
    assert run(capsys, "train", config, "--out", single, "--set", monitor)[0] == 0
    code, stdout, stderr = run(capsys, "train", config, "--out", ensemble, "--set", monitor,
                               "--set", "model.ensemble_size=3")  # fmt: skip
    assert code == 0, stderr
    assert "model: the average of 3 ManyToOneModel" in stdout
    assert "an ensemble: " in stdout and "parameters a member, trained one after another" in stdout
    assert "ensemble member 3 of 3" in stdout
    results = json.loads((ensemble / "results.json").read_text())
    assert [m["seed"] for m in results["members"]] == [0, derive_seed(0, 1), derive_seed(0, 2)]
    assert all(m["epochs"] == 2 and m["best_epoch"] in (1, 2) for m in results["members"])
    for k in (1, 2, 3):
        member = ensemble / "members" / str(k)
        assert (member / "metrics.csv").is_file() and (member / "model").is_dir()
        assert_png(member / "learning_curves.png")
    # The average's validation figure, as the trainer measures it, is the task's score.
    assert results["ensemble_val_accuracy"] == pytest.approx(results["val"]["model"]["accuracy"])
    assert_png(ensemble / "ensemble_members.png")
    model = load_model(ensemble / "model")
    assert isinstance(model, EnsembleModel) and len(model.members) == 3
    # Member 1 has the single run's seed: the same weights, bit for bit; the others differ.
    assert _equal(model.members[0], load_model(single / "model"))
    assert not _equal(model.members[0], model.members[1])
    assert _equal(model.members[1], load_model(ensemble / "members" / "2" / "model"))
    # evaluate loads the whole ensemble: the test accuracy the run reported.
    code, stdout, _ = run(capsys, "evaluate", ensemble)
    assert code == 0
    assert f"accuracy {100 * results['test']['model']['accuracy']:.1f}%" in stdout


def test_a_resumed_ensemble_ends_as_an_uninterrupted_one(files, tmp_path, capsys):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    config, members = files / "classify.toml", "model.ensemble_size=2"
    assert run(capsys, "train", config, "--out", whole, "--set", members)[0] == 0
    assert run(capsys, "train", config, "--out", resumed, "--set", members,
               "--set", "train.epochs=1")[0] == 0  # fmt: skip
    code, stdout, stderr = run(capsys, "train", "--resume", resumed, "--set", "train.epochs=2")
    assert code == 0, stderr
    assert stdout.count("epoch 2/2") == 2 and "epoch 1/2" not in stdout  # each member once
    assert _equal(load_model(whole / "model"), load_model(resumed / "model"))


def test_a_forecast_ensemble_averages_its_members_predictions(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run(capsys, "train", files / "forecast.toml", "--out", out,
                          "--set", "model.ensemble_size=2")  # fmt: skip
    assert code == 0, stderr
    model = load_model(out / "model")
    x = torch.randn(5, 10, 4)
    with torch.no_grad():
        expected = (model.members[0](x) + model.members[1](x)) / 2
        assert torch.allclose(model(x), expected)
    assert run(capsys, "evaluate", out)[0] == 0
    results = json.loads((out / "results.json").read_text())
    assert results["ensemble_val_loss"] > 0 and len(results["members"]) == 2
    assert_png(out / "ensemble_members.png")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.ensemble_size=0", "`model.ensemble_size`, expected a positive integer, got 0"),
        ("model.ensemble_size=1.5", "`model.ensemble_size`, expected a positive integer"),
    ],
)
def test_ensemble_size_must_be_a_positive_integer(files, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", files / "classify.toml", "--out", out, "--set", override)
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_only_tasks_of_one_prediction_a_sequence_take_an_ensemble(tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat.\n" * 40)
    config = tmp_path / "lm.toml"
    config.write_text(f'task = "language-model"\n[data]\npath = "{text}"\n' + SMALL_TRAIN)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", config, "--out", out, "--set", "model.ensemble_size=2")
    assert_one_line_error(code, err, "`model.ensemble_size`, expected 1 for task 'language-model'")
    assert not out.exists()


def test_an_ensemble_stopped_inside_its_second_member_resumes_there(
    files, tmp_path, capsys, monkeypatch
):
    """Member 1 complete, member 2 stopped after its first checkpoint: --resume keeps
    member 1, continues member 2 from that checkpoint and ends as an uninterrupted run."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    config, members = files / "classify.toml", "model.ensemble_size=2"
    assert run(capsys, "train", config, "--out", whole, "--set", members)[0] == 0
    end_epoch = trainer_module.Trainer._end_epoch

    def stop_in_member_2(self, epoch, logs):
        end_epoch(self, epoch, logs)
        if self.out_dir.name == "2" and epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_end_epoch", stop_in_member_2)
        assert run(capsys, "train", config, "--out", stopped, "--set", members)[0] != 0
    assert (stopped / "members" / "1" / "model").is_dir()
    assert not (stopped / "members" / "2" / "model").exists()
    member_1 = (stopped / "members" / "1" / "metrics.csv").read_text()
    code, stdout, stderr = run(capsys, "train", "--resume", stopped)
    assert code == 0, stderr
    assert stdout.count("epoch 1/2") == 0 and stdout.count("epoch 2/2") == 1  # member 2's
    assert (stopped / "members" / "1" / "metrics.csv").read_text() == member_1
    assert _equal(load_model(whole / "model"), load_model(stopped / "model"))
