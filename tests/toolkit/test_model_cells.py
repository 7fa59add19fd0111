"""``model.cell``: every task and estimator trains, saves and reloads with rnn, lstm and gru;
an LSTM's (h, c) state is carried through generation and scoring; checkpoints written
before the field existed read as "rnn"; bad cells and relu on a gated cell are refused."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sample_reviews import write_reviews

import rnnkit
from rnnkit import CharLanguageModel, SequenceClassifier, SequenceRegressor, SequenceTagger
from rnnkit.cli import main
from rnnkit.toolkit import rundir
from rnnkit.toolkit.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from rnnkit.toolkit.config import ConfigError, load_config
from rnnkit.toolkit.estimators import language_model
from rnnkit.toolkit.models import LanguageModel, ModelConfig, RecurrentEncoder, build_model
from rnnkit.toolkit.tasks import get_task, read_transform

LAYERS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}
TASKS = ("forecast", "classify", "classify-series", "tag", "language-model")
SMALL = (
    '[model]\nhidden_size = 8\n[train]\nepochs = 1\nbatch_size = 16\nlr = 0.01\ndevice = "cpu"\n'
)


def write_prices(path: Path, rows: int = 80) -> None:
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, rows)))
    lines = ["Date,Open,High,Low,Close"]
    for day, c in zip(np.datetime64("2020-01-01") + np.arange(rows), close, strict=True):
        lines.append(f"{day},{c:.2f},{c * 1.01:.2f},{c * 0.99:.2f},{c:.2f}")
    path.write_text("\n".join(lines) + "\n")


def write_ts(path: Path, count: int, seed: int) -> None:
    """Rising and falling two-channel series of 4-8 steps, in aeon's .ts format."""
    rng = np.random.default_rng(seed)
    header = ["@problemName Slopes", "@timeStamps false", "@missing false",
              "@univariate false", "@dimensions 2", "@equalLength false",
              "@classLabel true down up", "@data"]  # fmt: skip
    lines = []
    for i in range(count):
        label = ("down", "up")[i % 2]
        t = np.linspace(0, 1, int(rng.integers(4, 9))) * (1 if label == "up" else -1)
        lines.append(f"{','.join(f'{v:.3f}' for v in t)}:{','.join(f'{v:.3f}' for v in -t)}:"
                     f"{label}")  # fmt: skip
    path.write_text("\n".join(header + lines) + "\n")


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    """A config per task on files of a few dozen examples, trained for one epoch."""
    root = tmp_path_factory.mktemp("cells")
    write_prices(root / "prices.csv")
    write_reviews(root, train=40, dev=10, test=10)
    words = [("the", "DET"), ("dog", "NOUN"), ("runs", "VERB"), ("a", "DET"), ("cat", "NOUN")]
    sentences = []
    for i in range(30):
        picked = words[(i % 2) * 3 : (i % 2) * 3 + 3] if i % 2 == 0 else words[3:] + words[2:3]
        rows = [f"{j}\t{w}\t{w}\t{t}\t_\t_\t0\t_\t_\t_" for j, (w, t) in enumerate(picked, 1)]
        sentences.append("\n".join(rows) + "\n")
    (root / "tiny.conllu").write_text("\n".join(sentences))
    (root / "tiny.txt").write_text("the cat sat on the mat. the dog sat on the log.\n" * 12)
    for split, count in (("train", 24), ("val", 6), ("test", 6)):
        write_ts(root / f"{split}.ts", count, seed=len(split))
    sections = {
        "forecast": f'[data]\npath = "{root / "prices.csv"}"\nlookback = 10\n',
        "classify": f'task = "classify"\n[data]\npath = "{root / "reviews.train"}"\n'
        f'val_path = "{root / "reviews.dev"}"\ntest_path = "{root / "reviews.test"}"\n',
        "classify-series": f'task = "classify-series"\n[data]\npath = "{root / "train.ts"}"\n'
        f'val_path = "{root / "val.ts"}"\ntest_path = "{root / "test.ts"}"\n',
        "tag": f'task = "tag"\n[data]\npath = "{root / "tiny.conllu"}"\nval_fraction = 0.2\n'
        "test_fraction = 0.2\n",
        "language-model": f'task = "language-model"\n[data]\npath = "{root / "tiny.txt"}"\n'
        "lookback = 20\nval_fraction = 0.1\ntest_fraction = 0.1\n",
    }
    paths = {}
    for task, text in sections.items():
        paths[task] = root / f"{task}.toml"
        paths[task].write_text(text + SMALL)
    return paths


