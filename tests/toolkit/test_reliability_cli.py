"""Bad input and faults through the real command line (issue 6).

Every data or configuration error ends the command with status 1 and one line
on stderr, ``rnnkit: error: FILE: ...``, that names the file and what is wrong,
with no traceback unless ``--debug``. A refused or failed run leaves an
existing run byte for byte as it was. Checkpoints are read without running
code, and a damaged one is named in the error.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.toolkit import tasks
from rnnkit.toolkit.checkpoint import MODEL_FILE, load_checkpoint, read_tensors

ROWS, LOOKBACK = 40, 5
HEADER = "Date,Open,High,Low,Close"


def price_lines(rows: int = ROWS, seed: int = 0) -> list[str]:
    """A header and `rows` lines of a random walk on consecutive days."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    dates = np.datetime64("2021-01-01") + np.arange(rows)
    body = [
        f"{d},{c:.2f},{c * 1.01:.2f},{c * 0.99:.2f},{c:.2f}"
        for d, c in zip(dates, close, strict=True)
    ]
    return [HEADER, *body]


def config_text(data: Path | str, **train: object) -> str:
    settings = {"epochs": 2, "batch_size": 8, "lr": 0.01, "device": '"cpu"', **train}
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    return (
        f'task = "forecast"\n[data]\npath = "{data}"\nlookback = {LOOKBACK}\n'
        f"[model]\nhidden_size = 4\n[train]\n{lines}"
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "prices.csv").write_text("\n".join(price_lines()) + "\n")
    (root / "forecast.toml").write_text(config_text(root / "prices.csv"))
    return root


