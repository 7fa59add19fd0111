"""The ``rnnkit`` command: train, evaluate, predict, generate, translate, explain, bench, warmup.

::

    rnnkit train [CONFIG.toml] [--set section.key=value ...] [--out DIR] [--resume] [--force]
    rnnkit evaluate RUN_DIR [--data PATH]
    rnnkit predict RUN_DIR --data PATH [--output CSV]
    rnnkit generate RUN_DIR [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--seed S]
    rnnkit translate RUN_DIR [TEXT] [--beam N] [--attention PNG]
    rnnkit explain RUN_DIR [--data PATH] [--out DIR] [--compare]
    rnnkit bench [--quick] [--shapes T,N,H_in,H_out ...] ...
    rnnkit warmup [--dtype float32|float64 ...] [--cell rnn|lstm|gru|options ...]

``rnnkit train`` with no arguments is the main job: next-day close of the
bundled Google prices from 100 days of Open/High/Low/Close (see
``configs/goog_forecast.toml``). What a run writes is described in
:mod:`rnnkit.toolkit.rundir`.

This module owns stdout, stderr and the exit status (the library only logs):
results go to stdout; errors are one line on stderr, ``rnnkit: error: ...``,
with exit status 1 (2 for a malformed command line) and no traceback unless
``--debug`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rnnkit.toolkit.rendezvous import Rendezvous

PROG = "rnnkit"
# In a run of model.ensemble_size > 1: a directory per member, members/1, members/2, ...
ENSEMBLE_MEMBERS_DIR = "members"

__all__ = ["main"]


class UsageError(Exception):
    """The command line is malformed (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors raised as :class:`UsageError` instead of printed usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rnnkit`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` if None.

    Returns:
        The exit status: 0 on success, 1 on an error, 2 on a malformed
        command line, 130 when interrupted.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        _error(str(error))
        return 2
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    if args.command is None:
        parser.print_help()
        return 2
    with _logging(args), _one_line_warnings():
        try:
            if args.handler is not _train and _another_process_of_a_distributed_run():
                return 0  # evaluate, predict, generate and bench run once: on rank 0
            return args.handler(args)
        except UsageError as error:
            _error(str(error))
            return 2
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except Exception as error:
            if args.debug:
                traceback.print_exc()
            _error(_describe(error))
            return 1


def _another_process_of_a_distributed_run() -> bool:
    """Whether this is a process other than rank 0 under torchrun (or another launcher)."""
    from rnnkit.toolkit.trainer import distributed_env

    return distributed_env().rank != 0


# ----------------------------------------------------------------------------- parser


def _build_parser() -> argparse.ArgumentParser:
    from rnnkit import __version__

    parser = _Parser(
        prog=PROG, description="Recurrent neural networks: train, evaluate, predict, generate."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(command=None, debug=False)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logging on errors"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a model from a TOML config (no config: the GOOG forecast)",
        description="Train a model. Without CONFIG: the main job, next-day close of the bundled "
        "Google prices from 100 days of Open/High/Low/Close.",
    )
    train.add_argument("config", nargs="?", metavar="CONFIG.toml", help="configuration file")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, as a TOML literal (text that is not one stays a "
        'string): --set train.epochs=5 --set \'data.features=["Open","Close"]\'',
    )
    train.add_argument("--out", metavar="DIR", help="run directory (default runs/TASK-TIMESTAMP)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (`--resume RUN_DIR` works too)",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="replace the run in --out (the old one stays until the new one is complete)",
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="score a run's model on its test split or another file",
        description="Score a run's model and its baseline on the run's own test split, or on "
        "every example of another file in the training format.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data", metavar="PATH", help="another file with the same columns")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="write a run's predictions for a file as CSV",
        description="Predict with a run's model. forecast: a CSV with the training columns; "
        "classify: one text per line; tag: one whitespace-tokenised sentence per line.",
    )
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("--data", required=True, metavar="PATH", help="the inputs")
    predict.add_argument("--output", metavar="CSV", help="write here instead of to stdout")
    predict.set_defaults(handler=_predict)

    generate = commands.add_parser(
        "generate",
        parents=[common],
        help="sample text from a language-model run",
        description="Sample text from a language-model run, one character at a time.",
    )
    generate.add_argument("run_dir", metavar="RUN_DIR")
    generate.add_argument("--prompt", help="text to start from (default: a newline)")
    generate.add_argument("--length", type=int, default=300, help="characters to generate")
    generate.add_argument(
        "--temperature", type=float, default=1.0, help="below 1 sharpens, above 1 flattens"
    )
    generate.add_argument("--top-k", type=int, help="sample among the K likeliest characters")
    generate.add_argument("--seed", type=int, help="seed of the sampling (default: random)")
    generate.set_defaults(handler=_generate)

    translate = commands.add_parser(
        "translate",
        parents=[common],
        help="translate sentences with a translate run",
        description="Translate TEXT, or each line of standard input, with a translate run's "
        "model; one translation per line.",
    )
    translate.add_argument("run_dir", metavar="RUN_DIR")
    translate.add_argument("text", nargs="?", help="a sentence (default: lines of stdin)")
    translate.add_argument(
        "--beam", type=int, default=5, metavar="N", help="beam size; 1 is greedy (default 5)"
    )
    translate.add_argument(
        "--attention", metavar="PNG", help="also draw TEXT's attention map into this file"
    )
    translate.set_defaults(handler=_translate)

    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="draw what a run's recurrent network does with one example",
        description="Draw what a run's network does with one example (the first test example, "
        "else the first validation or training one; or the first of --data): the top layer's "
        "hidden states at every step (hidden_states.png), the norm of dLoss/dh_t through time "
        "(gradient_through_time.png) and, for a translate run, the attention map "
        "(attention.png).",
    )
    explain.add_argument("run_dir", metavar="RUN_DIR")
    explain.add_argument("--data", metavar="PATH", help="another file in the training format")
    explain.add_argument("--out", metavar="DIR", help="where the PNGs go (default RUN_DIR/explain)")
    explain.add_argument(
        "--compare",
        action="store_true",
        help="also train an Elman RNN, a GRU and an LSTM of the run's size briefly on its "
        "training data (in memory) and draw their gradient norms in one figure (slow)",
    )
    explain.add_argument(
        "--compare-epochs", type=int, default=2, metavar="N",
        help="epochs of each --compare model (default 2)",
    )  # fmt: skip
    explain.set_defaults(handler=_explain)

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="time rnnkit.RNN, LSTM or GRU against torch's layer",
        description="Time rnnkit.RNN, LSTM or GRU (--cell) against torch.nn's layer of the "
        "same name on the same weights, and LSTM also against torch with oneDNN off (as "
        "benchmarks/bench_rnn.py).",
    )
    from rnnkit import benchmark

    benchmark.add_arguments(bench)
    bench.add_argument("--markdown", action="store_true", help="print a GitHub markdown table")
    bench.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    bench.add_argument("--quiet", action="store_true", help="log warnings only, no progress")
    bench.set_defaults(handler=_bench)

    warmup = commands.add_parser(
        "warmup",
        parents=[common],
        help="compile the compiled engine's kernels now, into the disk cache",
        description="Compile the compiled CPU engine's kernels (or load them from the disk "
        "cache), so that no later process waits for them or runs its first calls on torch "
        "ops while they compile in the background.",
    )
    warmup.add_argument(
        "--dtype", choices=("float32", "float64"), action="append",
        help="only this dtype's kernels (repeatable; default: both)",
    )  # fmt: skip
    warmup.add_argument(
        "--cell", choices=("rnn", "lstm", "gru", "options"), action="append",
        help="only this cell's kernels (repeatable; 'options': every cell with recurrent "
        "dropout, zoneout or layer norm; default: all)",
    )  # fmt: skip
    warmup.set_defaults(handler=_warmup)
    return parser


