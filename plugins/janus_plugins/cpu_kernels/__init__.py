"""The CPU kernels for decode steps, built once per machine: a library the built-in plugins share (the
`linear`, `cpu_attention` and DeepSeek-LLM layer-op plugins import it; it imports no plugin).

One source per family beside this module, compiled for this machine's architecture (`Target`): the linear
kernel's tiles per architecture (AVX2 with AVX-512 BF16/VNNI ones in `linear_x86.cpp`; NEON with SDOT and
BFDOT ones in `neon.h` and `linear_arm.cpp`); decode attention (`attention.cpp`) and a layer's elementwise ops
(`layer_ops.cpp`), each written once over the architecture's vector lanes (`lanes.h`). `linear.h` and
`linear.cpp` are the linear kernel's drivers and entry on both, `bindings.cpp` the Python module, `common.h`
what they share. torch compiles them with the machine's C++ compiler through ninja (about a minute) into one
module. The build lives in the janus-sdk cache folder (`$JANUS_SDK_CACHE_DIR`, default `~/.cache/janus-sdk`)
under `kernels/<key>`, the key a hash of everything the binary depends on: the sources, the compiler flags,
torch's and Python's versions and installs (the include paths ninja records), the architecture. Clones and
processes of one environment share one build and never rebuild each other's, whatever path reaches the cache
folder (it is resolved first: ninja rebuilds when the recorded paths change); another virtual environment, or
a changed source, builds once beside it. A file lock makes concurrent processes wait for one build (saying
so). A failed build is remembered (a `FAILED` file with the reason, in the same folder): one warning, then
torch's path, in this process and later ones, until `janus kernels build` tries again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import platform
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from filelock import FileLock, Timeout

from janus_sdk.errors import BackendUnavailableError
from janus_sdk.tuning import cache_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
EXTENSION = "janus_cpu_kernels"
KERNEL_DTYPES = (torch.float32, torch.bfloat16)
FAILED = "FAILED"
TORCH_BATON = "lock"
"""torch.utils.cpp_extension's own lock file in a build folder: a build killed mid-way leaves it behind, and
every later `load` of that folder then waits for it forever."""
AVX2, AVX512, NEON, NEON_BF16 = "avx2", "avx512", "neon", "neon-bf16"
"""The builds of the linear kernel (its tiles), each named as the linear backend whose widest build it is."""
WIDE_ISAS = frozenset({AVX512, NEON_BF16})
"""The builds that are an architecture's wider tiles: the kernel's `wide` argument asks for them."""
AVX512_FEATURES = "AVX-512 (F, BW, VL, DQ) with AVX512-BF16 and AVX512-VNNI"
FIX = "use linear 'torch' and attention 'sdpa'"


@dataclasses.dataclass(frozen=True)
class Target:
    """One architecture's build of the kernels: its sources, compiler flags and linear builds."""

    cpu: str
    """What the CPU must be, for messages."""
    sources: tuple[str, ...]
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    isa: str
    """The linear kernel's build every CPU of this architecture runs."""
    wide: str | None = None
    """Its wider build, where the CPU reports what it needs (`wide_supported` in the module)."""


# OpenMP: at::parallel_for runs on torch's threads. No contraction of a * b + c into one FMA where the source
# does not ask for it: the elementwise kernels round where torch rounds.
X86 = Target(
    cpu="an x86 CPU with AVX2 and FMA",
    sources=(
        "common.h",
        "x86.h",
        "lanes.h",
        "linear.h",
        "linear.cpp",
        "linear_x86.cpp",
        "attention.cpp",
        "prompt_attention.cpp",
        "layer_ops.cpp",
        "decoder_step.cpp",
        "bindings.cpp",
    ),
    cflags=("-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off"),
    ldflags=("-fopenmp",),
    isa=AVX2,
    wide=AVX512,
)
ARM64 = Target(
    cpu="an ARM64 CPU",
    sources=(
        "common.h",
        "neon.h",
        "lanes.h",
        "linear.h",
        "linear.cpp",
        "linear_arm.cpp",
        "attention.cpp",
        "prompt_attention.cpp",
        "layer_ops.cpp",
        "decoder_step.cpp",
        "bindings.cpp",
    ),
    cflags=("-O3", "-fopenmp", "-ffp-contract=off"),
    ldflags=("-fopenmp",),
    isa=NEON,
    wide=NEON_BF16,
)
ARM64_MACOS = dataclasses.replace(
    ARM64, cflags=("-O3", "-Xclang", "-fopenmp", "-ffp-contract=off"), ldflags=("-lomp",)
)
"""Apple's clang takes OpenMP only through -Xclang and needs libomp (`brew install libomp`): where it is
missing the build fails once, is remembered, and torch's path serves (not tried on a Mac yet)."""
CPUS = f"{X86.cpu} or {ARM64.cpu}"
"""What the CPU must be for the kernels."""
ISA_NEEDS = {
    AVX2: X86.cpu,
    AVX512: f"an x86 CPU with {AVX512_FEATURES}",
    NEON: ARM64.cpu,
    NEON_BF16: "an ARM64 CPU with BF16 (Graviton 3 and later, Neoverse V1/N2) under Linux, built by GCC",
}
"""What the CPU must be for each build of the kernels."""

