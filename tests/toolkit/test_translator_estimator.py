"""SequenceTranslator: fit / predict / score / save / load on a toy language pair."""

from __future__ import annotations

import pytest

from rnnkit import SequenceTranslator
from rnnkit.toolkit.checkpoint import CheckpointError

LEXICON = {"ein": "a", "hund": "dog", "katze": "cat", "läuft": "runs", "schläft": "sleeps",
           "rot": "red", "groß": "big", "mann": "man", "sieht": "sees", "das": "the"}  # fmt: skip


def toy_pairs(count: int = 400) -> tuple[list[str], list[str]]:
    """Word-for-word translations: a model must learn the lexicon and keep the order."""
    words = list(LEXICON)
    sources, targets = [], []
    for i in range(count):
        chosen = [words[(i * 7 + k * 3 + i // 10) % len(words)] for k in range(2 + i % 4)]
        sources.append(" ".join(chosen) + ".")
        targets.append(" ".join(LEXICON[w] for w in chosen) + ".")
    return sources, targets


@pytest.fixture(scope="module")
def fitted() -> SequenceTranslator:
    X, y = toy_pairs()
    return SequenceTranslator(hidden_size=32, epochs=15, batch_size=32, lr=1e-2,
                              verbose=False).fit(X, y)  # fmt: skip


def test_learns_a_toy_lexicon_exactly(fitted):
    X, y = toy_pairs()
    assert fitted.history_[-1]["val_accuracy"] == 1.0
    assert fitted.predict(X[:20]) == y[:20]
    assert fitted.score(X[:50], y[:50]) == pytest.approx(100.0)


def test_greedy_and_beam_agree_on_what_it_learned_exactly(fitted):
    X, _ = toy_pairs()
    greedy = fitted.set_params(beam_size=1).predict(X[:20])
    fitted.set_params(beam_size=5)
    assert greedy == fitted.predict(X[:20])


def test_save_and_load_translate_the_same(fitted, tmp_path):
    X, _ = toy_pairs()
    fitted.save(tmp_path / "model")
    loaded = SequenceTranslator.load(tmp_path / "model")
    assert loaded.predict(X[:10]) == fitted.predict(X[:10])
    assert loaded.get_params() == fitted.get_params()


def test_load_refuses_another_estimator(tmp_path):
    from rnnkit import CharLanguageModel

    CharLanguageModel(epochs=1, hidden_size=4, verbose=False).fit("abcabc" * 20).save(tmp_path)
    with pytest.raises(CheckpointError, match="holds a CharLanguageModel, not a Sequence"):
        SequenceTranslator.load(tmp_path)


@pytest.mark.parametrize(
    ("X", "y", "params", "message"),
    [
        (["a b."], ["x y.", "z."], {}, r"argument `y`, expected one translation per sentence"),
        ("ein hund.", ["a dog."], {}, r"argument `X`, expected a non-empty list of sentences"),
        (["ein hund.", " "], ["a dog.", "x."], {}, r"argument `X`, expected non-empty sentences"),
        (["a."], ["b."], {"validation_fraction": 1.0}, r"argument `validation_fraction`"),
        (["a."], ["b."], {"vocab_size": 3}, r"argument `vocab_size`"),
        (["a."], ["b."], {"beam_size": 0}, r"argument `beam_size`"),
        (["a."], ["b."], {"attention": "dot"}, r"argument `attention`"),
    ],
)
def test_bad_arguments_name_themselves(X, y, params, message):
    with pytest.raises(ValueError, match=message):
        SequenceTranslator(epochs=1, hidden_size=4, verbose=False, **params).fit(X, y)


def test_predict_before_fit_is_refused():
    from rnnkit.toolkit.estimators import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet: call fit before predict"):
        SequenceTranslator().predict(["ein hund."])
