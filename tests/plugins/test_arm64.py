"""What an ARM64 machine gets, with the architecture faked on this one (the NEON tiles themselves run under
emulation in test_neon_tiles.py): the ARM64 build's sources and flags, `auto` and int8 through the `neon`
build, attention and layer ops through the same build, and errors naming what the x86 backends need."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from janus_plugins import cpu_kernels as kernel_module
from janus_plugins import linear as linear_plugin
from janus_plugins.attention.cpu import KernelAttention, choose_attention_backend
from janus_plugins.cpu_kernels import NEON, NEON_BF16
from janus_plugins.deepseek_llm.layer_ops import KernelLayerOps, layer_ops
from janus_plugins.linear import Int8Linear, KernelLinear
from janus_plugins.linear.packed import PackedLinear
from janus_sdk import tuning
from janus_sdk.errors import BackendUnavailableError

CPU = torch.device("cpu")


class FakeNeonModule:
    """The built ARM64 module as Python sees it: the linear kernel only (torch computes it), calls kept."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], bool]] = []
        self.bf16 = False  # whether the CPU reports BF16 (the BFDOT tiles)

    def wide_supported(self) -> bool:
        return self.bf16

    def linear_many(
        self, x: Tensor, weights: list[Tensor], scales: list[Tensor], biases: list[Tensor], wide: bool
    ) -> list[Tensor]:
        self.calls.append((tuple(x.shape), wide))
        return [
            torch.nn.functional.linear(x.float(), w.float(), b.float() if b.numel() else None).to(x.dtype)
            for w, b in zip(weights, biases, strict=True)
        ]


@pytest.fixture
def arm64(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeNeonModule]:
    """An aarch64 Linux machine whose kernel build succeeded (the fake module), with an empty cache folder."""
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    module = FakeNeonModule()
    monkeypatch.setattr(kernel_module, "_module", module)
    monkeypatch.setattr(kernel_module, "_failure", None)
    kernel_module.source_key.cache_clear()
    yield module
    kernel_module.source_key.cache_clear()


