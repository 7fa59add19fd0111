"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a directory::

    epoch-0003/
        checkpoint.json          model config, epoch, trainer state, optimizer and
                                 scheduler state without their tensors, file checksums
        model.safetensors        the model's state_dict
        optimizer.safetensors    the optimizer's (and scheduler's) tensors, if any
        best_model.safetensors   the best weights so far, if they are not the current ones

No generator states are stored: the trainer reseeds every generator at the
start of each epoch from ``(seed, epoch, rank)`` (:mod:`rnnkit.toolkit.seeding`),
so the seed in the trainer state and the epoch restore them exactly, for any
number of processes.

Writing: every file goes into a fresh temporary directory beside the target
(each flushed and fsync'ed), then one ``os.replace`` renames the directory into
place. A failure at any point leaves the previous checkpoints as they were;
there is never a half-written checkpoint under a final name.

Reading never executes code: only ``json`` and ``safetensors`` parse the files
(no pickle, no ``torch.load``). ``checkpoint.json`` records the size and
SHA-256 of every tensor file, and a SHA-256 of its own content, so a truncated
or altered file raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

FORMAT = "rnnkit-checkpoint"
VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
BEST_MODEL_FILE = "best_model.safetensors"
EPOCH_DIR = re.compile(r"epoch-(\d+)")

__all__ = [
    "CHECKPOINT_JSON",
    "Checkpoint",
    "CheckpointError",
    "atomic_write",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "model_config_dict",
    "read_tensors",
    "save_checkpoint",
    "save_model",
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, altered or does not fit the model."""


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` reads back; tensors are on the CPU."""

    # The checkpoint directory.
    path: Path
    # Epochs completed when it was written; None for a model saved outside training.
    epoch: int | None
    # ``dataclasses.asdict(model.config)``, enough for build_model; None if the model had none.
    model_config: dict[str, Any] | None
    # The model's state_dict.
    model_state: dict[str, Tensor]
    # The optimizer's state_dict, tensors included; None if none was saved.
    optimizer_state: dict[str, Any] | None
    # The learning-rate scheduler's state_dict; None if none was saved.
    scheduler_state: dict[str, Any] | None
    # JSON-able state of the training loop (history, early stopping, seed, ...).
    trainer_state: dict[str, Any]
    # The best weights so far when they differ from model_state, else None.
    best_model_state: dict[str, Tensor] | None


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace `path` with `data` so that readers see the old file or the new, never a mix.

    The bytes go to a temporary file in the same directory (so the rename
    stays on one file system), are flushed and fsync'ed, and ``os.replace``
    swaps it in; the directory is then fsync'ed so the rename survives a crash.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # name the file asked for, not the temporary one
        raise type(error)(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as file:
            # mkstemp makes the file private (0600); give it the mode open() would have given.
            os.fchmod(file.fileno(), 0o666 & ~_umask())
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    """The process's umask; reading it means setting it, so it is put back at once."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    # Durability of a rename needs the directory entry on disk; POSIX only.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file(path: Path, payload: bytes) -> None:
    with open(path, "xb") as file:
        file.write(payload)
        file.flush()
        os.fsync(file.fileno())


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model_state: Mapping[str, Tensor],
    model_config: Mapping[str, Any] | None = None,
    epoch: int | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    best_model_state: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (see the module docstring).

    An existing `directory` is replaced as a whole.

    Args:
        directory: where the checkpoint goes, e.g. ``out/checkpoints/epoch-0003``.
        model_state: the model's ``state_dict()``.
        model_config: ``dataclasses.asdict(model.config)``, so the model can be rebuilt.
        epoch: epochs completed.
        optimizer_state: ``optimizer.state_dict()``.
        scheduler_state: ``scheduler.state_dict()``.
        trainer_state: JSON-able state of the training loop.
        best_model_state: the best weights so far, if they differ from model_state.

    Returns:
        The checkpoint directory.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensor_files: dict[str, dict[str, Tensor]] = {MODEL_FILE: _detached(model_state)}
    if best_model_state is not None:
        tensor_files[BEST_MODEL_FILE] = _detached(best_model_state)
    optimizer_tensors: dict[str, Tensor] = {}
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": epoch,
        "model_config": _encode(model_config, None, "model_config"),
        "optimizer": _encode(optimizer_state, optimizer_tensors, "optimizer"),
        "scheduler": _encode(scheduler_state, optimizer_tensors, "scheduler"),
        "trainer": _encode(dict(trainer_state or {}), None, "trainer"),
    }
    if optimizer_tensors:
        tensor_files[OPTIMIZER_FILE] = optimizer_tensors

    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    old: Path | None = None
    try:
        # mkdtemp makes the directory private (0700); give it the mode mkdir() would have given.
        os.chmod(tmp, 0o777 & ~_umask())
        files = {}
        for name, tensors in tensor_files.items():
            payload = safetensors_save(tensors, metadata={"format": "pt"})
            _write_new_file(tmp / name, payload)
            files[name] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        document["files"] = files
        document["sha256"] = _digest(document)
        _write_new_file(tmp / CHECKPOINT_JSON, _dumps(document))
        _fsync_directory(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}.old")
            os.replace(directory, old)
        os.replace(tmp, directory)
        _fsync_directory(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not directory.exists():
            os.replace(old, directory)  # put the previous checkpoint back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint`; tensors on the CPU.

    Raises:
        CheckpointError: a file is missing, truncated, altered or malformed;
            the message names the file.
    """
    path = Path(path)
    json_path = path / CHECKPOINT_JSON
    document = _read_json(json_path)
    files = document["files"]
    tensors = {}
    for name in files:
        if name not in (MODEL_FILE, OPTIMIZER_FILE, BEST_MODEL_FILE):
            raise CheckpointError(f"{json_path}: lists an unexpected file {name!r}")
        tensors[name] = _read_checked(path / name, files[name])
    if MODEL_FILE not in tensors:
        raise CheckpointError(f"{json_path}: lists no {MODEL_FILE}")
    optimizer_tensors = tensors.get(OPTIMIZER_FILE, {})
    where = path / OPTIMIZER_FILE
    try:
        optimizer = _decode(document["optimizer"], optimizer_tensors, where)
        scheduler = _decode(document["scheduler"], optimizer_tensors, where)
        model_config = _decode(document["model_config"], None, json_path)
        trainer = _decode(document["trainer"], None, json_path)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{json_path}: malformed content ({error})") from None
    return Checkpoint(
        path=path,
        epoch=document["epoch"],
        model_config=model_config,
        model_state=tensors[MODEL_FILE],
        optimizer_state=optimizer,
        scheduler_state=scheduler,
        trainer_state=trainer,
        best_model_state=tensors.get(BEST_MODEL_FILE),
    )


def read_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a safetensors file (no code runs); :class:`CheckpointError` names a bad file."""
    path = Path(path)
    return _parse_safetensors(path, _read_bytes(path))


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The ``epoch-NNNN`` checkpoint with the highest epoch in `directory`, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if (match := EPOCH_DIR.fullmatch(entry.name)) and (entry / CHECKPOINT_JSON).is_file()
    ]
    return max(found)[1] if found else None


def save_model(directory: str | os.PathLike[str], model: nn.Module) -> Path:
    """Save a model's weights and config (no training state) as a checkpoint directory."""
    return save_checkpoint(
        directory, model_state=model.state_dict(), model_config=model_config_dict(model)
    )


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model from a checkpoint directory: its config, checked against its weights.

    The config's sizes are checked against ``model.safetensors`` before anything
    is allocated (:mod:`rnnkit.toolkit.model_loading`), so an altered
    ``checkpoint.json`` cannot make this allocate more than the files hold.

    Example:
        >>> model = load_model("runs/shakespeare/model")
        >>> model.generate([5, 6], length=100, seed=0)
    """
    from rnnkit.toolkit.model_loading import build_saved_model

    checkpoint = load_checkpoint(path)
    document = checkpoint.path / CHECKPOINT_JSON
    if checkpoint.model_config is None:
        raise CheckpointError(f"{document}: has no model config to rebuild the model from")
    return build_saved_model(
        checkpoint.model_config, checkpoint.model_state, checkpoint.path / MODEL_FILE, document
    )


def load_weights(model: nn.Module, state: Mapping[str, Tensor], source: Path) -> None:
    """``model.load_state_dict(state)``, with a :class:`CheckpointError` naming `source`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{source}: does not fit the model ({error})") from None


def model_config_dict(model: nn.Module) -> dict[str, Any] | None:
    """``dataclasses.asdict(model.config)`` if the model carries a dataclass config."""
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return None


def _detached(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # safetensors refuses tensors that share storage (tied weights, views), so copy.
    return {name: tensor.detach().cpu().clone().contiguous() for name, tensor in state.items()}


# JSON encoding of state_dicts. Tensors move to a safetensors file and leave
# {"__tensor__": key} behind; tuples, dicts with non-string keys (an optimizer's
# parameter ids) and non-finite floats (strict JSON has no inf) get a tag too.
_TAGS = ("__tensor__", "__tuple__", "__items__", "__float__")


def _encode(obj: Any, tensors: dict[str, Tensor] | None, key: str) -> Any:
    if isinstance(obj, Tensor):
        if tensors is None:
            raise TypeError(f"cannot store a tensor at {key} in checkpoint.json")
        while key in tensors:
            key += "_"
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
            return {k: _encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        for k in obj:
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise TypeError(f"cannot store a {type(k).__name__} key at {key} in a checkpoint")
        return {"__items__": [[k, _encode(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} at {key} in a checkpoint")


def _decode(obj: Any, tensors: Mapping[str, Tensor] | None, source: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, source) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1 and next(iter(obj)) in _TAGS:
        ((tag, value),) = obj.items()
        if tag == "__tensor__":
            if tensors is None or value not in tensors:
                raise CheckpointError(f"{source}: has no tensor {value!r}")
            return tensors[value]
        if tag == "__float__":
            return float(value)
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, source) for v in value)
        return {k: _decode(v, tensors, source) for k, v in value}
    return {k: _decode(v, tensors, source) for k, v in obj.items()}


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=1, allow_nan=False).encode("utf-8")


def _digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the document's content without its own digest (key order ignored)."""
    content = {k: v for k, v in document.items() if k != "sha256"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror})") from None


def _read_json(path: Path) -> dict[str, Any]:
    raw = _read_bytes(path)
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not valid JSON, truncated or corrupted ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rnnkit checkpoint (no format {FORMAT!r})")
    if document.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {document.get('version')!r}, this rnnkit reads {VERSION}"
        )
    if document.get("sha256") != _digest(document):
        raise CheckpointError(f"{path}: content does not match its checksum (altered)")
    missing = [field for field in _FIELDS if field not in document]
    if missing:
        raise CheckpointError(f"{path}: malformed, no field {missing[0]!r}")
    for field, kind in (("files", dict), ("epoch", (int, type(None)))):
        if not isinstance(document[field], kind) or isinstance(document[field], bool):
            raise CheckpointError(f"{path}: malformed field {field!r}")
    return document


# What every checkpoint.json holds besides its format, version and checksum.
_FIELDS = ("epoch", "model_config", "optimizer", "scheduler", "trainer", "files")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _read_checked(path: Path, expected: Any) -> dict[str, Tensor]:
    payload = _read_bytes(path)
    if not isinstance(expected, dict):
        raise CheckpointError(f"{path.parent / CHECKPOINT_JSON}: malformed entry for {path.name}")
    if len(payload) != expected.get("bytes"):
        raise CheckpointError(
            f"{path}: {len(payload)} bytes where {CHECKPOINT_JSON} recorded "
            f"{expected.get('bytes')} (truncated or replaced)"
        )
    if hashlib.sha256(payload).hexdigest() != expected.get("sha256"):
        raise CheckpointError(
            f"{path}: content does not match the SHA-256 in {CHECKPOINT_JSON} (altered)"
        )
    return _parse_safetensors(path, payload)


def _parse_safetensors(path: Path, payload: bytes) -> dict[str, Tensor]:
    try:
        return safetensors_load(payload)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None
