"""The compute dtype: bfloat16 weights computed in float32 on CPUs that only emulate bfloat16 arithmetic."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import Pin
from janus_sdk import tuning
from janus_sdk.compute import compute_dtype, like_input, run_in_compute_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize(("faster", "expected"), [("bfloat16", torch.bfloat16), ("float32", torch.float32)])
def test_bfloat16_computes_in_whichever_dtype_measured_faster(
    tmp_path: Path, faster: str, expected: torch.dtype
) -> None:
    timed: list[str] = []

    def timer(candidate: str, run: Callable[[], object], limit: float) -> float:
        result = run()
        assert isinstance(result, torch.Tensor) and result.dtype == torch.bfloat16  # both return bfloat16
        timed.append(candidate)
        return 1.0 if candidate == faster else 2.0

    with tuning.use_tuner(tuning.Tuner(tmp_path / "t.json", timer=timer, pins="")):
        assert compute_dtype(torch.bfloat16, CPU) == expected
        assert compute_dtype(torch.bfloat16, CPU) == expected  # remembered, not timed again
        assert compute_dtype(torch.float32, CPU) == torch.float32
        assert compute_dtype(torch.bfloat16, torch.device("cuda")) == torch.bfloat16
    assert len(timed) == 2


def probe() -> tuple[nn.Module, list[tuple[torch.dtype, torch.dtype]]]:
    """A bfloat16 conv + group norm that records (input dtype, weight dtype) as its norm sees them."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.GroupNorm(2, 8)).to(torch.bfloat16)
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    module[1].register_forward_pre_hook(lambda m, args: seen.append((args[0].dtype, m.weight.dtype)))
    return module, seen


def weights_of(module: nn.Module) -> dict[str, tuple[torch.dtype, int]]:
    return {name: (p.dtype, p.data_ptr()) for name, p in module.named_parameters()}


def test_emulating_cpu_computes_a_call_in_float32_and_keeps_the_bfloat16_weights(pinned: Pin) -> None:
    pinned("matmul-dtype=float32")
    module, seen = probe()
    stored = weights_of(module)
    x = torch.randn(1, 4, 6, 6).to(torch.bfloat16)
    with torch.inference_mode():
        out = run_in_compute_dtype(module, x)
        expected = copy.deepcopy(module).float()(x.float()).to(torch.bfloat16)
    assert seen[0] == (torch.float32, torch.float32)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert weights_of(module) == stored


def test_native_bfloat16_cpu_calls_the_module_as_it_is(pinned: Pin) -> None:
    pinned("matmul-dtype=bfloat16")
    module, seen = probe()
    x = torch.randn(1, 4, 6, 6).to(torch.bfloat16)
    with torch.inference_mode():
        out = run_in_compute_dtype(module, x)
        expected = module(x)
    assert seen[0] == (torch.bfloat16, torch.bfloat16)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_a_module_without_weights_is_simply_called(pinned: Pin) -> None:
    pinned("matmul-dtype=float32")
    x = torch.randn(3).to(torch.bfloat16)
    out = run_in_compute_dtype(nn.ReLU(), x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, x.relu(), atol=0, rtol=0)


def test_like_input_casts_a_weight_to_the_inputs_dtype_and_leaves_a_matching_one_as_it_is() -> None:
    weight = torch.randn(4, 3).to(torch.bfloat16)
    cast = like_input(weight, torch.zeros(2, dtype=torch.float32))
    assert cast.dtype == torch.float32 and torch.equal(cast, weight.float())
    assert like_input(weight, torch.zeros(2, dtype=torch.bfloat16)) is weight
    assert like_input(None, torch.zeros(2)) is None
