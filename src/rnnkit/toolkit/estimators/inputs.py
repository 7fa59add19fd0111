"""The `X` of the sequence estimators: checked, then encoded the way fit saw it.

`X` is one of

- a 3-D array ``(N, L, C)`` (NumPy or torch): ``N`` sequences of ``L`` steps
  with ``C`` features each, time first within a sequence as in the layer;
- a list of ``N`` arrays ``(L_i, C)`` of different lengths (a 1-D array is one
  feature per step, ``(L_i, 1)``);
- a list of ``N`` token lists (text): ``[["a", "fine", "film"], ["dull"]]``;
  a string element is split on whitespace (:func:`~rnnkit.toolkit.data.tokenize`).

Numbers are features, never token ids: pass tokens as strings. Numeric
features are scaled per channel and long series cut into patches as fit
decided (:mod:`rnnkit.toolkit.estimators.settings`); :class:`InputSpec`
repeats both at predict time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.toolkit.arguments import is_int
from rnnkit.toolkit.data.text import tokenize
from rnnkit.toolkit.data.vocab import Vocabulary
from rnnkit.toolkit.estimators.input_scaling import InputScaling
from rnnkit.toolkit.estimators.settings import patch

NUMERIC = "numeric"
TOKENS = "token"


def invalid(name: str, expected: str, got: str) -> ValueError:
    """The toolkit's wording for a bad argument (STYLE.md 5), `got` shown as written.

    :func:`rnnkit.toolkit.arguments.invalid_argument` shows the value received
    (its ``repr``); the estimators mostly describe it instead (``"shape (3,)"``,
    ``"an empty one in X[2]"``), which a ``repr`` would put in quotes.
    """
    return ValueError(
        f"Received an invalid value for argument `{name}`, expected {expected}, got {got}"
    )


@dataclass(frozen=True)
class Sequences:
    """Checked input sequences, all of one kind."""

    kind: str  # NUMERIC or TOKENS
    # NUMERIC: float32 tensors (length, features); TOKENS: lists of str. None empty.
    items: list[Any]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_features(self) -> int | None:
        """Features per step of numeric sequences; None for tokens."""
        return self.items[0].shape[1] if self.kind == NUMERIC else None

    @property
    def lengths(self) -> list[int]:
        return [len(item) for item in self.items]


def as_sequences(X: Any, name: str = "X") -> Sequences:
    """Check `X` (see the module docstring) and bring it to one form.

    Raises:
        ValueError: `X` is empty, holds an empty sequence, mixes kinds, has
            sequences with different feature counts, or holds NaN or infinity.
    """
    if isinstance(X, (Tensor, np.ndarray)) and _is_numeric_dtype(X):
        return _dense(X, name)
    if isinstance(X, np.ndarray):  # strings or ragged objects
        X = X.tolist()
    if isinstance(X, str) or not isinstance(X, (list, tuple)):
        raise invalid(
            name,
            "a 3-D array (N, L, C), a list of (L_i, C) arrays or a list of token lists",
            f"a str {X[:40]!r}" if isinstance(X, str) else type(X).__name__,
        )
    if len(X) == 0:
        raise invalid(name, "at least one sequence", "none")
    if _is_tokens(X[0]):
        items = [_token_list(element, name, i) for i, element in enumerate(X)]
        return Sequences(TOKENS, items)
    items = [_numeric(element, name, i) for i, element in enumerate(X)]
    features = items[0].shape[1]
    for i, item in enumerate(items):
        if item.shape[1] != features:
            raise invalid(
                name,
                f"the same number of features in every sequence ({features}, as in {name}[0])",
                f"{item.shape[1]} in {name}[{i}]",
            )
    return Sequences(NUMERIC, items)


def check_length(values: Sequence[Any], sequences: Sequences, x_name: str, y_name: str) -> None:
    """One entry of `values` (the targets) per sequence."""
    if len(values) != len(sequences):
        raise ValueError(
            f"Received invalid values for arguments `{x_name}` and `{y_name}`, expected one "
            f"target per sequence, got {len(sequences)} sequences and {len(values)} targets"
        )


def as_list(values: Any, name: str) -> list[Any]:
    """Labels or tag lists as a Python list (NumPy and torch scalars become Python ones)."""
    if isinstance(values, (np.ndarray, Tensor)) or (
        hasattr(values, "tolist") and not isinstance(values, (list, tuple))  # a pandas Series
    ):
        return values.tolist()
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise invalid(name, "a list or array with one entry per sequence", type(values).__name__)
    return list(values)


def as_validation_pair(validation_data: Any) -> tuple[Any, Any] | None:
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise invalid(
            "validation_data", "None or a pair (X_val, y_val)", type(validation_data).__name__
        )
    return validation_data[0], validation_data[1]


@dataclass(frozen=True)
class InputSpec:
    """What fit saw of `X`; encodes later inputs the same way.

    Example:
        >>> spec = InputSpec.fit(as_sequences([["a", "b"], ["b"]]), min_freq=1)
        >>> spec.encode(as_sequences([["b", "zzz"]]))  # unknown tokens map to <unk> = 1
        [tensor([2, 1])]
    """

    kind: str  # NUMERIC or TOKENS
    num_features: int | None  # features per step of numeric input; None for tokens
    vocabulary: Vocabulary | None  # token input only: <pad> = 0, <unk> = 1, then by count
    scaling: InputScaling | None = None  # numeric input: per-channel scaling; None: as given
    patch_size: int = 1  # numeric input: consecutive steps fed as one input vector

    @classmethod
    def fit(
        cls, sequences: Sequences, min_freq: int, scaling: str = "none", patch_size: int = 1
    ) -> InputSpec:
        """What to remember of the training `sequences`.

        Args:
            sequences: The training sequences.
            min_freq: Token input: rarer tokens map to ``<unk>``.
            scaling: Numeric input: a mode of :meth:`InputScaling.fit`, fitted on
                every step of `sequences`.
            patch_size: Numeric input: steps per input vector.
        """
        if sequences.kind == NUMERIC:
            if scaling == "none":  # no statistics: no copy of every step
                fitted = InputScaling.identity(sequences.num_features)
            else:
                fitted = InputScaling.fit(torch.cat(sequences.items).numpy(), scaling)
            return cls(NUMERIC, sequences.num_features, None, fitted, patch_size)
        return cls(TOKENS, None, Vocabulary.build(sequences.items, min_freq=min_freq))

    def model_fields(self) -> dict[str, Any]:
        """The input fields of a :class:`~rnnkit.toolkit.models.ModelConfig`."""
        if self.kind == NUMERIC:
            return {"input_size": self.num_features * self.patch_size}
        return {"vocab_size": len(self.vocabulary), "padding_idx": Vocabulary.pad_index}

    def encode(self, sequences: Sequences, name: str = "X") -> list[Tensor]:
        """Model input per sequence: float32 ``(ceil(length / patch_size), patch_size *
        features)``, scaled, or int64 ``(length,)`` ids.

        Raises:
            ValueError: `sequences` are of another kind or feature count than in fit.
        """
        if sequences.kind != self.kind:
            raise invalid(name, f"{self.kind} sequences (as in fit)", f"{sequences.kind} sequences")
        if self.kind == NUMERIC:
            if sequences.num_features != self.num_features:
                raise invalid(
                    name, f"{self.num_features} features per step (as in fit)",
                    str(sequences.num_features),
                )  # fmt: skip
            scaling = self.scaling
            items = sequences.items if scaling is None else map(scaling.transform, sequences.items)
            return [patch(item, self.patch_size) for item in items]
        encode = self.vocabulary.encode
        return [torch.tensor(encode(tokens), dtype=torch.int64) for tokens in sequences.items]

    def to_dict(self) -> dict[str, Any]:
        vocabulary = None if self.vocabulary is None else self.vocabulary.to_dict()
        scaling = None if self.scaling is None else self.scaling.to_dict()
        return {
            "kind": self.kind, "num_features": self.num_features, "vocabulary": vocabulary,
            "scaling": scaling, "patch_size": self.patch_size,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> InputSpec:
        """Rebuild from :meth:`to_dict`; a state saved before scaling and patching reads
        as unscaled, one step per input vector."""
        vocabulary, scaling = state["vocabulary"], state.get("scaling")
        patch_size = state.get("patch_size", 1)
        if not is_int(patch_size) or patch_size < 1:
            raise ValueError(f"malformed patch_size {patch_size!r}")
        kind, num_features = state["kind"], state["num_features"]
        if kind == NUMERIC:
            if not is_int(num_features) or num_features < 1 or vocabulary is not None:
                raise ValueError(f"malformed numeric input: num_features {num_features!r}")
            fitted = None if scaling is None else InputScaling.from_dict(scaling)
            if fitted is not None and len(fitted.mean) != num_features:
                raise ValueError(
                    f"input scaling of {len(fitted.mean)} channels for {num_features} features"
                )
            return cls(kind, num_features, None, fitted, patch_size)
        if kind != TOKENS or num_features is not None or vocabulary is None:
            raise ValueError(f"malformed input kind {kind!r}")
        return cls(kind, None, Vocabulary.from_dict(vocabulary), None, patch_size)


def _is_numeric_dtype(array: Tensor | np.ndarray) -> bool:
    if isinstance(array, Tensor):
        return not array.dtype.is_complex
    return array.dtype.kind in "biuf"


def _is_tokens(element: Any) -> bool:
    if isinstance(element, str):
        return True
    if isinstance(element, np.ndarray):
        return element.dtype.kind == "U"
    return isinstance(element, (list, tuple)) and len(element) > 0 and isinstance(element[0], str)


def _token_list(element: Any, name: str, i: int) -> list[str]:
    if isinstance(element, str):
        tokens = tokenize(element)
    elif isinstance(element, np.ndarray) and element.dtype.kind == "U" and element.ndim == 1:
        tokens = element.tolist()
    elif isinstance(element, (list, tuple)):
        tokens = list(element)
    else:
        raise invalid(
            name, f"a token list (or a text) in every element, like {name}[0]",
            f"{type(element).__name__} in {name}[{i}]",
        )  # fmt: skip
    if not tokens:
        raise invalid(name, "non-empty sequences", f"an empty one in {name}[{i}]")
    for t, token in enumerate(tokens):
        if not isinstance(token, str):
            raise invalid(
                name, "tokens of type str",
                f"{type(token).__name__} {token!r} in {name}[{i}] at position {t}",
            )  # fmt: skip
    return tokens


def _numeric(element: Any, name: str, i: int) -> Tensor:
    where = f"{name}[{i}]"
    array = None
    if isinstance(element, Tensor) and not element.dtype.is_complex:
        array = element.detach().to("cpu", torch.float64).numpy()
    elif not isinstance(element, (str, Tensor)) and not (
        isinstance(element, np.ndarray) and not _is_numeric_dtype(element)
    ):
        with contextlib.suppress(TypeError, ValueError):  # ragged or not numbers: see below
            array = np.asarray(element, dtype=np.float64)
    if array is None:
        raise invalid(
            name, f"numeric sequences (L_i, C) in every element, like {name}[0]",
            f"{type(element).__name__} in {where}",
        )  # fmt: skip
    if array.ndim == 1:
        array = array[:, None]  # (length, 1): one feature per step
    if array.ndim != 2:
        raise invalid(name, "sequences of shape (L_i, C)", f"shape {array.shape} in {where}")
    if array.shape[0] == 0:
        raise invalid(name, "non-empty sequences", f"an empty one in {where}")
    if array.shape[1] == 0:
        raise invalid(name, "at least one feature per step", f"shape {array.shape} in {where}")
    _check_finite(array, name, where)
    return torch.from_numpy(array.astype(np.float32))  # (length, features)


def _dense(X: Tensor | np.ndarray, name: str) -> Sequences:
    if isinstance(X, Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    if X.ndim != 3:
        raise invalid(
            name, "a 3-D array (N, L, C); for one feature per step use X[..., None]",
            f"shape {X.shape}",
        )  # fmt: skip
    if X.shape[0] == 0:
        raise invalid(name, "at least one sequence", f"shape {X.shape}")
    if X.shape[1] == 0:
        raise invalid(name, "non-empty sequences", f"shape {X.shape}")
    if X.shape[2] == 0:
        raise invalid(name, "at least one feature per step", f"shape {X.shape}")
    _check_finite(X, name, name)
    dense = torch.from_numpy(np.asarray(X, dtype=np.float32))  # (batch, window, features)
    return Sequences(NUMERIC, list(dense.unbind(0)))


def _check_finite(array: np.ndarray, name: str, where: str) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    index = tuple(int(i) for i in np.argwhere(~finite)[0])
    value = array[index]
    if array.ndim == 3:  # (batch, window, features)
        place = f"{where}[{index[0]}] at step {index[1]}, feature {index[2]}"
    else:  # (window, features)
        place = f"{where} at step {index[0]}, feature {index[1]}"
    raise invalid(name, "finite values", f"{value} in {place}")
