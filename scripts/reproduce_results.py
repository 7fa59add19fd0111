"""Train each real-data config and write docs/results.md and docs/results.json.

Each task runs ``python -m rnnkit train configs/X.toml --out RUNS/X --force`` in the
repository root (where the configs' ``../shared/data`` paths resolve), its output
streamed to the console and kept in ``RUNS/X.log``; then the figures of
``RUNS/X/results.json`` are set against the published references::

    python scripts/reproduce_results.py                       # all of them, full training (long)
    python scripts/reproduce_results.py --tasks goog,sst2     # some of them
    python scripts/reproduce_results.py --skip-training       # rewrite the docs from RUNS
    python scripts/reproduce_results.py --smoke               # 1 epoch on slices, temp dirs

``--smoke`` trains one epoch of a small model on a slice of each data set and, unless
``--runs-dir``/``--docs-dir`` are given, writes to temporary directories: it checks
that the pipeline works (CI), not how well the models do.

The exit status is 0 when every run succeeded, 1 otherwise (the docs still cover the
others).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit.toolkit.rundir import (
    ATTENTION_PNG,
    CONFUSION_PNG,
    ENSEMBLE_PNG,
    FORECAST_PNG,
    LEARNING_CURVES_PNG,
    PREDICTIONS_CSV,
    RESULTS_FILE,
)

REPO = Path(__file__).resolve().parent.parent

# A smoke run's model: small enough that each task trains in seconds on two CPU cores.
SMOKE_SETS = ("train.epochs=1", "model.hidden_size=16")

# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """One reported number, next to what it is judged against.

    Attributes:
        metric: What it is, e.g. ``"test accuracy"``.
        value: The run's figure.
        reference: The published figure or target it is set against, as text.
        met: Whether the target is met; None where there is none.
        stretch: Whether the stretch target is met too; None where there is none.
        percent: Show `value` as a percentage (it is a share in [0, 1]).
    """

    metric: str
    value: float
    reference: str
    met: bool | None
    stretch: bool | None = None
    percent: bool = False

    def shown(self) -> str:
        """`value` for the table: a percentage, or 3 to 4 significant digits."""
        return f"{self.value:.1%}" if self.percent else f"{self.value:.4g}"


def _goog(results: dict[str, Any]) -> list[Figure]:
    test = results["test"]
    model, persistence = test["model"], test["persistence"]
    always_up = test["always_up_directional_accuracy"]
    return [
        Figure("test RMSE (USD)", model["rmse"], f"persistence {persistence['rmse']:.4g}",
               model["rmse"] < persistence["rmse"]),
        Figure("test MAE (USD)", model["mae"], f"persistence {persistence['mae']:.4g}",
               model["mae"] < persistence["mae"]),
        Figure("test directional accuracy", model["directional_accuracy"],
               f"always up {always_up:.1%}", model["directional_accuracy"] > always_up,
               percent=True),
    ]  # fmt: skip


def _accuracy(target: float, stretch: float, reference: str) -> Callable[..., list[Figure]]:
    def figures(results: dict[str, Any]) -> list[Figure]:
        value = results["test"]["model"]["accuracy"]
        text = f"target {target:.1%}, stretch {stretch:.1%}; {reference}"
        return [
            Figure("test accuracy", value, text, value >= target, value >= stretch, percent=True)
        ]

    return figures


def _language_model(results: dict[str, Any]) -> list[Figure]:
    # The references are validation losses on the last 10% of the text: so is ours.
    value = results["val"]["model"]["loss"]
    text = "target ≤ 1.65, stretch ≤ 1.55; nanoGPT 1.47 (6-layer), 1.88 (CPU config)"
    return [Figure("validation loss (nats/char)", value, text, value <= 1.65, value <= 1.55)]


def _translation(target: float | None, stretch: float | None, reference: str):
    """Test BLEU on lowercased spaCy words (greedy: how bentrevett's figure was decoded, and
    beam 5), cased sacreBLEU and chrF (beam 5), against `target` and `stretch` if given."""

    def figures(results: dict[str, Any]) -> list[Figure]:
        greedy, beam = results["test"]["greedy"], results["test"]["beam"]
        goal = "" if target is None else f"target {target:g}, stretch {stretch:g}; "

        def judged(value: float) -> tuple[bool | None, bool | None]:
            return (None, None) if target is None else (value >= target, value >= stretch)

        words = [
            Figure(f"test BLEU, lowercased spaCy words, {name}", scores["word_bleu"],
                   goal + reference, *judged(scores["word_bleu"]))
            for name, scores in (("greedy", greedy), ("beam 5", beam))
            if scores.get("word_bleu") is not None
        ]  # fmt: skip
        return [
            *words,
            Figure("test sacreBLEU, beam 5", beam["bleu"], beam["bleu_signature"], None),
            Figure("test chrF, beam 5", beam["chrf"], beam["chrf_signature"], None),
        ]

    return figures


_MULTI30K = "Multi30k task 1 German->English, 29,000 / 1,014 / 1,000 (test_2016_flickr) pairs"
_BENTREVETT = "bentrevett/pytorch-seq2seq notebook 4, 20.5M parameters, GPU: 28.11 (greedy)"
_TATOEBA = "Tatoeba Korean->English (ManyThings 2023-02-20), 5,749 pairs, split by English"

# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One config of configs/ and how its results are reported.

    Attributes:
        key: The name on the command line and in the docs' file names.
        title: The heading in results.md.
        config: The config file, relative to the repository root.
        dataset: The data, in words.
        smoke: --smoke's ``--set`` overrides besides `SMOKE_SETS`: slices of the data.
        figures: The figures of its results.json.
        note: What a reader needs to judge the figures.
        sets: ``--set`` overrides of the config that make this task a variant of it.
    """

    key: str
    title: str
    config: str
    dataset: str
    smoke: tuple[str, ...]
    figures: Callable[[dict[str, Any]], list[Figure]]
    note: str = ""
    sets: tuple[str, ...] = ()


