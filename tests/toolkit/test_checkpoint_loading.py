"""Loading someone else's run or estimator: nothing allocated beyond what its files hold (issue 20).

A run directory pairs ``model.safetensors`` with JSON documents (``checkpoint.json``,
``transform.json``) whose checksum anyone can recompute. These tests alter the
documents of real saved runs the way an author could (numbers changed, keys
removed or added, types swapped, the checksum recomputed each time) and hold
every load to one contract: it gives the saved model (the file's weights, the
document's config) or one line naming a file of the run, and a refused load's
peak memory stays below a small multiple of the files it read.

Peak memory is measured as in ``rnnkit.benchmark``: torch's CPU allocator
through the profiler's allocation events, plus ``tracemalloc`` (Python objects,
NumPy buffers, the bytes read from the files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import json
import logging
import shutil
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_reviews import write_reviews
from torch.profiler import ProfilerActivity, profile

from rnnkit.benchmark import _allocator_peak
from rnnkit.cli import _load_run, main
from rnnkit.toolkit.checkpoint import (
    CHECKPOINT_JSON,
    MODEL_FILE,
    CheckpointError,
    _digest,
    load_model,
    read_tensors,
    save_model,
)
from rnnkit.toolkit.estimators import SequenceClassifier, SequenceRegressor
from rnnkit.toolkit.model_loading import build_saved_model, check_sizes_fit
from rnnkit.toolkit.models import ModelConfig, build_model

# A refused load may hold the files' bytes, their parsed tensors and JSON: at most
# this many times the bytes of the run's files, plus a fixed allowance for the
# Python objects of any load (the estimator or config objects, one model built on
# the meta device, the exception; about 30-60 KB measured).
PEAK_MULTIPLE = 4
FIXED_ALLOWANCE = 64 * 1024
# ModelConfig fields that decide a parameter's shape or count: changing one must be refused.
SIZE_FIELDS = (
    "input_size", "vocab_size", "embedding_dim", "hidden_size", "num_layers", "bidirectional",
    "num_outputs", "char_vocab_size", "char_embedding_dim", "char_hidden_size", "ensemble_size",
)  # fmt: skip
# Values an author could write in place of a number: big, small, wrong types.
ODD_VALUES = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([10**9, 2**31, 2**63, 10**30, 12_345_678]),
    st.sampled_from(["8", 8.0, 1e9, [8], {"n": 8}, None, True, False, "", -0.5]),
)


# ----------------------------------------------------------------------------- helpers


def measure_peak(load: Callable[[], Any]) -> tuple[Any, BaseException | None, int]:
    """Run `load`; return its result, the exception it raised (or None) and its peak
    extra bytes (torch's CPU allocator plus tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    result, raised = None, None
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                # A config torch's RNN warns about (dropout on one layer) loads, with the
                # warning; the suite's filterwarnings=error would make it an exception.
                with warnings.catch_warnings(record=True):
                    warnings.simplefilter("always")
                    result = load()
            except Exception as error:  # judged by the caller
                raised = error
            python_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # A load refused before any tensor exists records no allocation, which the
    # benchmark's reader logs as a warning; here it means zero bytes.
    quiet = logging.getLogger("rnnkit.benchmark")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        torch_peak = _allocator_peak(prof) or 0
    finally:
        quiet.setLevel(level)
    return result, raised, max(python_peak, 0) + torch_peak


def run_bytes(run: Path) -> int:
    """The bytes of every file of a run directory (or a saved estimator)."""
    return sum(path.stat().st_size for path in run.rglob("*") if path.is_file())


def rewrite_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to a JSON document; a checkpoint's checksum is recomputed, as an
    author who edits the file can."""
    document = json.loads(path.read_text())
    change(document)
    if "sha256" in document:
        document["sha256"] = _digest(document)
    path.write_text(json.dumps(document, indent=1))


def set_hidden_size(value: int) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["model_config"]["hidden_size"] = value

    return change


def copy_run(run: Path, where: Path) -> Path:
    copy = where / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run, copy)
    return copy


def evaluate(run: Path) -> tuple[int, str]:
    err = io.StringIO()
    # Warnings are shown as lines by the command line, not raised (as the suite makes them).
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet, contextlib.redirect_stderr(err), warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        code = main(["evaluate", str(run)])
    return code, err.getvalue()


def assert_one_line_naming_the_run(error: BaseException, run: Path) -> None:
    text = str(error)
    assert "\n" not in text, text
    assert isinstance(error, (CheckpointError, ValueError, OSError)), repr(error)
    assert str(run) in text, text


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory) -> Path:
    """A trained classifier run: word ids, a bidirectional encoder, two labels."""
    root = tmp_path_factory.mktemp("classify")
    write_reviews(root, train=60)
    config = root / "classify.toml"
    config.write_text(
        f'task = "classify"\n[data]\npath = "{root / "reviews.train"}"\n'
        f'val_path = "{root / "reviews.dev"}"\ntest_path = "{root / "reviews.test"}"\n'
        "[model]\nhidden_size = 32\nbidirectional = true\n"
        '[train]\nepochs = 2\nbatch_size = 16\nlr = 0.01\ndevice = "cpu"\n'
    )
    run = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(config), "--out", str(run)]) == 0
    return run


def warm_up(run: Path, tmp_path: Path) -> None:
    """Load `run`, and a copy whose config does not fit its weights, once: the first
    load and the first refusal import modules and fill torch's caches, which no
    measured load should pay for."""
    _load_run(str(run))
    copy = copy_run(run, tmp_path)
    rewrite_json(copy / "model" / CHECKPOINT_JSON, lambda d: d["model_config"].pop("hidden_size"))
    with pytest.raises(CheckpointError):
        _load_run(str(copy))
    shutil.rmtree(copy)


@pytest.fixture(scope="module")
def original(classify_run, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The run's saved weights, after a warm-up."""
    warm_up(classify_run, tmp_path_factory.mktemp("warm-up"))
    return read_tensors(classify_run / "model" / MODEL_FILE)


# ----------------------------------------------------------------------------- the case


def test_a_billion_hidden_units_is_refused_before_anything_is_allocated(
    classify_run, original, tmp_path
):
    run = copy_run(classify_run, tmp_path)
    rewrite_json(run / "model" / CHECKPOINT_JSON, set_hidden_size(1_000_000_000))
    _, raised, peak = measure_peak(lambda: _load_run(str(run)))
    assert isinstance(raised, CheckpointError)
    assert "hidden_size = 1,000,000,000 cannot fit model.safetensors" in str(raised)
    assert peak < PEAK_MULTIPLE * run_bytes(run) + FIXED_ALLOWANCE, (peak, run_bytes(run))
    code, err = evaluate(run)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"rnnkit: error: {run / 'model' / CHECKPOINT_JSON}: "), err