# ----------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from rnnkit.compiled.warmup import compiling_in_place
    from rnnkit.toolkit.rendezvous import Rendezvous
    from rnnkit.toolkit.trainer import distributed_env

    env = distributed_env()
    # The shape trace before training too: no worker compiling beside the training.
    with _sigterm_as_exit(), compiling_in_place(), Rendezvous(env) as run, run.failures_told():
        if env.rank == 0:
            return _train_as(args, run, main_process=True)
        # Under torchrun the other processes train alongside rank 0 but write and print
        # nothing: the run directory is rank 0's alone (errors still go to stderr).
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            return _train_as(args, run, main_process=False)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (``kill``; torchrun stopping the others when one process fails) as
    SystemExit, so that a replacement in progress is discarded, as on Ctrl-C."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    installed = threading.current_thread() is threading.main_thread()  # else not allowed
    previous = signal.signal(signal.SIGTERM, stop) if installed else None
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _train_as(args: argparse.Namespace, run: Rendezvous, main_process: bool) -> int:
    """``rnnkit train`` in one process; only the main process touches the run directory."""
    from rnnkit.toolkit import rundir
    from rnnkit.toolkit.config import ConfigError, load_config
    from rnnkit.toolkit.tasks import get_task

    started = time.perf_counter()
    if args.resume and not args.out and args.config and Path(args.config).is_dir():
        args.out, args.config = args.config, None  # people type `--resume RUN_DIR`
    out = Path(args.out) if args.out else None
    if args.resume:
        if out is None and args.config:
            raise UsageError(f"--resume {args.config}: no such run directory")
        if out is None:
            raise UsageError("--resume needs a run directory: --resume RUN_DIR")
        if args.config:
            raise UsageError(
                f"--resume continues the run's own {rundir.CONFIG_FILE}; drop {args.config} "
                "(--set may still change train.epochs, early stopping, checkpointing and device)"
            )
        for text in args.set:
            if not text.strip().startswith("train."):
                raise ConfigError(
                    f"--resume can change [train] keys only (the data and model are fixed by the "
                    f"checkpoint), got {text!r}",
                    source="--set",
                )
        # every process: one of them puts back a run left aside by a killed replacement
        rundir.prepare_run_dir(out, resume=True, force=False)
        config = load_config(out / rundir.CONFIG_FILE, args.set)
        _check_resumable(load_config(out / rundir.CONFIG_FILE).train, config.train)
    else:
        config = load_config(args.config, args.set)
    config = config.resolve_paths()
    if out is None:
        out = rundir.default_run_dir(config.task)
    if main_process:
        work = rundir.prepare_run_dir(out, resume=args.resume, force=args.force)
    else:  # reads the checkpoint to resume from, writes nothing
        work = out if args.resume else None
    replacing = main_process and work != out

    try:  # from here a replacement's directory exists: removed if anything fails
        task = get_task(config.task)
        data = task.prepare(config)
        config = _with_derived(config, data.derived)
        transform_document = data.transform_document(config.task)
        if args.resume and not _killed_before_training(out):
            _check_same_transform(out, transform_document["transform"])
        _print(f"rnnkit train: task {config.task} -> {out}" + (" (resumed)" if args.resume else ""))
        for line in data.description:
            _print(line)
        for key, value in data.derived.items():
            _print(f'  {key} = {value!r}: chosen from the data ("auto"); set it to override')
        for line in data.warnings:
            _print(line)
        _train_into(work, config, task, data, transform_document, args.resume, main_process, run)
    except BaseException:
        if replacing:
            rundir.discard(work)
            _print(f"the run in {out} is unchanged")
        raise
    if replacing:
        rundir.finish_replacement(work, out)
    if not main_process:
        return 0

    written = sorted(
        p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if not p.name.startswith(".")
    )
    _print(f"run directory {out}: {', '.join(written)}")
    _print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