TASKS = {
    task.key: task
    for task in (
        Task("goog", "GOOG next-day close", "configs/goog_forecast.toml",
             "GOOG daily OHLC 2004-08-19 .. 2013-03-01 (bundled, from backtesting 0.6.6)",
             (), _goog,  # forecast refuses data.limit: 2,148 rows train in seconds
             "The model forecasts the log return log(close[t+1] / close[t]) from 100 days of "
             "Open/High/Low/Close and is scored on the price it implies. Daily prices are close "
             "to a random walk, so persistence (tomorrow = today) is the honest reference: "
             "published price-level RMSEs that do not report it cannot be compared."),
        Task("goog-levels", "GOOG next-day close, price target", "configs/goog_forecast.toml",
             "GOOG daily OHLC 2004-08-19 .. 2013-03-01 (bundled, from backtesting 0.6.6)",
             (), _goog,
             "The same model and data with the standardised price itself as the target "
             "(data.target_transform=none) instead of the log return, for comparison.",
             ("data.target_transform=none",)),
        Task("vowels", "JapaneseVowels speaker classification", "configs/japanese_vowels.toml",
             "JapaneseVowels, 12 channels, 9 speakers, 270 train / 370 test (aeon 1.6.0)",
             ("data.limit=100",), _accuracy(0.96, 0.98, "1-NN DTW 94.9%"),
             "The archive's own split: settings chosen on a fifth of the 270 training series, "
             "the 370 test series scored once. recurrent_dropout = 0.25 was chosen on that "
             "validation fifth over five seeds: mean accuracy 96.3% without, 99.3% with "
             "(`python scripts/compare_regulariser.py configs/japanese_vowels.toml --set "
             "model.recurrent_dropout=0.25 --seeds 0 1 2 3 4`; regularisers.md); without it "
             "this run scored 97.3% on test."),
        Task("ewt", "UD English EWT part-of-speech tagging", "configs/ewt_tag.toml",
             "UD English EWT v2.15, 17 UPOS tags, 12,544 / 2,001 / 2,077 sentences",
             # Fewer training sentences miss tags (X) that the dev file holds: refused.
             ("data.limit=300", "model.char_hidden_size=8"),
             _accuracy(0.93, 0.944, "UDPipe 1.2 94.4%")),
        Task("sst2", "SST-2 sentence sentiment", "configs/sst2_classify.toml",
             "SST-2 binary, sentence level, 6,920 / 872 / 1,821 sentences",
             ("data.limit=300", "model.ensemble_size=2"),
             _accuracy(0.81, 0.835, "Kim 2014 CNN-rand 83.5%, CNN 87.2%"),
             "The average of ten bidirectional LSTMs (model.ensemble_size = 10), each with its "
             "own seed and its own best epoch on the dev file: one model's dev accuracy moves "
             "by about 3 points with the seed alone (77.3-81.5% over ten GRU seeds), and the "
             "average of more models reads higher on dev (GRU: 81.0% for five, 81.9% for "
             "ten). The cell was chosen on the dev file by ensembles of five (seeds 0-4): rnn "
             "80.2% (81.1% with 30 epochs), gru 81.0% (79.9% with 30 epochs), lstm 81.2%, all "
             "within the dev file's noise; the other settings among 14 variants of one model "
             "(embedding and hidden size, input and output dropout, weight decay, mean or max "
             "pooling, 1 or 2 layers, tanh or relu, learning rate and schedule, a character "
             "RNN per word, min_freq). Kim's figures are one model's, trained on the "
             "treebank's phrases as well as its sentences; this file holds the 6,920 "
             "sentences only. The sst2-single row is this config's first model alone. Trained "
             "on one CPU thread (OMP_NUM_THREADS=1) while the sst2-gru run had the other core."),
        Task("shakespeare", "tinyshakespeare character language model",
             "configs/shakespeare_lm.toml",
             "tinyshakespeare, 1,115,394 characters, 65 distinct",
             ("data.limit=20000",), _language_model,
             "Validation loss in nats per character on the held-out end of the text, as "
             "nanoGPT reports it (on the last 10%); the text below is sampled from the model."),
        # The gated cells (model.cell), each on the config of its task with one --set.
        Task("ewt-lstm", "UD English EWT part-of-speech tagging, LSTM", "configs/ewt_tag.toml",
             "UD English EWT v2.15, 17 UPOS tags, 12,544 / 2,001 / 2,077 sentences",
             ("data.limit=300", "model.char_hidden_size=8"),
             _accuracy(0.93, 0.944, "UDPipe 1.2 94.4%"),
             "The ewt config with rnnkit.LSTM for the word and character layers. The cell was "
             "chosen on the dev file: dev accuracy rnn 94.2%, gru 94.5%, lstm 94.7%.",
             ("model.cell=lstm",)),
        Task("sst2-gru", "SST-2 sentence sentiment, GRU", "configs/sst2_classify.toml",
             "SST-2 binary, sentence level, 6,920 / 872 / 1,821 sentences",
             ("data.limit=300", "model.ensemble_size=2"),
             _accuracy(0.81, 0.835, "Kim 2014 CNN-rand 83.5%, CNN 87.2%"),
             "The sst2 config (ten models averaged) with rnnkit.GRU, the runner-up on the dev "
             "file (ensembles of five: gru 81.0%, lstm 81.2%).",
             ("model.cell=gru",)),
        Task("sst2-single", "SST-2 sentence sentiment, one model",
             "configs/sst2_classify.toml",
             "SST-2 binary, sentence level, 6,920 / 872 / 1,821 sentences",
             ("data.limit=300",), _accuracy(0.81, 0.835, "Kim 2014 CNN-rand 83.5%, CNN 87.2%"),
             "The sst2 config without the ensemble: its first model (the same seed), alone.",
             ("model.ensemble_size=1",)),
        Task("vowels-gru", "JapaneseVowels speaker classification, GRU",
             "configs/japanese_vowels.toml",
             "JapaneseVowels, 12 channels, 9 speakers, 270 train / 370 test (aeon 1.6.0)",
             ("data.limit=100",), _accuracy(0.96, 0.98, "1-NN DTW 94.9%"),
             "The vowels config with rnnkit.GRU. The cell was chosen on validation fifths of "
             "the training series, ten of them (seeds 0-9): mean accuracy rnn 98.9%, lstm "
             "99.3%, gru 100.0% (every fifth) (`python scripts/compare_regulariser.py "
             "configs/japanese_vowels.toml --set model.cell=gru --set model.cell=lstm --seeds "
             "0 1 2 3 4 5 6 7 8 9`); the test series were scored once, after the choice.",
             ("model.cell=gru",)),
        Task("shakespeare-lstm", "tinyshakespeare character language model, LSTM",
             "configs/shakespeare_lm.toml",
             "tinyshakespeare, 1,115,394 characters, 65 distinct",
             ("data.limit=20000",), _language_model,
             "The shakespeare config with rnnkit.LSTM, chosen beforehand (the classic "
             "character-level model; the reported loss is on the validation part, so the "
             "cell was not picked by it); the text below is sampled from the model.",
             ("model.cell=lstm",)),
        Task("shakespeare-lstm-wd",
             "tinyshakespeare character language model, LSTM with weight_drop",
             "configs/shakespeare_lm.toml",
             "tinyshakespeare, 1,115,394 characters, 65 distinct",
             ("data.limit=20000",), _language_model,
             "The shakespeare-lstm row with model.weight_drop=0.25 (rnnkit's DropConnect on "
             "the recurrent weights, as AWD-LSTM), added because that row overfit from epoch "
             "8 on (training loss 1.23 against validation 1.478 there, 0.98 against 1.555 at "
             "the end). One try, the value set beforehand, not searched; but the figure is "
             "the validation loss (as nanoGPT's), the same split the try is judged on.",
             ("model.cell=lstm", "model.weight_drop=0.25")),
        # Translation: an encoder-decoder with attention on the same layers.
        Task("multi30k", "Multi30k German->English translation, GRU",
             "configs/multi30k_translate.toml", _MULTI30K, ("data.limit=300",),
             _translation(28.1, 30.0, _BENTREVETT),
             "BLEU on lowercased spaCy word tokens is the way bentrevett's notebook computes "
             "its 28.11 (torchtext's bleu_score: 4-gram corpus BLEU, one reference); cased "
             "sacreBLEU and chrF with their signatures are the figures to share. The model "
             "translates subwords (sentencepiece, trained on the training pairs) and keeps "
             "the epoch of the best validation loss. Trained on one CPU thread "
             "(OMP_NUM_THREADS=1) while the multi30k-rnn run had the other core."),
        Task("multi30k-rnn", "Multi30k German->English translation, Elman cell",
             "configs/multi30k_translate.toml", _MULTI30K, ("data.limit=300",),
             _translation(28.1, 30.0, _BENTREVETT),
             "The multi30k config with rnnkit.RNN (the Elman cell) in the encoder and the "
             "decoder, beside the GRU row.", ("model.cell=rnn",)),
        Task("tatoeba-ko-en", "Tatoeba Korean->English translation",
             "configs/tatoeba_ko_en.toml", _TATOEBA, ("data.limit=600",),
             _translation(None, None, "no comparable published figure"),
             "Validation and test pairs are held out by distinct English sentence (10% each), "
             "so no test target is seen in training. No published figure is comparable: "
             "OPUS-MT's transformers, trained on millions of pairs, score about 41 BLEU on "
             "the Tatoeba Challenge test set, which overlaps this file. 4,585 training pairs "
             "are few for a model of 3.2M parameters: validation loss is best at epoch 10 "
             "and early stopping ends the run at 16; the attention maps are often flat or "
             "fixed on the last token. weight_drop=0.3 was chosen on validation (one seed: "
             "BLEU 7.85 -> 8.57, chrF 22.25 -> 22.67, loss 3.658 -> 3.647)."),
    )
}  # fmt: skip