def test_a_size_that_fits_the_file_but_not_its_tensors_names_the_parameter(classify_run, tmp_path):
    run = copy_run(classify_run, tmp_path)
    rewrite_json(run / "model" / CHECKPOINT_JSON, set_hidden_size(33))
    with pytest.raises(CheckpointError) as raised:
        load_model(run / "model")
    # The parameter, the shape the document implies and the shape the file holds.
    assert str(raised.value) == (
        f"{run / 'model' / MODEL_FILE}: parameter 'encoder.rnn.weight_ih_l0' is (33, 32) "
        "float32 by the model config in checkpoint.json, (32, 32) float32 in the file"
    )


def test_the_unaltered_run_loads_the_saved_weights(classify_run, original):
    _, _, _, _, _, model = _load_run(str(classify_run))
    assert model.state_dict().keys() == original.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
        assert tensor.device.type == "cpu" and not tensor.is_meta


# ----------------------------------------------------------------------------- hypothesis


def _alter_model_config(draw) -> tuple[str, Callable[[dict[str, Any]], None], str | None]:
    """An alteration of checkpoint.json's model_config; returns its description, the
    change, and the size field it changes (None if it changes none)."""
    config_fields = [f for f in ModelConfig.__dataclass_fields__]
    kind = draw(st.sampled_from(["number", "type", "remove", "add"]))
    field = draw(st.sampled_from(config_fields))
    if kind == "add":
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
        value = draw(ODD_VALUES)

        def change(document):
            document["model_config"][key] = value

        return f"add {key}={value!r}", change, None
    if kind == "remove":

        def change(document):
            document["model_config"].pop(field, None)

        return f"remove {field}", change, field if field in SIZE_FIELDS else None
    value = draw(st.integers(-3, 2**40) if kind == "number" else ODD_VALUES)

    def change(document):
        document["model_config"][field] = value

    return f"{field}={value!r}", change, field if field in SIZE_FIELDS else None


