"""Interrupted runs lose nothing: real processes, real SIGKILLs, then ``--resume`` (issue 6).

One run is killed twice and resumed each time; it must end with exactly the
weights, optimizer state and metrics of a run that was never interrupted
(same seed, started alongside):

1. by itself, halfway through writing epoch 2's optimizer state inside the
   checkpoint's temporary directory: a deterministic kill during a checkpoint
   write, set up by a harness around ``rnnkit.cli.main`` (the library has no
   test hook);
2. from outside, the moment epoch 4's checkpoint (temporary or final) appears.

Faster checks of the same recovery run in this process: leftovers of a
killed write are cleaned up or put back, a replacement killed between its two
renames leaves the old run in place, and a run killed before its first
checkpoint resumes from scratch.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.toolkit import rundir
from rnnkit.toolkit.checkpoint import MODEL_FILE, OPTIMIZER_FILE, latest_checkpoint, read_tensors
from rnnkit.toolkit.metrics import loss_for_task
from rnnkit.toolkit.trainer import TrainConfig, Trainer

EPOCHS = 6
CONFIG = """\
task = "forecast"
[data]
path = "{data}"
lookback = 5
[model]
hidden_size = 8
[train]
epochs = {epochs}
batch_size = 8
lr = 0.01
device = "cpu"
seed = 7
checkpoint_every = 1
"""

# Runs `rnnkit ARGS...` and SIGKILLs its own process halfway through writing FILE
# inside the temporary directory of checkpoint EPOCH_DIR.
HARNESS = """\
import os, signal, sys
from rnnkit.toolkit import checkpoint

epoch_dir, filename, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
write = checkpoint._write_new_file

def write_half_then_die(path, payload):
    if path.name == filename and path.parent.name.startswith(f".{epoch_dir}."):
        with open(path, "xb") as file:
            file.write(payload[: len(payload) // 2])
            file.flush()
            os.fsync(file.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, payload)

checkpoint._write_new_file = write_half_then_die
from rnnkit.cli import main
sys.exit(main(argv))
"""


def write_data(path: Path, rows: int = 60) -> Path:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    dates = np.datetime64("2022-01-01") + np.arange(rows)
    lines = ["Date,Open,High,Low,Close"]
    lines += [
        f"{d},{c:.2f},{c * 1.01:.2f},{c * 0.99:.2f},{c:.2f}"
        for d, c in zip(dates, close, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def rnnkit(
    *argv: object, stderr: Path, harness: Path | None = None, kill_at=()
) -> subprocess.Popen:
    """Start ``python -m rnnkit ARGV`` (or the harness) with stderr to a file."""
    command = [sys.executable, "-m", "rnnkit"]
    if harness is not None:
        command = [sys.executable, str(harness), *kill_at]
    with stderr.open("w") as err:  # the child keeps its own descriptor
        return subprocess.Popen(
            [*command, *map(str, argv)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )


def wait(process: subprocess.Popen, stderr: Path) -> int:
    try:
        return process.wait(timeout=120)
    finally:
        if process.returncode not in (0, -signal.SIGKILL):
            print(stderr.read_text())


def kill_when(process: subprocess.Popen, condition: Callable[[], bool], stderr: Path) -> None:
    """SIGKILL `process` the moment `condition()` holds (polled every millisecond)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, f"exited {process.returncode}: {stderr.read_text()}"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    assert wait(process, stderr) == -signal.SIGKILL


def entries(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as file:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(file)]


def test_sigkill_twice_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    data = write_data(tmp_path / "prices.csv")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=data, epochs=EPOCHS))
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    reference, run = tmp_path / "reference", tmp_path / "run"
    checkpoints = run / "checkpoints"
    logs = {name: tmp_path / f"{name}.err" for name in ("reference", "1", "2", "3")}
    uninterrupted = rnnkit("train", config, "--out", reference, stderr=logs["reference"])

    # 1. By itself, halfway through writing epoch 2's optimizer.safetensors.
    first = rnnkit("train", config, "--out", run, stderr=logs["1"], harness=harness,
                   kill_at=("epoch-0002", OPTIMIZER_FILE))  # fmt: skip
    assert wait(first, logs["1"]) == -signal.SIGKILL
    (partial,) = [name for name in entries(checkpoints) if name.startswith(".epoch-0002.")]
    assert (checkpoints / partial / OPTIMIZER_FILE).stat().st_size > 0, "killed before the write"
    assert latest_checkpoint(checkpoints).name == "epoch-0001"

    # 2. From outside, the moment epoch 4's checkpoint shows (temporary or final).
    second = rnnkit("train", "--out", run, "--resume", stderr=logs["2"])
    kill_when(second, lambda: any("epoch-0004" in n for n in entries(checkpoints)), logs["2"])
    assert latest_checkpoint(checkpoints).name in ("epoch-0003", "epoch-0004")

    assert wait(rnnkit("train", "--out", run, "--resume", stderr=logs["3"]), logs["3"]) == 0
    assert wait(uninterrupted, logs["reference"]) == 0

    for relative in (f"model/{MODEL_FILE}", f"checkpoints/epoch-{EPOCHS:04d}/{MODEL_FILE}",
                     f"checkpoints/epoch-{EPOCHS:04d}/{OPTIMIZER_FILE}"):  # fmt: skip
        ours, theirs = read_tensors(run / relative), read_tensors(reference / relative)
        assert ours.keys() == theirs.keys(), relative
        for name in theirs:
            assert torch.equal(ours[name], theirs[name]), f"{relative}: {name}"
    assert metrics(run) == metrics(reference)
    leftovers = [n for n in entries(run) + entries(checkpoints) if n.endswith((".tmp", ".old"))]
    assert leftovers == []


