"""``rnnkit explain`` and :mod:`rnnkit.toolkit.explain`: the gradient through time against a
hand-written backward pass, the hidden states' shapes, the two plots, and the command on tiny
runs of four tasks (trained here, one epoch each)."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit.cli import main
from rnnkit.toolkit import explain, plots
from rnnkit.toolkit.data import collate_classification, collate_tagging
from rnnkit.toolkit.metrics import loss_for_task
from rnnkit.toolkit.models import ModelConfig, build_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS, FEATURES, UNITS = 6, 3, 4


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert 100 < width < 5000 and 100 < height < 5000


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, contains: str, status: int = 1) -> None:
    assert code == status, err
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and contains in err, err


# ----------------------------------------------------------------------------- the oracle


def elman_tagger(bidirectional: bool = False) -> nn.Module:
    """A float64 Elman tagger, 3 features -> 4 units -> 3 tags, seeded."""
    torch.manual_seed(0)
    config = ModelConfig(task="tagging", input_size=FEATURES, hidden_size=UNITS, num_outputs=3,
                         bidirectional=bidirectional)  # fmt: skip
    model = build_model(config).double()
    with torch.no_grad():
        for parameter in model.parameters():  # large enough that the recurrence matters
            parameter.uniform_(-0.9, 0.9)
    return model


def hand_written_norms(model: nn.Module, x: torch.Tensor, tags: torch.Tensor) -> dict:
    """||dL/dh_t|| by autograd on the Elman recurrence written out, per direction, and the
    direct path alone (the head's derivative by each h_t, the recurrence cut)."""
    rnn = model.encoder.rnn
    directions = ("forward", "backward")[: 2 if rnn.bidirectional else 1]
    hs: dict[str, list[torch.Tensor]] = {}
    for d, name in enumerate(directions):
        suffix = "_reverse" if d else ""
        w_ih, w_hh = getattr(rnn, f"weight_ih_l0{suffix}"), getattr(rnn, f"weight_hh_l0{suffix}")
        b = getattr(rnn, f"bias_ih_l0{suffix}") + getattr(rnn, f"bias_hh_l0{suffix}")
        h = torch.zeros(1, UNITS, dtype=torch.float64)
        states = [None] * STEPS
        for t in reversed(range(STEPS)) if d else range(STEPS):
            h = torch.tanh(x[:, t] @ w_ih.T + h @ w_hh.T + b)  # h_t = tanh(x_t W_ih^T + ...)
            h.retain_grad()
            states[t] = h
        hs[name] = states
    features = torch.cat([torch.stack(hs[name], dim=1) for name in directions], dim=-1)
    logits = model.head.linear(features)  # (1, steps, tags)
    nn.functional.cross_entropy(logits[0], tags[0]).backward()
    total = {
        name: torch.tensor([float(h.grad.norm()) for h in hs[name]], dtype=torch.float64)
        for name in directions
    }
    cut = features.detach().requires_grad_(True)  # no path from one step to the next
    nn.functional.cross_entropy(model.head.linear(cut)[0], tags[0]).backward()
    direct = {
        name: cut.grad[0, :, d * UNITS : (d + 1) * UNITS].norm(dim=-1)
        for d, name in enumerate(directions)
    }
    return {"total": total, "direct": direct}


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradient_norms_equal_the_hand_written_recurrence(bidirectional):
    model = elman_tagger(bidirectional)
    x = torch.randn(
        1, STEPS, FEATURES, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    tags = torch.tensor([[0, 2, 1, 1, 0, 2]])
    norms = explain.gradient_through_time(model, (x, tags), loss_for_task("tagging"))
    assert all(p.grad is None for p in model.parameters())  # explain touched no .grad
    expected = hand_written_norms(model, x, tags)
    assert list(norms) == list(expected["total"])
    for name, values in norms.items():
        assert values.shape == (STEPS,)
        torch.testing.assert_close(values, expected["total"][name], rtol=1e-9, atol=1e-12)
        # The oracle tells the total derivative from the head's direct path alone.
        assert not torch.allclose(values, expected["direct"][name].double(), rtol=1e-3)


def test_a_many_to_one_gradient_reaches_the_first_step_through_the_recurrence():
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_size=FEATURES, hidden_size=UNITS))
    x = torch.randn(1, STEPS, FEATURES)
    norms = explain.gradient_through_time(model, (x, torch.ones(1, 1)), loss_for_task("regression"))
    forward = norms["forward"]
    # The head reads only the last state: the direct path alone would be zero at every other.
    assert (forward > 0).all() and forward.shape == (STEPS,)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_cells_two_layers_both_directions_match_torch_cells(cell):
    torch.manual_seed(0)
    config = ModelConfig(task="tagging", input_size=FEATURES, hidden_size=UNITS, num_outputs=3,
                         cell=cell, num_layers=2, bidirectional=True)  # fmt: skip
    model = build_model(config).double()
    x = torch.randn(1, STEPS, FEATURES, dtype=torch.float64)
    tags = torch.tensor([[0, 2, 1, 1, 0, 2]])
    norms = explain.gradient_through_time(model, (x, tags), loss_for_task("tagging"))

    layer_input, top = x, {}
    for layer in range(2):
        outputs = []
        for d, name in enumerate(("forward", "backward")):
            suffix = "_reverse" if d else ""
            step = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(layer_input.size(-1), UNITS)
            step = step.double()
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                setattr(step, kind, getattr(model.encoder.rnn, f"{kind}_l{layer}{suffix}"))
            h = c = torch.zeros(1, UNITS, dtype=torch.float64)
            states = [None] * STEPS
            for t in reversed(range(STEPS)) if d else range(STEPS):
                h, c = (
                    step(layer_input[:, t], (h, c))
                    if cell == "lstm"
                    else (step(layer_input[:, t], h), c)
                )
                h.retain_grad()
                states[t] = h
            outputs.append(torch.stack(states, dim=1))
            top[name] = states
        layer_input = torch.cat(outputs, dim=-1)  # (1, steps, 2 * units)
    loss = nn.functional.cross_entropy(model.head.linear(layer_input)[0], tags[0])
    loss.backward()
    for name in ("forward", "backward"):
        expected = torch.tensor([float(h.grad.norm()) for h in top[name]], dtype=torch.float64)
        torch.testing.assert_close(norms[name], expected, rtol=1e-9, atol=1e-12)