def _alter_transform(draw) -> tuple[str, Callable[[dict[str, Any]], None], str | None]:
    """An alteration of transform.json: entries added to or removed from the vocabulary
    or the labels, a key removed, a type swapped."""
    part = draw(st.sampled_from(["vocab", "labels"]))
    key = "tokens" if part == "vocab" else "classes"
    kind = draw(st.sampled_from(["grow", "shrink", "remove", "type"]))
    count = draw(st.integers(1, 5_000))
    value = draw(ODD_VALUES)

    def change(document):
        entries = document["transform"][part]
        if kind == "grow":
            entries[key] = entries[key] + [f"extra{i}" for i in range(count)]
        elif kind == "shrink":
            entries[key] = entries[key][: max(len(entries[key]) - count, 0)]
        elif kind == "remove":
            entries.pop(key)
        else:
            entries[key] = value

    return f"transform {part} {kind} {count} {value!r}", change, part


@st.composite
def alterations(draw):
    if draw(st.booleans()):
        return ("model/checkpoint.json", *_alter_model_config(draw))
    return ("transform.json", *_alter_transform(draw))


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(alteration=alterations())
def test_an_altered_run_loads_as_saved_or_is_one_line(classify_run, original, tmp_path,
                                                      alteration):  # fmt: skip
    relative, description, change, changed_size = alteration
    run = copy_run(classify_run, tmp_path)
    before = json.loads((run / relative).read_text())
    rewrite_json(run / relative, change)
    after = json.loads((run / relative).read_text())
    loaded, raised, peak = measure_peak(lambda: _load_run(str(run)))
    if raised is not None:
        assert_one_line_naming_the_run(raised, run)
        assert peak < PEAK_MULTIPLE * run_bytes(run) + FIXED_ALLOWANCE, (
            description,
            peak,
            run_bytes(run),
        )
        return
    model = loaded[-1]
    # Loaded: the file's weights, exactly; no size field of the document was changed.
    assert model.state_dict().keys() == original.keys(), description
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), (description, name)
    if relative.endswith(CHECKPOINT_JSON) and changed_size is not None:
        saved = before["model_config"].get(changed_size)
        assert model.config.__getattribute__(changed_size) == saved, description
    if relative == "transform.json":
        assert after["transform"][changed_size] == before["transform"][changed_size]


def test_the_command_line_shows_an_altered_run_as_one_line(classify_run, tmp_path):
    run = copy_run(classify_run, tmp_path)
    tokens = json.loads((run / "transform.json").read_text())["transform"]["vocab"]["tokens"]
    rewrite_json(run / "transform.json", lambda d: d["transform"]["vocab"].update(
        tokens=[*tokens, "zzz"]))  # fmt: skip
    code, err = evaluate(run)
    assert code == 1
    assert err == (
        f"rnnkit: error: {run / 'transform.json'}: the fitted transform implies vocab_size = "
        f"{len(tokens) + 1}, the model has {len(tokens)}\n"
    )


