"""The translate task end to end: train, translate, evaluate, predict, its errors, and the
results script's translation rows (smoke runs on the real data when it is there)."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.toolkit import rundir

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A toy language pair: each target word is a fixed spelling of its source word.
LEXICON = {"ein": "a", "hund": "dog", "katze": "cat", "läuft": "runs", "schläft": "sleeps",
           "rot": "red", "groß": "big", "mann": "man", "sieht": "sees", "das": "the"}  # fmt: skip


def _pairs(count: int) -> list[tuple[str, str]]:
    words = list(LEXICON)
    pairs = []
    for i in range(count):
        chosen = [words[(i * 7 + k * 3) % len(words)] for k in range(2 + i % 4)]
        pairs.append((" ".join(chosen) + ".", " ".join(LEXICON[w] for w in chosen) + "."))
    return pairs


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, contains: str) -> None:
    assert code != 0
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1, err
    assert contains in err, err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    pairs = _pairs(240)
    (root / "pairs.tsv").write_text("".join(f"{t}\t{s}\tattribution\n" for s, t in pairs))
    with gzip.open(root / "train.de.gz", "wt") as file:
        file.write("".join(f"{s}\n" for s, _ in pairs))
    (root / "train.en").write_text("".join(f"{t}\n" for _, t in pairs))
    (root / "short.en").write_text("".join(f"{t}\n" for _, t in pairs[:-1]))
    (root / "gap.en").write_text("".join(f"{t}\n" for _, t in pairs[:5]) + "\n" + "a.\n" * 234)
    (root / "bytes.de").write_bytes(b"ein hund.\n\xff\xfe kaputt.\n")
    (root / "bytes.en").write_text("a dog.\nbroken.\n")
    (root / "sources.txt").write_text("ein hund läuft.\ndas katze schläft.\n")
    return root


TINY = ["--set", "task=translate", "--set", "model.hidden_size=16", "--set",
        "model.bidirectional=true", "--set", "train.epochs=2", "--set", "train.batch_size=32",
        "--set", "train.device=cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def tsv_run(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tsv"
    argv = ["train", *TINY, "--set", f"data.path={files / 'pairs.tsv'}", "--set",
            "data.columns=[1, 0]", "--set", "model.cell=gru", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_train_writes_scores_predictions_and_an_attention_map(tsv_run):
    results = json.loads((tsv_run / rundir.RESULTS_FILE).read_text())
    assert results["task"] == "translate"
    for split in ("val", "test"):
        scores = results[split]
        assert scores["greedy"]["beam_size"] == 1 and scores["beam"]["beam_size"] == 5
        for name in ("greedy", "beam"):
            assert 0 <= scores[name]["bleu"] <= 100 and 0 <= scores[name]["chrf"] <= 100
        assert scores["beam"]["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert (tsv_run / rundir.ATTENTION_PNG).read_bytes()[:8] == PNG_SIGNATURE
    with (tsv_run / rundir.PREDICTIONS_CSV).open() as file:
        rows = list(csv.DictReader(file))
    assert set(rows[0]) == {"source", "reference", "translation"}
    assert len(rows) == results["test"]["sentences"]


def test_held_out_targets_are_never_training_targets(tsv_run, files):
    # The transform's subwords were trained on the training part only; the split is by
    # English sentence, and the test predictions name their references.
    with (tsv_run / rundir.PREDICTIONS_CSV).open() as file:
        test_targets = {row["reference"] for row in csv.DictReader(file)}
    from rnnkit.toolkit.config import load_config
    from rnnkit.toolkit.tasks import get_task

    data = get_task("translate").prepare(load_config(tsv_run / rundir.CONFIG_FILE))
    assert test_targets.isdisjoint(data.train.pairs.targets)


def test_translate_a_sentence_and_stdin_lines(tsv_run, files, capsys, monkeypatch, tmp_path):
    code, out, err = run(capsys, "translate", tsv_run, "ein hund läuft.", "--beam", "1")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    picture = tmp_path / "attention.png"
    code, out, err = run(capsys, "translate", tsv_run, "ein hund.", "--attention", picture)
    assert code == 0 and picture.read_bytes()[:8] == PNG_SIGNATURE, err
    with (files / "sources.txt").open() as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, out, err = run(capsys, "translate", tsv_run)
    assert code == 0 and len(out.splitlines()) == 2, err


def test_evaluate_and_predict(tsv_run, files, capsys, tmp_path):
    code, out, err = run(capsys, "evaluate", tsv_run)
    assert code == 0 and "BLEU" in out and "chrF" in out, err
    expected = json.loads((tsv_run / rundir.RESULTS_FILE).read_text())["test"]["beam"]["bleu"]
    assert f"BLEU {expected:.2f}" in out  # the same model, data and decoding
    code, out, err = run(capsys, "evaluate", tsv_run, "--data", files / "pairs.tsv")
    assert code == 0 and "240 sentences" in out, err
    output = tmp_path / "translations.csv"
    code, _, err = run(capsys, "predict", tsv_run, "--data", files / "sources.txt", "--output",
                       output)  # fmt: skip
    with output.open() as file:
        rows = list(csv.DictReader(file))
    assert code == 0 and [r["source"] for r in rows] == ["ein hund läuft.", "das katze schläft."]


def test_two_files_gzip_and_an_elman_cell(files, tmp_path, capsys):
    out = tmp_path / "files"
    code, stdout, err = run(capsys, "train", *TINY, "--set", f"data.path={files / 'train.de.gz'}",
                            "--set", f"data.target_path={files / 'train.en'}", "--set",
                            "model.cell=rnn", "--out", out)  # fmt: skip
    assert code == 0, err
    assert "rnnkit.RNN encoder" in stdout and "decoder with attention" in stdout
    assert "by distinct target sentence" in stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [("short.en", "expected as many lines as"), ("gap.en", "line 6"),
     ("missing.en", "expected an existing file")],
)  # fmt: skip
def test_bad_pairs_are_one_line_errors(files, tmp_path, capsys, target, message):
    code, _, err = run(capsys, "train", *TINY, "--set", f"data.path={files / 'train.de.gz'}",
                       "--set", f"data.target_path={files / target}", "--out",
                       tmp_path / "run")  # fmt: skip
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run").exists()


def test_undecodable_bytes_are_a_one_line_error(files, tmp_path, capsys):
    code, _, err = run(capsys, "train", *TINY, "--set", f"data.path={files / 'bytes.de'}",
                       "--set", f"data.target_path={files / 'bytes.en'}", "--out",
                       tmp_path / "run")  # fmt: skip
    assert_one_line_error(code, err, "expected UTF-8 text, got byte(s) 0xff")
    assert "line 2" in err


def test_too_few_columns_is_a_one_line_error(files, tmp_path, capsys):
    code, _, err = run(capsys, "train", *TINY, "--set", f"data.path={files / 'pairs.tsv'}",
                       "--set", "data.columns=[0, 3]", "--out", tmp_path / "run")  # fmt: skip
    assert_one_line_error(code, err, "expected at least 4 tab-separated columns")


def test_translate_refuses_another_task_s_run_and_bad_arguments(tsv_run, tmp_path, capsys):
    other = tmp_path / "forecast"
    assert main(["train", "--set", "train.epochs=1", "--set", "model.hidden_size=4", "--out",
                 str(other)]) == 0  # fmt: skip
    capsys.readouterr()
    code, _, err = run(capsys, "translate", other, "text")
    assert_one_line_error(code, err, "translate needs a 'translate' run")
    code, _, err = run(capsys, "translate", tsv_run, "ein hund.", "--beam", "0")
    assert_one_line_error(code, err, "--beam: expected a positive integer, got 0")
    code, _, err = run(capsys, "translate", tmp_path / "nothing", "text")
    assert_one_line_error(code, err, "nothing")


def test_config_refuses_translate_keys_elsewhere(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--set", "data.target_path=x.en", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "data.target_path")
    code, _, err = run(capsys, "train", "--set", "model.attention=additive", "--out",
                       tmp_path / "r")  # fmt: skip
    assert_one_line_error(code, err, "model.attention")


# ----------------------------------------------------------------------------- results script


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "reproduce_results_translate", REPO / "scripts" / "reproduce_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rr = _load_script()


@pytest.mark.parametrize("key", ["multi30k", "tatoeba-ko-en"])
def test_smoke_run_gives_the_figures_the_script_reads(key, tmp_path, monkeypatch, capsys):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real data are not at {SHARED_DATA}")
    monkeypatch.chdir(REPO)
    run_dir = tmp_path / key
    assert main(rr.train_argv(rr.TASKS[key], run_dir, smoke=True)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert rr.parse_parameters(out) > 0
    results = json.loads((run_dir / rundir.RESULTS_FILE).read_text())
    figures = rr.TASKS[key].figures(results)
    assert figures and all(math.isfinite(f.value) for f in figures), figures
    docs = tmp_path / "docs"
    docs.mkdir()
    report = rr.Report(rr.TASKS[key], run_dir, "rnnkit train ...", 1, results=results)
    lines = rr._samples(report, docs)
    assert (docs / f"{key}_attention.png").is_file()
    assert "| source | reference | translation | chrF |" in lines


def test_translation_figures_judge_bleu_against_the_target():
    results = {"test": {
        "greedy": {"beam_size": 1, "bleu": 30.0, "chrf": 55.0, "word_bleu": 29.0},
        "beam": {"beam_size": 5, "bleu": 31.0, "chrf": 56.0, "word_bleu": 27.0,
                 "bleu_signature": "nrefs:1|sig", "chrf_signature": "nrefs:1|chrf"},
    }}  # fmt: skip
    figures = rr.TASKS["multi30k"].figures(results)
    greedy, beam, sacre, chrf = figures
    assert (greedy.value, greedy.met, greedy.stretch) == (29.0, True, False)
    assert (beam.value, beam.met) == (27.0, False)
    assert sacre.reference == "nrefs:1|sig" and sacre.met is None and chrf.value == 56.0
    assert all(f.met is None for f in rr.TASKS["tatoeba-ko-en"].figures(results))
