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
        members/K/             model.ensemble_size > 1: member K's checkpoints, metrics.csv,
                               model/ and learning curves (model/ above is their average)
        ensemble_members.png   model.ensemble_size > 1: each member's validation figure
                               beside the average's

``config.toml`` marks a directory as a run. A new run refuses a directory that
holds one unless it resumes it or replaces it. Replacing never touches the old
run until the new one is complete: the new run trains in a hidden sibling
directory (``.NAME.new-HOST-XXXX``) that takes the old one's place at the end (the
old one is renamed aside, the new one renamed in, then the old one deleted).
If the new run fails, the sibling is removed and the old run is left as it
was. The replacing process holds a lock on the sibling while it lives (POSIX),
so if it is killed, the next run on NAME finds the sibling unlocked and removes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no locks, so abandoned replacements stay
    fcntl = None

from rnnkit.toolkit.checkpoint import atomic_write
from rnnkit.toolkit.trainer import MODEL_DIR  # the trainer writes it

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
TRANSFORM_FILE = "transform.json"
RESULTS_FILE = "results.json"
LEARNING_CURVES_PNG = "learning_curves.png"
FORECAST_PNG = "forecast.png"
CONFUSION_PNG = "confusion_matrix.png"
ATTENTION_PNG = "attention.png"  # translate: one test sentence's attention map
ENSEMBLE_PNG = "ensemble_members.png"  # an ensemble's members beside their average
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
            directory that :func:`finish_replacement` swaps in at the end, or
            :func:`discard` removes if the run fails.

    Returns:
        `path` itself (nothing is created yet), or, when an existing run is
        being replaced, the sibling directory, created empty and locked by
        this process until it is finished or discarded.

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
        return _claim_staging(path)
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
    _release(staging)
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
    try:  # the processes of a distributed run may all get here: one of them wins
        aside = sorted(
            (p for p in path.parent.iterdir() if p.name.startswith(prefix)),
            key=lambda p: p.stat().st_mtime,
        )
        if aside and is_run(aside[-1]):
            os.replace(aside[-1], path)
            logger.warning("put back the run in %s, left aside by an interrupted replacement", path)
    except FileNotFoundError:  # put back by another process meanwhile
        pass


# Open, locked descriptors of this process's replacement directories. A process's
# locks go with it, however it ends, so an unlocked one was left by a dead process.
_HELD: dict[Path, int] = {}
# A sibling this young is left alone: it may be a replacement created but not yet locked.
_FRESH_S = 10.0
# Replacement directories are named ".NAME.new-HOST-XXXXXXXX", HOST a digest of this
# host's name: a lock on a directory is local to one host on NFS and CIFS, so only
# this host's are judged by their lock.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _staging_prefix(path: Path) -> str:
    """The start of the name of every replacement directory of `path` made on this host."""
    return f".{path.name}.new-{_HOST}-"


def _claim_staging(path: Path) -> Path:
    """Create the hidden directory of a replacement of `path`, locked by this process."""
    staging = path.with_name(f"{_staging_prefix(path)}{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    descriptor = _locked(staging)
    if descriptor is not None:
        _HELD[staging] = descriptor
    return staging


def _locked(directory: Path) -> int | None:
    """A descriptor of `directory` that holds an exclusive lock on it; None where
    there are no locks (the lock only serves the clean-up of killed runs)."""
    if fcntl is None:
        return None
    descriptor = None
    try:
        descriptor = os.open(directory, os.O_RDONLY)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError as error:  # no locks on this filesystem, say
        if descriptor is not None:
            os.close(descriptor)
        logger.warning("cannot lock %s (%s); if this run is killed, remove it by hand",
                       directory, error)  # fmt: skip
        return None
    return descriptor


def _release(staging: Path) -> None:
    descriptor = _HELD.pop(staging, None)
    if descriptor is not None:
        os.close(descriptor)  # closing releases the lock


def _remove_abandoned_replacements(path: Path) -> None:
    """Remove the hidden directories of replacements of `path` whose process is gone.

    A replacement killed before it finished leaves its partial run in
    ``.NAME.new-HOST-XXXX`` (the old run was never touched). A running
    replacement holds a lock on its directory; one of this host that nobody
    holds is removed, under the lock, unless it is younger than ``_FRESH_S``
    seconds. Anything that cannot be read or locked is left alone.
    """
    if fcntl is None:
        return
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(_staging_prefix(path))]
    except OSError:  # a parent that can be entered but not listed, say
        return
    for sibling in siblings:
        if sibling in _HELD:
            continue
        try:
            if sibling.is_symlink() or not sibling.is_dir():
                continue
            if time.time() - sibling.stat().st_mtime < _FRESH_S:
                continue
            descriptor = os.open(sibling, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(sibling)
            logger.warning("removed %s, left by a replacement that was killed", sibling)
        except OSError:  # locked by a running replacement, or not removable
            continue
        finally:
            os.close(descriptor)


def discard(staging: Path) -> None:
    """Remove a replacing run that did not finish; the old run stays as it was."""
    shutil.rmtree(staging, ignore_errors=True)
    _release(staging)


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