@pytest.fixture(scope="module")
def a_run(data_dir, tmp_path_factory) -> Path:
    """A finished two-epoch run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(data_dir / "forecast.toml"), "--out", str(out)]) == 0
    return out


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, *parts: str) -> None:
    """Status 1, exactly one stderr line, no traceback, naming every one of `parts`."""
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("rnnkit: error: "), err
    assert "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under `directory`, hidden ones included, by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- data files


def _replace_cell(lines: list[str], row: int, column: int, value: str) -> list[str]:
    fields = lines[row].split(",")
    fields[column] = value
    return [*lines[:row], ",".join(fields), *lines[row + 1 :]]


def _swap_dates(lines: list[str]) -> list[str]:
    a, b = lines[3].split(","), lines[4].split(",")
    a[0], b[0] = b[0], a[0]
    return [*lines[:3], ",".join(a), ",".join(b), *lines[5:]]


def writes(lines: list[str], tail: bytes = b"") -> Callable[[Path], None]:
    """Make a file of `lines` (and raw `tail` bytes)."""
    return lambda path: path.write_bytes(("\n".join(lines) + "\n").encode() + tail)


def with_cell(row: int, column: int, value: str) -> list[str]:
    """The price lines with one cell replaced (row 0 is the header)."""
    return _replace_cell(price_lines(), row, column, value)


LAST = ROWS + 2  # the line number after the data
SHORT = f"expected at least lookback + horizon = {LOOKBACK} + 1 = {LOOKBACK + 1} rows"

# (id, how to make the file from a path, what the message must say). None: no file at all.
DATA_ERRORS: list[tuple[str, Callable[[Path], None] | None, str]] = [
    ("missing file", None, "expected an existing file, got no file at this path"),
    ("directory given as file", Path.mkdir, "expected a file, got a directory"),
    ("empty file", lambda p: p.write_bytes(b""), "expected text, got an empty file (0 bytes)"),
    ("blank lines only", writes(["", "", ""]), "expected a header line"),
    ("header only", writes([HEADER]),
     "line 1: expected data rows after the header, got the header only"),
    ("missing column", writes([HEADER.replace("Close", "Shut"), *price_lines()[1:]]),
     "expected a column named 'Close', got columns"),
    ("non-numeric cell", writes(with_cell(7, 2, "n/a")),
     "line 8, column 'High': expected a number, got 'n/a'"),
    ("empty cell", writes(with_cell(9, 4, "")),
     "line 10, column 'Close': expected a number, got an empty cell"),
    ("NaN", writes(with_cell(5, 1, "NaN")),
     "line 6, column 'Open': expected a finite number, got 'NaN'"),
    ("infinity", writes(with_cell(5, 3, "-inf")),
     "line 6, column 'Low': expected a finite number, got '-inf'"),
    ("wrong number of fields", writes([*price_lines(), "2099-01-01,1"]),
     f"line {LAST}: expected 5 fields as in the header, got 2"),
    ("dates not increasing", writes(_swap_dates(price_lines())),
     "line 5, column 'Date': expected increasing dates"),
    ("fewer rows than lookback + horizon", writes(price_lines(rows=LOOKBACK)),
     f"{SHORT}, got {LOOKBACK}"),
    ("undecodable bytes", writes(price_lines(), tail=b"\xff\xfe"),
     f"line {LAST}: expected UTF-8 text, got byte(s) 0xff at byte offset"),
    ("unterminated quote", writes([HEADER, '2021-01-01,"1,2,3,4']),
     "line 2: expected 5 fields as in the header, got 2"),
]  # fmt: skip
DATA_IDS = [case[0] for case in DATA_ERRORS]


def bad_file(tmp_path: Path, make: Callable[[Path], None] | None) -> Path:
    path = tmp_path / "bad.csv"
    if make is not None:
        make(path)
    return path


@pytest.mark.parametrize(("name", "make", "message"), DATA_ERRORS, ids=DATA_IDS)
def test_train_on_bad_data_is_one_line_naming_the_file(tmp_path, capsys, name, make, message):
    path = bad_file(tmp_path, make)
    config = tmp_path / "config.toml"
    config.write_text(config_text(path))
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", config, "--out", out)
    assert_one_line(code, err, str(path), message)
    assert not out.exists()  # nothing is written before the data are read


@pytest.mark.parametrize(("name", "make", "message"), DATA_ERRORS, ids=DATA_IDS)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_on_bad_data_are_one_line(
    a_run, tmp_path, capsys, command, name, make, message
):
    if name == "fewer rows than lookback + horizon" and command == "predict":
        message = f"expected at least lookback = {LOOKBACK} rows, got {LOOKBACK - 1}"
        make = writes(price_lines(rows=LOOKBACK - 1))
    path = bad_file(tmp_path, make)
    before = snapshot(a_run)
    code, out, err = cli(capsys, command, a_run, "--data", path)
    assert_one_line(code, err, str(path), message)
    assert out == ""
    assert snapshot(a_run) == before


def test_debug_shows_the_traceback_of_a_data_error(tmp_path, capsys):
    path = bad_file(tmp_path, DATA_ERRORS[2][1])
    config = tmp_path / "config.toml"
    config.write_text(config_text(path))
    code, _, err = cli(capsys, "train", config, "--out", tmp_path / "run", "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in err and "DataError" in err
    assert err.rstrip().splitlines()[-1].startswith(f"rnnkit: error: {path}: expected text")


def test_a_real_process_exits_1_with_one_line(tmp_path):
    path = bad_file(tmp_path, DATA_ERRORS[6][1])  # a non-numeric cell
    config = tmp_path / "config.toml"
    config.write_text(config_text(path))
    argv = [sys.executable, "-m", "rnnkit", "train", str(config), "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert_one_line(result.returncode, result.stderr, str(path), DATA_ERRORS[6][2])
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing-dir/predictions.csv", "No such file or directory"),
        ("a-directory", "Is a directory"),
    ],
)
def test_predict_to_an_unwritable_output_names_it(a_run, data_dir, tmp_path, capsys, output,
                                                  message):  # fmt: skip
    (tmp_path / "a-directory").mkdir()
    target = tmp_path / output
    code, _, err = cli(capsys, "predict", a_run, "--data", data_dir / "prices.csv",
                       "--output", target)  # fmt: skip
    assert_one_line(code, err, str(target), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]  # no temporary file


# ----------------------------------------------------------------------------- configuration

CONFIG_ERRORS = [
    ("unknown key", {"lookback = 5": "lookback = 5\nlookbak = 3"},
     "unknown key `data.lookbak` (did you mean `data.lookback`?)"),
    ("unknown section", {"[model]": "[modle]\nx = 1\n[model]"}, "unknown section [modle]"),
    ("string for an integer", {"epochs = 2": 'epochs = "two"'},
     "invalid value for key `train.epochs`, expected a positive integer, got 'two'"),
    ("float for an integer", {"epochs = 2": "epochs = 2.5"},
     "`train.epochs`, expected a positive integer, got 2.5"),
    ("bool for an integer", {"hidden_size = 4": "hidden_size = true"},
     "`model.hidden_size`, expected a positive integer, got True"),
    ("out of range", {"lookback = 5": "lookback = 0"}, "`data.lookback`, expected a positive"),
    ("unknown choice", {'device = "cpu"': 'device = "gpu9"'}, "`train.device`"),
    ("not TOML", {"lookback = 5": "lookback = = 5"}, "expected TOML, got a syntax error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "edits", "message"), CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS]
)
def test_config_errors_name_the_file_and_key(data_dir, tmp_path, capsys, name, edits, message):
    text = config_text(data_dir / "prices.csv")
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    config = tmp_path / "config.toml"
    config.write_text(text)
    code, _, err = cli(capsys, "train", config, "--out", tmp_path / "run")
    assert_one_line(code, err, str(config), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "expected a TOML file, got no file"),
        (lambda p: p.mkdir(), "expected a TOML file, got a directory"),
        (lambda p: p.write_bytes(b'task = "forecast"\n# caf\xe9\n'), "expected UTF-8 text"),
    ],
    ids=["missing", "directory", "undecodable"],
)
def test_an_unreadable_config_file_is_one_line(tmp_path, capsys, make, message):
    config = bad_file(tmp_path, make).with_name("config.toml")
    if make is not None:
        (tmp_path / "bad.csv").rename(config)
    code, _, err = cli(capsys, "train", config, "--out", tmp_path / "run")
    assert_one_line(code, err, str(config), message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=two", "--set: invalid value for key `train.epochs`"),
        ("train.epoch=2", "--set: unknown key `train.epoch`"),
        ("model.hidden_size=-4", "--set: invalid value for key `model.hidden_size`"),
        ("lookback=5", "--set: unknown key `lookback`"),
        ("data.lookback", "--set: expected section.key=value"),
    ],
)
def test_set_errors_name_the_option(data_dir, tmp_path, capsys, override, message):
    code, _, err = cli(capsys, "train", data_dir / "forecast.toml", "--out", tmp_path / "run",
                       "--set", override)  # fmt: skip
    assert_one_line(code, err, message)


# ----------------------------------------------------------------------------- run directories


def _copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


class NaNLossAfter:
    """A loss that turns NaN after `after` batches: a diverging run, injected."""

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def __call__(self, output, target):
        self.calls += 1
        loss = torch.nn.functional.mse_loss(output, target)
        return loss * float("nan") if self.calls > self.after else loss


def _diverge_after(monkeypatch, batches: int) -> None:
    monkeypatch.setattr(
        tasks.ForecastTask, "loss_fn", lambda self, label_smoothing=0.0: NaNLossAfter(batches)
    )


# (id, extra argv, a fault to inject or None, what the message must say)
REFUSED_OR_FAILED = [
    ("no --resume or --force", [], None, "already holds a run; --resume continues it, --force"),
    ("--force with bad data", ["--force", "--set", "data.path=BAD"], None, "expected a number"),
    ("--force with a bad value", ["--force", "--set", "train.lr=-1"], None, "`train.lr`"),
    ("--force and --resume", ["--force", "--resume"], None, "exclude each other"),
    ("--resume changing lr", ["--resume", "--set", "train.lr=0.5"], None, "`train.lr`"),
    ("--force, then training diverges", ["--force"], "diverge", "Training diverged at epoch 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "argv", "fault", "message"), REFUSED_OR_FAILED, ids=[c[0] for c in REFUSED_OR_FAILED]
)
def test_a_refused_or_failed_run_leaves_the_existing_run_byte_identical(
    a_run, data_dir, tmp_path, capsys, monkeypatch, name, argv, fault, message
):
    run = _copy_run(a_run, tmp_path)
    bad = bad_file(tmp_path, DATA_ERRORS[6][1])
    argv = [a.replace("BAD", str(bad)) for a in argv]
    before = snapshot(run)
    if fault == "diverge":
        _diverge_after(monkeypatch, 2)
    config = [] if "--resume" in argv else [data_dir / "forecast.toml"]
    code, _, err = cli(capsys, "train", *config, "--out", run, *argv)
    assert_one_line(code, err, message)
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "run"]  # no staging left


def test_divergence_keeps_the_last_good_checkpoint_and_resume_finishes(
    data_dir, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    batches_per_epoch = -(-(ROWS - LOOKBACK) * 7 // 10 // 8)  # about 70% train windows, batch 8
    _diverge_after(monkeypatch, batches_per_epoch + 1)  # epoch 2, batch 2
    code, _, err = cli(capsys, "train", data_dir / "forecast.toml", "--out", out,
                       "--set", "train.epochs=3")  # fmt: skip
    good = out / "checkpoints" / "epoch-0001"
    assert_one_line(code, err, "Training diverged at epoch 2", "the loss is nan",
                    f"the last good checkpoint, {good}, is kept")  # fmt: skip
    assert load_checkpoint(good).epoch == 1
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-0001"]
    with (out / "metrics.csv").open() as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["1"]
    assert not (out / "model").exists()  # an unfinished run has no final model

    monkeypatch.undo()
    code, _, err = cli(capsys, "train", "--out", out, "--resume")
    assert code == 0, err
    reference = tmp_path / "reference"
    assert cli(capsys, "train", data_dir / "forecast.toml", "--out", reference,
               "--set", "train.epochs=3")[0] == 0  # fmt: skip
    ours, theirs = (read_tensors(p / "model" / MODEL_FILE) for p in (out, reference))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# ----------------------------------------------------------------------------- checkpoints


class _Exploit:
    """Unpickling this creates a file: proof that a loader ran code from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (id, file under the run, damage, message)
