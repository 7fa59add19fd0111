"""What this CPU offers that the engine's measured rules depend on.

The compiled loops' choices (which library multiplies a product, when our loops run in
place of torch's oneDNN LSTM) were measured on one CPU with AVX-512 (AMD Zen 4) and one
with AVX2 only (AMD Zen 3): the libraries rank differently on the two (see
:mod:`rnnkit.compiled.blas` and :mod:`rnnkit.engine.onednn`).
"""

from __future__ import annotations

import functools


@functools.cache
def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (its foundation), as llvmlite reads the host: the
    features numba compiles the kernels for and keys their disk cache by, so a kernel
    cached on one CPU never runs with the other's rules."""
    import llvmlite.binding as llvm  # numba's own dependency; imported on first use

    return bool(llvm.get_host_cpu_features().get("avx512f", False))
