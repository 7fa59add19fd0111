"""rnnkit: recurrent neural networks, exact where they copy PyTorch and faster.

``rnnkit.RNN``, ``rnnkit.LSTM``, ``rnnkit.GRU`` and their cells are drop-in
replacements for torch's layers of those names that run on rnnkit's fused
engine (:mod:`rnnkit.engine`); :mod:`rnnkit.functional` holds the readable reference
loop that documents the math; :mod:`rnnkit.init` holds initialisers for
recurrent weights (orthogonal, IRNN identity, LSTM forget-gate bias).

The scikit-learn-style estimators (``rnnkit.SequenceRegressor``,
``SequenceClassifier``, ``SequenceTagger``, ``CharLanguageModel``,
``SequenceTranslator``) live in
:mod:`rnnkit.toolkit.estimators` and are imported on first use, so that
``import rnnkit`` stays light.
"""

import importlib
from typing import Any

from rnnkit import functional, init
from rnnkit.cell import RNNCell
from rnnkit.gated import GRU, LSTM
from rnnkit.gated_cell import GRUCell, LSTMCell
from rnnkit.rnn import RNN

_LAZY = {
    "CharLanguageModel": "rnnkit.toolkit.estimators",
    "SequenceClassifier": "rnnkit.toolkit.estimators",
    "SequenceRegressor": "rnnkit.toolkit.estimators",
    "SequenceTagger": "rnnkit.toolkit.estimators",
    "SequenceTranslator": "rnnkit.toolkit.estimators",
}

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "CharLanguageModel",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTagger",
    "SequenceTranslator",
    "functional",
    "init",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
