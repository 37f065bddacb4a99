"""Projections of one input (q, k, v; gate, up) computed together: `janus_sdk.projections.project` and the
kernel layers' `project_with`, one `linear_many` call with the values of separate calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from helpers import Pin
from janus_plugins import cpu_kernels as kernel_module
from janus_plugins.cpu_kernels import AVX2, AVX512
from janus_plugins.deepseek_llm import DeepSeekLLM
from janus_plugins.linear import Int8Linear, KernelLinear, KernelOptions
from janus_plugins.linear.packed import KERNEL_MAX_ROWS, PackedLinear
from janus_sdk import JanusPipeline, PipelineConfig
from janus_sdk.errors import BackendUnavailableError
from janus_sdk.interfaces import SharedInputLinear
from janus_sdk.projections import project

ALWAYS = KernelOptions(measured=False)
CHECKPOINT = Path(__file__).parents[1] / "fixtures" / "janus-tiny" / "checkpoint"
WIDTHS = (128, 61, 66)  # tails of 1 and 2 rows after the 4-row tiles
PANEL_WIDTHS = (128, 96, 160)  # bfloat16 for the AVX2 build: panels, in whole tiles of 32 rows
KINDS = ["float32", "bfloat16", "bfloat16-wide", "int8", "int8-wide"]


@pytest.fixture
def kernel_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The number of weights of every call into the kernel module's linear entry from now on."""
    try:
        module = kernel_module.load_kernels()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    calls: list[int] = []
    linear_many = module.linear_many

    def spy(x: Tensor, weights: list[Tensor], *args: Any) -> list[Tensor]:
        calls.append(len(weights))
        return linear_many(x, weights, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "linear_many", spy)
    yield calls