# ----------------------------------------------------------------------------- running


@dataclass
class Report:
    """What one task's run left, as the writers read it.

    Attributes:
        task: The task.
        run_dir: Its run directory.
        command: The command that reproduces it.
        parameters: The model's parameter count, from the train log; None if unknown.
        wall_seconds: The whole train command's wall time (read from its log when not run
            now); None if unknown.
        error: Why there are no results, or None.
        generated: Text sampled from a language model, or None.
        results: The run's results.json, or None.
    """

    task: Task
    run_dir: Path
    command: str
    parameters: int | None = None
    wall_seconds: float | None = None
    error: str | None = None
    generated: str | None = None
    results: dict[str, Any] | None = None


def train_argv(task: Task, run_dir: Path, smoke: bool) -> list[str]:
    """The ``rnnkit`` arguments that train `task` into `run_dir`.

    Args:
        task: The task.
        run_dir: The run directory (replaced if it holds a run).
        smoke: Train one epoch of a small model on a slice of the data.

    Returns:
        The arguments after ``rnnkit``.
    """
    argv = ["train", task.config, "--out", os.fspath(run_dir), "--force"]
    for setting in [*task.sets, *(smoke_sets(task) if smoke else ())]:
        argv += ["--set", setting]
    return argv


def smoke_sets(task: Task) -> list[str]:
    """The ``--set`` overrides of a smoke run of `task`."""
    return [*SMOKE_SETS, *task.smoke]


