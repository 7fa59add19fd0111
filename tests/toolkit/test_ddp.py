"""DistributedDataParallel: two CPU processes under torchrun match one process.

DDP averages the gradients of the processes; with a mean-reduced loss and equal
shards of every global batch (``batch_size / 2`` each, the same sample order
as one process) that is the gradient of the whole global batch, so the weights
after training must match a single-process run up to float64 rounding.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from test_kill_resume import CONFIG, write_data  # a small forecast run

from rnnkit.toolkit.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def torchrun(out_dir: Path, *args: object) -> tuple[int, str]:
    """Run the worker on two processes (or, given `args`, ``-m rnnkit ARGS``);
    returns (exit code, output)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"  # two processes on the shared cores
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        *(["-m", "rnnkit", *map(str, args)] if args else [str(WORKER), str(out_dir)]),
    ]  # fmt: skip
    # A new session, so that a timeout can stop torchrun and both workers together.
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{output[-12000:]}")
    return process.returncode, output


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    out_dir = tmp_path / "ddp"
    returncode, output = torchrun(out_dir)
    if returncode != 0 and "address already in use" in output.lower():
        # The free port was taken between our probe and torchrun's bind: once more.
        shutil.rmtree(out_dir, ignore_errors=True)
        returncode, output = torchrun(out_dir)
    assert returncode == 0, output[-12000:]

    single = load_worker().make_run(None)
    history = single.fit()

    distributed = load_checkpoint(out_dir / "model")
    state = single.model.state_dict()
    assert distributed.model_state.keys() == state.keys()
    for name, expected in state.items():
        assert expected.dtype == torch.float64
        torch.testing.assert_close(
            distributed.model_state[name], expected, rtol=0, atol=1e-10, msg=name
        )
    # The logged epoch losses are all-reduced over both processes: the full-batch values.
    with open(out_dir / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(history) == 3
    for row, logged in zip(rows, history, strict=True):
        for key in ("train_loss", "train_rmse", "train_mae"):
            assert float(row[key]) == pytest.approx(logged[key], rel=1e-10)
    # Only rank 0 wrote: one set of files, no temporaries.
    assert sorted(p.name for p in out_dir.iterdir()) == ["checkpoints", "metrics.csv", "model"]
    assert [p.name for p in (out_dir / "checkpoints").iterdir()] == ["epoch-0003"]


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_rnnkit_train_under_torchrun_writes_one_complete_run_also_when_replacing(tmp_path):
    """Every process runs the command; only rank 0 may write (a --force replacement by
    the other rank once swapped its own model-less directory in over rank 0's run)."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=write_data(tmp_path / "prices.csv"), epochs=2))
    run = tmp_path / "run"
    expected = [
        "checkpoints",
        "config.toml",
        "forecast.png",
        "learning_curves.png",
        "metrics.csv",
        "model",
        "results.json",
        "test_predictions.csv",
        "transform.json",
    ]
    for extra in ((), ("--force",)):
        returncode, output = torchrun(run, "train", config, "--out", run, *extra)
        if returncode != 0 and "address already in use" in output.lower():
            returncode, output = torchrun(run, "train", config, "--out", run, *extra)
        assert returncode == 0, output[-12000:]
        assert output.count("done in") == 1, output  # rank 0 alone prints
        assert sorted(p.name for p in run.iterdir()) == expected, extra
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "prices.csv", "run"]


def launch_by_hand(*argv: object, world_size: int = 2, rank_argv=None) -> list[subprocess.Popen]:
    """``python -m rnnkit ARGV`` once per rank with the environment torchrun would set,
    but no torchrun: as a scheduler (Slurm's srun, mpirun) starts them, nobody stops
    the others when one process fails. `rank_argv` maps a rank to other arguments."""
    port, processes = free_port(), []
    for rank in range(world_size):
        env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                            "WORLD_SIZE": str(world_size), "RANK": str(rank),
                            "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}  # fmt: skip
        args = (rank_argv or {}).get(rank, argv)
        command = [sys.executable, "-m", "rnnkit", *map(str, args)]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return processes


def finish(processes: list[subprocess.Popen]) -> list[str]:
    """Each process's stderr, once all have exited; fails the test after TIMEOUT_S."""
    errors = []
    for process in processes:
        try:
            errors.append(process.communicate(timeout=TIMEOUT_S)[1])
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
                other.communicate()
            pytest.fail(f"a process was still waiting after {TIMEOUT_S} s")
    return errors


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_when_rank_0_refuses_the_run_the_other_processes_stop_too(tmp_path):
    """Rank 0 alone prepares the run directory; when it refuses (the run exists,
    no --force), the others used to wait for it in init_process_group until the
    30-minute timeout. Now they stop before training, with one line."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=write_data(tmp_path / "prices.csv"), epochs=2))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("# a run\n")
    processes = launch_by_hand("train", config, "--out", run)
    rank_0_err, rank_1_err = finish(processes)
    assert [p.returncode for p in processes] == [1, 1], (rank_0_err, rank_1_err)
    assert "already holds a run" in rank_0_err and "Traceback" not in rank_0_err, rank_0_err
    assert rank_1_err.count("\n") == 1, rank_1_err  # one line: naming rank 0 and its reason
    assert "process 0 of 2 (RANK=0) stopped before training" in rank_1_err, rank_1_err
    assert "already holds a run" in rank_1_err, rank_1_err
    assert sorted(p.name for p in run.iterdir()) == ["config.toml"]  # the run is untouched
    assert (run / "config.toml").read_text() == "# a run\n"


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_when_another_process_fails_before_training_rank_0_stops_too(tmp_path):
    """A failure on one node only (its copy of the config missing, here) used to
    leave rank 0 waiting in init_process_group; now it stops, naming the other's
    reason, before writing anything."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=write_data(tmp_path / "prices.csv"), epochs=2))
    run = tmp_path / "run"
    missing = tmp_path / "elsewhere" / "config.toml"
    processes = launch_by_hand(
        "train", config, "--out", run, rank_argv={1: ("train", missing, "--out", run)}
    )
    rank_0_err, rank_1_err = finish(processes)
    assert [p.returncode for p in processes] == [1, 1], (rank_0_err, rank_1_err)
    assert str(missing) in rank_1_err and rank_1_err.count("\n") == 1, rank_1_err
    assert "process 1 of 2 (RANK=1) stopped before training" in rank_0_err, rank_0_err
    assert str(missing) in rank_0_err and "Traceback" not in rank_0_err, rank_0_err
    assert not run.exists()  # rank 0 wrote nothing


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_rnnkit_train_started_by_hand_trains_as_under_torchrun(tmp_path):
    """Without torchrun's agent, rank 0 hosts the rendezvous store that the
    process group then uses: the run completes, written once."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=write_data(tmp_path / "prices.csv"), epochs=2))
    run = tmp_path / "run"
    processes = launch_by_hand("train", config, "--out", run)
    errors = finish(processes)
    assert [p.returncode for p in processes] == [0, 0], errors
    assert (run / "model").is_dir() and (run / "results.json").is_file()
    with open(run / "metrics.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 2