# [train] keys that --resume may change: read afresh each epoch, none of them is part of the
# optimizer's or the scheduler's state (epochs is, for "cosine": its length T_max).
_RESUMABLE_KEYS = frozenset(
    {"epochs", "early_stopping_patience", "early_stopping_min_delta", "checkpoint_every",
     "keep_checkpoints", "device"}
)  # fmt: skip
_OPTIMIZER_KEYS = frozenset(
    {"lr", "weight_decay", "optimizer", "momentum", "lr_schedule", "min_lr", "plateau_factor",
     "plateau_patience"}
)  # fmt: skip


def _with_derived(config: Any, derived: Mapping[str, Any]) -> Any:
    """`config` with the values the data decided (``{"data.lookback": 15}``) in place."""
    for key, value in derived.items():
        section, name = key.split(".")
        config = config.replace(**{section: dataclasses.replace(getattr(config, section),
                                                                **{name: value})})  # fmt: skip
    return config


def _check_resumable(saved: Any, changed: Any) -> None:
    """Refuse --set values that a resumed run would silently not apply.

    Args:
        saved: The run's own ``[train]`` section.
        changed: The same with the --set overrides applied.
    """
    from rnnkit.toolkit.config import ConfigError

    for field in dataclasses.fields(saved):
        name = field.name
        if getattr(saved, name) == getattr(changed, name):
            continue
        if name == "epochs" and saved.lr_schedule == "cosine":
            why = "resuming keeps the cosine schedule, whose length is the number of epochs"
        elif name in _RESUMABLE_KEYS:
            continue
        elif name in _OPTIMIZER_KEYS:
            why = "resuming keeps the optimizer state"
        else:
            why = "resuming continues the run as it was set up"
        raise ConfigError(f"{why}; start a new run to change `train.{name}`", source="--set")