def generate_argv(run_dir: Path, smoke: bool) -> list[str]:
    """The ``rnnkit`` arguments that sample text from the language model in `run_dir`."""
    length = 80 if smoke else 600
    return ["generate", os.fspath(run_dir), "--prompt", "ROMEO:", "--length", str(length),
            "--temperature", "0.8", "--seed", "0"]  # fmt: skip


def parse_parameters(log: str) -> int | None:
    """The parameter count of the train log's ``model: ..., N parameters`` line, or None."""
    match = re.search(r"^model: .*?([\d,]+) parameters$", log, flags=re.MULTILINE)
    return None if match is None else int(match.group(1).replace(",", ""))


def parse_seconds(log: str) -> float | None:
    """The seconds of the train log's last ``done in N s`` line (rnnkit train's own
    timing, without the interpreter's start), or None."""
    found = re.findall(r"^done in ([\d.]+) s$", log, flags=re.MULTILINE)
    return float(found[-1]) if found else None


def _train(argv: Sequence[str], log_path: Path) -> int:
    """Run ``python -m rnnkit ARGV`` in the repository root, its output echoed and logged.

    Returns:
        Its exit status.
    """
    command = [sys.executable, "-m", "rnnkit", *argv]
    print("$ " + " ".join(command[1:]), flush=True)
    lines = []
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    log_path.write_text("".join(lines))
    return process.returncode


