"""Loading holds the weights once: `from_pretrained` on sharded .bin and safetensors checkpoints of the real
layout peaks at <= 1.2x the weight bytes (issue 15, "7B as one copy"), measured in a fresh process.

The checkpoint is the fixture with a ~0.4 GB LLaMA backbone in bfloat16, in three shards per format, written
and loaded by bench/load_memory.py (the same measurement at 1B or 7B geometry). Copying the weights out of
memory-mapped shards measured 1.98x here; reading them into the model's own tensors, 0.98x.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "load_memory.py"
BOUND = 1.2
ALLOWANCE = 32 << 20
"""Bytes allowed beyond BOUND x weights: what a load allocates besides the weights (configs, plugin and
tokenizer objects of a second pipeline, the state-dict dictionaries, allocator rounding), a few MB measured;
far below the 0.36 GB a second copy of these weights would add."""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures through Linux's /proc")
def test_sharded_checkpoints_load_as_one_copy(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--size",
        "scaled",
        "--shards",
        "3",
        "--json",
        "--keep",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for fmt in ("bin", "safetensors"):
        measured = results[fmt]
        assert measured["model_bytes"] == measured["weight_bytes"]  # bfloat16 in, bfloat16 held
        limit = BOUND * measured["weight_bytes"] + ALLOWANCE
        assert measured["peak_growth"] <= limit, (
            f"{fmt}: loading {measured['weight_bytes'] / 2**20:.0f} MiB of weights peaked "
            f"{measured['peak_growth'] / 2**20:.0f} MiB above the process's resident memory "
            f"(ratio {measured['ratio']:.2f}, allowed {BOUND} + {ALLOWANCE >> 20} MiB)"
        )
