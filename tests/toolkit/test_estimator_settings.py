"""Settings the estimators derive from the data: scaling, patches, step budget, split, defaults."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from rnnkit.toolkit.checkpoint import load_model
from rnnkit.toolkit.ensemble import EnsembleModel
from rnnkit.toolkit.estimators import SequenceClassifier, SequenceRegressor
from rnnkit.toolkit.estimators.input_scaling import InputScaling
from rnnkit.toolkit.estimators.inputs import InputSpec, as_sequences
from rnnkit.toolkit.estimators.settings import (
    MAX_STEPS,
    MIN_STEPS,
    TARGET_STEPS,
    choose_ensemble_size,
    choose_hidden_size,
    choose_patch_size,
    member_splits,
    patch,
    patience_epochs,
    step_budget,
    validation_split,
)

QUIET = {"device": "cpu", "verbose": False}


# Input scaling


def test_scaling_standardises_each_channel_and_logs_heavy_tailed_counts():
    rng = np.random.default_rng(0)
    counts = rng.lognormal(mean=3, sigma=2, size=2000)  # raw counts, up to tens of thousands
    level = rng.normal(5.0, 0.1, size=2000)  # small spread far from zero
    signed = rng.standard_t(df=3, size=2000)  # heavy tailed but signed: never logged
    rows = np.stack([counts, level, signed], axis=1)  # (steps, channels)
    scaling = InputScaling.fit(rows, "auto")
    assert scaling.log == (True, False, False)
    scaled = scaling.transform(torch.from_numpy(rows)).double().numpy()
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(scaled[:, 0].std(), np.log1p(counts).std() / scaling.std[0])
    assert scaling.describe() == "log1p on channel 1, then standardised per channel"
    assert InputScaling.fit(rows, "standard").log == (False, False, False)
    assert InputScaling.fit(rows, "none").is_identity
    assert InputScaling.from_dict(scaling.to_dict()) == scaling


def test_scaling_of_a_constant_channel_only_centres_it():
    rows = np.array([[2.0, 1.0], [2.0, 3.0]])
    scaling = InputScaling.fit(rows, "auto")
    assert scaling.std == (1.0, 1.0) and scaling.mean == (2.0, 2.0)


def test_scaling_is_fitted_on_the_training_sequences_only_and_saved(tmp_path):
    rng = np.random.default_rng(1)
    X = [rng.normal(1000, 50, size=(6, 2)) for _ in range(40)]
    y = rng.normal(size=40)
    X_val = [rng.normal(0, 1, size=(6, 2)) for _ in range(10)]  # far from X: must not count
    model = SequenceRegressor(hidden_size=8, max_steps=20, seed=3, **QUIET)
    model.fit(X, y, validation_data=(X_val, rng.normal(size=10)))
    rows = np.concatenate(X).astype(np.float32)  # (steps, channels)
    np.testing.assert_allclose(model.inputs_.scaling.mean, rows.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(model.inputs_.scaling.std, rows.std(axis=0), rtol=1e-4)
    loaded = SequenceRegressor.load(model.save(tmp_path / "model"))
    assert loaded.inputs_ == model.inputs_
    assert loaded.fitted_settings_ == model.fitted_settings_
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_an_estimator_saved_before_scaling_reads_as_unscaled():
    spec = InputSpec.fit(as_sequences([np.ones((3, 2))]), 1, "none", 1)
    state = spec.to_dict()
    del state["scaling"], state["patch_size"]  # as version-1 files without them
    old = InputSpec.from_dict(state)
    assert old.scaling is None and old.patch_size == 1
    x = torch.randn(4, 2)
    assert torch.equal(old.encode(as_sequences([x.numpy()]))[0], x)


# Patches


def test_patch_size_makes_the_median_sequence_about_target_steps_long():
    assert choose_patch_size([251] * 5) == 8  # 32 steps
    assert choose_patch_size([1460]) == 46
    assert choose_patch_size([7, 29, 15]) == 1  # short sequences are left alone
    for length in (24, 100, 427, 5000):
        steps = math.ceil(length / choose_patch_size([length]))
        assert TARGET_STEPS / 2 <= steps <= 2 * TARGET_STEPS


def test_patch_groups_consecutive_steps_and_repeats_the_last_step():
    x = torch.arange(14.0).reshape(7, 2)  # (length 7, channels 2)
    patched = patch(x, 3)  # (3, 6)
    assert patched.tolist() == [
        [0, 1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10, 11],
        [12, 13, 12, 13, 12, 13],
    ]
    assert patch(x, 1) is x
    assert patch(x, 7).shape == (1, 14)


def test_patched_variable_lengths_train_and_predict():
    rng = np.random.default_rng(2)
    X = [rng.normal(size=(int(rng.integers(60, 200)), 3)) for _ in range(30)]
    y = [i % 2 for i in range(30)]
    model = SequenceClassifier(hidden_size=8, max_steps=4, ensemble_size=1, **QUIET).fit(X, y)
    k = choose_patch_size([len(x) for x in X])
    assert k > 1 and model.fitted_settings_["patch_size"] == k
    assert model.model_.config.input_size == 3 * k  # k steps of 3 channels per input vector
    encoded = model.inputs_.encode(as_sequences(X[:2]))
    assert [len(e) for e in encoded] == [math.ceil(len(x) / k) for x in X[:2]]
    assert model.predict(X[:5]).shape == (5,)
    fixed = SequenceClassifier(hidden_size=8, max_steps=4, patch_size=1, ensemble_size=1, **QUIET)
    fixed.fit(X, y)
    assert fixed.model_.config.input_size == 3


# The step budget and the validation split


def test_step_budget_gives_small_data_enough_steps_and_large_data_a_ceiling():
    assert step_budget(40, 32) == MIN_STEPS
    assert step_budget(100_000, 32) == MAX_STEPS
    assert MIN_STEPS < step_budget(1000, 32) < MAX_STEPS
    assert patience_epochs(500) == 125 and patience_epochs(1) == 1


def test_fit_trains_for_the_budget_in_steps_or_for_explicit_epochs():
    X = [np.ones((3, 1)) * i for i in range(10)]  # fewer than 20: nothing carved out
    y = np.arange(10.0)
    model = SequenceRegressor(hidden_size=4, max_steps=7, batch_size=4, **QUIET).fit(X, y)
    settings = model.fitted_settings_
    assert settings["validation_sequences"] == 0 and settings["epochs"] == 3  # ceil(7 / 3)
    assert settings["early_stopping_patience"] is None  # nothing to stop on
    assert settings["epochs_run"] == [3] * 10 and settings["steps_run"] == [9] * 10
    by_epochs = SequenceRegressor(hidden_size=4, epochs=2, **QUIET).fit(X, y)
    assert len(by_epochs.history_) == 2
    assert by_epochs.fitted_settings_["ensemble_size"] == 1  # epochs: one model, as before
    with pytest.raises(ValueError, match="arguments `epochs` and `max_steps`, expected at most"):
        SequenceRegressor(epochs=2, max_steps=5, **QUIET).fit(X, y)
    with pytest.raises(ValueError, match="`max_steps`, expected 'auto' or an integer >= 1"):
        SequenceRegressor(max_steps=0, **QUIET).fit(X, y)
    with pytest.raises(ValueError, match="`scaling`, expected one of"):
        SequenceRegressor(scaling="minmax", **QUIET).fit(X, y)
    with pytest.raises(ValueError, match="`validation_fraction`, expected 'auto' or a number"):
        SequenceRegressor(validation_fraction=1.5, **QUIET).fit(X, y)
    with pytest.raises(ValueError, match="`patch_size`, expected 'auto' or 1 for token input"):
        SequenceClassifier(patch_size=4, **QUIET).fit([["a"], ["b"]], [0, 1])


def test_small_data_gets_a_smaller_model_and_a_cosine_schedule_over_the_budget():
    X = [np.ones((3, 1)) * i for i in range(30)]
    y = np.arange(30.0)
    model = SequenceRegressor(max_steps=8, batch_size=8, ensemble_size=1, **QUIET).fit(X, y)
    assert model.model_.config.hidden_size == model.fitted_settings_["hidden_size"] == 32
    assert choose_hidden_size(999) == 32 and choose_hidden_size(1000) == 64
    rates = [row["lr"] for row in model.history_]  # 3 epochs: 3e-3 annealed towards 0
    assert rates[0] == pytest.approx(3e-3) and rates[0] > rates[1] > rates[2] > 0
    by_epochs = SequenceRegressor(epochs=3, batch_size=8, **QUIET).fit(X, y)
    assert {row["lr"] for row in by_epochs.history_} == {3e-3}  # passes: constant, as before
    assert by_epochs.model_.config.hidden_size == 32
    assert (
        SequenceRegressor(hidden_size=16, epochs=1, **QUIET).fit(X, y).model_.config.hidden_size
        == 16
    )


def test_validation_split_is_seeded_and_stratified():
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 2 + ["d"]
    train, val = validation_split(len(labels), 0.2, seed=0, labels=labels)
    assert sorted(train + val) == list(range(len(labels)))
    counts = Counter(labels[i] for i in val)
    assert counts == {"a": 10, "b": 2, "c": 1}  # the single "d" stays in training
    assert validation_split(len(labels), 0.2, seed=0, labels=labels) == (train, val)
    assert validation_split(len(labels), 0.2, seed=1, labels=labels)[1] != val
    assert validation_split(10, 0.0, seed=0) == (list(range(10)), [])
    assert len(validation_split(10, 0.3, seed=0)[1]) == 3


def test_carved_validation_drives_early_stopping_and_is_shown(caplog):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 4, 1))
    y = ["up" if x.sum() > 0 else "down" for x in X]
    with caplog.at_level("INFO", logger="rnnkit.toolkit.estimators.sequence"):
        model = SequenceClassifier(hidden_size=8, max_steps=40, **QUIET).fit(X, y)
    settings = model.fitted_settings_
    assert settings["validation_sequences"] == 12 and settings["train_sequences"] == 48
    assert {"val_loss", "val_accuracy"} <= set(model.history_[0])
    assert settings["early_stopping_patience"] == patience_epochs(settings["epochs"])
    for best, run in zip(settings["best_epoch"], settings["epochs_run"], strict=True):
        assert 1 <= best <= run <= settings["epochs"]
    assert "SequenceClassifier.fit: patch_size 1, hidden_size 8, max_steps 40" in caplog.text
    none = SequenceClassifier(hidden_size=8, max_steps=4, validation_fraction=0, **QUIET)
    assert none.fit(X, y).fitted_settings_["validation_sequences"] == 0


# Ensembles


def test_member_splits_are_disjoint_stratified_folds():
    labels = ["a"] * 23 + ["b"] * 11 + ["c"]
    splits = member_splits(len(labels), 0.2, 5, seed=0, labels=labels)
    validated = [i for _, val in splits for i in val]
    assert sorted(validated) == list(range(34))  # each once; the single "c" never
    for train, val in splits:
        assert sorted(train + val) == list(range(35))
        counts = Counter(labels[i] for i in val)
        assert counts["a"] in (4, 5) and counts["b"] in (2, 3)
    assert member_splits(10, 0.2, 1, seed=0) == [validation_split(10, 0.2, seed=0)]
    assert len({tuple(v) for _, v in member_splits(30, 0.2, 3, seed=0)}) == 3  # own draws
    assert choose_ensemble_size(50, 1000) == 10 and choose_ensemble_size(900, 1450) == 6
    assert choose_ensemble_size(50, 20_000) == 1 and choose_ensemble_size(5000, 100) == 1


def test_small_data_gets_an_ensemble_that_averages_probabilities_and_saves(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 5, 2))
    y = ["up" if x[:, 0].sum() > 0 else "down" for x in X]
    model = SequenceClassifier(hidden_size=8, max_steps=30, **QUIET).fit(X, y)
    settings = model.fitted_settings_
    assert settings["ensemble_size"] == 10 and len(settings["best_epoch"]) == 10
    assert settings["train_sequences"] == 40 and settings["validation_sequences"] == 10
    assert isinstance(model.model_, EnsembleModel) and len(model.model_.members) == 10
    members = model.model_.members
    assert not torch.equal(members[0].head.linear.weight, members[1].head.linear.weight)
    probabilities = model.predict_proba(X)  # (N, classes)
    encoded = model.inputs_.encode(as_sequences(X))
    with torch.no_grad():
        each = [torch.softmax(m(torch.stack(encoded)), -1).double() for m in members]
    np.testing.assert_allclose(probabilities, torch.stack(each).mean(0).numpy(), atol=1e-6)
    loaded = SequenceClassifier.load(model.save(tmp_path / "ensemble"))
    np.testing.assert_array_equal(loaded.predict_proba(X), probabilities)
    bare = load_model(tmp_path / "ensemble")
    assert isinstance(bare, EnsembleModel) and bare.config.ensemble_size == 10


# The defaults, end to end


def far_pattern(count: int, seed: int, length: int = 260) -> tuple[list[np.ndarray], list[int]]:
    """Raw-scale series whose classes differ only in a burst over 200 steps before the end."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for _ in range(count):
        x = rng.normal(size=(length, 1))
        label = int(rng.random() < 0.5)
        if label:
            start = int(rng.integers(10, 40))
            x[start : start + 12, 0] += 3 * np.sin(np.linspace(0, np.pi, 12))
        X.append(x * 50 + 1000)  # (length, 1), far from standardised units
        y.append(label)
    return X, y


def test_defaults_learn_a_pattern_far_from_the_end_where_last_step_pooling_does_not():
    X, y = far_pattern(96, seed=0)
    X_test, y_test = far_pattern(100, seed=1)
    defaults = SequenceClassifier(seed=0, **QUIET).fit(X, y)
    old = SequenceClassifier(
        seed=0, epochs=10, pooling="last", bidirectional=False, lr=1e-3, scaling="none",
        patch_size=1, **QUIET,
    )  # fmt: skip
    old.fit(X, y)
    assert defaults.score(X_test, y_test) >= 0.9
    assert old.score(X_test, y_test) <= 0.65