def reload_run(run: Path):
    """What ``rnnkit evaluate`` loads: the run's config, task, transform and saved model."""
    config = load_config(run / rundir.CONFIG_FILE)
    task = get_task(config.task)
    transform_path = run / rundir.TRANSFORM_FILE
    transform, baseline = read_transform(task, rundir.read_json(transform_path), transform_path)
    return config, task, transform, baseline, load_model(run / rundir.MODEL_DIR)


# ----------------------------------------------------------------------------- rnnkit train


@pytest.mark.parametrize("cell", LAYERS)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_and_reloads_with_every_cell(task, cell, configs, tmp_path, capsys):
    if task == "classify-series":
        pytest.importorskip("aeon")
    run = tmp_path / "run"
    code = main(["train", str(configs[task]), "--out", str(run), "--set", f"model.cell={cell}"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    layer = LAYERS[cell].__name__
    assert f"rnnkit.{layer} encoder (" in stdout
    assert f"  {layer} h_n " in stdout and (f"  {layer} c_n " in stdout) == (cell == "lstm")
    document = json.loads((run / rundir.MODEL_DIR / "checkpoint.json").read_text())
    assert document["model_config"]["cell"] == cell
    config, task_, transform, baseline, model = reload_run(run)
    assert config.model.cell == cell
    assert type(model.encoder.rnn) is LAYERS[cell]
    # The reloaded model scores the test split exactly as the run did before saving.
    scores, _ = task_.score(model, task_.prepare(config).test, transform, baseline)
    results = json.loads((run / rundir.RESULTS_FILE).read_text())
    assert json.loads(json.dumps(scores)) == results["test"]
    if task == "language-model":
        argv = ["generate", str(run), "--prompt", "the ", "--length", "12", "--seed", "1"]
        texts = [(main(argv), capsys.readouterr().out) for _ in range(2)]
        assert texts[0] == texts[1] and texts[0][0] == 0 and len(texts[0][1]) == 4 + 12 + 1


def test_an_old_run_without_cell_evaluates_and_resumes_as_rnn(configs, tmp_path, capsys):
    """A run written before model.cell: config.toml and every checkpoint.json without it."""
    run = tmp_path / "run"
    assert main(["train", str(configs["forecast"]), "--out", str(run)]) == 0
    config_file = run / rundir.CONFIG_FILE
    lines = config_file.read_text().splitlines(keepends=True)
    config_file.write_text("".join(line for line in lines if not line.startswith("cell =")))
    assert not re.search(r"^cell\b", config_file.read_text(), re.MULTILINE) and len(lines) > 10
    for document in run.rglob("checkpoint.json"):
        strip_cell(document.parent)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    code = main(["train", "--out", str(run), "--resume", "--set", "train.epochs=2"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "rnnkit.RNN encoder (tanh, " in stdout and "epoch 2/2" in stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.cell=lstmm"], "`model.cell`, expected one of 'rnn', 'lstm', 'gru', got 'lstmm'"),
        (["model.cell=lstm", "model.nonlinearity=relu"],
         "`model.nonlinearity`, expected \"tanh\" with model.cell = 'lstm'"),
    ],
)  # fmt: skip
def test_a_bad_cell_is_one_line_naming_the_key(overrides, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^--set: invalid value for key ") as caught:
        load_config(overrides=overrides)
    assert message in str(caught.value)
    argv = ["train", "--out", str(tmp_path / "run")] + [f"--set={o}" for o in overrides]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: --set: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_the_defaults_stay_rnn():
    assert load_config().model.cell == "rnn" and ModelConfig(input_size=1).cell == "rnn"
    assert SequenceClassifier().cell == CharLanguageModel().cell == "rnn"


# ----------------------------------------------------------------------------- estimators


def numeric_series(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(int(rng.integers(3, 7)), 2)).astype(np.float32) for _ in range(count)]


def fit_estimator(kind: str, cell: str):
    common = {"cell": cell, "hidden_size": 8, "epochs": 1, "device": "cpu", "verbose": False}
    X = numeric_series(24)
    if kind == "regressor":
        estimator = SequenceRegressor(**common, ensemble_size=1)
        return estimator.fit(X, [float(x.sum()) for x in X]), X
    if kind == "classifier":
        estimator = SequenceClassifier(**common, ensemble_size=1)
        return estimator.fit(X, [int(x[0, 0] > 0) for x in X]), X
    if kind == "tagger":
        words = [["the", "dog", "runs"], ["a", "cat", "sleeps", "here"]] * 6
        tags = [["DET", "NOUN", "VERB"], ["DET", "NOUN", "VERB", "ADV"]] * 6
        return SequenceTagger(**common).fit(words, tags), words
    return CharLanguageModel(**common, seq_length=16).fit("abcab cabca " * 20), ["abc ab", "ca"]


@pytest.mark.parametrize("cell", LAYERS)
@pytest.mark.parametrize("kind", ["regressor", "classifier", "tagger", "language_model"])
def test_every_estimator_fits_saves_and_reloads_with_every_cell(kind, cell, tmp_path):
    estimator, X = fit_estimator(kind, cell)
    assert type(estimator.model_.encoder.rnn) is LAYERS[cell]
    assert estimator.model_.config.cell == cell and estimator.get_params()["cell"] == cell
    loaded = type(estimator).load(estimator.save(tmp_path / "saved"))
    assert loaded.cell == cell and type(loaded.model_.encoder.rnn) is LAYERS[cell]
    if kind == "language_model":
        assert loaded.score(X) == estimator.score(X)
        assert loaded.generate("ab", 10, seed=0) == estimator.generate("ab", 10, seed=0)
    elif kind == "tagger":
        assert loaded.predict(X) == estimator.predict(X)
    else:
        np.testing.assert_array_equal(loaded.predict(X), estimator.predict(X))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_relu_with_a_gated_cell_is_refused_naming_both(cell):
    expected = (
        f"^Received an invalid value for argument `nonlinearity`, expected 'tanh' with "
        f"cell='{cell}' \\(only the 'rnn' cell has a choice\\), got 'relu'$"
    )
    with pytest.raises(ValueError, match=expected):
        ModelConfig(input_size=3, cell=cell, nonlinearity="relu")
    with pytest.raises(ValueError, match=expected):
        RecurrentEncoder(8, input_size=3, cell=cell, nonlinearity="relu")
    with pytest.raises(ValueError, match=expected):
        SequenceTagger(cell=cell, nonlinearity="relu", epochs=1).fit([["a", "b"]], [["X", "Y"]])
    ModelConfig(input_size=3, cell="rnn", nonlinearity="relu")  # the Elman cell's choice


def test_an_unknown_cell_is_refused_naming_the_choices():
    expected = (
        "Received an invalid value for argument `cell`, expected one of ('rnn', 'lstm', 'gru')"
    )
    for bad in ("LSTM", "transformer", None):
        with pytest.raises(
            ValueError, match=f"^{re.escape(expected)}, got {re.escape(repr(bad))}$"
        ):
            ModelConfig(input_size=3, cell=bad)
    with pytest.raises(ValueError, match=re.escape(expected)):
        SequenceClassifier(cell="lstmm", epochs=1).fit([np.ones((2, 1))] * 4, [0, 1] * 2)


# ----------------------------------------------------------------------------- LSTM state


def test_generation_carries_the_lstm_cell_state():
    """Sampling one token at a time with the carried (h, c) gives what reading the whole
    prefix again gives at every step; with c reset to zeros it would not."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(task="language_model", vocab_size=12, hidden_size=16,
                                      num_layers=2, cell="lstm")).eval()  # fmt: skip
    prompt = [3, 5, 7]
    generated = model.generate(prompt, length=15, top_k=1)
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(15):
            logits = model(torch.tensor([tokens]))[0, -1]  # (vocab_size,)
            logits[0] = -float("inf")  # padding is never generated
            tokens.append(int(logits.argmax()))
    assert generated == tokens[len(prompt) :]
    encoded = model.encoder(torch.tensor([prompt]))
    assert encoded.state == (encoded.h_n, encoded.c_n) and encoded.c_n.shape == (2, 1, 16)
    without_c = model.encoder(torch.tensor([[9]]), hx=(encoded.h_n, torch.zeros_like(encoded.c_n)))
    carried = model.encoder(torch.tensor([[9]]), hx=encoded.state)
    assert not torch.allclose(without_c.output, carried.output)


def test_scoring_in_segments_carries_the_lstm_state(monkeypatch):
    lm = CharLanguageModel(cell="lstm", hidden_size=8, epochs=1, seq_length=16, verbose=False,
                           device="cpu").fit("abcab cabca " * 20)  # fmt: skip
    text = "abc cab bca " * 5
    whole = lm.score(text)
    monkeypatch.setattr(language_model, "SCORE_SEGMENT", 7)
    assert lm.score(text) == pytest.approx(whole, rel=1e-6, abs=0)


# ----------------------------------------------------------------------------- old checkpoints


def strip_cell(directory: Path) -> None:
    """Rewrite a checkpoint as this library wrote it before model_config had a cell."""
    old = load_checkpoint(directory)
    config = {k: v for k, v in old.model_config.items() if k != "cell"}
    trainer_state = copy.deepcopy(old.trainer_state)
    trainer_state.get("estimator", {}).get("params", {}).pop("cell", None)
    save_checkpoint(
        directory, model_state=old.model_state, model_config=config, epoch=old.epoch,
        optimizer_state=old.optimizer_state, scheduler_state=old.scheduler_state,
        trainer_state=trainer_state, best_model_state=old.best_model_state,
    )  # fmt: skip


def test_a_checkpoint_without_cell_loads_as_rnn(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="classification", vocab_size=9, num_outputs=3,
                                    hidden_size=8, nonlinearity="relu")).eval()  # fmt: skip
    save_model(tmp_path / "model", model)
    strip_cell(tmp_path / "model")
    assert "cell" not in load_checkpoint(tmp_path / "model").model_config
    loaded = load_model(tmp_path / "model").eval()
    assert loaded.config == model.config and loaded.config.cell == "rnn"
    assert type(loaded.encoder.rnn) is rnnkit.RNN and loaded.encoder.rnn.nonlinearity == "relu"
    tokens = torch.randint(1, 9, (4, 6))
    assert torch.equal(loaded(tokens), model(tokens))


def test_an_estimator_saved_without_cell_loads_as_rnn(tmp_path):
    estimator, X = fit_estimator("classifier", "rnn")
    strip_cell(estimator.save(tmp_path / "saved"))
    loaded = SequenceClassifier.load(tmp_path / "saved")
    assert loaded.cell == "rnn" and type(loaded.model_.encoder.rnn) is rnnkit.RNN
    np.testing.assert_array_equal(loaded.predict_proba(X), estimator.predict_proba(X))


@pytest.mark.parametrize(("saved", "claimed"), [("rnn", "lstm"), ("lstm", "gru"), ("gru", 3)])
def test_a_cell_that_does_not_fit_the_weights_is_one_line(saved, claimed, tmp_path):
    """An edited cell is refused like any other field: by the weights, before allocating."""
    config = ModelConfig(input_size=2, hidden_size=4, cell=saved)
    save_checkpoint(tmp_path / "model", model_state=build_model(config).state_dict(),
                    model_config=dataclasses.asdict(config) | {"cell": claimed})  # fmt: skip
    with pytest.raises(Exception, match=r"checkpoint.json") as caught:
        load_model(tmp_path / "model")
    assert type(caught.value).__name__ == "CheckpointError" and "\n" not in str(caught.value)