def _layer(out_features: int, dtype: torch.dtype, *, bias: bool) -> nn.Linear:
    torch.manual_seed(out_features)
    layer = nn.Linear(128, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        if layer.bias is not None:
            layer.bias.normal_(0, 0.05)
    return layer.to(dtype).eval()


def _projections(kind: str) -> tuple[list[nn.Module], torch.dtype]:
    """Three kernel layers of one kind reading 128 features, and the dtype of their input."""
    isas = kernel_module.kernel_isas()
    wide = kind.endswith("-wide")
    if wide and AVX512 not in isas:
        pytest.skip(f"this CPU lacks {kernel_module.AVX512_FEATURES}")
    builds = isas if wide else isas[:1]
    dtype = torch.float32 if kind == "float32" else torch.bfloat16
    layers = [_layer(width, dtype, bias=i != 1) for i, width in enumerate(WIDTHS)]
    if kind.startswith("int8"):
        int8 = Int8Linear(ALWAYS)
        int8.check(torch.device("cpu"), dtype)
        packed: list[nn.Module] = []
        for layer in layers:
            quantized = int8.convert(layer)
            assert isinstance(quantized, PackedLinear)
            packed.append(
                PackedLinear(quantized.weight, quantized.bias, quantized.scale, isas=builds, measured=False)
            )
        return packed, dtype
    backend = KernelLinear("test", builds, ALWAYS)
    if dtype == torch.bfloat16 and builds == (AVX2,):
        layers = [_layer(width, dtype, bias=i != 1) for i, width in enumerate(PANEL_WIDTHS)]
    return [backend.convert(layer) for layer in layers], dtype


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("kind", KINDS)
def test_projections_of_one_input_are_one_kernel_call_with_the_values_of_separate_calls(
    kind: str, rows: int, kernel_calls: list[int]
) -> None:
    layers, dtype = _projections(kind)
    assert all(isinstance(layer, SharedInputLinear) for layer in layers)
    x = torch.randn(1, rows, 128).to(dtype)
    with torch.inference_mode():
        together = project(x, layers)
        assert kernel_calls == [3]
        alone = [layer(x) for layer in layers]
    assert kernel_calls[1:] == [1, 1, 1]
    widths = [layer.out_features for layer in layers]
    for mine, expected, width in zip(together, alone, widths, strict=True):
        assert mine.shape == (1, rows, width) and mine.dtype == dtype
        assert torch.equal(mine, expected)


def _plain_first(layers: list[nn.Module]) -> list[nn.Module]:
    plain = _layer(WIDTHS[0], torch.bfloat16, bias=True)
    return [plain, *layers[1:]]


def _plain_among(layers: list[nn.Module]) -> list[nn.Module]:
    return [layers[0], _layer(WIDTHS[1], torch.bfloat16, bias=True), layers[2]]


def _int8_among(layers: list[nn.Module]) -> list[nn.Module]:
    int8 = Int8Linear(ALWAYS)
    int8.check(torch.device("cpu"), torch.bfloat16)
    return [layers[0], int8.convert(_layer(WIDTHS[1], torch.bfloat16, bias=True)), layers[2]]


def _rows_among(layers: list[nn.Module]) -> list[nn.Module]:
    """A bfloat16 layer kept as rows (61 outputs: no whole panel tile) between two held as panels."""
    first = layers[0]
    if not (isinstance(first, PackedLinear) and first.weight.dim() == 3):
        pytest.skip("panels are the AVX2 build's layout")
    backend = KernelLinear("test", first.isas, ALWAYS)
    return [first, backend.convert(_layer(WIDTHS[1], torch.bfloat16, bias=True)), layers[2]]


@pytest.mark.parametrize("mix", [_plain_first, _plain_among, _int8_among, _rows_among])
def test_projections_the_kernel_cannot_take_together_are_computed_one_by_one(
    mix: Callable[[list[nn.Module]], list[nn.Module]], kernel_calls: list[int]
) -> None:
    layers = mix(_projections("bfloat16")[0])
    x = torch.randn(1, 2, 128).to(torch.bfloat16)
    with torch.inference_mode():
        together = project(x, layers)
        assert 3 not in kernel_calls
        assert all(torch.equal(mine, layer(x)) for mine, layer in zip(together, layers, strict=True))


def test_projections_torchs_gemm_serves_are_not_grouped(pinned: Pin, kernel_calls: list[int]) -> None:
    """Past KERNEL_MAX_ROWS (a prefill), and where torch's GEMM measured faster at the row count."""
    layers, dtype = _projections("bfloat16")
    prefill = torch.randn(1, KERNEL_MAX_ROWS + 1, 128).to(dtype)
    with torch.inference_mode():
        together = project(prefill, layers)
        assert all(torch.equal(a, layer(prefill)) for a, layer in zip(together, layers, strict=True))
    pinned("linear=torch")
    builds = kernel_module.kernel_isas()[:1]
    measured = [KernelLinear("test", builds).convert(_layer(w, dtype, bias=True)) for w in WIDTHS]
    with torch.inference_mode():
        project(torch.randn(1, 2, 128).to(dtype), measured)
    assert kernel_calls == []


def test_a_decoder_step_makes_one_kernel_call_for_qkv_and_one_for_gate_and_up(
    kernel_calls: list[int],
) -> None:
    here = kernel_module.target()
    assert here is not None
    linear = {"name": here.isa, "params": {"measured": False}}
    config = PipelineConfig.from_checkpoint(CHECKPOINT, device="cpu", dtype="float32", linear=linear)
    pipe = JanusPipeline.from_config(config)
    llm = pipe.model.language_model
    assert isinstance(llm, DeepSeekLLM)
    layers = len(llm.model.layers)
    assert llm.plan is not None  # the Python layers' calls (one kernel call makes the same: test_native_step)
    llm.plan = dataclasses.replace(llm.plan, native=None)
    with torch.inference_mode():
        cache = llm.new_cache(2, 8)
        llm.hidden_states(torch.randn(2, 1, llm.hidden_size), cache, 0)
    assert [n for n in kernel_calls if n > 1] == [3, 2] * layers
    assert kernel_calls.count(1) == 2 * layers  # o_proj, down_proj