def _train_into(
    work: Path | None,
    config: Any,
    task: Any,
    data: Any,
    transform_document: dict[str, Any],
    resume: bool,
    main_process: bool = True,
    run: Rendezvous | None = None,
) -> dict[str, Any]:
    """Build the model, train it into `work`, score it and write results and plots.

    Another process of a distributed run (``main_process`` False) only trains
    beside the main one: `work` is the run it resumes from, or None. `run`: the
    distributed run's rendezvous, where the processes meet before training.
    """
    from rnnkit.toolkit import rundir
    from rnnkit.toolkit.checkpoint import atomic_write
    from rnnkit.toolkit.config import ConfigError
    from rnnkit.toolkit.plots import plot_ensemble_members
    from rnnkit.toolkit.seeding import derive_seed, seed_everything
    from rnnkit.toolkit.tasks import first_batch, shape_trace
    from rnnkit.toolkit.trainer import Trainer

    members = config.model.ensemble_size
    if members > 1 and run is not None and run.env.world_size > 1:
        raise ConfigError(
            f"model.ensemble_size = {members} trains its members one after another in one "
            "process; run it without torchrun (or set model.ensemble_size = 1)"
        )
    member_config = dataclasses.replace(data.model_config, ensemble_size=1)

    def member(k: int) -> tuple[Any, Any]:
        """Member `k`'s training settings and model, fresh or resumed from its directory.
        The first member is the single model of the same config, seed and all."""
        seed = config.train.seed if k == 0 else derive_seed(config.train.seed, k)
        seed_everything(seed)
        model = _new_or_resumed_model(member_config, _member_dir(work, k, members)
                                      if resume else None)  # fmt: skip
        return dataclasses.replace(config.train, seed=seed).to_train_config(), model

    train_config, model = member(0)
    parameters = sum(p.numel() for p in model.parameters())
    layer = type(model.encoder.rnn).__name__  # RNN, LSTM or GRU: config.model.cell
    # Only the Elman layer has a choice of nonlinearity; the gated ones fix theirs.
    nonlinearity = f"{config.model.nonlinearity}, " if config.model.cell == "rnn" else ""
    _print(
        f"model: {f'the average of {members} ' if members > 1 else ''}{type(model).__name__}, "
        f"rnnkit.{layer} encoder ({nonlinearity}"
        f"hidden {config.model.hidden_size}, {config.model.num_layers} layer"
        f"{'s' if config.model.num_layers > 1 else ''}"
        f"{', bidirectional' if config.model.bidirectional else ''}) + "
        f"{'decoder with attention' if config.task == 'translate' else 'linear head'}, "
        f"{members * parameters:,} parameters"
    )
    if members > 1:
        _print(f"  an ensemble: {parameters:,} parameters a member, trained one after another")
    batch = first_batch(data.train, data.collate_fn, train_config.batch_size)
    _print("one training batch through it:")
    trace = shape_trace(model, batch)
    width = max(len(what) for what, _, _ in trace)
    shapes = [str(shape) for _, shape, _ in trace]
    shape_width = max(len(s) for s in shapes)
    for (what, _, meaning), shape in zip(trace, shapes, strict=True):
        _print(f"  {what:<{width}}  {shape:<{shape_width}}  # {meaning}")

    fitted, trained, fit_started = [], [], time.perf_counter()
    for k in range(members):
        if k:
            train_config, model = member(k)
        if members > 1:
            _print(f"ensemble member {k + 1} of {members} (seed {train_config.seed}):")
        # The Trainer checks the device and the monitor: build it before anything is written,
        # so that a run refused here leaves no files that would block the next try.
        trainer = Trainer(
            train_config,
            model,
            data.train,
            data.val,
            loss_fn=task.loss_fn(config.train.label_smoothing),
            metrics=task.metrics(),
            collate_fn=data.collate_fn,
            callbacks=[_EpochPrinter(_higher_is_better(task, train_config.monitor))],
            out_dir=_member_dir(work, k, members),
        )
        if k == 0:
            if run is not None:  # all checked, nothing written: each stops here if one failed
                run.all_ready(trainer.device)
                run.join(trainer.device)  # then a process that fails stops the others' collectives
            if main_process:
                work.mkdir(parents=True, exist_ok=True)
                # Also when resuming: --set train.KEY=VALUE may have changed the training settings.
                atomic_write(work / rundir.CONFIG_FILE, _config_header() + config.to_toml())
                rundir.write_json(work / rundir.TRANSFORM_FILE, transform_document)
            _print(
                f"training: {train_config.epochs} epoch{'s' if train_config.epochs > 1 else ''} of "
                f"{len(data.train):,} examples, batch "
                f"{train_config.batch_size}, {train_config.optimizer} lr {train_config.lr:g}, on "
                f"{trainer.device}"
            )
        history = trainer.fit(resume=resume)
        best = _best_epoch(history, trainer.monitor, _higher_is_better(task, trainer.monitor),
                           train_config.early_stopping_min_delta)  # fmt: skip
        if best is not None and train_config.restore_best and len(history) > 1:
            _print(f"kept the weights of epoch {best['epoch']} ({trainer.monitor} "
                   f"{best[trainer.monitor]:.6g})")  # fmt: skip
        fitted.append(trainer.model)
        trained.append({"seed": train_config.seed, "epochs": len(history),
                        "best_epoch": None if best is None else int(best["epoch"]),
                        trainer.monitor: None if best is None else best[trainer.monitor],
                        "history": history})  # fmt: skip
    if not main_process:
        return {}
    history = trained[0]["history"]
    results: dict[str, Any] = {
        "task": config.task,
        "epochs": len(history),
        "train_seconds": round(time.perf_counter() - fit_started, 2),
    }
    if history:
        results["monitor"] = trainer.monitor
        results["best_epoch"] = trained[0]["best_epoch"]
    if members > 1:
        model = _save_ensemble(work, config.task, data.model_config, fitted, trained)
        results["members"] = [{key: value for key, value in member.items() if key != "history"}
                              for member in trained]  # fmt: skip
        if data.val is not None and trainer.monitor.startswith("val_"):
            # The average's figure as the trainer measures the members' (loss, metrics).
            scorer = Trainer(train_config, model, data.train, data.val,
                             loss_fn=task.loss_fn(config.train.label_smoothing),
                             metrics=task.metrics(), collate_fn=data.collate_fn)  # fmt: skip
            value = scorer.evaluate(data.val)[trainer.monitor.removeprefix("val_")]
            results[f"ensemble_{trainer.monitor}"] = value
            plot_ensemble_members(
                [member[trainer.monitor] for member in trained], value,
                work / rundir.ENSEMBLE_PNG, metric=trainer.monitor,
                title=f"{config.task}: {members} members and their average, validation",
            )  # fmt: skip
    transform, baseline = data.transform, data.baseline
    test_frame = None
    for split, dataset in (("val", data.val), ("test", data.test)):
        if dataset is None:
            continue
        scores, frame = task.score(model, dataset, transform, baseline)
        results[split] = scores
        name = "validation" if split == "val" else "test"
        lines = task.report(scores)
        _print(f"{name}: {lines[0]}")
        for line in lines[1:]:
            _print(line)
        warning = task.validation_warning(scores) if split == "val" else None
        if warning:
            _print(warning)
        if split == "test":
            test_frame = frame
    rundir.write_json(work / rundir.RESULTS_FILE, results)
    _write_plots(work, config, history, results, test_frame)
    if config.task == "translate" and data.test is not None:
        _draw_attention(work / rundir.ATTENTION_PNG, model, transform, data.test.pairs.sources)
    if test_frame is not None:
        atomic_write(work / rundir.PREDICTIONS_CSV, test_frame.to_csv(index=False))
    return results


