"""rnnkit of the working tree against rnnkit of a git revision, in one process.

A change that claims speed needs a before/after measured where machine noise
falls on both alike: separate processes on this shared machine differ by more
than most changes do. This exports the package of ``--base`` (default HEAD)
into a cache directory as ``rnnkit_base`` (module and custom-op names renamed so
both load in one process), builds both modules on the same weights, and times
them in alternating order, each call after a call of torch.nn.RNN as in
``bench_rnn.py`` (``--alone`` drops that: see ``interleave_effect.py``). Ratio =
base time / working-tree time, so above 1 means the working tree is faster.

An export is reused while its revision's code is unchanged, so numba's cache of
its kernels stays warm after the first run. The two copies share nothing but
torch, numpy and SciPy.

Example:
    python benchmarks/compare_revisions.py --base HEAD --shapes 100,1,4,64 --modes train
    python benchmarks/compare_revisions.py --cell lstm gru --layers 1 --bidirectional 0
    python benchmarks/compare_revisions.py --cell lstm --proj-size 32 --shapes 50,64,32,128
    python benchmarks/compare_revisions.py --cell lstm --packed --shapes 20,4,16,512
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import rnnkit
from rnnkit.benchmark import (
    _LAYER_NAMES,
    _make_step,
    _time_interleaved,
    packed_lengths,
    parse_shape,
)

_PACKAGE = "src/rnnkit"
_BASE_NAME = "rnnkit_base"
# Names that would clash between the two copies: imports of the package, the
# torch.library namespace of its custom ops, and the process-wide LLVM symbols its
# kernels bind BLAS through ("rnnkit_sgemm"), each registered once per process.
_RENAMES = (
    (re.compile(r"\brnnkit(?=[.:]|\s+import\b|$)", re.MULTILINE), _BASE_NAME),
    (re.compile(r"\bimport rnnkit\b"), f"import {_BASE_NAME}"),
    (re.compile(r"\brnnkit_(?!base)"), f"{_BASE_NAME}_"),
)
_CACHE = Path.home() / ".cache" / "rnnkit" / "revisions"


def export_revision(revision: str, repo: Path, cache: Path = _CACHE) -> Path:
    """Exports ``src/rnnkit`` at ``revision`` as the package ``rnnkit_base``.

    Args:
        revision: anything ``git rev-parse`` accepts.
        repo: a directory inside the git checkout.
        cache: where exports live, one directory per tree of the package.

    Returns:
        The directory to put on ``sys.path`` (it holds ``rnnkit_base/``).

    Raises:
        ValueError: the revision is unknown or has no ``src/rnnkit``.
    """
    top = _git(repo, "rev-parse", "--show-toplevel")
    tree = _git(repo, "rev-parse", "--verify", "--quiet", f"{revision}:{_PACKAGE}")
    if top is None or tree is None:
        raise ValueError(f"Received an invalid value for --base: no {_PACKAGE} at {revision!r}.")
    root = cache / tree
    if (root / _BASE_NAME / "__init__.py").exists():
        return root
    archive = subprocess.run(
        ["git", "-C", top, "archive", "--format=tar", tree],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    # Each export writes its own hidden directory and renames it into place whole,
    # so a killed or concurrent export never leaves a half-renamed copy at `root`.
    staging = Path(tempfile.mkdtemp(prefix=f".{tree}.", dir=cache))
    try:
        package = staging / _BASE_NAME
        package.mkdir()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            # git's own archive; the "data" filter where this Python has it (3.10.12+)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(package, **safe)
        for path in package.rglob("*.py"):
            path.write_text(rename_package(path.read_text()))
        staging.rename(root)
    except OSError:
        if not (root / _BASE_NAME / "__init__.py").exists():
            raise
        # another export of the same tree finished first: use it
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def rename_package(source: str) -> str:
    """``source`` with every reference to the package ``rnnkit`` made to ``rnnkit_base``."""
    for pattern, replacement in _RENAMES:
        source = pattern.sub(replacement, source)
    return source


def _git(repo: Path, *args: str) -> str | None:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def compare_row(
    base, shape, num_layers, bidirectional, mode, repeats, alone, cell="rnn", proj_size=0,
    packed=False,
) -> dict[str, float]:  # fmt: skip
    """Times one row of ``cell`` (``"rnn"``, ``"lstm"``, ``"gru"``; an LSTM's
    ``proj_size``; ``packed``: a PackedSequence of unequal lengths, as ``rnnkit bench``'s);
    returns median microseconds of ``"base"`` and ``"working"``."""
    T, N, H_in, H_out = shape
    D = 2 if bidirectional else 1
    P = proj_size or H_out  # features of h
    name = _LAYER_NAMES[cell]
    kwargs = {"num_layers": num_layers, "bidirectional": bidirectional}
    if proj_size:
        kwargs["proj_size"] = proj_size
    torch.manual_seed(0)
    reference = getattr(torch.nn, name)(H_in, H_out, **kwargs)
    x, h0 = torch.randn(T, N, H_in), torch.randn(num_layers * D, N, P)
    lengths = packed_lengths(T, N, 0) if packed else None
    rows = int(lengths.sum()) if packed else None
    grads = torch.randn(*((rows,) if packed else (T, N)), D * P), torch.randn(num_layers * D, N, P)
    if cell == "lstm":  # (h, c) and their gradients; c has H_out features
        c0, grad_c_n = torch.randn(num_layers * D, N, H_out), torch.randn(num_layers * D, N, H_out)
        h0, grads = (h0, c0), (grads[0], (grads[1], grad_c_n))
    steps = {}
    for label, module in (("torch", torch.nn), ("base", base), ("working", rnnkit)):
        layer = getattr(module, name)(H_in, H_out, **kwargs)
        layer.load_state_dict(reference.state_dict())
        steps[label] = _make_step(layer, mode, x, h0, *grads, lengths=lengths)
    torch_step = steps.pop("torch")
    for package in (base, rnnkit):
        _wait_for_kernels(package, cell)
    for _ in range(3):  # compilation, first allocations
        torch_step(), *(step() for step in steps.values())
    samples = _time_interleaved(steps, repeats, before=None if alone else torch_step)
    return {name: statistics.median(seconds) * 1e6 for name, seconds in samples.items()}


def _wait_for_kernels(package, cell: str) -> None:
    """Until ``package``'s compiled kernels of ``cell`` are in: with an empty cache
    (a new export) "auto" runs torch ops while they compile in the background, and the
    row would time that. Revisions before background compilation wait by themselves."""
    try:
        warmup = importlib.import_module(f"{package.__name__}.compiled.warmup")
    except ImportError:
        return
    warmup.wait(torch.float32, cell)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--cell", nargs="+", choices=sorted(_LAYER_NAMES), default=["rnn"])
    parser.add_argument(
        "--shapes", type=parse_shape, nargs="+", default=[(100, 30, 4, 64)],
        metavar="T,N,H_in,H_out",
    )  # fmt: skip
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bidirectional", type=int, nargs="+", choices=[0, 1], default=[0, 1])
    parser.add_argument("--modes", nargs="+", choices=["train", "inference"], default=["train"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=100, help="timed calls of each per row")
    parser.add_argument("--alone", action="store_true", help="no torch.nn.RNN call before each")
    parser.add_argument("--proj-size", type=int, default=0, help="the LSTM rows' proj_size")
    parser.add_argument("--packed", action="store_true", help="PackedSequence input")
    args = parser.parse_args(argv)
    if args.proj_size and args.cell != ["lstm"]:
        parser.error("--proj-size needs --cell lstm")
    try:
        root = export_revision(args.base, Path(__file__).resolve().parent)
    except (ValueError, OSError, subprocess.CalledProcessError) as error:
        print(f"compare_revisions: {error}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    base = importlib.import_module(_BASE_NAME)
    print(f"base {args.base} ({root.name[:12]}) against the working tree; ratio = base / working")
    print("| cell | shape | layers | dir | mode | threads | base us | working us | ratio |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|")
    for threads, cell in itertools.product(args.threads, args.cell):
        torch.set_num_threads(threads)
        for shape in args.shapes:
            for layers in args.layers:
                for bidirectional in args.bidirectional:
                    for mode in args.modes:
                        row = (shape, layers, bool(bidirectional), mode, args.repeats, args.alone)
                        us = compare_row(base, *row, cell=cell, proj_size=args.proj_size,
                                         packed=args.packed)  # fmt: skip
                        label = "x".join(map(str, shape)) + (" packed" if args.packed else "")
                        label += f" P={args.proj_size}" if args.proj_size else ""
                        direction = "bi" if bidirectional else "uni"
                        print(
                            f"| {cell} | {label} | {layers} | {direction} | {mode} | {threads} | "
                            f"{us['base']:.1f} | {us['working']:.1f} | "
                            f"{us['base'] / us['working']:.3f} |",
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
