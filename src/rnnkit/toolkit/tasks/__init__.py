"""Wiring: from a :class:`~rnnkit.toolkit.config.RunConfig` to datasets, a model and scores.

One class per run task, each built on the data layer (:mod:`rnnkit.toolkit.data`)
and the models (:mod:`rnnkit.toolkit.models`):

==================  =========================  ===================  ============================
task                data                       model                scored against
==================  =========================  ===================  ============================
``forecast``        CSV -> sliding windows     ``ManyToOneModel``   persistence (``y[t]``)
``classify``        ``label text`` lines       ``ManyToOneModel``   the majority training label
``classify-series`` ``.ts`` / aeon archive     ``ManyToOneModel``   the majority training label
``tag``             CoNLL-U (form, UPOS)       ``TaggingModel``     each word's usual tag
``language-model``  plain text -> chunks       ``LanguageModel``    character frequencies
``translate``       sentence pairs -> subwords ``TranslationModel`` copying the source
==================  =========================  ===================  ============================

Everything fitted on the training data (scalers, vocabulary, label classes, the
baseline's statistics) goes into ``transform.json`` of the run directory, so
``evaluate`` and ``predict`` rebuild exactly the inputs the model was trained
on and turn its outputs back into prices, labels, tags or characters.

Shapes are spelled out: ``(batch, window, features)`` for price windows,
``(batch, window)`` token ids, ``(batch, outputs)`` many-to-one outputs.

Each task lives in a module of its own, with its data, model sizes and scores:
:mod:`~rnnkit.toolkit.tasks.forecast`, :mod:`~rnnkit.toolkit.tasks.text`
(``classify`` and ``tag``), :mod:`~rnnkit.toolkit.tasks.classify_series`,
:mod:`~rnnkit.toolkit.tasks.language_model` and :mod:`~rnnkit.toolkit.tasks.translate`,
on the small base of :mod:`~rnnkit.toolkit.tasks.base`; :mod:`~rnnkit.toolkit.tasks.running` runs a
model over examples and :mod:`~rnnkit.toolkit.tasks.common` holds the helpers the
tasks share. Only this module knows every task: :func:`get_task` looks one up.
"""

from __future__ import annotations

from rnnkit.toolkit.tasks.base import (
    TRANSFORM_FORMAT,
    TRANSFORM_VERSION,
    SequenceDataset,
    Task,
    TaskData,
    TextTransform,
    check_model_fits,
    read_transform,
)
from rnnkit.toolkit.tasks.classify_series import ClassifySeriesTask, SeriesLabelTransform
from rnnkit.toolkit.tasks.forecast import ForecastTask, SeriesDataset
from rnnkit.toolkit.tasks.language_model import LanguageModelTask
from rnnkit.toolkit.tasks.running import EVAL_BATCH_SIZE, first_batch, shape_trace
from rnnkit.toolkit.tasks.text import ClassifyTask, TagTask
from rnnkit.toolkit.tasks.translate import TranslateTask

__all__ = [
    "EVAL_BATCH_SIZE",
    "TASKS",
    "TRANSFORM_FORMAT",
    "TRANSFORM_VERSION",
    "ClassifySeriesTask",
    "ClassifyTask",
    "ForecastTask",
    "LanguageModelTask",
    "SequenceDataset",
    "SeriesDataset",
    "SeriesLabelTransform",
    "TagTask",
    "Task",
    "TaskData",
    "TextTransform",
    "TranslateTask",
    "check_model_fits",
    "first_batch",
    "get_task",
    "read_transform",
    "shape_trace",
]

# Run task name -> its Task class, in the order an error message lists them.
TASKS: dict[str, type[Task]] = {
    "forecast": ForecastTask,
    "classify": ClassifyTask,
    "classify-series": ClassifySeriesTask,
    "tag": TagTask,
    "language-model": LanguageModelTask,
    "translate": TranslateTask,
}


def get_task(name: str) -> Task:
    """The :class:`Task` of a run task name, e.g. ``"forecast"``."""
    if name not in TASKS:
        raise ValueError(
            f"Received an invalid value for argument `name`, expected one of {list(TASKS)}, "
            f"got {name!r}"
        )
    return TASKS[name]()
