"""Run directories: what a training run leaves behind, and how it is created, resumed or replaced.

A run directory holds::

    RUN/
        config.toml            the resolved configuration (absolute data paths)
        transform.json         scaler / vocabulary / labels: inputs to the model and back
        metrics.csv            one row per epoch (the trainer writes it)
        checkpoints/epoch-NNNN/  the latest checkpoints (the trainer writes them)
        model/                 the final weights, best epoch restored (the trainer writes it)
        results.json           validation and test scores next to the baselines
        test_predictions.csv   forecast, classify, tag: each test prediction next to the truth
        learning_curves.png    train and validation loss per epoch
        forecast.png           forecast runs: predicted against actual on the test period

``config.toml`` marks a directory as a run. A new run refuses a directory that
holds one unless it resumes it or replaces it. Replacing never touches the old
run until the new one is complete: the new run trains in a hidden sibling
directory (``.NAME.new-HOST-PID-XXXX``) that takes the old one's place at the
end (the old one is renamed aside, the new one renamed in, then the old one
deleted). If the new run fails, the sibling is removed and the old run is left
as it was; if its process is killed, the next run on NAME removes the sibling.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnkit.toolkit.checkpoint import atomic_write
from rnnkit.toolkit.trainer import MODEL_DIR  # the trainer writes it

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
TRANSFORM_FILE = "transform.json"
RESULTS_FILE = "results.json"
LEARNING_CURVES_PNG = "learning_curves.png"
FORECAST_PNG = "forecast.png"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_CSV = "test_predictions.csv"

__all__ = [
    "RunDirError",
    "default_run_dir",
    "discard",
    "finish_replacement",
    "is_run",
    "prepare_run_dir",
    "read_json",
    "require_run",
    "write_json",
]


class RunDirError(ValueError):
    """A run directory is missing, incomplete, or in the way of a new run."""


def is_run(path: str | os.PathLike[str]) -> bool:
    """Whether `path` holds a run (a ``config.toml``)."""
    return (Path(path) / CONFIG_FILE).is_file()


def default_run_dir(
    task: str, base: str | os.PathLike[str] | None = None, now: dt.datetime | None = None
) -> Path:
    """``runs/<task>-<YYYYmmdd-HHMMSS>`` under `base` (default the current directory).

    A suffix ``-2``, ``-3``, ... keeps two runs started in the same second apart.
    """
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    root = (Path.cwd() if base is None else Path(base)) / "runs"
    path = root / f"{task}-{stamp}"
    counter = 2
    while path.exists():
        path = root / f"{task}-{stamp}-{counter}"
        counter += 1
    return path


def prepare_run_dir(path: str | os.PathLike[str], *, resume: bool, force: bool) -> Path:
    """Check `path` for a new, resumed or replacing run; return where training writes.

    Args:
        path: The run directory asked for.
        resume: Continue the run in `path` from its last checkpoint.
        force: Replace the run in `path`; training goes to a hidden sibling
            directory that :func:`finish_replacement` swaps in at the end.

    Returns:
        `path` itself, or the sibling directory when an existing run is being
        replaced. Nothing is created yet.

    Raises:
        RunDirError: `path` holds a run and neither `resume` nor `force` is
            set; `resume` is set and `path` holds no run; `path` is a file, or a
            non-empty directory that is not a run (never replaced, even with `force`).
    """
    path = Path(path)
    _recover_interrupted_replacement(path)
    _remove_abandoned_replacements(path)
    if resume and force:
        raise RunDirError("--resume and --force exclude each other: continue the run or replace it")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: expected a run directory, got a file")
    if resume:
        if not is_run(path):
            raise RunDirError(f"{path}: expected a run to resume, got no {CONFIG_FILE} there")
        return path
    if is_run(path):
        if not force:
            raise RunDirError(
                f"{path}: already holds a run; --resume continues it, --force replaces it"
            )
        owner = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return path.with_name(_staging_prefix(path) + owner)
    if path.is_dir() and any(path.iterdir()):
        raise RunDirError(
            f"{path}: expected a new or empty directory, got one with other files (not a run; "
            "rnnkit does not replace it)"
        )
    return path


def finish_replacement(staging: Path, path: Path) -> None:
    """Put the finished run in `staging` in the place of the old run at `path`."""
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(old, path)  # else the old run would be left only under its hidden name
        raise
    shutil.rmtree(old, ignore_errors=True)
    logger.info("replaced the run in %s", path)


def _recover_interrupted_replacement(path: Path) -> None:
    """Put an old run back if a process was killed between the two renames of a replacement.

    :func:`finish_replacement` moves the old run aside before it renames the new
    one in; a kill between the two leaves `path` missing and the old run under
    ``.NAME.old-XXXX``. The replacing command did not finish, so, as for any
    failed replacement, the old run is the one that stays.
    """
    if path.exists() or not path.parent.is_dir():
        return
    prefix = f".{path.name}.old-"
    aside = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(prefix)),
        key=lambda p: p.stat().st_mtime,
    )
    if aside and is_run(aside[-1]):
        os.replace(aside[-1], path)
        logger.warning("put back the run in %s, left aside by an interrupted replacement", path)


# A replacing run's hidden directory names the host and process that write it,
# so that a later run can tell one left by a killed process (removed) from one
# still being written (kept): ".NAME.new-HOST-PID-XXXXXXXX".
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())  # no "-": the name splits on it


def _staging_prefix(path: Path) -> str:
    return f".{path.name}.new-"


def _remove_abandoned_replacements(path: Path) -> None:
    """Remove the hidden directories of replacements of `path` whose process is gone.

    A replacement killed before it finished leaves its partial run in
    ``.NAME.new-HOST-PID-XXXXXXXX`` (the old run was never touched). Only those
    written on this host by a process that no longer exists are removed, and
    only where processes can be probed (POSIX); names without a process (older
    versions) are left alone.
    """
    if os.name != "posix" or not path.parent.is_dir():
        return
    prefix = _staging_prefix(path)
    for sibling in path.parent.iterdir():
        if not sibling.name.startswith(prefix) or not sibling.is_dir():
            continue
        owner = sibling.name[len(prefix) :].rsplit("-", 2)  # HOST, PID, XXXXXXXX
        ours = len(owner) == 3 and owner[0] == _HOST and owner[1].isdigit()
        if ours and not _process_exists(int(owner[1])):
            shutil.rmtree(sibling, ignore_errors=True)
            logger.warning("removed %s, left by a replacement that was killed", sibling)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def discard(staging: Path) -> None:
    """Remove a replacing run that did not finish; the old run stays as it was."""
    shutil.rmtree(staging, ignore_errors=True)


def require_run(path: str | os.PathLike[str], *, model: bool = True) -> Path:
    """Check that `path` holds a run (and, with `model`, its final model).

    Raises:
        RunDirError: No such directory, no ``config.toml``, or no ``model/``
            (training did not finish: ``rnnkit train --out RUN --resume`` finishes it).
    """
    path = Path(path)
    _recover_interrupted_replacement(path)
    if not path.exists():
        raise RunDirError(f"{path}: expected a run directory, got no such directory")
    if not path.is_dir():
        raise RunDirError(f"{path}: expected a run directory, got a file")
    if not is_run(path):
        raise RunDirError(f"{path}: expected a run directory, got no {CONFIG_FILE} in it")
    if model and not (path / MODEL_DIR).is_dir():
        raise RunDirError(
            f"{path}: holds no final model ({MODEL_DIR}/): training did not finish; "
            f"rnnkit train --out {path} --resume finishes it"
        )
    return path


def write_json(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write `document` as indented JSON, atomically; non-finite floats become null."""
    text = json.dumps(_finite(document), indent=1, allow_nan=False, ensure_ascii=False)
    atomic_write(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`.

    Raises:
        RunDirError: The file is missing or not a JSON object.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: expected a file of the run, got no such file") from None
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path}: expected a JSON file, could not read it ({error})") from None
    if not isinstance(document, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(document).__name__}")
    return document


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