_lock = threading.Lock()
_module: ModuleType | None = None
_failure: BackendUnavailableError | None = None


def cpu_has_avx2() -> bool:
    """Whether torch's own CPU kernels dispatch to AVX2 or better here (the x86 kernels need AVX2 and FMA)."""
    return torch.backends.cpu.get_cpu_capability() in {"AVX2", "AVX512", "AVX512_BF16", "AMX"}


def cpu_has_avx512() -> bool:
    """Whether this CPU reports what the AVX-512 tiles need (AVX512_FEATURES). Only whether they can run:
    whether they serve is measured (`janus_sdk.tuning`)."""
    probes = ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_vnni_supported")
    return all(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def target() -> Target | None:
    """The kernels' build for this machine; None where there is none (an x86 CPU without AVX2, other
    architectures)."""
    machine = platform.machine().lower()
    if machine in {"x86_64", "amd64"}:
        return X86 if cpu_has_avx2() else None
    if machine in {"aarch64", "arm64"}:
        return ARM64_MACOS if sys.platform == "darwin" else ARM64
    return None


def describe_cpu() -> str:
    """This CPU in a message's words: the architecture and what torch dispatches to."""
    return f"{platform.machine()}, torch: {torch.backends.cpu.get_cpu_capability()}"


def kernel_isas() -> tuple[str, ...]:
    """The builds of the linear kernel this machine runs, narrowest first (the kernels must compile here)."""
    module = load_kernels()
    here = target()
    assert here is not None  # load_kernels raised otherwise
    if here.wide is None or not module.wide_supported() or (here.wide == AVX512 and not cpu_has_avx512()):
        return (here.isa,)
    return (here.isa, here.wide)


def _this_target() -> Target:
    here = target()
    if here is None:
        raise BackendUnavailableError(f"the CPU kernels need {CPUS} ({describe_cpu()}); {FIX}")
    return here


def build_key() -> str:
    """A hash of what the compiled module depends on: sources, flags, torch and Python (versions and where
    they are installed: the build records their include paths), architecture."""
    here = _this_target()
    facts = [
        *(name.encode() + (HERE / name).read_bytes() for name in here.sources),
        repr((here.cflags, here.ldflags)).encode(),
        torch.__version__.encode(),
        str(Path(torch.__file__).resolve().parent).encode(),
        sys.version.encode(),
        sys.prefix.encode(),
        platform.machine().encode(),
    ]
    digest = hashlib.sha256()
    for fact in facts:
        digest.update(hashlib.sha256(fact).digest())
    return digest.hexdigest()[:16]


@functools.cache
def source_key() -> str:
    """A hash of the kernels' sources and flags: part of the key of every measured choice between a kernel and
    torch's path, so that a changed kernel is measured again rather than judged by its predecessor's times."""
    here = _this_target()
    digest = hashlib.sha256(repr((here.cflags, here.ldflags)).encode())
    for name in here.sources:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:8]


def build_dir() -> Path:
    """Where this build of the kernels lives (see the module docstring)."""
    return (cache_dir() / "kernels").resolve() / f"{EXTENSION}-{build_key()}"


def load_kernels() -> ModuleType:
    """The compiled kernel module; BackendUnavailableError saying why when it cannot be had here (the same
    error again, without another try, once a build has failed)."""
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            if _failure is not None:
                raise _failure
            try:
                _module = _load(retry=False)
            except BackendUnavailableError as exc:
                _failure = exc
                raise
    return _module


def build(*, retry: bool = True) -> Path:
    """Build (or load) the kernels now, forgetting an earlier failure when `retry`: `janus kernels build`.
    Returns the build folder; BackendUnavailableError when they cannot be built here."""
    global _module, _failure
    with _lock:
        _failure = None
        _module = _load(retry=retry)
    return build_dir()


