"""The classify-series task end to end: .ts files -> train, evaluate, predict, and its errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.toolkit import rundir
from rnnkit.toolkit.config import ConfigError, load_config
from rnnkit.toolkit.data import DataError
from rnnkit.toolkit.data.series_archive import read_labelled_series
from rnnkit.toolkit.models import ModelConfig
from rnnkit.toolkit.tasks import get_task

pytest.importorskip("aeon")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CLASSES = ("down", "flat", "up")
SLOPES = {"up": 4.0, "down": -4.0, "flat": 0.0}


def make_series(labels: list[str], seed: int, channels: int = 2) -> list[np.ndarray]:
    """Rising, falling or flat series, ``(length, channels)``, lengths 4-12 by class."""
    rng = np.random.default_rng(seed)
    series = []
    for label in labels:
        length = int(rng.integers(4, 9)) + (3 if label == "up" else 0)
        t = np.linspace(0, 1, length)
        base = SLOPES[label] * t + 10  # channel 1 rises or falls around 10
        columns = [base, -SLOPES[label] * t] + [np.full(length, 0.5)] * (channels - 2)
        noisy = np.stack(columns, axis=1) + rng.normal(0, 0.1, (length, channels))
        series.append(np.round(noisy, 3))
    return series


def write_ts(
    path: Path, series: list[np.ndarray], labels: list[str] | None, classes=CLASSES
) -> Path:
    """A .ts file in aeon's format (as its JapaneseVowels_TRAIN.ts): unequal lengths."""
    header = [
        "#Rising, falling and flat series written by the tests.",
        "@problemName Slopes",
        "@timeStamps false",
        "@missing false",
        "@univariate false",
        f"@dimensions {series[0].shape[1]}",
        "@equalLength false",
        "@classLabel true " + " ".join(classes) if labels is not None else "@classLabel false",
        "@data",
    ]
    lines = []
    for i, s in enumerate(series):
        channels = [",".join(f"{v:g}" for v in s[:, c]) for c in range(s.shape[1])]
        lines.append(":".join(channels + ([labels[i]] if labels is not None else [])))
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    return path


TRAIN_LABELS = ["up", "down", "flat"] * 10 + ["up"] * 3  # 33 series; the majority is 'up'
HELD_OUT_LABELS = ["down", "flat", "up"] * 3


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("series")
    write_ts(root / "train.ts", make_series(TRAIN_LABELS, 0), TRAIN_LABELS)
    write_ts(root / "val.ts", make_series(HELD_OUT_LABELS, 1), HELD_OUT_LABELS)
    write_ts(root / "test.ts", make_series(HELD_OUT_LABELS, 2), HELD_OUT_LABELS)
    write_ts(root / "unlabelled.ts", make_series(["up", "down"], 3), None)
    odd = ["up", "down", "sideways"]
    write_ts(root / "unseen.ts", make_series(["up", "down", "flat"], 4), odd, classes=odd)
    three = make_series(HELD_OUT_LABELS, 5, channels=3)
    write_ts(root / "three.ts", three, HELD_OUT_LABELS)
    (root / "series.toml").write_text(
        f'task = "classify-series"\n[data]\npath = "{root / "train.ts"}"\n'
        f'val_path = "{root / "val.ts"}"\ntest_path = "{root / "test.ts"}"\n'
        "[model]\nhidden_size = 8\n[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\n"
        'device = "cpu"\n'
    )
    return root


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1, err
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


@pytest.fixture(scope="module")
def series_run(files, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "series"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", str(files / "series.toml"), "--out", str(out),
                     "--set", "train.epochs=2"])  # fmt: skip
    assert code == 0
    return out, stdout.getvalue()


# ----------------------------------------------------------------------------- training


def test_get_task():
    task = get_task("classify-series")
    assert task.name == "classify-series"


