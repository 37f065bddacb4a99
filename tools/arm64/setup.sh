#!/usr/bin/env bash
# An ARM64 Python with torch and this working tree, run under qemu-user on an x86-64 Debian/Ubuntu machine: the
# ARM64 kernel build (NEON) compiles with the host's cross compiler and runs its tests emulated (test.sh).
# Correctness only: emulated timings mean nothing.
#
# Usage: bash tools/arm64/setup.sh [FOLDER]   (default ~/.cache/janus-sdk/arm64; a second run skips what is done)
# Needs on the host: apt-get install qemu-user g++-aarch64-linux-gnu ninja-build, and python3 >= 3.11 with pip.
# Leaves the host's dpkg and apt state alone: the ARM64 packages come through a private apt state and are unpacked
# with dpkg -x into FOLDER/root.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${1:-${JANUS_ARM64_DIR:-$HOME/.cache/janus-sdk/arm64}}
TORCH_VERSION=${TORCH_VERSION:-2.9.1}  # a CPU build on ARM64 (PyPI)
HOST_PYTHON=${HOST_PYTHON:-python3}
SITE=$DIR/venv/lib/python3.11/site-packages
mkdir -p "$DIR"

echo "== Debian's ARM64 Python 3.11 and its libraries, unpacked into $DIR/root"
APT=(-o "Dir::State=$DIR/apt/state" -o "Dir::State::status=$DIR/apt/status" -o "Dir::Cache=$DIR/apt/cache"
     -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$DIR/apt/empty"
     -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1)
if [ ! -x "$DIR/root/usr/bin/python3.11" ]; then
    mkdir -p "$DIR/apt/state/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/apt/empty"
    touch "$DIR/apt/status"  # nothing installed: apt fetches the whole dependency closure
    apt-get "${APT[@]}" update -q  # the host's own package sources, for arm64
    apt-get "${APT[@]}" install -y -q --download-only --no-install-recommends \
        python3.11-minimal libpython3.11-stdlib libpython3.11-dev libstdc++6 libgomp1 libgcc-s1 ca-certificates
    for deb in "$DIR"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$DIR/root"; done
fi
# oneDNN reads the CPU's MIDR_EL1 from sysfs (a warning on every first matmul without it): qemu's "max" CPU's.
for cpu in $(seq 0 $(($(nproc) - 1))); do
    mkdir -p "$DIR/root/sys/devices/system/cpu/cpu$cpu/regs/identification"
    echo 0x00000000000f0510 > "$DIR/root/sys/devices/system/cpu/cpu$cpu/regs/identification/midr_el1"
done
# Debian's pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>: found through CPATH (run below).
mkdir -p "$DIR/pyinc/aarch64-linux-gnu"
ln -sfn "$DIR/root/usr/include/aarch64-linux-gnu/python3.11" "$DIR/pyinc/aarch64-linux-gnu/python3.11"

echo "== a venv-like prefix whose python is an x86 script starting qemu (subprocesses can run sys.executable)"
mkdir -p "$DIR/venv/bin" "$SITE"
printf 'home = %s\ninclude-system-site-packages = false\nversion = 3.11\n' "$DIR/root/usr/bin" > "$DIR/venv/pyvenv.cfg"
cat > "$DIR/venv/bin/python" <<SCRIPT
#!/bin/sh
export QEMU_LD_PREFIX="$DIR/root" QEMU_CPU="\${QEMU_CPU:-max}"
exec qemu-aarch64 -0 "$DIR/venv/bin/python" "$DIR/root/usr/bin/python3.11" "\$@"
SCRIPT
chmod +x "$DIR/venv/bin/python"

echo "== ARM64 wheels: torch $TORCH_VERSION, then janus-sdk's dependencies and the test tools"
PIP=("$HOST_PYTHON" -m pip install -q --no-compile --target "$SITE" --only-binary=:all: --python-version 3.11
     --implementation cp --abi cp311 --abi abi3 --abi none --platform manylinux2014_aarch64
     --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 --platform linux_aarch64)
# torch without its dependencies: pip judges their markers by this x86 host and would want CUDA wheels.
[ -d "$SITE/torch-$TORCH_VERSION.dist-info" ] || "${PIP[@]}" --no-deps "torch==$TORCH_VERSION"
if [ ! -f "$SITE/.janus-dependencies" ]; then
    mapfile -t REQUIREMENTS < <("$HOST_PYTHON" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for requirement in project["dependencies"]:
    if not requirement.startswith("torch") and "python_version<" not in requirement.replace(" ", ""):
        print(requirement)
PY
)
    "${PIP[@]}" "${REQUIREMENTS[@]}" sympy networkx jinja2 fsspec typing-extensions setuptools pytest \
        pytest-xdist hypothesis jsonschema
    touch "$SITE/.janus-dependencies"
fi

echo "== janus-sdk's entry points (its code comes from the working tree, on PYTHONPATH)"
"$HOST_PYTHON" - "$REPO/pyproject.toml" "$SITE" <<'PY'
import pathlib, shutil, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
site = pathlib.Path(sys.argv[2])
for old in site.glob("janus_sdk-*.dist-info"):
    shutil.rmtree(old)
info = site / f"janus_sdk-{project['version']}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
groups = dict(project.get("entry-points", {}), console_scripts=project.get("scripts", {}))
(info / "entry_points.txt").write_text(
    "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n" for group, points in groups.items())
)
PY

echo "== $DIR/run: that Python, with the host's cross compiler and ninja for torch's extension builds"
cat > "$DIR/run" <<SCRIPT
#!/bin/sh
# The ARM64 Python of tools/arm64/setup.sh under qemu, with $REPO's working tree on its path.
export PYTHONPATH="$REPO/src:$REPO/plugins:$REPO/adapters:$REPO/tests"
export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ CPATH="$DIR/pyinc" MAX_JOBS=1
export PATH=/usr/local/bin:/usr/bin:/bin  # the host's x86 ninja, not the wheel's ARM64 one
export JANUS_SDK_CACHE_DIR="\${JANUS_SDK_CACHE_DIR:-$DIR/janus-cache}" TORCH_EXTENSIONS_DIR="$DIR/torch-extensions"
export PYTHONPYCACHEPREFIX="$DIR/pycache"  # never beside the working tree's sources
unset PYTHONDONTWRITEBYTECODE
exec "$DIR/venv/bin/python" "\$@"
SCRIPT
chmod +x "$DIR/run"
# Bytecode compiled ahead by the host's Python 3.11 (the same format): an emulated `import torch` 29 s -> 10 s.
[ -d "$DIR/pycache$SITE/torch" ] || PYTHONPYCACHEPREFIX="$DIR/pycache" "$HOST_PYTHON" -m compileall -q -j 2 \
    "$SITE" "$DIR/root/usr/lib/python3.11" > /dev/null 2>&1 || true
"$DIR/run" -c "import platform, torch; print('ready:', platform.machine(), 'torch', torch.__version__)"