def _load(*, retry: bool) -> ModuleType:
    here = _this_target()
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    failed = folder / FAILED
    if retry:
        failed.unlink(missing_ok=True)
    elif failed.exists():
        raise BackendUnavailableError(
            f"the CPU kernels failed to build earlier ({failed.read_text(encoding='utf-8').strip()}); "
            f"{FIX}, or run `janus kernels build` to try again"
        )
    name = f"{EXTENSION}_{build_key()}"
    lock = FileLock(str(folder / "janus.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        log.warning("janus-sdk: waiting for another process building the CPU kernels in %s", folder)
        lock.acquire()
    try:
        # Ours is the lock that counts: while we hold it no other build of this folder runs, so a baton of
        # torch's found now was left by a killed build (a Ctrl-C or kill during the first minute).
        (folder / TORCH_BATON).unlink(missing_ok=True)
        if not (folder / f"{name}.so").exists():  # a silent minute would look like a hang
            log.warning(
                "janus-sdk: compiling the CPU kernels into %s (once per machine, about a minute)", folder
            )
        return _compile(name, folder, here)
    except (RuntimeError, OSError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        failed.write_text(reason + "\n", encoding="utf-8")
        raise BackendUnavailableError(
            "the CPU kernels could not be compiled (they need a C++ compiler and the ninja "
            f"package: pip install ninja): {reason}; {FIX}"
        ) from exc
    finally:
        lock.release()


def _compile(name: str, folder: Path, here: Target) -> ModuleType:
    """torch's build of the sources, from copies inside the build folder: ninja rebuilds whenever a source's
    path changes, so compiling each clone's own files made two clones used in turn rebuild each other (the
    folder's key already pins the content)."""
    from torch.utils import cpp_extension

    for source in here.sources:
        copy, original = folder / source, (HERE / source).read_bytes()
        if not copy.exists() or copy.read_bytes() != original:
            copy.write_bytes(original)
    module: ModuleType = cpp_extension.load(
        name,
        [str(folder / source) for source in here.sources if source.endswith(".cpp")],
        build_directory=str(folder),
        extra_cflags=list(here.cflags),
        extra_ldflags=list(here.ldflags),
        verbose=False,
    )
    return module


def require_kernels(
    device: torch.device,
    dtype: torch.dtype,
    kind: str,
    backend: str,
    isas: tuple[str, ...],
    auto: Callable[[], str | None],
    alternative: str,
) -> ModuleType:
    """The kernels for the `kind` ("linear", "attention") backend `backend`, which runs the kernel builds
    `isas`, on `device` in `dtype`; BackendUnavailableError when they cannot run there, naming what they need
    and what to use instead (`auto()`, the backend `auto` picks here, else `alternative`)."""
    if device.type != "cpu" or dtype not in KERNEL_DTYPES:
        raise BackendUnavailableError(
            f"{kind} backend {backend!r} runs on the CPU in float32 or bfloat16, not on {device.type} in "
            f"{str(dtype).removeprefix('torch.')}; use {kind} {alternative!r}"
        )
    if target() is None:
        raise BackendUnavailableError(
            f"{kind} backend {backend!r} needs {CPUS} ({describe_cpu()}); use {kind} {alternative!r}"
        )
    module = load_kernels()
    missing = [isa for isa in isas if isa not in kernel_isas()]
    if missing:
        raise BackendUnavailableError(
            f"{kind} backend {backend!r} needs {ISA_NEEDS[missing[-1]]}; this one is not ({describe_cpu()}); "
            f"use {kind} 'auto' (here: {auto() or alternative!r})"
        )
    return module


_warned = False


def kernels_usable(device: torch.device, dtype: torch.dtype, fallback: str) -> bool:
    """Whether the kernels can serve here: a CPU they have a build for, float32/bfloat16, and kernels that
    compile. A failure to compile is logged once per process, by its first user: "not using the CPU kernels:
    <fallback>"."""
    global _warned
    if device.type != "cpu" or dtype not in KERNEL_DTYPES or target() is None:
        return False
    try:
        load_kernels()
    except BackendUnavailableError as exc:
        if not _warned:
            _warned = True
            log.warning(
                "not using the CPU kernels: %s, and torch's ops serve elsewhere too; %s", fallback, exc
            )
        return False
    return True