# ----------------------------------------------------------------------------- in process


def tiny_trainer(out_dir: Path, epochs: int) -> Trainer:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, generator=gen), torch.randn(24, 1, generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    config = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, device="cpu", seed=1)
    data = torch.utils.data.TensorDataset(x, y)
    return Trainer(config, model, data, data, loss_fn=loss_for_task("regression"), out_dir=out_dir)


def test_leftovers_of_a_killed_write_are_removed_or_put_back(tmp_path):
    """A kill may leave temporary files, or a checkpoint moved aside before its replacement."""
    run = tmp_path / "run"
    tiny_trainer(run, epochs=2).fit()
    checkpoints = run / "checkpoints"
    (checkpoints / "epoch-0002").rename(checkpoints / ".epoch-0002.0123abcd.old")
    (checkpoints / ".epoch-0003.x1y2z3.tmp").mkdir()
    (checkpoints / ".epoch-0003.x1y2z3.tmp" / MODEL_FILE).write_bytes(b"half")
    (run / ".metrics.csv.q9w8e7.tmp").write_text("epoch,train_loss\n1,")
    (run / ".model.4567cdef.old").mkdir()  # moved aside, and the new model/ is in place

    resumed = tiny_trainer(run, epochs=3)
    resumed.fit(resume=True)
    assert resumed.history[0]["epoch"] == 1 and len(resumed.history) == 3
    assert [p.name for p in checkpoints.iterdir()] == ["epoch-0003"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "metrics.csv", "model"]

    reference = tiny_trainer(tmp_path / "reference", epochs=3)
    reference.fit()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


@pytest.mark.parametrize("command", ["resume", "evaluate", "new run"])
def test_a_replacement_killed_between_its_renames_leaves_the_old_run(tmp_path, command):
    """finish_replacement moves the old run aside, then renames the new one in."""
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.CONFIG_FILE).write_text("old")
    (run / rundir.MODEL_DIR).mkdir()
    staging = tmp_path / ".run.new-1a2b3c4d"
    staging.mkdir()
    (staging / rundir.CONFIG_FILE).write_text("new")
    run.rename(tmp_path / ".run.old-5e6f7a8b")  # the kill came here

    if command == "resume":
        assert rundir.prepare_run_dir(run, resume=True, force=False) == run
    elif command == "evaluate":
        assert rundir.require_run(run) == run
    else:
        with pytest.raises(rundir.RunDirError, match="already holds a run"):
            rundir.prepare_run_dir(run, resume=False, force=False)
    assert (run / rundir.CONFIG_FILE).read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.new-1a2b3c4d", "run"]


_CLAIM = """
import sys, time
from pathlib import Path
from rnnkit.toolkit import rundir
print(rundir.prepare_run_dir(Path(sys.argv[1]), resume=False, force=True), flush=True)
time.sleep(120)
"""