def test_hidden_states_per_direction_from_a_packed_batch():
    torch.manual_seed(0)
    config = ModelConfig(task="tagging", vocab_size=10, hidden_size=UNITS, num_outputs=3,
                         bidirectional=True)  # fmt: skip
    model = build_model(config)
    batch = collate_tagging([([4, 5, 6, 7, 8], [0, 1, 2, 0, 1])])  # packed, one sentence
    states = explain.hidden_states(model, batch)
    assert list(states) == ["forward", "backward"]
    assert all(s.shape == (5, UNITS) for s in states.values())
    output = model.encoder(torch.tensor([[4, 5, 6, 7, 8]])).output[0].detach()  # (5, 2 * units)
    torch.testing.assert_close(torch.cat([states["forward"], states["backward"]], -1), output)
    one_way = build_model(ModelConfig(task="classification", vocab_size=10, hidden_size=UNITS,
                                      num_outputs=2))  # fmt: skip
    states = explain.hidden_states(one_way, collate_classification([([4, 5, 6], 1)]))
    assert list(states) == ["forward"] and states["forward"].shape == (3, UNITS)
    # The gradient reads the packed batch too, and its target.
    norms = explain.gradient_through_time(one_way, collate_classification([([4, 5, 6], 1)]),
                                          loss_for_task("classification"))  # fmt: skip
    assert norms["forward"].shape == (3,)


def test_bad_arguments_are_value_errors():
    model = elman_tagger()
    two = (torch.randn(2, STEPS, FEATURES, dtype=torch.float64), torch.zeros(2, STEPS).long())
    with pytest.raises(ValueError, match="expected one example, got a batch of 2"):
        explain.hidden_states(model, two)
    with pytest.raises(ValueError, match="argument `batch`, expected a collated batch"):
        explain.gradient_through_time(model, torch.zeros(1, 3), loss_for_task("tagging"))
    with pytest.raises(ValueError, match="ManyToOneModel, TaggingModel or LanguageModel"):
        explain.gradient_through_time(nn.Linear(2, 2), two, loss_for_task("tagging"))
    with pytest.raises(ValueError, match="returns a scalar, got one of shape"):
        one = (two[0][:1], two[1][:1])
        explain.gradient_through_time(model, one, lambda out, _: out.sum(-1))


# ----------------------------------------------------------------------------- plots