@pytest.mark.parametrize(
    ("machine", "system", "expected"),
    [
        ("aarch64", "linux", kernel_module.ARM64),
        ("arm64", "darwin", kernel_module.ARM64_MACOS),
        ("riscv64", "linux", None),
    ],
)
def test_each_architecture_has_its_build(
    monkeypatch: pytest.MonkeyPatch, machine: str, system: str, expected: kernel_module.Target | None
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(sys, "platform", system)
    assert kernel_module.target() == expected
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(kernel_module, "cpu_has_avx2", lambda: False)
    assert kernel_module.target() is None, "an x86 CPU without AVX2 has none"


def test_the_arm64_build_compiles_only_its_own_sources_without_x86_flags(
    arm64: FakeNeonModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[kernel_module.Target] = []

    def compile_(name: str, folder: Path, here: kernel_module.Target) -> FakeNeonModule:
        compiled.append(here)
        return arm64

    monkeypatch.setattr(kernel_module, "_compile", compile_)
    x86_key = _key_on(monkeypatch, "x86_64")
    assert kernel_module.build_key() != x86_key, "the architecture is part of the build's key"
    kernel_module.build()
    (here,) = compiled
    assert here is kernel_module.ARM64
    assert {"neon.h", "linear_arm.cpp", "linear.cpp", "attention.cpp", "layer_ops.cpp"} <= set(here.sources)
    assert not {"x86.h", "linear_x86.cpp"} & set(here.sources)
    assert not any(flag.startswith("-m") for flag in here.cflags), "no x86 instruction-set flags"


def test_auto_and_int8_stream_weights_through_the_neon_build(arm64: FakeNeonModule) -> None:
    assert kernel_module.kernel_isas() == (NEON,)
    assert linear_plugin.choose_linear_backend(CPU, torch.bfloat16) == "neon"
    int8 = Int8Linear()
    int8.check(CPU, torch.bfloat16)
    assert int8.isas == (NEON,)
    layer = torch.nn.Linear(64, 8)
    converted = KernelLinear("neon", (NEON,), linear_plugin.KernelOptions(measured=False)).convert(layer)
    assert isinstance(converted, PackedLinear)
    x = torch.randn(2, 64)
    torch.testing.assert_close(converted(x), layer(x))
    assert arm64.calls == [((2, 64), False)], "the NEON build has no wide tiles to ask for"


def test_cpus_with_bf16_stream_bfloat16_weights_through_the_bfdot_tiles(arm64: FakeNeonModule) -> None:
    """Where the CPU reports BF16, `auto` is `neon-bf16`: bfloat16 layers ask for the wide (BFDOT) tiles,
    float32 and int8 layers the NEON ones, which compute them the same."""
    arm64.bf16 = True
    assert kernel_module.kernel_isas() == (NEON, NEON_BF16)
    assert linear_plugin.choose_linear_backend(CPU, torch.bfloat16) == "neon-bf16"
    backend = linear_plugin.KernelLinear(
        "neon-bf16", (NEON, NEON_BF16), linear_plugin.KernelOptions(measured=False)
    )
    backend.check(CPU, torch.bfloat16)
    layers = {dtype: torch.nn.Linear(64, 8).to(dtype) for dtype in (torch.bfloat16, torch.float32)}
    for dtype, layer in layers.items():
        converted = backend.convert(layer)
        assert isinstance(converted, PackedLinear)
        x = torch.randn(2, 64).to(dtype)
        torch.testing.assert_close(converted(x), layer(x))
    int8 = Int8Linear(linear_plugin.KernelOptions(measured=False))
    int8.check(CPU, torch.bfloat16)
    int8.convert(torch.nn.Linear(64, 8))(torch.randn(2, 64).to(torch.bfloat16))
    assert arm64.calls == [((2, 64), True), ((2, 64), False), ((2, 64), False)]


def test_bfdot_pinned_where_the_cpu_lacks_bf16_names_what_it_needs(arm64: FakeNeonModule) -> None:
    with pytest.raises(
        BackendUnavailableError, match=r"'neon-bf16' needs an ARM64 CPU with BF16.*here: 'neon'"
    ):
        linear_plugin.KernelLinear("neon-bf16", (NEON, NEON_BF16)).check(CPU, torch.bfloat16)


def test_x86_backends_pinned_on_arm64_name_what_they_need(arm64: FakeNeonModule) -> None:
    with pytest.raises(
        BackendUnavailableError, match=r"'avx2' needs an x86 CPU with AVX2.*aarch64.*here: 'neon'"
    ):
        linear_plugin.KernelLinear("avx2", (kernel_module.AVX2,)).check(CPU, torch.bfloat16)
    with pytest.raises(BackendUnavailableError, match=r"'avx512' needs an x86 CPU with AVX-512"):
        linear_plugin.KernelLinear("avx512", (kernel_module.AVX2, kernel_module.AVX512)).check(
            CPU, torch.float32
        )
    with pytest.raises(
        BackendUnavailableError, match=r"attention backend 'avx2' needs an x86 CPU.*aarch64.*here: 'neon'"
    ):
        KernelAttention("avx2", kernel_module.AVX2).check(CPU, torch.bfloat16)


def test_attention_and_layer_ops_run_the_neon_build(arm64: FakeNeonModule) -> None:
    assert choose_attention_backend(CPU, torch.bfloat16) == "neon"
    attention = KernelAttention("neon", NEON)
    attention.check(CPU, torch.bfloat16)
    # a prompt: SDPA's (the prompt kernel is x86's; the fake module has none to call)
    q, k, v = (torch.randn(1, 2, 9, 64).to(torch.bfloat16) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(attention.attend(q, k, v, causal=True), expected)
    assert kernel_module.kernels_usable(CPU, torch.bfloat16, "the kernels serve")
    pinned = tuning.Tuner(Path(os.environ[tuning.CACHE_ENV]) / "t.json", pins="layer-ops=kernel")
    with tuning.use_tuner(pinned):
        assert isinstance(layer_ops(CPU, torch.bfloat16, captured=False), KernelLayerOps)


def _key_on(monkeypatch: pytest.MonkeyPatch, machine: str) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(platform, "machine", lambda: machine)
        patch.setattr(kernel_module, "cpu_has_avx2", lambda: True)
        return kernel_module.build_key()