def claiming_process(run: Path) -> tuple[subprocess.Popen, Path]:
    """A process that starts a --force replacement of `run` and then waits, holding it."""
    process = subprocess.Popen([sys.executable, "-c", _CLAIM, str(run)], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    return process, Path(process.stdout.readline().strip())


def test_a_killed_replacement_is_removed_by_the_next_run_and_a_running_one_kept(tmp_path):
    """A --force run killed before it finished leaves its partial run in a hidden sibling."""
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.CONFIG_FILE).write_text("old")
    killed, killed_dir = claiming_process(run)
    running, running_dir = claiming_process(run)
    try:
        killed.kill()
        killed.wait()
        young = tmp_path / f".run.new-{rundir._HOST}-0young00"  # created, not yet locked?
        young.mkdir()
        # another host's (its lock is not seen here on NFS), and an older name
        elsewhere, older = tmp_path / ".run.new-0host000-1a2b3c4d", tmp_path / ".run.new-5e6f7a8b"
        (tmp_path / ".run.new-notadir").write_text("")
        for directory in (killed_dir, running_dir, elsewhere, older):
            directory.mkdir(exist_ok=True)
            (directory / rundir.CONFIG_FILE).write_text("partial")
            hour_ago = time.time() - 3600
            os.utime(directory, (hour_ago, hour_ago))

        assert rundir.prepare_run_dir(run, resume=True, force=False) == run
        kept = sorted(p.name for p in tmp_path.iterdir())
        names = ["run", running_dir.name, young.name, elsewhere.name, older.name]
        names.append(".run.new-notadir")
        assert kept == sorted(names), "only the killed replacement's directory goes"
        assert (run / rundir.CONFIG_FILE).read_text() == "old"
    finally:
        for process in (killed, running):
            process.kill()
            process.wait()
            process.stdout.close()
    assert rundir.prepare_run_dir(run, resume=True, force=False) == run
    assert not running_dir.exists()  # its process is gone now


def test_sigterm_during_a_replacement_discards_it_and_keeps_the_old_run(tmp_path):
    """`kill`, or torchrun stopping the other processes when one fails."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=write_data(tmp_path / "prices.csv"), epochs=1))
    run, log = tmp_path / "run", tmp_path / "stderr.txt"
    assert wait(rnnkit("train", config, "--out", run, stderr=log), log) == 0
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    config.write_text(CONFIG.format(data=tmp_path / "prices.csv", epochs=10_000))
    replacing = rnnkit("train", config, "--out", run, "--force", stderr=log)

    def training() -> bool:  # the replacement has begun writing its run
        return any((tmp_path / name / "checkpoints").exists() for name in entries(tmp_path)
                   if name.startswith(".run.new-"))  # fmt: skip

    deadline = time.monotonic() + 120
    while not training():
        assert replacing.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the replacement never began training"
        time.sleep(0.01)
    replacing.send_signal(signal.SIGTERM)
    assert replacing.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    assert sorted(entries(tmp_path)) == ["config.toml", "prices.csv", "run", "stderr.txt"]
    assert {
        str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()
    } == before


def test_leftover_checks_never_fail_a_run(tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.CONFIG_FILE).write_text("old")
    real_iterdir = Path.iterdir

    def unlistable(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", unlistable)  # a parent that can be entered only
    assert rundir.prepare_run_dir(run, resume=True, force=False) == run
    monkeypatch.setattr(Path, "iterdir", real_iterdir)

    def no_locks(descriptor, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_locks)  # a filesystem without locks
    staging = rundir.prepare_run_dir(run, resume=False, force=True)
    assert staging.is_dir() and staging not in rundir._HELD and "cannot lock" in caplog.text
    rundir.discard(staging)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_processes_putting_back_the_same_run_at_once_all_succeed(tmp_path, monkeypatch):
    """Every process of a distributed --resume recovers; the first rename wins."""
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.CONFIG_FILE).write_text("old")
    run.rename(tmp_path / ".run.old-5e6f7a8b")  # a replacement killed between its renames
    real_replace = os.replace

    def another_process_first(src, dst):
        real_replace(src, dst)  # the other process's rename
        raise FileNotFoundError(2, "No such file or directory", str(src))

    monkeypatch.setattr(os, "replace", another_process_first)
    assert rundir.prepare_run_dir(run, resume=True, force=False) == run
    assert (run / rundir.CONFIG_FILE).read_text() == "old"


def test_a_finished_or_discarded_replacement_releases_its_directory(tmp_path):
    run = tmp_path / "run"
    for finish in (True, False):
        run.mkdir(exist_ok=True)
        (run / rundir.CONFIG_FILE).write_text("old")
        staging = rundir.prepare_run_dir(run, resume=False, force=True)
        assert staging.is_dir() and not any(staging.iterdir()) and staging in rundir._HELD
        (staging / rundir.CONFIG_FILE).write_text("new")
        if finish:
            rundir.finish_replacement(staging, run)
            assert (run / rundir.CONFIG_FILE).read_text() == "new"
        else:
            rundir.discard(staging)
            assert not staging.exists()
        assert staging not in rundir._HELD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_killed_before_its_transform_was_written_resumes_from_scratch(tmp_path, capsys):
    from rnnkit.cli import main

    data = write_data(tmp_path / "prices.csv")
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=data, epochs=1))
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.CONFIG_FILE).write_text(config.read_text())  # killed right after this write
    assert main(["train", "--out", str(run), "--resume"]) == 0, capsys.readouterr().err
    assert (run / rundir.TRANSFORM_FILE).is_file() and (run / rundir.MODEL_DIR).is_dir()