def test_train_writes_a_run_with_a_test_accuracy(series_run):
    out, stdout = series_run
    assert "33 series train, 9 validation, 9 test" in stdout
    assert "2 channels, 4-11 steps per series, 3 labels" in stdout
    assert "(batch, window, features), packed: no step of padding" in stdout
    assert "head output  (16, 3)" in stdout
    assert "epoch 2/2" in stdout
    results = json.loads((out / rundir.RESULTS_FILE).read_text())
    assert results["task"] == "classify-series" and results["epochs"] == 2
    test = results["test"]
    assert test["examples"] == 9
    accuracy = test["model"]["accuracy"]
    assert isinstance(accuracy, float) and 0 <= accuracy <= 1
    # The score is the share of the written test predictions that are right.
    rows = read_csv((out / rundir.PREDICTIONS_CSV).read_text())
    assert [r["series"] for r in rows] == [str(i) for i in range(1, 10)]
    assert [r["label"] for r in rows] == HELD_OUT_LABELS
    assert all(r["predicted"] in CLASSES for r in rows)
    assert accuracy == pytest.approx(np.mean([r["label"] == r["predicted"] for r in rows]))
    # The baseline: the commonest training label, scored on the test labels (3 of 9 'up').
    assert test["majority"] == {"label": "up", "accuracy": pytest.approx(1 / 3)}
    assert results["val"]["examples"] == 9
    assert (out / "confusion_matrix.png").is_file()


def test_the_checkpoint_holds_a_classifier_of_the_channels(series_run):
    out, _ = series_run
    document = json.loads((out / rundir.MODEL_DIR / "checkpoint.json").read_text())
    config = ModelConfig(**document["model_config"])
    assert (config.task, config.input_size, config.num_outputs) == ("classification", 2, 3)
    assert config.vocab_size is None and config.char_vocab_size is None


def test_scaling_statistics_come_from_the_training_file_only(series_run, files):
    out, _ = series_run
    state = json.loads((out / rundir.TRANSFORM_FILE).read_text())["transform"]
    assert state["labels"]["classes"] == list(CLASSES)
    scaler = state["scaler"]
    assert scaler["columns"] == ["channel 1", "channel 2"]
    train = np.concatenate(read_labelled_series(files / "train.ts")[0]).astype(np.float64)
    np.testing.assert_allclose(scaler["mean"], train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scaler["std"], train.std(axis=0), rtol=1e-6)  # population std
    # The held-out files would move the statistics well beyond that tolerance.
    every = np.concatenate(
        [train] + [np.concatenate(read_labelled_series(files / f)[0]) for f in ("val.ts",
                                                                               "test.ts")]
    )  # fmt: skip
    assert np.abs(every.mean(axis=0) - train.mean(axis=0)).max() > 1e-3


def test_a_held_out_share_is_not_in_the_scaling_statistics(files):
    config = load_config(files / "series.toml", ["data.val_path=", "data.val_fraction=0.25"])
    data = get_task("classify-series").prepare(config)
    assert (len(data.train), len(data.val)) == (33 - 8, 8)
    scaler = data.transform.scaler
    mean, std = np.array(scaler.mean), np.array(scaler.std)
    # Undo the standardisation of the training items: what remains are the raw series,
    # and the statistics must be theirs alone.
    raw = np.concatenate([x.numpy().astype(np.float64) * std + mean for x, _ in data.train.items])
    np.testing.assert_allclose(mean, raw.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, raw.std(axis=0), rtol=1e-5)
    everything = np.concatenate(read_labelled_series(files / "train.ts")[0])
    assert np.abs(everything.mean(axis=0) - mean).max() > 1e-3
    # The training items are standardised: mean 0, std 1 per channel over their frames.
    scaled = np.concatenate([x.numpy() for x, _ in data.train.items])
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-5)


def test_limit_keeps_the_first_series_of_each_file(files):
    config = load_config(files / "series.toml", ["data.limit=7"])
    data = get_task("classify-series").prepare(config)
    assert (len(data.train), len(data.val), len(data.test)) == (7, 7, 7)
    assert data.train.gold == TRAIN_LABELS[:7]
    assert data.test.gold == HELD_OUT_LABELS[:7]
    lengths = [len(s) for s in read_labelled_series(files / "train.ts")[0][:7]]
    assert [int(x.shape[0]) for x, _ in data.train.items] == lengths


def test_one_label_in_training_is_refused(tmp_path):
    path = write_ts(tmp_path / "one.ts", make_series(["up"] * 4, 0), ["up"] * 4)
    config = load_config(overrides=["task=classify-series", f"data.path={path}",
                                    "data.val_fraction=0", "data.test_fraction=0"])  # fmt: skip
    with pytest.raises(DataError, match="expected at least two distinct labels"):
        get_task("classify-series").prepare(config)


def test_embedding_dim_is_refused_for_series():
    with pytest.raises(ConfigError, match=r"`model.embedding_dim`, expected 0 for task "
                                          r"'classify-series'"):  # fmt: skip
        load_config(overrides=["task=classify-series", "data.path=x.ts", "model.embedding_dim=4"])


