"""The toolkit's data layer: files to tensors, with the checks and the reverse mappings.

| module | what it holds |
|---|---|
| `errors` | `DataError`: one line naming the file, the line or column, expected vs received |
| `files` | `read_text`: a whole UTF-8 file, with the path checks every loader shares |
| `bundled` | `goog_csv_path`: Google daily prices shipped in the package (`GOOG.md`) |
| `tables` | CSV files and data frames to checked float columns |
| `scaling` | `StandardScaler`, fitted on training rows, JSON-able |
| `timeseries` | sliding windows, chronological splits, log-returns, persistence baseline |
| `text` | `label<TAB or space>text` classification files |
| `conllu` | CoNLL-U: sentences of (form, UPOS) |
| `chars` | character-level language modelling: held-out tail, next-char chunks |
| `vocab` | `Vocabulary` (`<pad>` = 0, `<unk>` = 1) and `LabelEncoder` |
| `batching` | collate functions: packed (or padded + lengths) batches, tags padded with -100 |

Shapes are spelled out: ``# (batch, window, features)`` for time-series inputs,
``# (batch, max_len)`` for padded token indices.
"""

from rnnkit.toolkit.data.batching import (
    IGNORE_INDEX,
    SequenceBatch,
    collate_classification,
    collate_tagging,
    pad_sequences,
)
from rnnkit.toolkit.data.bundled import goog_csv_path
from rnnkit.toolkit.data.chars import Chunks, chunk, split_text
from rnnkit.toolkit.data.conllu import read_conllu
from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.data.files import read_text
from rnnkit.toolkit.data.scaling import StandardScaler
from rnnkit.toolkit.data.tables import frame_values, read_csv_series
from rnnkit.toolkit.data.text import LabelledTokens, read_label_text, tokenize
from rnnkit.toolkit.data.timeseries import (
    TARGET_TRANSFORMS,
    SeriesSplits,
    SeriesTransform,
    WindowedSeries,
    load_series,
    log_returns_to_prices,
)
from rnnkit.toolkit.data.vocab import PAD, UNK, LabelEncoder, Vocabulary

__all__ = [
    "IGNORE_INDEX",
    "PAD",
    "TARGET_TRANSFORMS",
    "UNK",
    "Chunks",
    "DataError",
    "LabelEncoder",
    "LabelledTokens",
    "SequenceBatch",
    "SeriesSplits",
    "SeriesTransform",
    "StandardScaler",
    "Vocabulary",
    "WindowedSeries",
    "chunk",
    "collate_classification",
    "collate_tagging",
    "frame_values",
    "goog_csv_path",
    "load_series",
    "log_returns_to_prices",
    "pad_sequences",
    "read_conllu",
    "read_csv_series",
    "read_label_text",
    "read_text",
    "split_text",
    "tokenize",
]
