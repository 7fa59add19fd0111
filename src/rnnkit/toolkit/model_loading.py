"""Rebuilding a saved model without trusting its document: the weights file bounds it.

A run directory or a saved estimator pairs ``model.safetensors`` (whose header
safetensors checks against the file's size, so it never declares more than the
file holds) with a JSON document whose ``model_config`` rebuilds the
architecture. A checksum guards that document against accidents, not against
its author, so its numbers are checked against the weights before anything is
allocated:

1. Every integer of the config is bounded by the weights file: counts
   (``num_layers``, ``ensemble_size``) by its number of tensors, every other
   size (vocabulary, hidden, embedding, inputs, outputs) by its number of
   values. A config that asks for more is refused before a module is built.
2. The model is built on torch's ``meta`` device, which allocates nothing, and
   every parameter's name, shape and dtype is compared with the file's.
3. Only then is it materialised on the CPU, exactly as large as the file's
   tensors, and the weights are copied in.

Every refusal is one line (:class:`~rnnkit.toolkit.checkpoint.CheckpointError`)
naming the document or file, the parameter or field, and both values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.toolkit.checkpoint import CheckpointError

__all__ = ["COUNT_FIELDS", "build_saved_model", "check_fields_match", "check_sizes_fit"]

# Model config fields that count modules (each adds at least one tensor to the file).
COUNT_FIELDS = ("num_layers", "ensemble_size")


def build_saved_model(
    config: Any, state: Mapping[str, Tensor], source: Path, document: Path
) -> nn.Module:
    """The model `config` describes, holding the weights `state`; nothing larger is allocated.

    Args:
        config: A :class:`~rnnkit.toolkit.models.ModelConfig` or a mapping of its
            fields (as read from `document`).
        state: The weights read from `source`, a ``state_dict``.
        source: The weights file, for messages.
        document: The file the config came from, for messages.

    Returns:
        The model on the CPU, in training mode, with the weights of `state`.

    Raises:
        CheckpointError: The config is malformed, asks for more than the file
            holds, or implies a parameter the file lacks, holds in another shape
            or dtype, or does not hold; one line naming both files.
    """
    fields = _fields(config, document)
    check_sizes_fit(fields, state, source, document)
    members = fields.get("ensemble_size", 1)
    if isinstance(members, int) and not isinstance(members, bool) and members > 1:
        # Members are alike: one, built first, says how many tensors all of them hold.
        per_member = len(_meta_model({**fields, "ensemble_size": 1}, document).state_dict())
        if members * per_member != len(state):
            raise CheckpointError(
                f"{document}: model_config ensemble_size = {members:,} members of "
                f"{per_member} tensors cannot fit {source.name}, which holds {len(state)}"
            )
    model = _meta_model(fields, document)
    _check_parameters_match(model.state_dict(), state, source, document)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    return model


def _fields(config: Any, document: Path) -> Mapping[str, Any]:
    """A ModelConfig's fields, or the mapping read from `document`."""
    if isinstance(config, Mapping):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise CheckpointError(
        f"{document}: malformed model_config, expected a JSON object, got {type(config).__name__}"
    )


def _meta_model(fields: Mapping[str, Any], document: Path) -> nn.Module:
    """The model `fields` describe, on the meta device: shapes only, no memory, no random
    numbers drawn."""
    from rnnkit.toolkit.models import build_model  # models imports checkpoint's neighbours

    try:
        with torch.device("meta"):
            return build_model(fields)
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{document}: invalid model config ({error})") from None


def check_sizes_fit(
    fields: Mapping[str, Any], state: Mapping[str, Tensor], source: Path, document: Path
) -> None:
    """Refuse a config integer that no model fitting in `state` could have.

    A model with ``hidden_size`` h has a recurrent weight of h * h values, one
    with ``vocab_size`` v an embedding of v rows, and so on: no size can exceed
    the number of values in the file, and no count (layers, ensemble members)
    its number of tensors. The bound comes from the weights, not from constants.

    Raises:
        CheckpointError: One line naming `document`, the field, its value and
            what `source` holds.
    """
    tensors = len(state)
    values = sum(tensor.numel() for tensor in state.values())
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue  # not a size; ModelConfig checks the types
        limit = tensors if name in COUNT_FIELDS else values
        if value > limit:
            what = f"{tensors:,} tensors" if name in COUNT_FIELDS else f"{values:,} values"
            raise CheckpointError(
                f"{document}: model_config {name} = {value:,} cannot fit {source.name}, "
                f"which holds {what} in all"
            )


def check_fields_match(implied: Mapping[str, Any], config: Any, what: str, document: Path) -> None:
    """Refuse fitted state (a vocabulary, labels, scaler columns) that the model does not fit.

    Args:
        implied: The model config fields the fitted state implies, e.g.
            ``{"vocab_size": len(vocabulary)}``.
        config: The model's config (a ModelConfig or a mapping).
        what: What implied them, for the message, e.g. ``"the fitted transform"``.
        document: The file that held the fitted state.

    Raises:
        CheckpointError: One line naming `document`, the field and both values.
    """
    fields = _fields(config, document)
    for name, value in implied.items():
        if fields.get(name) != value:
            raise CheckpointError(
                f"{document}: {what} implies {name} = {value!r}, the model has {fields.get(name)!r}"
            )


def _check_parameters_match(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor], source: Path, document: Path
) -> None:
    missing = [name for name in expected if name not in state]
    if missing:
        raise CheckpointError(
            f"{source}: has no tensor {missing[0]!r}, which the model config in "
            f"{document.name} implies ({len(missing)} missing in all)"
        )
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        raise CheckpointError(
            f"{source}: holds a tensor {unexpected[0]!r} that the model config in "
            f"{document.name} has no parameter for ({len(unexpected)} such in all)"
        )
    for name, meta in expected.items():
        held = state[name]
        if held.shape != meta.shape or held.dtype != meta.dtype:
            raise CheckpointError(
                f"{source}: parameter {name!r} is {_describe(meta)} by the model config in "
                f"{document.name}, {_describe(held)} in the file"
            )


def _describe(tensor: Tensor) -> str:
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