def test_hidden_states_plot_two_directions_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    states = {name: np.tanh(rng.normal(size=(7, UNITS))) for name in ("forward", "backward")}
    tokens = ["the", "dog", " ", "runs", "<unk>", ".", "␣"]
    figure = plots._hidden_states_figure(list(states.items()), tokens, None, None, "t")
    heatmaps = [axes for axes in figure.axes if axes.images]
    assert len(heatmaps) == 2
    assert [axes.get_title() for axes in heatmaps] == [
        "forward direction", "backward direction (reads right to left)"
    ]  # fmt: skip
    assert [t.get_text() for t in heatmaps[0].get_xticklabels()] == tokens
    assert_png(plots.plot_hidden_states(states, tmp_path / "h.png", inputs=tokens))
    series = rng.normal(size=(7, 2))
    assert_png(plots.plot_hidden_states(states["forward"], tmp_path / "s.png", inputs=series,
                                        feature_names=["Open", "Close"]))  # fmt: skip
    with pytest.raises(ValueError, match=r"expected 7 tokens \(one per step of `states`\), got 2"):
        plots.plot_hidden_states(states, tmp_path / "x.png", inputs=["a", "b"])
    with pytest.raises(ValueError, match="`feature_names`, expected 2 names"):
        plots.plot_hidden_states(states, tmp_path / "x.png", inputs=series, feature_names=["a"])
    with pytest.raises(ValueError, match="expected every direction of one shape"):
        plots.plot_hidden_states({"forward": np.zeros((7, 4)), "backward": np.zeros((6, 4))},
                                 tmp_path / "x.png")  # fmt: skip
    assert not (tmp_path / "x.png").exists()


