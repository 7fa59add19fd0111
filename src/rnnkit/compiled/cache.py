"""Where numba caches the compiled kernels on disk, decided once per process.

In order: ``$NUMBA_CACHE_DIR`` if set (numba's own setting, respected as
given); else the ``__pycache__`` beside the kernels' source, numba's default,
if writable (an editable or user install); else a user cache directory
(``$XDG_CACHE_HOME/rnnkit/numba`` or ``~/.cache/rnnkit/numba``,
``~/Library/Caches/rnnkit/numba`` on macOS, ``%LOCALAPPDATA%\\rnnkit\\numba``
on Windows) for a read-only system or container install. If the chosen
directory cannot be written, the kernels are not cached: each process compiles
them again (logged as a warning, not an error).

:func:`location` decides without importing numba; :func:`configure_numba`
applies it, before any kernel is decorated. :func:`mark_complete` leaves a
marker once a dtype's kernels are all in the cache, and :func:`complete` reads
it, also without numba: with it, a process loads the kernels before its first
call instead of starting on the torch-ops engine (see :mod:`rnnkit.compiled.warmup`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

ENVIRONMENT = "NUMBA_CACHE_DIR"
# The files numba compiles the kernels from (the completion marker goes stale with them).
KERNEL_SOURCES = ("kernels.py", "gated_kernels.py", "options_kernels.py", "blas.py", "team.py")


def user_cache_dir() -> Path:
    """rnnkit's per-user cache directory for compiled kernels (not created here)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rnnkit" / "numba"


def writable(directory: Path) -> bool:
    """Whether ``directory`` exists or can be made, and takes a new file (as numba checks)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


def choose(requested: str | None, in_tree: Path, user: Path) -> Path | None:
    """The cache directory, by the rule in the module docstring.

    Args:
        requested: ``$NUMBA_CACHE_DIR``, or None (or empty) when not set.
        in_tree: the ``__pycache__`` beside the kernels' source.
        user: the per-user fallback (:func:`user_cache_dir`).

    Returns:
        The directory, or None when the one chosen cannot be written.
    """
    if requested:
        return Path(requested) if writable(Path(requested)) else None
    if writable(in_tree):
        return in_tree
    return user if writable(user) else None


@functools.cache
def location() -> Path | None:
    """This process's cache directory (see the module docstring), or None: no disk cache."""
    in_tree = _in_tree()
    requested = os.environ.get(ENVIRONMENT)
    directory = choose(requested, in_tree, user_cache_dir())
    tried = requested or f"{in_tree} and {user_cache_dir()}"
    if directory is None:
        logger.warning(
            "rnnkit.compiled: cannot write the kernel cache (tried %s); the compiled "
            "kernels will be compiled again in every process",
            tried,
        )
    elif not requested and directory != in_tree:
        logger.info("rnnkit.compiled: %s is read-only; caching kernels in %s", in_tree, directory)
    return directory


@functools.cache
def configure_numba() -> bool:
    """Point numba at :func:`location` (before kernels are decorated with ``cache=``).

    Returns:
        Whether the kernels are cached on disk: the ``cache`` argument of their ``njit``.
    """
    from numba.core import config

    directory = location()
    # $NUMBA_CACHE_DIR and the __pycache__ are where numba looks by itself; the
    # user directory must be set (numba's own fallback would be its ~/.cache/numba).
    if directory not in (None, _in_tree()) and not os.environ.get(ENVIRONMENT):
        config.CACHE_DIR = str(directory)
    return directory is not None


def _in_tree() -> Path:
    """The ``__pycache__`` beside the kernels' source, numba's default cache."""
    return Path(__file__).resolve().parent / "__pycache__"


def complete(name: str) -> bool:
    """Whether an earlier process left every kernel of this set (``"float32-rnn"``) in the
    cache, for this numba, Python, machine and kernel source (see :func:`mark_complete`)."""
    marker = _marker(name)
    return marker is not None and marker.exists()


def mark_complete(name: str) -> None:
    """Record that this set's kernels are all in the cache (no-op without a cache)."""
    marker = _marker(name)
    if marker is not None:
        try:
            marker.touch()
        except OSError:  # a read-only cache: the next process loads in the background
            logger.debug("rnnkit.compiled: cannot write %s", marker)


def _marker(name: str) -> Path | None:
    directory = location()
    return None if directory is None else directory / f"rnnkit-{name}-{_fingerprint()}.ready"


@functools.cache
def _fingerprint() -> str:
    """A hash of what numba's cache entries depend on: its version, Python's, the
    machine (its CPU is in numba's key), and the kernels' source files."""
    try:
        numba_version = metadata.version("numba")
    except metadata.PackageNotFoundError:
        numba_version = "unknown"
    here = Path(__file__).resolve().parent
    sources = [(name, (here / name).stat().st_mtime_ns, (here / name).stat().st_size)
               for name in KERNEL_SOURCES]  # fmt: skip
    key = (numba_version, sys.version, platform.machine(), platform.node(), sources)
    return hashlib.sha1(repr(key).encode()).hexdigest()[:16]
