"""The CPU kernels for decode steps, built once per machine: a library the built-in plugins share (the
`linear`, `cpu_attention` and DeepSeek-LLM layer-op plugins import it; it imports no plugin).

One source per family beside this module: `linear.cpp` (weight-streaming matmuls in AVX2, with AVX-512
BF16/VNNI tiles), `attention.cpp` (one query position over a KV cache), `layer_ops.cpp` (RMSNorm, rotary, SiLU
gate), `bindings.cpp` (the Python module), `common.h`. torch compiles them with the machine's C++ compiler
through ninja (about a minute) into one module. The build lives in the janus-sdk cache folder
(`$JANUS_SDK_CACHE_DIR`, default `~/.cache/janus-sdk`) under `kernels/<key>`, the key a hash of everything the
binary depends on: the sources, the compiler flags, torch's and Python's versions and installs (the include
paths ninja records), the architecture. Clones and processes of one environment share one build and never
rebuild each other's, whatever path reaches the cache folder (it is resolved first: ninja rebuilds when the
recorded paths change); another virtual environment, or a changed source, builds once beside it. A file
lock makes concurrent processes wait for one build (saying so). A failed build is remembered (a `FAILED` file
with the reason, in the same folder): one warning, then torch's path, in this process and later ones, until
`janus kernels build` tries again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch
from filelock import FileLock, Timeout

from janus_sdk.errors import BackendUnavailableError
from janus_sdk.tuning import cache_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = ("common.h", "linear.cpp", "attention.cpp", "layer_ops.cpp", "bindings.cpp")
EXTENSION = "janus_cpu_kernels"
KERNEL_DTYPES = (torch.float32, torch.bfloat16)
# OpenMP: at::parallel_for runs on torch's threads. No contraction of a * b + c into one FMA where the source
# does not ask for it: the elementwise kernels round where torch rounds.
CFLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-ffp-contract=off")
LDFLAGS = ("-fopenmp",)
FAILED = "FAILED"
TORCH_BATON = "lock"
"""torch.utils.cpp_extension's own lock file in a build folder: a build killed mid-way leaves it behind, and
every later `load` of that folder then waits for it forever."""
AVX2 = "avx2"
AVX512 = "avx512"
AVX512_FEATURES = "AVX-512 (F, BW, VL, DQ) with AVX512-BF16 and AVX512-VNNI"
FIX = "use linear 'torch' and attention 'sdpa'"

_lock = threading.Lock()
_module: ModuleType | None = None
_failure: BackendUnavailableError | None = None


def cpu_has_avx2() -> bool:
    """Whether torch's own CPU kernels dispatch to AVX2 or better here (the kernel needs AVX2 and FMA)."""
    return torch.backends.cpu.get_cpu_capability() in {"AVX2", "AVX512", "AVX512_BF16", "AMX"}


def cpu_has_avx512() -> bool:
    """Whether this CPU reports what the AVX-512 tiles need (AVX512_FEATURES). Only whether they can run:
    whether they serve is measured (`janus_sdk.tuning`)."""
    probes = ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_vnni_supported")
    return all(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def kernel_isas() -> tuple[str, ...]:
    """The builds of the linear kernel this machine runs, narrowest first (the kernels must compile here)."""
    module = load_kernels()
    return (AVX2, AVX512) if cpu_has_avx512() and module.avx512_supported() else (AVX2,)


def build_key() -> str:
    """A hash of what the compiled module depends on: sources, flags, torch and Python (versions and where
    they are installed: the build records their include paths), architecture."""
    facts = [
        *(name.encode() + (HERE / name).read_bytes() for name in SOURCES),
        repr((CFLAGS, LDFLAGS)).encode(),
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
    digest = hashlib.sha256(repr((CFLAGS, LDFLAGS)).encode())
    for name in SOURCES:
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
    if not cpu_has_avx2():
        raise BackendUnavailableError(
            f"the 'avx2' backends need an x86 CPU with AVX2 and FMA (torch reports "
            f"{torch.backends.cpu.get_cpu_capability()!r} on {platform.machine()}); {FIX}"
        )
    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    failed = folder / FAILED
    if retry:
        failed.unlink(missing_ok=True)
    elif failed.exists():
        raise BackendUnavailableError(
            f"the 'avx2' kernels failed to build earlier ({failed.read_text(encoding='utf-8').strip()}); "
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
        return _compile(name, folder)
    except (RuntimeError, OSError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        failed.write_text(reason + "\n", encoding="utf-8")
        raise BackendUnavailableError(
            "the 'avx2' backends could not compile their kernels (they need a C++ compiler and the ninja "
            f"package: pip install ninja): {reason}; {FIX}"
        ) from exc
    finally:
        lock.release()


def _compile(name: str, folder: Path) -> ModuleType:
    """torch's build of the sources, from copies inside the build folder: ninja rebuilds whenever a source's
    path changes, so compiling each clone's own files made two clones used in turn rebuild each other (the
    folder's key already pins the content)."""
    from torch.utils import cpp_extension

    for source in SOURCES:
        copy, original = folder / source, (HERE / source).read_bytes()
        if not copy.exists() or copy.read_bytes() != original:
            copy.write_bytes(original)
    module: ModuleType = cpp_extension.load(
        name,
        [str(folder / source) for source in SOURCES if source.endswith(".cpp")],
        build_directory=str(folder),
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        verbose=False,
    )
    return module


def require_kernels(device: torch.device, dtype: torch.dtype, kind: str, alternative: str) -> ModuleType:
    """The kernels for an `avx2` backend of `kind` ("linear", "attention") running on `device` in `dtype`;
    BackendUnavailableError naming `alternative` when they cannot run there."""
    if device.type != "cpu" or dtype not in KERNEL_DTYPES:
        raise BackendUnavailableError(
            f"{kind} backend 'avx2' runs on the CPU in float32 or bfloat16, not on {device.type} in "
            f"{str(dtype).removeprefix('torch.')}; use {kind} '{alternative}'"
        )
    return load_kernels()


_warned = False


def kernels_usable(device: torch.device, dtype: torch.dtype, fallback: str) -> bool:
    """Whether the kernels can serve here: an AVX2 CPU, float32/bfloat16, and kernels that compile. A failure
    to compile is logged once per process, by its first user: "not using the AVX2 kernels: <fallback>"."""
    global _warned
    if device.type != "cpu" or dtype not in KERNEL_DTYPES or not cpu_has_avx2():
        return False
    try:
        load_kernels()
    except BackendUnavailableError as exc:
        if not _warned:
            _warned = True
            log.warning(
                "not using the AVX2 kernels: %s, and torch's ops serve elsewhere too; %s", fallback, exc
            )
        return False
    return True