def test_gradient_norms_plot(tmp_path):
    curves = [np.geomspace(1e-6, 1, 12), np.geomspace(1e-2, 1, 12), np.r_[0.0, np.ones(11)]]
    path = plots.plot_gradient_norms(curves, tmp_path / "g.png", labels=["RNN", "GRU", "LSTM"])
    assert_png(path)
    assert_png(plots.plot_gradient_norms({"forward": curves[0]}, tmp_path / "one.png"))
    with pytest.raises(ValueError, match=r"expected 3 strings \(one per curve\), got"):
        plots.plot_gradient_norms(curves, tmp_path / "x.png", labels=["RNN"])
    with pytest.raises(ValueError, match="at least one positive norm"):
        plots.plot_gradient_norms(np.zeros(5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="finite non-negative norms"):
        plots.plot_gradient_norms([1.0, -1.0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- the command

TINY = ["--set", "model.hidden_size=6", "--set", "train.epochs=1", "--set", "train.batch_size=32",
        "--set", "train.lr=0.01", "--set", "train.device=cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, rows in (("prices.csv", 90), ("other.csv", 30)):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
        with (root / name).open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["", "Open", "Close"])
            for date, c in zip(np.datetime64("2020-01-01") + np.arange(rows), close, strict=True):
                writer.writerow([date, f"{c * 1.001:.2f}", f"{c:.2f}"])
    lexicon = [("the", "DET"), ("a", "DET"), ("dog", "NOUN"), ("cat", "NOUN"), ("runs", "VERB"),
               ("sleeps", "VERB")]  # fmt: skip
    sentences = []
    for i in range(30):
        words = [lexicon[i % 2], lexicon[2 + i % 2], lexicon[4 + (i // 2) % 2]]
        rows = [f"{j}\t{w}\t{w}\t{tag}\t_\t_\t0\t_\t_\t_" for j, (w, tag) in enumerate(words, 1)]
        sentences.append(f"# sent_id = {i}\n" + "\n".join(rows) + "\n")
    (root / "tiny.conllu").write_text("\n".join(sentences))
    (root / "tiny.txt").write_text("the cat sat on the mat. the dog sat on the log.\n" * 12)
    words = {"ein": "a", "hund": "dog", "katze": "cat", "läuft": "runs", "schläft": "sleeps"}
    german = list(words)
    pairs = []
    for i in range(60):
        chosen = [german[(i * 3 + k) % len(german)] for k in range(2 + i % 3)]
        pairs.append(f"{' '.join(chosen)}.\t{' '.join(words[w] for w in chosen)}.\n")
    (root / "pairs.tsv").write_text("".join(pairs))
    return root


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run per task: forecast, a bidirectional tagger, a language model, a
    translation."""
    root = tmp_path_factory.mktemp("runs")
    settings = {
        "forecast": [f"data.path={files / 'prices.csv'}", "data.lookback=8",
                     'data.features=["Open", "Close"]'],
        "tag": ["task=tag", f"data.path={files / 'tiny.conllu'}", "data.val_fraction=0.2",
                "data.test_fraction=0.2", "model.bidirectional=true"],
        "language-model": ["task=language-model", f"data.path={files / 'tiny.txt'}",
                           "data.lookback=12", "data.val_fraction=0.1", "data.test_fraction=0.1"],
        "translate": ["task=translate", f"data.path={files / 'pairs.tsv'}", "data.columns=[0, 1]",
                      "model.cell=gru", "model.bidirectional=true"],
    }  # fmt: skip
    made = {}
    for task, sets in settings.items():
        made[task] = root / task
        argv = ["train", *TINY, *[a for s in sets for a in ("--set", s)], "--out", made[task]]
        assert main([str(a) for a in argv]) == 0, task
    return made


def wrote(stdout: str) -> list[str]:
    return [Path(line.removeprefix("wrote ")).name for line in stdout.splitlines()
            if line.startswith("wrote ")]  # fmt: skip


@pytest.mark.parametrize("task", ["forecast", "tag", "language-model"])
def test_explain_writes_hidden_states_and_gradient_pictures(runs, task, capsys):
    code, stdout, stderr = run(capsys, "explain", runs[task])
    assert code == 0, stderr
    assert wrote(stdout) == ["hidden_states.png", "gradient_through_time.png"]
    assert "the first example of the run's test data" in stdout
    for name in wrote(stdout):
        assert_png(runs[task] / "explain" / name)


def test_explain_a_translate_run_draws_the_encoder_and_the_attention(runs, capsys):
    code, stdout, stderr = run(capsys, "explain", runs["translate"], "--compare")
    assert code == 0, stderr
    assert wrote(stdout) == ["hidden_states.png", "attention.png"]
    assert "note: no gradient_through_time.png for a translate run" in stdout
    assert "--compare does not apply" in stdout
    for name in wrote(stdout):
        assert_png(runs["translate"] / "explain" / name)


def test_explain_another_file_into_another_directory(runs, files, tmp_path, capsys):
    before = sorted(p.name for p in runs["forecast"].iterdir())
    out = tmp_path / "pictures"
    code, stdout, stderr = run(capsys, "explain", runs["forecast"], "--data", files / "other.csv",
                               "--out", out)  # fmt: skip
    assert code == 0, stderr
    assert f"the first example of {files / 'other.csv'}" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(wrote(stdout))
    assert sorted(p.name for p in runs["forecast"].iterdir()) == before


def test_compare_trains_three_cells_and_writes_nothing_into_the_run(runs, tmp_path, capsys):
    run_dir = runs["forecast"]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    out = tmp_path / "compare"
    code, stdout, stderr = run(capsys, "explain", run_dir, "--compare", "--compare-epochs", "1",
                               "--out", out)  # fmt: skip
    assert code == 0, stderr
    assert wrote(stdout)[-1] == "gradient_through_time_compare.png"
    assert_png(out / "gradient_through_time_compare.png")
    for layer in ("RNN", "GRU", "LSTM"):
        assert f"--compare: training rnnkit.{layer} (hidden 6) for 1 epoch on" in stdout
    assert stdout.count("epoch 1/1") == 3  # a progress line per model
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_explain_errors_are_one_line(runs, files, tmp_path, capsys):
    code, _, err = run(capsys, "explain", tmp_path / "nowhere")
    assert_one_line_error(code, err, "nowhere: expected a run directory, got no such directory")
    code, _, err = run(capsys, "explain", tmp_path)
    assert_one_line_error(code, err, "expected a run directory, got no config.toml in it")
    code, _, err = run(capsys, "explain", runs["forecast"], "--data", tmp_path / "none.csv")
    assert_one_line_error(code, err, "none.csv: expected an existing file")
    code, _, err = run(capsys, "explain", runs["forecast"], "--compare-epochs", "0")
    assert_one_line_error(code, err, "--compare-epochs: expected a positive integer, got 0", 2)
    odd = tmp_path / "odd"
    odd.mkdir()
    for path in runs["forecast"].iterdir():
        if path.is_file():
            (odd / path.name).write_bytes(path.read_bytes())
    (odd / "model").symlink_to(runs["forecast"] / "model")
    config = (odd / "config.toml").read_text()
    (odd / "config.toml").write_text(config.replace('task = "forecast"', 'task = "juggle"'))
    code, _, err = run(capsys, "explain", odd)
    assert_one_line_error(code, err, "juggle")
