"""The command line end to end, on tiny data files the tests write: every task and error path."""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sample_reviews import write_reviews

from rnnkit.cli import main
from rnnkit.toolkit import checkpoint, plots, rundir, trainer
from rnnkit.toolkit.config import load_config
from rnnkit.toolkit.forecast_defaults import figure
from rnnkit.toolkit.tasks import get_task

ROWS, LOOKBACK = 200, 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """A real PNG: signature, then an IHDR chunk with a plausible size."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    width, height = struct.unpack(">II", data[16:24])
    assert data[12:16] == b"IHDR" and 100 < width < 5000 and 100 < height < 5000


def write_prices(path: Path, rows: int = ROWS, seed: int = 0) -> Path:
    """A random walk with Open/High/Low/Close/Volume on business days."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    dates = np.datetime64("2020-01-01") + np.arange(rows)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["", "Open", "High", "Low", "Close", "Volume"])
        for date, c in zip(dates, close, strict=True):
            o = c * (1 + rng.normal(0, 0.003))
            writer.writerow([date, f"{o:.2f}", f"{max(o, c) * 1.01:.2f}",
                             f"{min(o, c) * 0.99:.2f}", f"{c:.2f}", 1000])  # fmt: skip
    return path


SMALL_TRAIN = (
    '[model]\nhidden_size = 8\n[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\ndevice = "cpu"\n'
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_prices(root / "prices.csv")
    write_prices(root / "other.csv", rows=60, seed=1)
    (root / "forecast.toml").write_text(
        f'[data]\npath = "{root / "prices.csv"}"\nlookback = {LOOKBACK}\n' + SMALL_TRAIN
    )
    write_reviews(root)
    (root / "classify.toml").write_text(
        f'task = "classify"\n[data]\npath = "{root / "reviews.train"}"\n'
        f'val_path = "{root / "reviews.dev"}"\ntest_path = "{root / "reviews.test"}"\n'
        + SMALL_TRAIN
    )
    sentences = []
    lexicon = [("the", "DET"), ("a", "DET"), ("dog", "NOUN"), ("cat", "NOUN"), ("runs", "VERB"),
               ("sleeps", "VERB"), ("quickly", "ADV")]  # fmt: skip
    for i in range(40):
        picks = [lexicon[i % 2], lexicon[2 + i % 2], lexicon[4 + i % 2]] + [lexicon[6]] * (i % 2)
        rows = [f"{j}\t{form}\t{form}\t{tag}\t_\t_\t0\t_\t_\t_" for j, (form, tag) in
                enumerate(picks, start=1)]  # fmt: skip
        sentences.append(f"# sent_id = {i}\n" + "\n".join(rows) + "\n")
    (root / "tiny.conllu").write_text("\n".join(sentences))
    (root / "tag.toml").write_text(
        f'task = "tag"\n[data]\npath = "{root / "tiny.conllu"}"\nval_fraction = 0.2\n'
        "test_fraction = 0.2\n" + SMALL_TRAIN
    )
    text = "the cat sat on the mat. the dog sat on the log.\n" * 40
    (root / "tiny.txt").write_text(text)
    (root / "lm.toml").write_text(
        f'task = "language-model"\n[data]\npath = "{root / "tiny.txt"}"\nlookback = 20\n'
        "val_fraction = 0.1\ntest_fraction = 0.1\n" + SMALL_TRAIN
    )
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, contains: str, status: int = 1) -> None:
    assert code == status
    assert err.startswith("rnnkit: error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert contains in err, err


@pytest.fixture(scope="module")
def forecast_run(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "forecast"
    assert main(["train", str(files / "forecast.toml"), "--out", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------- forecast


def test_train_forecast_writes_a_complete_run(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, "train", files / "forecast.toml", "--out", out)
    assert code == 0, stderr
    # The shape trace of one real batch: (batch, window, features) through to (batch, 1).
    assert "input        (16, 10, 4)" in stdout
    assert "RNN output   (16, 10, 8)" in stdout
    assert "RNN h_n      (1, 16, 8)" in stdout
    assert "head output  (16, 1)" in stdout
    assert "epoch 2/2" in stdout
    assert "persistence (y[t+1]=y[t])" in stdout
    for name in ("config.toml", "transform.json", "metrics.csv", "results.json",
                 "test_predictions.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "epoch-0002" / "checkpoint.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    assert_png(out / "learning_curves.png")
    assert_png(out / "forecast.png")
    assert not (out / "confusion_matrix.png").exists()
    with (out / "metrics.csv").open() as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["1", "2"]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "forecast" and results["epochs"] == 2
    for split in ("val", "test"):
        scores = results[split]
        assert scores["model"]["rmse"] > 0 and scores["persistence"]["rmse"] > 0
        assert 0 <= scores["model"]["directional_accuracy"] <= 1
    config = (out / "config.toml").read_text()
    assert f'path = "{files / "prices.csv"}"' in config
    assert "lookback = 10" in config


@pytest.mark.parametrize("command", ["evaluate", "predict", "generate"])
def test_under_torchrun_commands_other_than_train_run_on_rank_0_only(
    forecast_run, files, tmp_path, monkeypatch, capsys, command
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    argv = {"evaluate": [forecast_run], "predict": [forecast_run, "--data", files / "prices.csv",
            "--output", tmp_path / "p.csv"], "generate": [forecast_run]}[command]  # fmt: skip
    assert run(capsys, command, *argv) == (0, "", "")  # nothing done, nothing written
    assert not (tmp_path / "p.csv").exists()
    monkeypatch.setenv("RANK", "x")
    code, _, stderr = run(capsys, command, *argv)
    assert code == 1 and "environment variable RANK, expected an integer, got 'x'" in stderr


def test_evaluate_reproduces_the_test_scores(forecast_run, capsys):
    code, stdout, _ = run(capsys, "evaluate", forecast_run)
    assert code == 0
    test = json.loads((forecast_run / "results.json").read_text())["test"]
    assert figure(test["model"]["rmse"]) in stdout  # four significant digits
    assert figure(test["persistence"]["rmse"]) in stdout
    assert "the run's test split" in stdout


def test_evaluate_on_another_file(forecast_run, files, capsys):
    code, stdout, stderr = run(capsys, "evaluate", forecast_run, "--data", files / "other.csv")
    assert code == 0, stderr
    assert f"{60 - LOOKBACK:,} forecasts of Close" in stdout


def test_predict_writes_original_units_and_the_next_forecast(forecast_run, files, tmp_path, capsys):
    output = tmp_path / "predictions.csv"
    code, stdout, _ = run(
        capsys, "predict", forecast_run, "--data", files / "other.csv", "--output", output
    )
    assert code == 0
    assert f"wrote {60 - LOOKBACK + 1} predictions" in stdout
    with output.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 60 - LOOKBACK + 1  # one window per row from the lookback-th on
    assert rows[0]["target_date"] == rows[1]["date"]
    assert rows[-1]["target_date"] == "" and rows[-1]["actual"] == ""  # past the file's end
    assert 50 < float(rows[-1]["predicted"]) < 200  # prices, not standardised values
    code, stdout, _ = run(capsys, "predict", forecast_run, "--data", files / "other.csv")
    assert code == 0 and stdout.startswith("date,target_date,predicted,actual,persistence\n")


def test_resume_continues_from_the_last_checkpoint(files, tmp_path, capsys):
    out = tmp_path / "run"
    config = files / "forecast.toml"
    assert run(capsys, "train", config, "--out", out, "--set", "train.epochs=1")[0] == 0
    code, stdout, stderr = run(capsys, "train", "--out", out, "--resume", "--set", "train.epochs=2")
    assert code == 0, stderr
    assert "(resumed)" in stdout
    assert "epoch 1/2" not in stdout and "epoch 2/2" in stdout
    with (out / "metrics.csv").open() as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["1", "2"]
    assert (out / "checkpoints" / "epoch-0002").is_dir()
    assert json.loads((out / "results.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(
    ("schedule", "override", "message"),
    [
        ("constant", "train.lr=0.5",
         "--set: resuming keeps the optimizer state; start a new run to change `train.lr`"),
        ("constant", "train.seed=3", "start a new run to change `train.seed`"),
        ("cosine", "train.epochs=5", "resuming keeps the cosine schedule, whose length is the "
         "number of epochs; start a new run to change `train.epochs`"),
    ],
)  # fmt: skip
def test_resume_refuses_settings_it_would_not_apply(
    files, tmp_path, capsys, schedule, override, message
):
    # The check needs only the run's config.toml; no training happens.
    out = tmp_path / "run"
    out.mkdir()
    config = (files / "forecast.toml").read_text() + f'lr_schedule = "{schedule}"\n'
    (out / rundir.CONFIG_FILE).write_text(config)
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--set", override)
    assert_one_line_error(code, err, message)
    assert (out / rundir.CONFIG_FILE).read_text() == config


def test_a_run_refused_before_training_leaves_no_files(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", files / "forecast.toml", "--out", out,
                       "--set", "train.device=cuda")  # fmt: skip
    assert code == 1 and "cuda" in err
    assert not out.exists() or not any(out.iterdir())


def test_every_file_of_a_run_is_written_atomically(files, tmp_path, capsys, monkeypatch):
    written = []
    real = checkpoint.atomic_write

    def recording(path, data):
        written.append(Path(path).name)
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", recording)
    monkeypatch.setattr(rundir, "atomic_write", recording)  # write_json's
    monkeypatch.setattr(trainer, "atomic_write", recording)  # metrics.csv
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", files / "classify.toml", "--out", out,
                       "--set", "train.epochs=1")  # fmt: skip
    assert code == 0, err
    on_disk = {p.name for p in out.iterdir() if p.is_file()}
    assert on_disk <= set(written), on_disk - set(written)
    assert {rundir.PREDICTIONS_CSV, rundir.LEARNING_CURVES_PNG} <= on_disk


def test_force_replaces_a_run_only_once_the_new_one_is_complete(
    forecast_run, files, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert run(capsys, "train", files / "forecast.toml", "--out", out)[0] == 0
    before = (out / "results.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    # A failure after the new run has trained and checkpointed leaves the old one untouched.
    monkeypatch.setattr(plots, "plot_learning_curves", broken)
    code, _, stderr = run(capsys, "train", files / "forecast.toml", "--out", out, "--force",
                          "--set", "train.epochs=1")  # fmt: skip
    assert_one_line_error(code, stderr, "RuntimeError: plotting failed")
    assert (out / "results.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind
    monkeypatch.undo()

    code, _, stderr = run(capsys, "train", files / "forecast.toml", "--out", out, "--force",
                          "--set", "train.epochs=1")  # fmt: skip
    assert code == 0, stderr
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_replacement_puts_the_old_run_back(tmp_path, monkeypatch):
    old, new = tmp_path / "run", tmp_path / ".run.new-1"
    for path, text in ((old, "old"), (new, "new")):
        path.mkdir()
        (path / rundir.CONFIG_FILE).write_text(text)
    real = os.replace

    def fail_for_the_new_run(src, dst):
        if Path(src) == new:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_for_the_new_run)
    with pytest.raises(OSError, match="disk full"):
        rundir.finish_replacement(new, old)
    assert (old / rundir.CONFIG_FILE).read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.new-1", "run"]


def test_subprocess_python_m_rnnkit_train(files, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", str(files / "forecast.toml"), "--out", str(out),
         "--set", "train.epochs=1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "head output  (16, 1)" in result.stdout
    assert (out / "config.toml").is_file() and (out / "metrics.csv").is_file()
    assert (out / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    assert (out / "results.json").is_file()
    assert_png(out / "learning_curves.png")
    assert_png(out / "forecast.png")
    assert not (tmp_path / "runs").exists()


def test_default_run_dir_is_under_runs(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "train", files / "forecast.toml", "--set", "train.epochs=1")
    assert code == 0
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("forecast-") and rundir.is_run(made)
    assert f"-> {made}" in stdout


# ----------------------------------------------------------------------------- other tasks


def test_classify_train_evaluate_predict(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, "train", files / "classify.toml", "--out", out)
    assert code == 0, stderr
    assert "(batch, max_len) token ids, packed" in stdout
    assert "head output  (16, 2)" in stdout
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["test"]["model"]["accuracy"] <= 1
    assert results["test"]["majority"]["label"] in ("0", "1")
    assert_png(out / "confusion_matrix.png")
    code, stdout, _ = run(capsys, "evaluate", out, "--data", files / "reviews.dev")
    assert code == 0 and "accuracy" in stdout
    texts = tmp_path / "texts.txt"
    texts.write_text("great fun film\n\nawful dull film\n")
    code, stdout, _ = run(capsys, "predict", out, "--data", texts)
    assert code == 0
    rows = list(csv.DictReader(stdout.splitlines()))
    assert [row["text"] for row in rows] == ["great fun film", "awful dull film"]
    assert all(row["predicted"] in ("0", "1") for row in rows)


def test_the_split_of_one_file_does_not_follow_the_training_seed(files):
    def held_out(seed: int) -> tuple[list, list]:
        config = load_config(files / "classify.toml", [
            "data.val_path=", "data.test_path=", "data.val_fraction=0.2",
            "data.test_fraction=0.2", f"train.seed={seed}",
        ]).resolve_paths()  # fmt: skip
        data = get_task("classify").prepare(config)
        return data.val.words, data.test.words

    assert held_out(1) == held_out(2)


def test_tag_train_and_evaluate(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, "train", files / "tag.toml", "--out", out)
    assert code == 0, stderr
    assert "# (batch, window, outputs)" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["words"] > 0
    assert 0 <= results["test"]["most_frequent_tag"]["accuracy"] <= 1
    code, stdout, _ = run(capsys, "evaluate", out)
    assert code == 0 and "most frequent training tag" in stdout
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("the dog runs\n")
    code, stdout, _ = run(capsys, "predict", out, "--data", sentences)
    assert code == 0
    assert stdout.splitlines()[0] == "sentence,position,word,predicted"
    assert len(stdout.splitlines()) == 4


def test_language_model_train_and_generate(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, "train", files / "lm.toml", "--out", out)
    assert code == 0, stderr
    assert "input        (16, 20)" in stdout
    results = json.loads((out / "results.json").read_text())
    assert math.isfinite(results["test"]["model"]["perplexity"])
    args = ("generate", out, "--prompt", "the ", "--length", "30", "--seed", "3")
    code, first, _ = run(capsys, *args)
    assert code == 0
    assert first.startswith("the ") and len(first) == len("the ") + 30 + 1
    assert run(capsys, *args)[1] == first  # the same seed, the same text
    code, _, err = run(capsys, "generate", out, "--prompt", "Zebra")
    assert_one_line_error(code, err, "got unseen 'Zbr'")
    code, _, err = run(capsys, "predict", out, "--data", files / "tiny.txt")
    assert_one_line_error(code, err, "rnnkit generate")


# ----------------------------------------------------------------------------- errors


def test_language_model_refuses_a_fraction_that_holds_out_nothing(files, tmp_path, capsys):
    code, _, err = run(capsys, "train", files / "lm.toml", "--out", tmp_path / "run",
                       "--set", "data.val_fraction=0.0001")  # fmt: skip
    assert_one_line_error(
        code, err, "expected enough characters for data.val_fraction=0.0001 to hold out at least"
    )


def test_generate_refuses_a_forecast_run(forecast_run, capsys):
    code, _, err = run(capsys, "generate", forecast_run)
    assert_one_line_error(
        code, err, "is a 'forecast' run; generate needs a 'language-model' run", 2
    )


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["train", "missing.toml"], "missing.toml: expected a TOML file, got no file", 1),
        (["train", "--set", "model.hidden=8"], "--set: unknown key `model.hidden`", 1),
        (["train", "--set", "train.epochs=two"], "`train.epochs`, expected a positive integer", 1),
        (["train", "--set", "data.path=nope.csv", "--set", "train.epochs=1"],
         "nope.csv: expected an existing file, got no file at this path", 1),
        (["evaluate", "no-such-run"], "no-such-run: expected a run directory, got no such", 1),
        (["frobnicate"], "invalid choice: 'frobnicate'", 2),
        (["predict", "somewhere"], "the following arguments are required: --data", 2),
        (["train", "--resume"], "--resume needs a run directory: --resume RUN_DIR", 2),
        (["train", "--out", "x", "--resume", "--set", "model.hidden_size=4"],
         "--set: --resume can change [train] keys only", 1),
        (["train", "--out", "x", "--resume"], "x: expected a run to resume, got no config.toml", 1),
    ],
)  # fmt: skip
def test_errors_are_one_line_without_traceback(tmp_path, capsys, monkeypatch, argv, message,
                                               status):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, message, status)
    assert not (tmp_path / "runs").exists()


def test_existing_run_needs_resume_or_force(forecast_run, files, capsys):
    before = sorted(p.name for p in forecast_run.iterdir())
    code, _, err = run(capsys, "train", files / "forecast.toml", "--out", forecast_run)
    assert_one_line_error(code, err, "already holds a run; --resume continues it, --force replaces")
    assert sorted(p.name for p in forecast_run.iterdir()) == before


def test_a_non_run_directory_is_never_replaced(files, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "train", files / "forecast.toml", "--out", tmp_path, "--force")
    assert_one_line_error(code, err, "not a run; rnnkit does not replace it")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", tmp_path / "none", "--debug")
    assert code == 1
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("rnnkit: error: ")


def test_help_exits_zero(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--set SECTION.KEY=VALUE" in out


def test_bench_json_is_written_atomically(tmp_path, capsys, monkeypatch):
    written = []
    real = checkpoint.atomic_write
    monkeypatch.setattr(
        checkpoint, "atomic_write", lambda path, data: (written.append(path), real(path, data))
    )
    target = tmp_path / "bench.json"
    code, _, err = run(capsys, "bench", "--quick", "--threads", "1", "--layers", "1",
                       "--bidirectional", "0", "--modes", "inference", "--repeats", "1",
                       "--warmup", "1", "--no-memory", "--quiet", "--json", target)  # fmt: skip
    assert code == 0, err
    assert written == [str(target)]
    assert json.loads(target.read_text())["results"]


def test_bench_delegates_to_rnnkit_benchmark(capsys):
    code, out, err = run(capsys, "bench", "--quick", "--threads", "1", "--layers", "1",
                         "--bidirectional", "0", "--modes", "inference", "--repeats", "2",
                         "--warmup", "1", "--no-memory", "--quiet")  # fmt: skip
    assert code == 0, err
    assert "100x30x4x64" in out and "ratio" in out
    code, _, err = run(capsys, "bench", "--shapes", "1,2")
    assert_one_line_error(code, err, "expected T,N,H_in,H_out as four positive integers", 2)
