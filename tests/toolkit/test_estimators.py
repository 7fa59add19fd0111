"""Estimators: each learns a tiny task; labels as given; save/load; parameters; every error."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.toolkit.checkpoint import CheckpointError, load_model, save_model
from rnnkit.toolkit.estimators import (
    CharLanguageModel,
    NotFittedError,
    SequenceClassifier,
    SequenceRegressor,
    SequenceTagger,
)
from rnnkit.toolkit.models import ModelConfig, build_model

FAST = {"hidden_size": 16, "lr": 0.02, "device": "cpu", "verbose": False}
WORDS = ["red", "blue", "green", "cat", "dog", "tree", "sky", "run"]


def numeric_sequences(count: int = 192, seed: int = 0, features: int = 1) -> list[np.ndarray]:
    """Variable-length sequences ``(L_i, features)``, L_i in [2, 8]."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(2, 9)), features)) for _ in range(count)]


def keyword_texts(count: int = 160, seed: int = 0) -> tuple[list[list[str]], list[str]]:
    """Token lists labelled "pos" when they contain "good", else "neg"."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(count):
        tokens = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(2, 7)))]
        label = "pos" if rng.random() < 0.5 else "neg"
        if label == "pos":
            tokens.insert(int(rng.integers(0, len(tokens) + 1)), "good")
        texts.append(tokens)
        labels.append(label)
    return texts, labels


def digit_tagged(count: int = 160, seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """Token lists tagged "NUM" for digits and "WORD" for words."""
    rng = np.random.default_rng(seed)
    sentences = [
        [str(rng.integers(0, 10)) if rng.random() < 0.4 else str(rng.choice(WORDS))
         for _ in range(int(rng.integers(1, 8)))]
        for _ in range(count)
    ]  # fmt: skip
    return sentences, [["NUM" if t.isdigit() else "WORD" for t in s] for s in sentences]


@pytest.fixture(scope="module")
def regression():
    X = numeric_sequences()
    y = np.array([100 * x.sum() + 50 for x in X])  # far from standardised units
    return SequenceRegressor(epochs=12, **FAST).fit(X, y), X, y


@pytest.fixture(scope="module")
def classification():
    X, y = keyword_texts()
    return SequenceClassifier(epochs=8, **FAST).fit(X, y), X, y


@pytest.fixture(scope="module")
def tagging():
    X, y = digit_tagged()
    return SequenceTagger(epochs=8, bidirectional=True, **FAST).fit(X, y), X, y


@pytest.fixture(scope="module")
def language_model():
    text = "abc" * 200
    return CharLanguageModel(seq_length=16, epochs=8, **FAST).fit(text), text


# Learning tiny tasks, labels as given


def test_regressor_learns_the_sum_in_original_units(regression):
    model, X, y = regression
    assert model.score(X, y) > 0.9  # R^2
    X_test = numeric_sequences(64, seed=1)
    y_test = np.array([100 * x.sum() + 50 for x in X_test])
    predicted = model.predict(X_test)
    assert predicted.shape == (64,) and predicted.dtype == np.float64
    assert model.score(X_test, y_test) > 0.85
    assert np.corrcoef(predicted, y_test)[0, 1] > 0.95
    assert abs(predicted.mean() - y_test.mean()) < 0.2 * y_test.std()  # undone standardisation
    assert model.target_shape_ == () and model.inputs_.num_features == 1


def test_regressor_takes_dense_arrays_and_tensors_alike_with_several_outputs():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(96, 5, 2)).astype(np.float32)  # (N, L, C)
    y = np.stack([X[:, :, 0].sum(1), X[:, :, 1].mean(1)], axis=1)  # (N, 2)
    model = SequenceRegressor(epochs=10, **FAST).fit(X, y)
    predicted = model.predict(X)
    assert predicted.shape == (96, 2)
    np.testing.assert_array_equal(model.predict(torch.from_numpy(X)), predicted)
    np.testing.assert_array_equal(model.predict(list(X)), predicted)  # same packed batches
    assert model.score(X, y) > 0.8


def test_classifier_learns_a_keyword_and_returns_string_labels(classification):
    model, _, _ = classification
    X_test, y_test = keyword_texts(80, seed=1)
    assert model.score(X_test, y_test) > 0.9
    predicted = model.predict(X_test)
    assert predicted.shape == (80,) and set(predicted.tolist()) <= {"pos", "neg"}
    assert list(model.classes_) == ["neg", "pos"]
    probabilities = model.predict_proba(X_test)  # (N, classes), columns in classes_ order
    assert probabilities.shape == (80, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-12)
    assert np.array_equal(model.classes_[probabilities.argmax(axis=1)], predicted)
    # Unknown tokens read as <unk>; a plain string is split on whitespace.
    assert model.predict([["never-seen", "good", "zebra"], "good red sky"]).tolist() == [
        "pos", "pos"
    ]  # fmt: skip


def test_classifier_returns_integer_labels_and_mixed_labels_as_given():
    X = numeric_sequences(128, seed=3)
    y = [7 if x.sum() > 0 else 3 for x in X]  # sign of the sum, as integers
    model = SequenceClassifier(epochs=10, pooling="mean", **FAST).fit(X, y)
    predicted = model.predict(X)
    assert predicted.dtype.kind == "i" and set(predicted.tolist()) <= {3, 7}
    assert model.score(X, y) > 0.85
    mixed = ["yes" if label == 7 else 0 for label in y]  # str and int together: no casting
    model = SequenceClassifier(epochs=1, **FAST).fit(X, mixed)
    assert model.classes_.tolist() == [0, "yes"]
    assert {type(label) for label in model.predict(X).tolist()} <= {int, str}


def test_tagger_learns_which_tokens_are_digits(tagging):
    model, _, _ = tagging
    X_test, y_test = digit_tagged(60, seed=1)
    assert model.score(X_test, y_test) > 0.95  # token accuracy
    predicted = model.predict(X_test)
    assert [len(tags) for tags in predicted] == [len(s) for s in X_test]
    assert predicted[:3] == y_test[:3]
    probabilities = model.predict_proba(X_test[:2])
    assert [p.shape for p in probabilities] == [(len(X_test[0]), 2), (len(X_test[1]), 2)]
    assert model.predict([["7", "unseen-word", "3"]]) == [["NUM", "WORD", "NUM"]]


def test_tagger_on_numeric_sequences_with_integer_tags():
    X = numeric_sequences(96, seed=4)
    y = [(x[:, 0] > 0).astype(int) for x in X]  # arrays of tags work like lists
    model = SequenceTagger(epochs=8, **FAST).fit(X, y)
    assert model.score(X, y) > 0.9
    assert all(set(tags) <= {0, 1} for tags in model.predict(X))


def test_language_model_continues_a_repetitive_string(language_model):
    model, text = language_model
    assert model.generate("ab", length=7, top_k=1) == "cabcabc"
    assert model.generate("c", length=5, top_k=1) == "abcab"
    assert model.predict("ab") == "c" and model.predict(["a", "bca"]) == ["b", "b"]
    assert -0.05 < model.score(text[:60]) <= 0  # nats per character
    assert model.perplexity(["abcabc", "cab"]) == pytest.approx(
        np.exp(-model.score(["abcabc", "cab"])), rel=1e-12
    )
    sampled = model.generate("a", length=40, seed=3)
    assert sampled == model.generate("a", length=40, seed=3) and len(sampled) == 40
    assert len(model.generate("zz?", length=3)) == 3  # unseen characters read as <unk>
    assert model.generate("a", length=0) == ""


def test_language_model_takes_several_texts_and_validation_text():
    model = CharLanguageModel(seq_length=8, epochs=6, early_stopping_patience=2, **FAST)
    model.fit(["xyxyxyxy" * 10, "xy", "x"], validation_data="xyxyxyxyxy")
    assert "val_loss" in model.history_[0] and len(model.history_) <= 6
    assert model.vocabulary_.tokens == ["<pad>", "<unk>", "x", "y"]
    assert model.generate("x", length=4, top_k=1) == "yxyx"


def test_validation_data_and_early_stopping():
    X, y = keyword_texts(96)
    X_val, y_val = keyword_texts(32, seed=5)
    y_val = ["neg" if label == "pos" else "pos" for label in y_val]  # gets worse as it learns
    model = SequenceClassifier(epochs=20, early_stopping_patience=1, **FAST)
    model.fit(X, y, validation_data=(X_val, y_val))
    assert {"val_loss", "val_accuracy"} <= set(model.history_[0])
    assert len(model.history_) < 20  # stopped early
    assert model.fitted_settings_["validation_sequences"] == 32  # none carved out of X


def test_fitting_is_seeded_and_leaves_the_global_generators_alone():
    X, y = keyword_texts(64)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    first = SequenceClassifier(epochs=2, seed=5, **FAST).fit(X, y)
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    second = SequenceClassifier(epochs=2, seed=5, **FAST).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    other = SequenceClassifier(epochs=2, seed=6, **FAST).fit(X, y)
    assert not np.array_equal(first.predict_proba(X), other.predict_proba(X))


def test_refit_forgets_the_previous_fit_and_a_failed_fit_leaves_nothing():
    X = numeric_sequences(32)
    model = SequenceClassifier(epochs=1, **FAST).fit(X, ["a", "b"] * 16)
    model.fit(X, [1, 2] * 16)
    assert model.classes_.tolist() == [1, 2]
    with pytest.raises(ValueError, match="argument `y`, expected at least 2 distinct labels"):
        model.fit(X, [1] * 32)
    assert not hasattr(model, "classes_")
    with pytest.raises(NotFittedError, match="not fitted yet: call fit before predict"):
        model.predict(X)


# Save and load


@pytest.mark.parametrize("name", ["regression", "classification", "tagging"])
def test_save_load_gives_identical_predictions(name, request, tmp_path):
    model, X, _ = request.getfixturevalue(name)
    directory = model.save(tmp_path / name)
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint.json", "model.safetensors"]
    loaded = type(model).load(directory)
    assert loaded.get_params() == model.get_params()
    assert loaded.history_ == model.history_
    assert loaded.inputs_ == model.inputs_
    predicted, expected = loaded.predict(X), model.predict(X)
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(predicted, expected)
    else:
        assert predicted == expected
    if hasattr(model, "predict_proba"):
        for a, b in zip(loaded.predict_proba(X), model.predict_proba(X), strict=True):
            np.testing.assert_array_equal(a, b)
        assert loaded.classes_.tolist() == model.classes_.tolist()
    # The directory is a plain checkpoint too: load_model rebuilds the torch model.
    assert load_model(directory).config == model.model_.config


def test_save_load_language_model(language_model, tmp_path):
    model, text = language_model
    loaded = CharLanguageModel.load(model.save(tmp_path / "lm"))
    assert loaded.vocabulary_ == model.vocabulary_
    assert loaded.generate("b", length=30, seed=1) == model.generate("b", length=30, seed=1)
    assert loaded.score(text[:50]) == model.score(text[:50])


def test_load_refuses_another_estimator_and_a_bare_model(classification, tmp_path):
    model, _, _ = classification
    directory = model.save(tmp_path / "classifier")
    with pytest.raises(CheckpointError, match="holds a SequenceClassifier, not a SequenceTagger"):
        SequenceTagger.load(directory)
    bare = save_model(tmp_path / "bare", build_model(ModelConfig(input_size=2)))
    with pytest.raises(CheckpointError, match="holds no estimator"):
        SequenceRegressor.load(bare)
    (directory / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        SequenceClassifier.load(directory)


# Parameters


def test_get_params_set_params_and_clone():
    model = SequenceClassifier(hidden_size=8, epochs=3)
    params = model.get_params()
    assert list(params)[:3] == ["hidden_size", "num_layers", "cell"]
    assert params["hidden_size"] == 8 and params["pooling"] == "mean" and params["lr"] == 3e-3
    assert params["patch_size"] == params["max_steps"] == params["scaling"] == "auto"
    assert model.set_params(lr=0.5, pooling="max") is model
    assert model.lr == 0.5 and model.get_params()["pooling"] == "max"
    clone = type(model)(**model.get_params())
    assert clone.get_params() == model.get_params()
    assert repr(model) == "SequenceClassifier(hidden_size=8, pooling='max', epochs=3, lr=0.5)"
    assert "pooling" not in SequenceTagger().get_params()
    assert CharLanguageModel().get_params()["seq_length"] == 64
    assert repr(SequenceRegressor()) == "SequenceRegressor()"
    with pytest.raises(ValueError, match="invalid parameter `hiden_size` for SequenceRegressor"):
        SequenceRegressor().set_params(hiden_size=3)


def test_constructors_only_store_and_fit_checks():
    model = SequenceRegressor(hidden_size=-1, epochs="many")  # no error yet
    assert model.hidden_size == -1
    with pytest.raises(ValueError, match="argument `epochs`, expected a positive integer"):
        model.fit(numeric_sequences(4), np.zeros(4))


def test_import_rnnkit_stays_light_and_exports_the_estimators():
    code = (
        "import sys, rnnkit\n"
        "assert 'pandas' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "assert 'rnnkit.toolkit' not in sys.modules\n"
        "print(rnnkit.SequenceTagger.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SequenceTagger"
    assert rnnkit.SequenceRegressor is SequenceRegressor
    assert rnnkit.CharLanguageModel is CharLanguageModel
    assert {"SequenceClassifier", "SequenceTagger"} <= set(dir(rnnkit)) & set(rnnkit.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'SequenceRegresor'"):
        rnnkit.SequenceRegresor  # noqa: B018


# Errors


@pytest.mark.parametrize(
    ("estimator", "call"),
    [
        (SequenceRegressor, lambda m: m.predict([[1.0]])),
        (SequenceRegressor, lambda m: m.score([[1.0]], [1.0])),
        (SequenceClassifier, lambda m: m.predict_proba([["a"]])),
        (SequenceTagger, lambda m: m.predict([["a"]])),
        (SequenceTagger, lambda m: m.save("never-written")),
        (CharLanguageModel, lambda m: m.generate("a", 3)),
        (CharLanguageModel, lambda m: m.score("abc")),
    ],
)
def test_use_before_fit(estimator, call):
    with pytest.raises(NotFittedError, match=f"This {estimator.__name__} instance is not fitted"):
        call(estimator())


X2 = [np.zeros((3, 2)), np.ones((2, 2))]  # two numeric sequences of 2 features


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        ([], [], "argument `X`, expected at least one sequence, got none"),
        (np.zeros((0, 3, 2)), [], r"argument `X`, expected at least one sequence, got shape \(0"),
        (np.zeros((2, 0, 2)), [1, 2], r"`X`, expected non-empty sequences, got shape \(2, 0, 2\)"),
        (np.zeros((4, 3)), [1] * 4, r"`X`, expected a 3-D array \(N, L, C\); for one feature per"),
        ("some text", [1], "`X`, expected a 3-D array .* got a str 'some text'"),
        ({"a": 1}, [1], "`X`, expected a 3-D array .* got dict"),
        ([np.zeros((3, 2)), np.zeros((0, 2))], [1, 2], r"non-empty sequences, got an empty one"),
        ([["a", "b"], []], [1, 2], r"non-empty sequences, got an empty one in X\[1\]"),
        ([["a", "b"], ["c", 5]], [1, 2], r"tokens of type str, got int 5 in X\[1\] at position 1"),
        ([["a", "b"], np.zeros(3)], [1, 2], r"a token list \(or a text\) in every element"),
        ([np.zeros((3, 2)), ["a"]], [1, 2], r"numeric sequences .* got list in X\[1\]"),
        ([*X2, np.zeros((3, 3))], [1, 2, 3], r"features .* \(2, as in X\[0\]\), got 3 in X\[2\]"),
        ([*X2, [[0, 1], [np.nan, 0]]], [1, 2, 3], r"got nan in X\[2\] at step 1, feature 0"),
        (torch.full((2, 3, 1), torch.inf), [1, 2], r"finite values, got inf in X\[0\] at step 0"),
        (X2, [1, 2, 3], "`X` and `y`, expected one target per sequence, got 2 sequences and 3"),
        (X2, "ab", r"`y`, expected a list or array with one entry per sequence, got str"),
        (X2, [1, 1], "`y`, expected at least 2 distinct labels, got 1: \\[1\\]"),
    ],
)
def test_classifier_fit_rejects_bad_X_and_y(X, y, match):
    with pytest.raises(ValueError, match=match):
        SequenceClassifier(**FAST).fit(X, y)


def test_labels_must_be_str_or_int():
    with pytest.raises(TypeError, match=r"`y`, expected labels of type str or int, got float 0.5"):
        SequenceClassifier(**FAST).fit(X2, [1, 0.5])
    with pytest.raises(TypeError, match=r"`y\[0\]`, expected labels of type str or int, got bool"):
        SequenceTagger(**FAST).fit([["a", "b"]], [[True, False]])


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (["a", "b"], r"argument `y`, expected numbers of shape \(N,\) or \(N, k\), got list"),
        (np.zeros((2, 1, 1)), r"`y`, expected numbers of shape .* got shape \(2, 1, 1\)"),
        ([1.0, np.nan], r"argument `y`, expected finite values, got nan at y\[1\]"),
        ([1.0], "arguments `X` and `y`, expected one target per sequence, got 2 sequences and 1"),
    ],
)
def test_regressor_fit_rejects_bad_y(y, match):
    with pytest.raises(ValueError, match=match):
        SequenceRegressor(**FAST).fit(X2, y)


def test_tagger_needs_one_tag_per_step():
    with pytest.raises(ValueError, match=r"one tag per step, got 3 steps in X\[1\] and 2 tags"):
        SequenceTagger(**FAST).fit([["a"], ["b", "c", "d"]], [["T"], ["T", "U"]])
    with pytest.raises(ValueError, match=r"argument `y\[0\]`, expected a list or array"):
        SequenceTagger(**FAST).fit([["a", "b"]], ["TU"])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"hidden_size": 0}, "argument `hidden_size`, expected a positive integer, got 0"),
        ({"epochs": 0}, "argument `epochs`, expected a positive integer, got 0"),
        ({"lr": -1.0}, "argument `lr`, expected a positive number, got -1.0"),
        ({"verbose": "yes"}, "argument `verbose`, expected a bool or None, got 'yes'"),
        ({"min_freq": 0}, "argument `min_freq`, expected a positive integer, got 0"),
        ({"pooling": "sum"}, r"argument `pooling`, expected one of \('last', 'mean', 'max'\)"),
        ({"nonlinearity": "gelu"}, "argument `nonlinearity`, expected one of"),
        ({"device": "gpu"}, "argument `device`, expected 'auto', 'cpu', 'cuda'"),
        ({"embedding_dim": 4}, "argument `embedding_dim`, expected None for real-valued input"),
    ],
)
def test_fit_names_a_bad_hyper_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        SequenceRegressor(**{**FAST, **params}).fit(X2, [1.0, 2.0])


def test_validation_data_is_checked():
    X, y = keyword_texts(8)
    with pytest.raises(ValueError, match=r"`validation_data`, expected None or a pair \(X_val"):
        SequenceClassifier(**FAST).fit(X, y, validation_data=[X])
    with pytest.raises(ValueError, match=r"`validation_data\[0\]` and `validation_data\[1\]`, exp"):
        SequenceClassifier(**FAST).fit(X, y, validation_data=(X, y[:-1]))
    with pytest.raises(ValueError, match="Received an unknown label, expected one of"):
        SequenceClassifier(**FAST).fit(X, y, validation_data=(X[:1], ["maybe"]))


def test_predict_checks_X_against_fit(regression, classification, tagging):
    regressor, X, y = regression
    with pytest.raises(ValueError, match=r"`X`, expected 1 features per step \(as in fit\), got 2"):
        regressor.predict([np.zeros((3, 2))])
    with pytest.raises(
        ValueError, match=r"`X`, expected numeric sequences \(as in fit\), got token sequences"
    ):
        regressor.predict([["a", "b"]])
    with pytest.raises(ValueError, match=r"expected finite values, got nan in X\[0\] at step 2"):
        regressor.predict([np.array([1.0, 2.0, np.nan])])
    with pytest.raises(ValueError, match="one target per sequence, got 192 sequences and 1"):
        regressor.score(X, y[:1])
    with pytest.raises(ValueError, match=r"`y`, expected 1 values per sequence \(as in fit\), got"):
        regressor.score(X, np.zeros((len(X), 2)))
    classifier = classification[0]
    with pytest.raises(
        ValueError, match=r"`X`, expected token sequences \(as in fit\), got numeric"
    ):
        classifier.predict(np.zeros((1, 3, 1)))
    with pytest.raises(ValueError, match="argument `X`, expected at least one sequence, got none"):
        classifier.predict_proba([])
    with pytest.raises(ValueError, match="one tag per step, got 2 steps"):
        tagging[0].score([["1", "a"]], [["NUM"]])


def test_a_loaded_estimator_predicts_on_its_device_parameter(classification, tmp_path):
    model, X, _ = classification
    loaded = SequenceClassifier.load(model.save(tmp_path / "classifier"))
    assert next(loaded.model_.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        loaded.set_params(device="cuda")
        with pytest.raises(ValueError, match="`device`, expected a device this machine has"):
            loaded.predict(X[:2])
    loaded.set_params(device="cpu")
    np.testing.assert_array_equal(loaded.predict(X[:2]), model.predict(X[:2]))


def test_language_model_errors(language_model):
    model, _ = language_model
    with pytest.raises(ValueError, match=r"`bidirectional`, expected False .* sees the future"):
        CharLanguageModel(bidirectional=True, **FAST).fit("abcabc")
    with pytest.raises(ValueError, match=r"argument `y`, expected None \(a language model's"):
        CharLanguageModel(**FAST).fit("abcabc", ["x"])
    with pytest.raises(ValueError, match=r"at least 2 characters, got lengths \[1, 0\]"):
        CharLanguageModel(**FAST).fit(["a", ""])
    with pytest.raises(ValueError, match="`X`, expected a str or a non-empty list of str, got an"):
        CharLanguageModel(**FAST).fit([])
    with pytest.raises(ValueError, match=r"expected a str or a list of str, got int at X\[1\]"):
        CharLanguageModel(**FAST).fit(["ab", 3])
    with pytest.raises(ValueError, match="`seq_length`, expected a positive integer, got 0"):
        CharLanguageModel(seq_length=0, **FAST).fit("abcabc")
    with pytest.raises(ValueError, match="argument `prompt`, expected a non-empty str, got ''"):
        model.generate("", 5)
    with pytest.raises(ValueError, match="argument `length`, expected an integer >= 0, got -1"):
        model.generate("a", -1)
    with pytest.raises(ValueError, match="argument `temperature`, expected a positive finite"):
        model.generate("a", 3, temperature=0)
    with pytest.raises(ValueError, match=r"`X`, expected non-empty prompts, got an empty one at X"):
        model.predict(["a", ""])
    with pytest.raises(ValueError, match="`X`, expected a text of at least 2 characters"):
        model.score("a")