def _save_ensemble(
    work: Path, task: str, model_config: Any, fitted: list[Any], trained: list[dict[str, Any]]
) -> Any:
    """The members' average, saved as the run's model, and each member's learning curves
    in its own directory. Returns the :class:`~rnnkit.toolkit.ensemble.EnsembleModel`."""
    from rnnkit.toolkit import rundir
    from rnnkit.toolkit.checkpoint import save_model
    from rnnkit.toolkit.ensemble import EnsembleModel
    from rnnkit.toolkit.plots import plot_learning_curves
    from rnnkit.toolkit.trainer import MODEL_DIR

    model = EnsembleModel(model_config, fitted)
    save_model(work / MODEL_DIR, model)
    for k, member in enumerate(trained):
        if member["history"]:
            plot_learning_curves(
                member["history"], _member_dir(work, k, len(fitted)) / rundir.LEARNING_CURVES_PNG,
                best_epoch=member["best_epoch"],
                title=f"{task}: member {k + 1} of {len(fitted)}, loss per epoch",
            )  # fmt: skip
    return model


def _member_dir(work: Path | None, k: int, members: int) -> Path | None:
    """Where ensemble member `k` (from 0) trains: the run itself for a single model, else
    ``members/K`` in it (checkpoints, metrics.csv, model/ and learning curves of its own)."""
    if work is None or members == 1:
        return work
    return work / ENSEMBLE_MEMBERS_DIR / str(k + 1)


def _higher_is_better(task: Any, monitor: str | None) -> bool:
    """Whether a larger `monitor` value is better (accuracy), as the trainer decides it."""
    if not monitor:
        return False  # val_loss or train_loss
    name = monitor.split("_", 1)[1]
    return any(m.name == name and m.higher_is_better for m in task.metrics())


def _best_epoch(
    history: Sequence[Mapping[str, float]], monitor: str, higher_is_better: bool, delta: float
) -> Mapping[str, float] | None:
    """The epoch whose weights the trainer keeps: the first to improve `monitor` by > `delta`."""
    best = None
    for row in history:
        value = row.get(monitor)
        if not _finite(value):
            continue
        if (
            best is None
            or (higher_is_better and value > best[monitor] + delta)
            or (not higher_is_better and value < best[monitor] - delta)
        ):
            best = row
    return best


def _write_plots(
    work: Path, config: Any, history: list, results: dict[str, Any], test_frame: Any
) -> None:
    """The learning curves; the forecast or the confusion matrix on the test set."""
    from rnnkit.toolkit import plots, rundir

    members = config.model.ensemble_size
    member_one = f"member 1 of {members}, " if members > 1 else ""  # members/K hold the others'
    if history:
        plots.plot_learning_curves(
            history,
            work / rundir.LEARNING_CURVES_PNG,
            best_epoch=results.get("best_epoch"),
            title=f"{config.task}: {member_one}loss per epoch (hidden {config.model.hidden_size}, "
            f"lr {config.train.lr:g})",
        )
    if config.task == "forecast" and test_frame is not None:
        test = results["test"]
        plots.plot_forecast(
            test_frame["date"],
            test_frame["actual"],
            test_frame["predicted"],
            work / rundir.FORECAST_PNG,
            title=f"{test['target']}, test period: RMSE {test['model']['rmse']:.2f} "
            f"(persistence {test['persistence']['rmse']:.2f})",
            ylabel=test["target"],
        )
    if config.task in ("classify", "classify-series") and test_frame is not None:
        labels, predicted = test_frame["label"].tolist(), test_frame["predicted"].tolist()
        plots.plot_confusion_matrix(
            labels,
            predicted,
            sorted(set(labels) | set(predicted)),  # a class neither true nor predicted: no row
            work / rundir.CONFUSION_PNG,
            title=f"{config.task}, test set: accuracy "
            f"{results['test']['model']['accuracy']:.1%} ({len(labels):,} examples)",
        )