# ----------------------------------------------------------------------------- evaluate, predict


def test_evaluate_reproduces_the_test_accuracy(series_run, files, capsys):
    out, _ = series_run
    test = json.loads((out / rundir.RESULTS_FILE).read_text())["test"]
    shown = f"accuracy {100 * test['model']['accuracy']:.1f}% (majority label 'up': 33.3%)"
    code, stdout, err = run(capsys, "evaluate", out)
    assert code == 0, err
    assert "the run's test split: 9 series:" in stdout and shown in stdout
    code, stdout, err = run(capsys, "evaluate", out, "--data", files / "test.ts")
    assert code == 0, err
    assert f"{files / 'test.ts'}: 9 series:" in stdout and shown in stdout


def test_predict_agrees_with_the_test_predictions(series_run, files, tmp_path, capsys):
    out, _ = series_run
    code, stdout, err = run(capsys, "predict", out, "--data", files / "test.ts")
    assert code == 0, err
    assert stdout.splitlines()[0] == "series,predicted,probability"
    rows = read_csv(stdout)
    written = read_csv((out / rundir.PREDICTIONS_CSV).read_text())
    assert [r["predicted"] for r in rows] == [r["predicted"] for r in written]
    assert all(1 / 3 - 1e-6 <= float(r["probability"]) <= 1 for r in rows)
    target = tmp_path / "predictions.csv"
    code, stdout, _ = run(capsys, "predict", out, "--data", files / "test.ts", "--output", target)
    assert code == 0 and "wrote 9 predictions" in stdout
    assert read_csv(target.read_text()) == rows


def test_predict_needs_no_labels(series_run, files, capsys):
    # New series to classify come without labels (.ts "@classLabel false").
    out, _ = series_run
    code, stdout, err = run(capsys, "predict", out, "--data", files / "unlabelled.ts")
    assert code == 0, err
    rows = read_csv(stdout)
    assert len(rows) == 2 and all(r["predicted"] in CLASSES for r in rows)


# ----------------------------------------------------------------------------- errors


def test_a_test_file_with_an_unseen_label(files, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", files / "series.toml", "--out", out,
                       "--set", f"data.test_path={files / 'unseen.ts'}")  # fmt: skip
    assert_one_line_error(
        code, err, f"{files / 'unseen.ts'}: expected a label seen in training ('down', 'flat', "
        "'up'), got 'sideways'",
    )  # fmt: skip
    assert not (out / rundir.RESULTS_FILE).exists()


def test_a_test_file_with_other_channels(files, tmp_path, capsys):
    code, _, err = run(capsys, "train", files / "series.toml", "--out", tmp_path / "run",
                       "--set", f"data.test_path={files / 'three.ts'}")  # fmt: skip
    assert_one_line_error(
        code, err, f"{files / 'three.ts'}: expected 2 channels per frame (as in training), got 3"
    )


@pytest.mark.parametrize(("command", "name"), [("evaluate", "unseen.ts"), ("evaluate", "three.ts"),
                                               ("predict", "three.ts")])  # fmt: skip
def test_a_trained_run_refuses_files_it_cannot_read(series_run, files, capsys, command, name):
    out, _ = series_run
    code, _, err = run(capsys, command, out, "--data", files / name)
    assert_one_line_error(code, err, f"{files / name}: expected")


def test_a_missing_series_file(files, tmp_path, capsys):
    code, _, err = run(capsys, "train", files / "series.toml", "--out", tmp_path / "run",
                       "--set", f"data.path={tmp_path / 'none.ts'}")  # fmt: skip
    assert_one_line_error(code, err, "none.ts: expected an existing file")


# ----------------------------------------------------------------------------- JapaneseVowels


def test_japanese_vowels_config_runs(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", CONFIGS / "japanese_vowels.toml", "--out", out,
                            "--set", "train.epochs=1")  # fmt: skip
    assert code == 0, err
    assert "216 series train, 54 validation, 370 test" in stdout
    assert "12 channels, 7-26 steps per series, 9 labels" in stdout
    results = json.loads((out / rundir.RESULTS_FILE).read_text())
    assert results["test"]["examples"] == 370 and results["val"]["examples"] == 54
    assert 0 <= results["test"]["model"]["accuracy"] <= 1
    # aeon sources are names, not files: they are not turned into absolute paths.
    config = load_config(out / rundir.CONFIG_FILE)
    assert config.data.path == "aeon:JapaneseVowels:train"
    assert config.data.test_path == "aeon:JapaneseVowels:test"