def test_resuming_a_run_whose_config_asks_for_more_is_one_line_and_changes_nothing(
    classify_run, original, tmp_path
):
    run = copy_run(classify_run, tmp_path)
    config = run / "config.toml"
    config.write_text(config.read_text().replace("hidden_size = 32", "hidden_size = 1000000000"))
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["train", "--resume", str(run), "--set", "train.epochs=3"])
    assert code == 1 and err.getvalue().count("\n") == 1, err.getvalue()
    assert f"{config}: model_config " in err.getvalue()
    assert "cannot fit model.safetensors" in err.getvalue()
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


@pytest.fixture(scope="module", params=["forecast", "language-model"])
def other_run(request, tmp_path_factory) -> Path:
    """A trained forecast or language-model run (their transforms hold scalers, a
    lookback, a character vocabulary and unigram baselines)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "forecast":
        close = 100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 80))
        days = np.datetime64("2020-01-01") + np.arange(len(close))
        rows = [
            f"{day},{c:.2f},{c + 1:.2f},{c - 1:.2f},{c:.2f}"
            for day, c in zip(days, close, strict=True)
        ]
        (root / "prices.csv").write_text("Date,Open,High,Low,Close\n" + "\n".join(rows) + "\n")
        data = f'[data]\npath = "{root / "prices.csv"}"\nlookback = 5\n'
    else:
        (root / "tiny.txt").write_text("the cat sat on the mat. the dog sat on the log.\n" * 30)
        data = (f'task = "language-model"\n[data]\npath = "{root / "tiny.txt"}"\n'
                "lookback = 20\nval_fraction = 0.1\ntest_fraction = 0.1\n")  # fmt: skip
    config = root / "run.toml"
    config.write_text(
        data + '[model]\nhidden_size = 32\n[train]\nepochs = 2\nbatch_size = 16\ndevice = "cpu"\n'
    )
    run = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(config), "--out", str(run)]) == 0
    warm_up(run, root)
    return run


def _json_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value of a JSON document (the first three items of each list)."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "sha256":
                paths += _json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            paths += _json_paths(value, (*prefix, i))
    return paths


def _mutate(document: Any, path: tuple, kind: str, value: Any, count: int) -> None:
    """Remove, replace, grow or shrink the value at `path`, or add a key beside it."""
    *parents, last = path
    parent = document
    for key in parents:
        parent = parent[key]
    if kind == "remove":
        del parent[last]
    elif kind == "add" and isinstance(parent, dict):
        parent[f"extra_{count}"] = value
    elif kind == "grow" and isinstance(parent[last], list) and parent[last]:
        parent[last] = parent[last] + parent[last][:1] * count
    elif kind == "shrink" and isinstance(parent[last], list):
        parent[last] = parent[last][: max(len(parent[last]) - count, 0)]
    else:
        parent[last] = value


@settings(
    max_examples=30,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_value_of_a_run_document_altered_evaluates_or_is_one_line(other_run, tmp_path, data):
    relative = data.draw(st.sampled_from(["model/checkpoint.json", "transform.json"]))
    run = copy_run(other_run, tmp_path)
    document = json.loads((run / relative).read_text())
    path = data.draw(st.sampled_from(_json_paths(document)), label="path")
    kind = data.draw(st.sampled_from(["remove", "replace", "add", "grow", "shrink"]), label="kind")
    value = data.draw(ODD_VALUES, label="value")
    count = data.draw(st.integers(1, 3_000), label="count")
    rewrite_json(run / relative, lambda d: _mutate(d, path, kind, value, count))
    loaded, raised, peak = measure_peak(lambda: _load_run(str(run)))
    if raised is not None:
        assert_one_line_naming_the_run(raised, run)
        assert peak < PEAK_MULTIPLE * run_bytes(run) + FIXED_ALLOWANCE, (path, kind, peak)
    else:
        saved = read_tensors(other_run / "model" / MODEL_FILE)
        for name, tensor in loaded[-1].state_dict().items():
            assert torch.equal(tensor, saved[name]), (path, kind, name)
    # Through the command line: the figures, or one line naming a file of the run.
    code, err = evaluate(run)
    assert code == 0 or (err.count("\n") == 1 and err.startswith(f"rnnkit: error: {run}")), err
    assert "Traceback" not in err and "--debug shows the traceback" not in err, err


# ----------------------------------------------------------------------------- estimators


@pytest.fixture(scope="module")
def saved_regressor(tmp_path_factory) -> Path:
    """A saved regressor over numeric sequences (scaled, two targets): the estimator
    state holds input scaling, a target scaler and the target shape."""
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 3.0, size=(24, 12, 3))  # skewed, non-negative: log1p then scaled
    y = np.stack([X[:, :, 0].mean(1), X[:, :, 1].max(1)], axis=1)
    regressor = SequenceRegressor(hidden_size=32, epochs=2, seed=0, verbose=False).fit(X, y)
    path = tmp_path_factory.mktemp("estimator") / "regressor"
    regressor.save(path)
    SequenceRegressor.load(path)  # imports what a load imports before anything is measured
    return path


def _estimator_state(document: dict[str, Any]) -> dict[str, Any]:
    return document["trainer"]["estimator"]


@st.composite
def estimator_alterations(draw):
    """Changes to a saved regressor's checkpoint.json: model config numbers, and the
    fitted input spec, scalers and target shape."""
    targets = {
        "num_features": lambda d: _estimator_state(d)["fitted"]["inputs"],
        "patch_size": lambda d: _estimator_state(d)["fitted"]["inputs"],
        "mean": lambda d: _estimator_state(d)["fitted"]["inputs"]["scaling"],
        "columns": lambda d: _estimator_state(d)["fitted"]["target_scaler"],
        "target_shape": _estimator_state,
        "hidden_size": lambda d: d["model_config"],
        "input_size": lambda d: d["model_config"],
        "num_outputs": lambda d: d["model_config"],
        "ensemble_size": lambda d: d["model_config"],
    }
    key = draw(st.sampled_from(sorted(targets)))
    value = draw(st.one_of(ODD_VALUES, st.lists(st.integers(0, 5), max_size=4)))
    remove = draw(st.booleans())

    def change(document):
        parent = targets[key](document)
        if key == "target_shape":
            parent = parent["fitted"]
        if remove:
            parent.pop(key, None)
        else:
            parent[key] = value

    return f"{'remove' if remove else 'set'} {key} {value!r}", change


@settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(alteration=estimator_alterations())
def test_an_altered_estimator_loads_as_saved_or_is_one_line(saved_regressor, tmp_path,
                                                            alteration):  # fmt: skip
    description, change = alteration
    saved = copy_run(saved_regressor, tmp_path)
    rewrite_json(saved / CHECKPOINT_JSON, change)
    loaded, raised, peak = measure_peak(lambda: SequenceRegressor.load(saved))
    if raised is not None:
        assert_one_line_naming_the_run(raised, saved)
        assert peak < PEAK_MULTIPLE * run_bytes(saved) + FIXED_ALLOWANCE, (description, peak)
        return
    weights = read_tensors(saved / MODEL_FILE)
    for name, tensor in loaded.model_.state_dict().items():
        assert torch.equal(tensor, weights[name]), (description, name)
    # What loads must predict: the fitted state fits the model.
    X = np.random.default_rng(1).gamma(2.0, 3.0, size=(3, 12, 3))
    assert loaded.predict(X).shape == (3, 2), description


def test_a_classifier_whose_labels_the_model_does_not_fit_is_refused(tmp_path):
    X = [["good", "film"], ["bad", "film"]] * 6
    y = ["pos", "neg"] * 6
    path = tmp_path / "classifier"
    SequenceClassifier(hidden_size=4, epochs=1, seed=0, verbose=False).fit(X, y).save(path)

    def add_label(document):
        _estimator_state(document)["fitted"]["labels"]["classes"].append("neutral")

    rewrite_json(path / CHECKPOINT_JSON, add_label)
    with pytest.raises(CheckpointError) as raised:
        SequenceClassifier.load(path)
    assert str(raised.value) == (
        f"{path / CHECKPOINT_JSON}: the estimator's fitted state implies num_outputs = 3, the "
        "model has 2"
    )


# ----------------------------------------------------------------------------- building


BUILT = [
    {"task": "regression", "input_size": 3, "hidden_size": 5, "num_layers": 2,
     "bidirectional": True},
    {"task": "classification", "vocab_size": 9, "num_outputs": 3, "char_vocab_size": 6,
     "char_hidden_size": 4},
    {"task": "language_model", "vocab_size": 7, "hidden_size": 6},
    {"task": "classification", "input_size": 2, "num_outputs": 2, "ensemble_size": 3},
    {"task": "tagging", "vocab_size": 5, "num_outputs": 4, "nonlinearity": "relu"},
]  # fmt: skip


@pytest.mark.parametrize("fields", BUILT, ids=[f["task"] for f in BUILT])
def test_a_model_built_on_the_meta_device_is_the_saved_model(fields, tmp_path):
    torch.manual_seed(0)
    saved = build_model(fields)
    save_model(tmp_path / "model", saved)
    loaded = load_model(tmp_path / "model")
    assert loaded.config == saved.config
    assert type(loaded) is type(saved)
    for (name, tensor), (saved_name, saved_tensor) in zip(
        loaded.state_dict().items(), saved.state_dict().items(), strict=True
    ):
        assert name == saved_name and torch.equal(tensor, saved_tensor)
        assert not tensor.is_meta


def test_counts_are_bounded_by_the_tensors_and_sizes_by_the_values(tmp_path):
    state = {"a": torch.zeros(3, 4), "b": torch.zeros(2)}  # 2 tensors, 14 values
    source, document = tmp_path / "model.safetensors", tmp_path / "checkpoint.json"
    check_sizes_fit({"num_layers": 2, "hidden_size": 14, "dropout": 0.5}, state, source,
                    document)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"num_layers = 3 cannot fit model.safetensors, "
                       r"which holds 2 tensors in all"):  # fmt: skip
        check_sizes_fit({"num_layers": 3}, state, source, document)
    with pytest.raises(CheckpointError, match=r"vocab_size = 15 cannot fit model.safetensors, "
                       r"which holds 14 values in all"):  # fmt: skip
        check_sizes_fit({"vocab_size": 15}, state, source, document)


def test_a_tensor_of_another_dtype_or_name_is_named(tmp_path):
    model = build_model({"task": "regression", "input_size": 2, "hidden_size": 3})
    config = dataclasses.asdict(model.config)
    source, document = tmp_path / "model.safetensors", tmp_path / "checkpoint.json"
    doubled = {k: v.double() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"parameter 'encoder.rnn.weight_ih_l0' is "
                       r"\(3, 2\) float32 by the model config in checkpoint.json, \(3, 2\) "
                       r"float64 in the file"):  # fmt: skip
        build_saved_model(config, doubled, source, document)
    extra = dict(model.state_dict(), stowaway=torch.zeros(1))
    with pytest.raises(CheckpointError, match=r"holds a tensor 'stowaway' that the model config"):
        build_saved_model(config, extra, source, document)
    short = dict(model.state_dict())
    short.pop("head.linear.bias")
    with pytest.raises(CheckpointError, match=r"has no tensor 'head\.linear\.bias'"):
        build_saved_model(config, short, source, document)