def _draw_attention(path: Path, model: Any, transform: Any, sentences: Sequence[str]) -> None:
    """The attention map of the test sentence of median length (a typical one)."""
    from rnnkit.toolkit import explain, plots
    from rnnkit.toolkit.tasks.translate import BEAM_SIZE

    by_length = sorted(sentences, key=len)
    sentence = by_length[len(by_length) // 2]
    found = explain.attention_map(model, transform, sentence)
    title = f"{sentence}\n-> {found.translation} (beam {BEAM_SIZE})"
    plots.plot_attention(found.weights, found.source, found.target, path, title=title)


def _check_same_transform(run: Path, fitted: Mapping[str, Any]) -> None:
    from rnnkit.toolkit import rundir

    path = run / rundir.TRANSFORM_FILE
    saved = rundir.read_json(path)
    if saved.get("transform") != fitted:
        raise rundir.RunDirError(
            f"{path}: the data no longer give the transform this run was trained with (the "
            "files changed since); evaluate --data PATH scores another file"
        )


def _new_or_resumed_model(model_config: Any, run: Path | None) -> Any:
    """A freshly initialised model, or, resuming `run`, one built against the weights file
    of its last checkpoint: a ``config.toml`` edited to ask for more than the checkpoint
    holds is refused (one line) before anything that size is allocated."""
    from rnnkit.toolkit import rundir
    from rnnkit.toolkit.checkpoint import MODEL_FILE, latest_checkpoint, read_tensors
    from rnnkit.toolkit.model_loading import build_saved_model
    from rnnkit.toolkit.models import build_model
    from rnnkit.toolkit.trainer import CHECKPOINTS_DIR

    checkpoint = None if run is None else latest_checkpoint(run / CHECKPOINTS_DIR)
    if checkpoint is None:
        return build_model(model_config)
    weights = checkpoint / MODEL_FILE
    return build_saved_model(model_config, read_tensors(weights), weights, run / rundir.CONFIG_FILE)


def _killed_before_training(run: Path) -> bool:
    """A run stopped between writing config.toml and transform.json: nothing to compare with.

    The transform is written before the first epoch, so a run without one has
    no checkpoint either; resuming it starts from scratch and writes both.
    """
    from rnnkit.toolkit import rundir
    from rnnkit.toolkit.checkpoint import latest_checkpoint
    from rnnkit.toolkit.trainer import CHECKPOINTS_DIR

    missing = not (run / rundir.TRANSFORM_FILE).exists()
    return missing and latest_checkpoint(run / CHECKPOINTS_DIR) is None


def _config_header() -> str:
    from rnnkit import __version__

    return f"# The resolved configuration of this run (rnnkit {__version__}).\n\n"


class _EpochPrinter:
    """Prints about 20 epoch lines however many epochs run: the first, every k-th, the last,
    and each new best of the monitored value (marked ``*``), through tqdm so that a progress
    bar is not torn."""

    def __init__(self, higher_is_better: bool) -> None:
        self.higher_is_better = higher_is_better
        self.best: float | None = None

    def on_fit_start(self, trainer: Any) -> None:
        for row in trainer.history:  # resumed: earlier epochs set the best so far
            self._improves(row.get(trainer.monitor))

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: Any, step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer: Any, epoch: int, logs: Mapping[str, float]) -> None:
        from tqdm import tqdm

        epochs = trainer.config.epochs
        every = max(1, -(-epochs // 20))
        improved = self._improves(logs.get(trainer.monitor))
        if not (improved or epoch == 1 or epoch % every == 0 or epoch == epochs):
            return
        shown = [f"{k} {v:.4g}" for k, v in logs.items() if k not in ("epoch", "lr", "seconds")]
        digits = len(str(epochs))
        tqdm.write(
            f"epoch {epoch:>{digits}}/{epochs}{' *' if improved else '  '} "
            + "  ".join(shown)
            + f"  {logs.get('seconds', 0):.2f}s",
            file=sys.stdout,
        )

    def on_fit_end(self, trainer: Any, history: Sequence[Mapping[str, float]]) -> None:
        pass

    def _improves(self, value: float | None) -> bool:
        if not _finite(value):
            return False
        better = (
            self.best is None
            or (self.higher_is_better and value > self.best)
            or (not self.higher_is_better and value < self.best)
        )
        if better:
            self.best = value
        return better


# ----------------------------------------------------------------------------- evaluate


def _load_run(run_dir: str) -> tuple[Path, Any, Any, Any, dict[str, Any], Any]:
    """The run's directory, config, task, transform, baseline and model."""
    from rnnkit.toolkit import rundir
    from rnnkit.toolkit.checkpoint import load_model
    from rnnkit.toolkit.config import load_config
    from rnnkit.toolkit.tasks import check_model_fits, get_task, read_transform

    run = rundir.require_run(run_dir)
    config = load_config(run / rundir.CONFIG_FILE)
    task = get_task(config.task)
    transform_path = run / rundir.TRANSFORM_FILE
    transform, baseline = read_transform(task, rundir.read_json(transform_path), transform_path)
    model = load_model(run / rundir.MODEL_DIR)  # sized by its weights file, not by its JSON
    check_model_fits(task, transform, model.config, transform_path)
    return run, config, task, transform, baseline, model


def _evaluate(args: argparse.Namespace) -> int:
    from rnnkit.toolkit import rundir

    run, config, task, transform, baseline, model = _load_run(args.run_dir)
    if args.data:
        dataset = task.dataset(config, transform, args.data)
        where = args.data
    else:
        data = task.prepare(config)
        _check_same_transform(run, data.transform.to_dict())
        dataset = data.test
        if dataset is None:
            raise rundir.RunDirError(
                f"{run}: the run held out no test data (data.test_fraction = 0); "
                "--data PATH scores a file"
            )
        where = "the run's test split"
    scores, _ = task.score(model, dataset, transform, baseline)
    lines = task.report(scores)
    _print(f"{run} on {where}: {lines[0]}")
    for line in lines[1:]:
        _print(line)
    return 0


def _predict(args: argparse.Namespace) -> int:
    _, _, task, transform, _, model = _load_run(args.run_dir)
    frame = task.predict(model, transform, args.data)
    if args.output:
        from rnnkit.toolkit.checkpoint import atomic_write

        atomic_write(args.output, frame.to_csv(index=False))
        _print(f"wrote {len(frame):,} predictions to {args.output}")
    else:
        sys.stdout.write(frame.to_csv(index=False))
    return 0


def _generate(args: argparse.Namespace) -> int:
    _, config, task, transform, _, model = _load_run(args.run_dir)
    if config.task != "language-model":
        raise UsageError(
            f"{args.run_dir}: is a {config.task!r} run; generate needs a 'language-model' run"
        )
    prompt = task.default_prompt(transform) if args.prompt is None else args.prompt
    ids = task.encode_prompt(transform, prompt)
    tokens = model.stream(
        ids, args.length, temperature=args.temperature, top_k=args.top_k, seed=args.seed
    )
    unk = transform.vocab.unk_index
    sys.stdout.write(prompt)
    for token in tokens:
        # <unk> is never a training target, but an undertrained model may still sample it:
        # one replacement character keeps one character per step.
        sys.stdout.write("\ufffd" if token == unk else transform.vocab.decode([token])[0])
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _translate(args: argparse.Namespace) -> int:
    run, config, _, transform, _, model = _load_run(args.run_dir)
    if config.task != "translate":
        raise UsageError(
            f"{args.run_dir}: is a {config.task!r} run; translate needs a 'translate' run"
        )
    if args.beam < 1:
        raise UsageError(f"--beam: expected a positive integer, got {args.beam}")
    if args.attention and args.text is None:
        raise UsageError("--attention draws one sentence: give TEXT")
    from rnnkit.toolkit.tasks.translate import translate_sentences

    if args.text is not None:
        sentences = [args.text.strip()]
    else:
        sentences = [line.strip() for line in sys.stdin]
    if not all(sentences):
        raise UsageError("expected a sentence, got an empty line")
    maps: list[Any] = []
    for translation in translate_sentences(
        model, transform, sentences, beam_size=args.beam, attention=maps
    ):
        _print(translation)
    if args.attention:
        from rnnkit.toolkit import plots

        source, target, weights = maps[0]
        plots.plot_attention(weights, source, target, args.attention,
                             title=f"{run.name}: attention, beam {args.beam}")  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- explain


def _explain(args: argparse.Namespace) -> int:
    from rnnkit.toolkit import explain, plots

    if args.compare_epochs < 1:
        raise UsageError(
            f"--compare-epochs: expected a positive integer, got {args.compare_epochs}"
        )
    run, config, task, transform, _, model = _load_run(args.run_dir)
    model, note = explain.explained_model(model)
    data = None
    if args.data:
        dataset, collate_fn = task.dataset(config, transform, args.data), task.collate_fn(transform)
        where = args.data
    else:
        data = task.prepare(config)
        _check_same_transform(run, data.transform.to_dict())
        dataset, split = explain.first_split(data)
        collate_fn, where = data.collate_fn, f"the run's {split} data"
    batch = explain.example_batch(dataset, collate_fn, where)
    out = Path(args.out) if args.out else run / explain.EXPLAIN_DIR
    out.mkdir(parents=True, exist_ok=True)
    _print(f"rnnkit explain: {run}, the first example of {where}")
    if note:
        _print(f"note: {note}")

    layer = f"rnnkit.{type(model.encoder.rnn).__name__}"
    states = explain.hidden_states(model, batch)
    steps, units = states["forward"].shape
    inputs = explain.step_inputs(transform, batch)
    names = getattr(transform, "feature_columns", None)  # a forecast's input columns
    if names is not None and (isinstance(inputs, list) or len(names) != inputs.shape[1]):
        names = None
    what = "encoder's " if config.task == "translate" else ""
    path = plots.plot_hidden_states(
        states, out / explain.HIDDEN_STATES_PNG, inputs=inputs, feature_names=names,
        title=f"{run.name}: hidden states of the {what}top {layer} layer\n"
        f"{units} units, {steps} steps ({where})",
    )  # fmt: skip
    _print(f"wrote {path}")

    if config.task == "translate":
        sentence = dataset.pairs.sources[0]
        attention = explain.attention_map(model, transform, sentence)
        path = plots.plot_attention(
            attention.weights, attention.source, attention.target, out / explain.ATTENTION_PNG,
            title=f"{sentence}\n-> {attention.translation}",
        )  # fmt: skip
        _print(f"wrote {path}")
        _print(
            f"note: no {explain.GRADIENT_PNG} for a translate run: its decoder reads every "
            "encoder step through attention, not only through the recurrence"
            + ("; --compare does not apply either" if args.compare else "")
        )
        return 0

    loss_fn = task.loss_fn(config.train.label_smoothing)
    norms = explain.gradient_through_time(model, batch, loss_fn)
    two = len(norms) == 2
    path = plots.plot_gradient_norms(
        {f"{name} direction": values for name, values in norms.items()} if two
        else norms["forward"],
        out / explain.GRADIENT_PNG,
        title=f"{run.name}: how much the loss depends on the state after each step\n"
        f"({layer}, {units} units, {where})",
    )  # fmt: skip
    _print(f"wrote {path}")
    if args.compare:
        if data is None:  # the comparison trains on the run's own training data
            data = task.prepare(config)
            _check_same_transform(run, data.transform.to_dict())
        _explain_compare(args, run, task, data, batch, out, where)
    return 0


def _explain_compare(
    args: argparse.Namespace, run: Path, task: Any, data: Any, batch: Any, out: Path, where: str
) -> None:
    """Train each cell briefly on the run's data and draw their gradient norms together."""
    from rnnkit.toolkit import explain, plots, rundir

    curves, labels = [], []
    epochs = args.compare_epochs
    for cell in explain.COMPARED_CELLS:
        config = explain.compare_config(run / rundir.CONFIG_FILE, cell, epochs)
        name = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cell]
        _print(
            f"--compare: training rnnkit.{name} (hidden {config.model.hidden_size}) for {epochs} "
            f"epoch{'s' if epochs > 1 else ''} on {len(data.train):,} examples"
        )
        printer = _EpochPrinter(_higher_is_better(task, config.train.monitor))
        model = explain.train_briefly(config, task, data, callbacks=[printer])
        loss_fn = task.loss_fn(config.train.label_smoothing)
        norms = explain.gradient_through_time(model, batch, loss_fn)
        curves.append(norms["forward"])
        labels.append(f"rnnkit.{name}" + (" (Elman)" if cell == "rnn" else ""))
    forward = ", forward direction" if data.model_config.bidirectional else ""
    path = plots.plot_gradient_norms(
        curves, out / explain.GRADIENT_COMPARE_PNG, labels=labels,
        title=f"{run.name}: three cells after {epochs} epoch{'s' if epochs > 1 else ''} each\n"
        f"(hidden {data.model_config.hidden_size}{forward}, {where})",
    )  # fmt: skip
    _print(f"wrote {path}")


# ----------------------------------------------------------------------------- bench


def _bench(args: argparse.Namespace) -> int:
    import json

    from rnnkit import benchmark
    from rnnkit.toolkit.checkpoint import atomic_write

    # Kineto, behind the memory measurement, writes lines to stderr at each profile's start
    # and stop unless its level is above all of its own; it reads this at the first profile.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    if not args.quiet:
        logging.getLogger("rnnkit").setLevel(min(logging.INFO, _level(args)))
    try:
        config = benchmark.config_from_args(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    results = benchmark.run_benchmark(config)
    _print(benchmark.format_table(results, markdown=args.markdown))
    if args.json:
        report = {
            "environment": benchmark.environment(),
            "config": benchmark.config_to_dict(config),
            "results": results,
        }
        atomic_write(args.json, json.dumps(report, indent=1) + "\n")
        _print(f"wrote {len(results)} rows to {args.json}", file=sys.stderr)
    return 0


def _warmup(args: argparse.Namespace) -> int:
    import torch

    from rnnkit import compiled
    from rnnkit.compiled import cache, warmup

    if not compiled.available():
        raise ValueError("The compiled engine needs numba and scipy: pip install numba scipy")
    _print(f"kernel cache: {cache.location() or 'none (no writable directory)'}")
    for name in args.dtype or ("float32", "float64"):
        for cell in args.cell or warmup.CELLS:
            start = time.perf_counter()
            compiled_now = warmup.load(getattr(torch, name), cell)
            how = "compiled" if compiled_now else "loaded from the cache"
            _print(f"{name} {cell} kernels {how} in {time.perf_counter() - start:.1f} s")
    return 0


# ----------------------------------------------------------------------------- output


def _print(text: str = "", *, file: TextIO | None = None) -> None:
    print(text, file=sys.stdout if file is None else file, flush=True)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _describe(error: BaseException) -> str:
    """One line for an exception: its message, with the type for unexpected kinds."""
    from rnnkit.toolkit.checkpoint import CheckpointError
    from rnnkit.toolkit.rendezvous import OtherProcessFailedError
    from rnnkit.toolkit.trainer import TrainingDivergedError

    text = " ".join(str(error).split()) or type(error).__name__
    expected = (
        ValueError,
        OSError,
        CheckpointError,
        TrainingDivergedError,
        OtherProcessFailedError,
    )
    if isinstance(error, expected):
        return text
    return f"{type(error).__name__}: {text} (--debug shows the traceback)"


def _level(args: argparse.Namespace) -> int:
    if args.debug:
        return logging.DEBUG
    return logging.INFO if args.verbose else logging.WARNING


@contextlib.contextmanager
def _logging(args: argparse.Namespace) -> Iterator[None]:
    """Library log records go to stderr as ``rnnkit: message`` for this command only."""
    logger = logging.getLogger("rnnkit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(_level(args))
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings as ``rnnkit: warning: message`` (what, not where)."""

    def show(message: Any, category: type, filename: str, lineno: int, file=None, line=None):
        print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _finite(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and math.isfinite(value)
