#!/usr/bin/env bash
# The ARM64 kernel build's tests in the emulated ARM64 Python of setup.sh (set up first if needed): the build and
# its choices, the linear and attention backends, grouped projections and the layer ops against torch, the decode
# step's layers as one call against the Python layers, the tiny pipeline against the reference goldens with the
# `neon` backends. 10-15 minutes on 2 cores. Extra arguments go
# to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${JANUS_ARM64_DIR:-$HOME/.cache/janus-sdk/arm64}
[ -x "$DIR/run" ] || bash "$REPO/tools/arm64/setup.sh" "$DIR"
cd "$REPO"
# Every choice between the kernel and torch pinned to the kernel: emulated timings would pick at random. The
# linear kernel's build: JANUS_ARM64_LINEAR, `neon` by default, `neon-bf16` for the BFDOT tiles (qemu's "max" CPU
# has BF16). torch.compile's own C++ build (a CUDA-side test of layer ops) asks the cross compiler for
# -march=native: left out.
export JANUS_SDK_TUNE=linear=${JANUS_ARM64_LINEAR:-neon},decode-attention=kernel,layer-ops=kernel
exec "$DIR/run" -m pytest -p no:cacheprovider -n 0 -q -rs \
    --deselect tests/plugins/test_layer_ops.py::test_compiled_ops_step_as_torch_ops_do \
    tests/plugins/test_cpu_kernels.py tests/plugins/test_arm64.py tests/plugins/test_linear.py \
    tests/plugins/test_cpu_attention.py tests/plugins/test_layer_ops.py tests/plugins/test_projections.py \
    tests/plugins/test_native_step.py tests/test_pipeline_golden.py "$@"
