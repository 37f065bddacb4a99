"""The linear kernel's ARM64 build, checked on this x86 machine: its NEON tiles (cpu_kernels/neon.h) run under
emulation (native/neon_tiles.cpp, compiled by the ARM64 cross compiler, run by qemu) against sums in double,
and its torch-facing sources compile against torch's headers for ARM64. Needs Debian's g++-aarch64-linux-gnu
and qemu-user (.ci/run installs them); skipped without them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch.utils.cpp_extension

from janus_plugins import cpu_kernels

CROSS, QEMU = "aarch64-linux-gnu-g++", "qemu-aarch64"
HARNESS = Path(__file__).parent / "native" / "neon_tiles.cpp"
CASES = 3 * 2 * 9 * 6 + 2 * 2 + 3
"""The harness's cases: 3 in-feature counts x 2 out-feature counts x 1-9 rows x (3 weight formats, bfloat16
through BFDOT, int8 through SDOT, x's quantization to int16); both int8 tiles at their largest sums, of either
sign; and three alone: that quantization at exact ties (two checks), the bfloat16 stores."""

pytestmark = pytest.mark.skipif(
    shutil.which(CROSS) is None or shutil.which(QEMU) is None or not sys.platform.startswith("linux"),
    reason=f"needs {CROSS} and {QEMU} (Debian: g++-aarch64-linux-gnu, qemu-user)",
)


def test_the_neon_tiles_compute_the_exact_sums(tmp_path: Path) -> None:
    """float32, bfloat16 and packed int8 weights, 1-9 rows of x, full tiles and remainders, several int8 scale
    blocks: every output within 1e-6 of the sum of |products| of the exact sum (1e-5 through BFDOT, run on the
    emulated CPU, which has BF16); the SDOT tile's outputs (DOTPROD, which the emulated CPU has too) equal the
    widening int8 tile's bit for bit; stores round to bfloat16 as torch does."""
    binary = tmp_path / "neon_tiles"
    built = subprocess.run(
        [
            CROSS,
            "-std=c++17",
            "-O2",
            "-static",
            "-Wno-psabi",
            f"-I{cpu_kernels.HERE}",
            str(HARNESS),
            "-o",
            str(binary),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    ran = subprocess.run(
        [QEMU, "-cpu", "max", str(binary)], capture_output=True, text=True, timeout=300, check=False
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines()[-1] == f"{CASES} passed, 0 failed"


@pytest.mark.parametrize("source", [name for name in cpu_kernels.ARM64.sources if name.endswith(".cpp")])
def test_the_arm64_module_compiles_against_torchs_headers(source: str) -> None:
    """What the harness does not cover (the entry, the stores, the bindings) at least compiles for ARM64 with
    the ARM64 build's flags (syntax only: linking needs torch's ARM64 libraries)."""
    includes = [f"-isystem{path}" for path in torch.utils.cpp_extension.include_paths()]
    python_headers = Path(sysconfig.get_paths()["include"])
    if source == "bindings.cpp" and "aarch64-linux-gnu" in (python_headers / "pyconfig.h").read_text():
        pytest.skip("this Python's pyconfig.h is Debian's multiarch one: it needs the ARM64 Python headers")
    python = [f"-isystem{python_headers}"]
    compiled = subprocess.run(
        [
            CROSS,
            "-std=c++20",
            "-fsyntax-only",
            "-DTORCH_EXTENSION_NAME=janus_check",
            *includes,
            *python,
            *cpu_kernels.ARM64.cflags,
            str(cpu_kernels.HERE / source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr[-4000:]