def run_task(task: Task, runs_dir: Path, smoke: bool, train: bool) -> Report:
    """Train `task` (unless `train` is False), then read what its run left.

    Args:
        task: The task.
        runs_dir: Where its run directory ``KEY/`` and train log ``KEY.log`` go.
        smoke: Train one epoch of a small model on a slice of the data.
        train: Train now; False reads a run already in `runs_dir`.

    Returns:
        The task's report.
    """
    runs_dir = runs_dir.resolve()  # rnnkit runs in the repository root, not here
    run_dir, log_path = runs_dir / task.key, runs_dir / f"{task.key}.log"
    settings = [*task.sets, *(smoke_sets(task) if smoke else ())]
    sets = "".join(f" --set {setting}" for setting in settings)
    command = f"rnnkit train {task.config} --out {_shown_path(run_dir)}{sets}"
    report = Report(task, run_dir, command)
    if not (REPO / task.config).is_file():
        report.error = f"{task.config} does not exist"
        return report
    if train:
        runs_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        status = _train(train_argv(task, run_dir, smoke), log_path)
        report.wall_seconds = time.perf_counter() - started
        if status != 0:
            report.error = f"rnnkit train exited with status {status} (see {log_path})"
            return report
    if log_path.is_file():
        log = log_path.read_text()
        report.parameters = parse_parameters(log)
        if report.wall_seconds is None:  # not trained now: the run's own log says
            report.wall_seconds = parse_seconds(log)
    results_path = run_dir / RESULTS_FILE
    if not results_path.is_file():
        report.error = f"{results_path} does not exist"
        return report
    results = json.loads(results_path.read_text())
    try:
        task.figures(results)
    except KeyError as error:
        report.error = f"{results_path} has no {error} (a run of another rnnkit version?)"
        return report
    report.results = results
    if results.get("task") == "language-model":
        report.generated = _generate(run_dir, smoke)
    return report


