"""The AVX2 decode-step kernels (avx2_kernels.cpp: linear layers, attention), built on first use.

torch compiles it with the machine's C++ compiler through ninja into its extensions cache
(`$TORCH_EXTENSIONS_DIR`, default `~/.cache/torch_extensions`), again whenever the source changes: about a
minute the first time, an import afterwards.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType

import torch

from janus_sdk.errors import BackendUnavailableError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("avx2_kernels.cpp")
EXTENSION = "janus_avx2_kernels"
KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def cpu_has_avx2() -> bool:
    """Whether torch's own CPU kernels dispatch to AVX2 or better here (the kernel needs AVX2 and FMA)."""
    return torch.backends.cpu.get_cpu_capability() in {"AVX2", "AVX512", "AVX512_BF16", "AMX"}


@functools.cache
def avx2_kernels() -> ModuleType:
    """The compiled kernel module; BackendUnavailableError saying why when it cannot be had here."""
    if not cpu_has_avx2():
        raise BackendUnavailableError(
            f"the 'avx2' backends need a CPU with AVX2 and FMA (torch reports "
            f"{torch.backends.cpu.get_cpu_capability()!r}); use linear 'torch' and attention 'sdpa'"
        )
    from torch.utils import cpp_extension

    build = Path(cpp_extension.get_default_build_root()) / EXTENSION
    if not (build / f"{EXTENSION}.so").exists():  # a silent minute would look like a hang
        log.warning("janus-sdk: compiling the AVX2 kernels into %s (once, about a minute)", build)
    try:
        build.mkdir(parents=True, exist_ok=True)
        module: ModuleType = cpp_extension.load(
            EXTENSION,
            [str(SOURCE)],
            build_directory=str(build),
            # OpenMP: at::parallel_for runs on torch's threads. No contraction of a * b + c into one FMA
            # where the source does not ask for it: the elementwise kernels round where torch rounds.
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailableError(
            "the 'avx2' backends could not compile their kernels (they need a C++ compiler and the ninja "
            f"package: pip install ninja): {reason}; use linear 'torch' and attention 'sdpa'"
        ) from exc
    return module


def require_kernels(device: torch.device, dtype: torch.dtype, kind: str, alternative: str) -> ModuleType:
    """The kernels for an `avx2` backend of `kind` ("linear", "attention") running on `device` in `dtype`;
    BackendUnavailableError naming `alternative` when they cannot run there."""
    if device.type != "cpu" or dtype not in KERNEL_DTYPES:
        raise BackendUnavailableError(
            f"{kind} backend 'avx2' runs on the CPU in float32 or bfloat16, not on {device.type} in "
            f"{str(dtype).removeprefix('torch.')}; use {kind} '{alternative}'"
        )
    return avx2_kernels()


def kernels_usable(device: torch.device, dtype: torch.dtype, fallback: str) -> bool:
    """Whether the kernels can serve here: an AVX2 CPU, float32/bfloat16, and kernels that compile. A failure
    to compile is logged as "not using the AVX2 kernels: <fallback>" (e.g. "linear 'auto' picks torch")."""
    if device.type != "cpu" or dtype not in KERNEL_DTYPES or not cpu_has_avx2():
        return False
    try:
        avx2_kernels()
    except BackendUnavailableError as exc:
        log.warning("not using the AVX2 kernels: %s; %s", fallback, exc)
        return False
    return True