DAMAGED = [
    ("model weights altered", "model/model.safetensors", _flip_last_byte,
     "content does not match the SHA-256 in checkpoint.json (altered)"),
    ("model weights truncated", "model/model.safetensors", _truncate, "(truncated or replaced)"),
    ("model weights deleted", "model/model.safetensors", Path.unlink, "file not found"),
    ("checkpoint.json truncated", "model/checkpoint.json", _truncate,
     "not valid JSON, truncated or corrupted"),
    ("checkpoint.json altered", "model/checkpoint.json",
     lambda p: p.write_text(p.read_text().replace('"epoch": null', '"epoch": 7')),
     "content does not match its checksum (altered)"),
    ("weights replaced by a pickle", "model/model.safetensors", "pickle",
     "(truncated or replaced)"),
    ("resume from altered optimizer state", "checkpoints/epoch-0002/optimizer.safetensors",
     _flip_last_byte, "content does not match the SHA-256"),
    ("resume from truncated checkpoint.json", "checkpoints/epoch-0002/checkpoint.json", _truncate,
     "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "relative", "damage", "message"), DAMAGED, ids=[c[0] for c in DAMAGED]
)
def test_a_damaged_checkpoint_is_named_and_runs_no_code(
    a_run, tmp_path, capsys, name, relative, damage, message
):
    run = _copy_run(a_run, tmp_path)
    target = run / relative
    marker = tmp_path / "code-ran"
    if damage == "pickle":
        target.write_bytes(pickle.dumps(_Exploit(marker)))
    else:
        damage(target)
    if relative.startswith("checkpoints/"):
        argv = ["train", "--out", run, "--resume", "--set", "train.epochs=3"]
    else:
        argv = ["evaluate", run]
    code, _, err = cli(capsys, *argv)
    assert_one_line(code, err, str(target), message)
    assert not marker.exists()