def _generate(run_dir: Path, smoke: bool) -> str | None:
    """Text sampled from the language model in `run_dir`; None if ``rnnkit generate`` fails."""
    command = [sys.executable, "-m", "rnnkit", *generate_argv(run_dir, smoke)]
    print("$ " + " ".join(command[1:]), flush=True)
    # stdout alone: a warning on stderr is no part of the sample.
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    print(done.stdout, end="", flush=True)
    return done.stdout if done.returncode == 0 else None


def _shown_path(path: Path) -> str:
    """`path` relative to the repository root where it lies inside it, as the docs show it."""
    path = path.resolve()
    return os.fspath(path.relative_to(REPO)) if path.is_relative_to(REPO) else os.fspath(path)


# ----------------------------------------------------------------------------- writers


def figures_of(report: Report) -> list[Figure]:
    """The figures of a report's results; none for a failed run."""
    return [] if report.results is None else report.task.figures(report.results)


def write_results_json(reports: Sequence[Report], path: Path) -> list[dict[str, Any]]:
    """One object per reported figure: task, dataset, metric, value, reference, command.

    Args:
        reports: The tasks' reports; failed runs and non-finite figures are left out
            (JSON has no NaN).
        path: Where the file goes.

    Returns:
        The objects written.
    """
    rows = [
        {
            "task": report.task.key,
            "dataset": report.task.dataset,
            "metric": figure.metric,
            "value": float(figure.value),
            "reference": figure.reference,
            "command": report.command,
        }
        for report in reports
        for figure in figures_of(report)
        if math.isfinite(figure.value)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return rows


def write_results_md(reports: Sequence[Report], docs_dir: Path, *, smoke: bool = False) -> Path:
    """results.md, with the plots and samples it shows copied beside it.

    Args:
        reports: The tasks' reports.
        docs_dir: Where results.md and the PNGs go.
        smoke: Say that the figures come from smoke runs.

    Returns:
        The path of results.md.
    """
    docs_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Results on real data", ""]
    if smoke:
        lines += ["**Smoke run**: one epoch of a small model on a slice of each data set. These "
                  "figures check the pipeline, not the models.", ""]  # fmt: skip
    lines += [
        f"Written by `python scripts/reproduce_results.py` on {dt.date.today().isoformat()}, "
        f"{_machine()}. Each model is the one of its best validation epoch; training time "
        "is the time in the training loop.",
        "",
        "| task | data | model size | training time | our figure | reference / target | met "
        "| reproduce |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        lines += _table_rows(report)
    lines += ["", "Met: beats the reference (GOOG) or reaches the target; *stretch*: reaches "
              "the stretch target too. What a regulariser (`model.weight_drop`, "
              "`recurrent_dropout`, `zoneout`, `layer_norm`) does to the validation "
              "figures, over seeds: [regularisers.md](regularisers.md).",
              ""]  # fmt: skip
    for report in reports:
        lines += [f"## {report.task.title}", ""]
        if report.task.note:
            lines += [report.task.note, ""]
        if report.wall_seconds is not None:
            lines += [f"The whole train command took {report.wall_seconds / 60:.1f} min.", ""]
        if report.error is not None:
            lines += [f"No results: {report.error}.", ""]
            continue
        lines += _samples(report, docs_dir)
        lines += _image(report, LEARNING_CURVES_PNG, docs_dir, "learning_curves", "learning curves")
    path = docs_dir / "results.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def _table_rows(report: Report) -> list[str]:
    task = report.task
    size = "?" if report.parameters is None else f"{report.parameters:,} parameters"
    seconds = None if report.results is None else report.results.get("train_seconds")
    minutes = "?" if seconds is None else f"{seconds / 60:.{1 if seconds >= 60 else 2}f} min"
    first = [task.key, _cell(task.dataset), size, minutes]
    command = f"`{report.command}`"
    figures = figures_of(report)
    if not figures:
        return [_row([*first, _cell(f"no results: {report.error}"), "", "", command])]
    rows = []
    for i, figure in enumerate(figures):
        lead = first if i == 0 else ["", "", "", ""]
        rows.append(_row([*lead, f"{figure.metric} {figure.shown()}", _cell(figure.reference),
                          _met(figure), command if i == 0 else ""]))  # fmt: skip
    return rows


def _met(figure: Figure) -> str:
    if figure.met is None or not math.isfinite(figure.value):
        return ""
    return "yes, *stretch*" if figure.stretch else ("yes" if figure.met else "no")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(text: str) -> str:
    # Markdown would read these as table borders, emphasis, links or HTML.
    return re.sub(r"([\\|*_`\[\]<>])", r"\\\1", text)


def _samples(report: Report, docs_dir: Path) -> list[str]:
    key = report.task.key
    if key == "goog":
        return _image(report, FORECAST_PNG, docs_dir, "forecast", "forecast on the test period")
    if key == "vowels":
        return _image(report, CONFUSION_PNG, docs_dir, "confusion", "test confusion matrix")
    if key == "sst2":
        return (
            _image(report, ENSEMBLE_PNG, docs_dir, "ensemble", "each member and their average")
            + _image(report, CONFUSION_PNG, docs_dir, "confusion", "test confusion matrix")
            + _misclassified(report.run_dir / PREDICTIONS_CSV)
        )
    if key == "ewt":
        return _tagged(report.run_dir / PREDICTIONS_CSV)
    if report.results is not None and report.results.get("task") == "translate":
        return _image(report, ATTENTION_PNG, docs_dir, "attention",
                      "attention of a test sentence") + (
            _translations(report.run_dir / PREDICTIONS_CSV)
        )  # fmt: skip
    if key == "shakespeare" and report.generated is None:
        return ["(no sample: rnnkit generate failed)", ""]
    if key == "shakespeare":
        return ["Sampled from the prompt `ROMEO:` (temperature 0.8, seed 0):", "", "```text",
                report.generated.rstrip("\n"), "```", ""]  # fmt: skip
    return []


def _image(report: Report, name: str, docs_dir: Path, suffix: str, what: str) -> list[str]:
    source = report.run_dir / name
    if not source.is_file():
        return [f"({what}: the run wrote no {name})", ""]
    target = f"{report.task.key}_{suffix}.png"
    shutil.copyfile(source, docs_dir / target)
    return [f"![{report.task.key}: {what}]({target})", ""]


def _read_predictions(path: Path) -> list[dict[str, str]]:
    # Plain csv, all text: pandas would read the word "null" or "NA" as a missing value.
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _tagged(path: Path, count: int = 3, words: tuple[int, int] = (8, 20)) -> list[str]:
    """The first `count` test sentences of 8 to 20 words, as word/TAG, errors marked."""
    if not path.is_file():
        return [f"(the run wrote no {path.name})", ""]
    sentences: dict[str, list[dict[str, str]]] = {}
    for row in _read_predictions(path):
        sentences.setdefault(row["sentence"], []).append(row)
    picked = [rows for rows in sentences.values() if words[0] <= len(rows) <= words[1]][:count]
    lines = [f"The first {len(picked)} test sentences of {words[0]} to {words[1]} words, each "
             "word with its predicted tag; a wrong one is in brackets with the gold tag:", "",
             "```text"]  # fmt: skip
    for rows in picked:
        tokens = [
            f"{r['word']}/{r['predicted']}"
            if r["predicted"] == r["tag"]
            else f"[{r['word']}/{r['predicted']}, gold {r['tag']}]"
            for r in rows
        ]
        wrong = sum(r["predicted"] != r["tag"] for r in rows)
        lines += [
            f"# sentence {rows[0]['sentence']}: {wrong} of {len(rows)} wrong",
            *textwrap.wrap(" ".join(tokens), 100, break_long_words=False),
            "",
        ]
    lines[-1:] = ["```", ""]
    return lines if picked else [f"(no test sentence of {words[0]} to {words[1]} words)", ""]


def _misclassified(path: Path, count: int = 5) -> list[str]:
    """The first `count` misclassified test sentences, as a table."""
    if not path.is_file():
        return [f"(the run wrote no {path.name})", ""]
    names = {"0": "negative", "1": "positive"}
    wrong = [r for r in _read_predictions(path) if r["predicted"] != r["label"]][:count]
    if not wrong:
        return ["No test sentence is misclassified.", ""]
    lines = [f"The first {len(wrong)} misclassified test sentences:", "",
             "| sentence | label | predicted |", "|---|---|---|"]  # fmt: skip
    for r in wrong:
        label, guess = (names.get(r[k], r[k]) for k in ("label", "predicted"))
        lines.append(_row([_cell(r["text"]), label, guess]))
    return [*lines, ""]


def _translations(path: Path, count: int = 10) -> list[str]:
    """`count` test translations drawn at random (seed 0), half from the better and half
    from the worse half by sentence chrF, so that good and bad both show."""
    import random

    from sacrebleu.metrics import CHRF

    if not path.is_file():
        return [f"(the run wrote no {path.name})", ""]
    rows = _read_predictions(path)
    chrf = CHRF()
    scored = sorted(
        ((chrf.sentence_score(r["translation"], [r["reference"]]).score, r) for r in rows),
        key=lambda pair: pair[0],
    )
    half = len(scored) // 2
    pick = random.Random(0)
    chosen = pick.sample(scored[half:], min(count // 2, len(scored) - half))
    chosen += pick.sample(scored[:half], min(count - len(chosen), half))
    lines = [f"{len(chosen)} test sentences drawn at random (seed 0), half from the better and "
             "half from the worse half by sentence chrF, beam 5:", "",
             "| source | reference | translation | chrF |", "|---|---|---|---|"]  # fmt: skip
    for score, r in sorted(chosen, key=lambda pair: -pair[0]):
        lines.append(_row([_cell(r["source"]), _cell(r["reference"]), _cell(r["translation"]),
                           f"{score:.1f}"]))  # fmt: skip
    return [*lines, ""]


def _machine() -> str:
    import torch

    where = (
        f"GPU {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    )
    return f"torch {torch.__version__}, {where}"


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Train the tasks and write the docs.

    Args:
        argv: The arguments after the script's name; ``sys.argv[1:]`` if None.

    Returns:
        The exit status: 0 if every run succeeded, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"comma-separated, among {', '.join(TASKS)} (default: all)",
    )
    parser.add_argument(
        "--runs-dir", type=Path, help="run directories (default runs/results; --smoke: a temp dir)"
    )
    parser.add_argument(
        "--docs-dir",
        type=Path,
        help="results.md, results.json, PNGs (default docs; --smoke: a temp dir)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch of a small model on a slice of each data set"
    )
    parser.add_argument("--skip-training", action="store_true",
                        help="write the docs from the runs already in --runs-dir")  # fmt: skip
    args = parser.parse_args(argv)
    keys = [key.strip() for key in args.tasks.split(",") if key.strip()]
    unknown = [key for key in keys if key not in TASKS]
    if unknown or not keys:
        parser.error(f"--tasks: expected names among {', '.join(TASKS)}, got {args.tasks!r}")
    temp = args.smoke and (args.runs_dir is None or args.docs_dir is None)
    scratch = Path(tempfile.mkdtemp(prefix="rnnkit-smoke-")) if temp else None
    runs_dir = args.runs_dir or (scratch / "runs" if scratch else REPO / "runs" / "results")
    docs_dir = args.docs_dir or (scratch / "docs" if scratch else REPO / "docs")

    reports = [run_task(TASKS[key], runs_dir, args.smoke, not args.skip_training) for key in keys]
    write_results_json(reports, docs_dir / "results.json")
    path = write_results_md(reports, docs_dir, smoke=args.smoke)
    print(f"wrote {path} and {docs_dir / 'results.json'}")
    for report in reports:
        if report.error is not None:
            print(f"{report.task.key}: {report.error}", file=sys.stderr)
    return 1 if any(report.error is not None for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
