"""Built-in plugin: linear backends, i.e. how the per-token linear layers compute.

- `torch`: nn.Linear as it is (torch's own kernels);
- `avx2`: the same weights streamed by a small AVX2 kernel (`janus_plugins.cpu_kernels`, compiled on first
  use) at the row counts where it measured faster than torch on this machine (`packed.py`; all of them up to
  32 rows with `measured: false`); bfloat16 ones repacked as panels where whole tiles fit (`pack_panels`);
- `avx512`: as `avx2`, with the kernel's AVX-512 tiles as a further candidate (`vdpbf16ps` for bfloat16,
  `vpdpwssd` for int8; CPUs with AVX512-BF16 and VNNI: Zen 4 and later, Cooper Lake / Sapphire Rapids and
  later); with `measured: false` those tiles wherever they apply;
- `neon`: as `avx2` on ARM64 CPUs (Apple Silicon, Graviton, Ampere), with the kernel's NEON tiles;
- `neon-bf16`: as `neon`, with the kernel's BFDOT tiles as a further candidate for bfloat16 (ARM64 CPUs with
  BF16 under Linux: Graviton 3 and later; built by GCC);
- `int8`: weight-only int8 (one symmetric scale per output feature): half the bytes of bfloat16 to read per
  token, through the kernel on AVX2 and ARM64 CPUs (integer multiply-adds against x rounded to int16,
  relative error ~1e-5; VNNI where the CPU has it; weights packed for it, in-features a multiple of 64) and a
  dequantizing matmul elsewhere;
- `int4`: weight-only int4, group-wise (`int4.py`): a quarter of bfloat16's bytes, through torch's int4 CPU
  kernel.

"auto" picks the kernel's widest build this CPU runs (`avx512`, `avx2`, `neon-bf16` or `neon`) for
float32/bfloat16 when the kernel compiles here (measured per layer and row count against torch's GEMM, which
serves wherever it is faster), else `torch`.
"""

from __future__ import annotations

import functools

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from janus_plugins.cpu_kernels import (
    AVX2,
    AVX512,
    NEON,
    NEON_BF16,
    kernel_isas,
    kernels_usable,
    require_kernels,
)
from janus_plugins.linear.int4 import Int4Backend, Int4Options
from janus_plugins.linear.packed import PACK_BYTES, PANEL_TILE, PackedLinear, pack_int8, pack_panels
from janus_sdk.config import NoOptions
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

KERNEL_BLOCK = 16  # the kernel converts weights 16 at a time: in_features must be a multiple


class KernelOptions(BaseModel):
    """Options of the backends that can use the kernels."""

    model_config = ConfigDict(extra="forbid")

    measured: bool = Field(
        default=True,
        description="Use the kernel only at the row counts where it measured faster than torch's GEMM on "
        "this machine (janus_sdk.tuning, cached per machine), in its fastest build; false: at every call of "
        "up to 32 rows, in the widest build the backend has.",
    )


class TorchLinear:
    """Leaves nn.Linear as it is."""

    name = "torch"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs wherever torch runs."""

    def convert(self, linear: nn.Linear) -> nn.Module:
        return linear


class KernelLinear:
    """Float32/bfloat16 weights as loaded, streamed by the kernel's `isas` builds for decode steps."""

    def __init__(self, name: str, isas: tuple[str, ...], options: KernelOptions | None = None) -> None:
        self.name = name
        self.isas = isas
        self.measured = (options or KernelOptions()).measured

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        auto = functools.partial(choose_linear_backend, device, dtype)
        require_kernels(device, dtype, "linear", self.name, self.isas, auto, "torch")

    def convert(self, linear: nn.Linear) -> nn.Module:
        if linear.in_features % KERNEL_BLOCK:
            return linear
        weight = linear.weight.detach()
        if self.isas == (AVX2,) and weight.dtype == torch.bfloat16 and linear.out_features % PANEL_TILE == 0:
            weight = pack_panels(weight)  # the AVX2 build's bfloat16 layout (packed.py)
        return PackedLinear(weight, _bias(linear), None, isas=self.isas, measured=self.measured)


class Int8Linear:
    """Weight-only int8: w ~ scale[out] * q[out, in], q in [-127, 127], scale = max |w[out, :]| / 127."""

    name = "int8"

    def __init__(self, options: KernelOptions | None = None) -> None:
        self.measured = (options or KernelOptions()).measured
        self.isas: tuple[str, ...] = ()

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs anywhere; on AVX2 and ARM64 CPUs through the kernel when it compiles (else a dequantizing
        matmul)."""
        usable = kernels_usable(device, dtype, "linear 'int8' uses a dequantizing matmul")
        self.isas = kernel_isas() if usable else ()

    def convert(self, linear: nn.Linear) -> nn.Module:
        quantized, scale = quantize_rows(linear.weight.detach())
        if not self.isas or linear.in_features % PACK_BYTES:
            return PackedLinear(quantized, _bias(linear), scale, measured=self.measured)
        return PackedLinear(
            pack_int8(quantized), _bias(linear), scale, isas=self.isas, measured=self.measured
        )


def quantize_rows(weight: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output feature, `chunk` rows at a time so that the float32 temporaries stay small
    (a whole 102400 x 2048 LM head would need three 840 MB copies at once)."""
    quantized = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scale = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    for start in range(0, weight.shape[0], chunk):
        block = weight[start : start + chunk].float()
        block_scale = (block.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        quantized[start : start + chunk] = torch.round(block / block_scale[:, None]).clamp(-127, 127)
        scale[start : start + chunk] = block_scale
    return quantized, scale


def _bias(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


@hookimpl
def register_linear_backends(register: Register) -> None:
    def torch_(_: NoOptions, __: BuildContext) -> TorchLinear:
        """nn.Linear as it is: torch's own kernels (default where the kernel cannot serve)."""
        return TorchLinear()

    def avx2(options: KernelOptions, __: BuildContext) -> KernelLinear:
        """Weights as loaded, streamed by an AVX2 kernel for decode steps where it measures faster (CPU)."""
        return KernelLinear("avx2", (AVX2,), options)

    def avx512(options: KernelOptions, __: BuildContext) -> KernelLinear:
        """As avx2, with AVX-512 BF16/VNNI tiles as a further candidate (CPUs that have them)."""
        return KernelLinear("avx512", (AVX2, AVX512), options)

    def neon(options: KernelOptions, __: BuildContext) -> KernelLinear:
        """Weights as loaded, streamed by the kernel's NEON tiles where they measure faster (ARM64 CPUs)."""
        return KernelLinear("neon", (NEON,), options)

    def neon_bf16(options: KernelOptions, __: BuildContext) -> KernelLinear:
        """As neon, with BFDOT tiles as a further candidate for bfloat16 (ARM64 CPUs with BF16)."""
        return KernelLinear("neon-bf16", (NEON, NEON_BF16), options)

    def int8(options: KernelOptions, __: BuildContext) -> Int8Linear:
        """Weight-only int8, one scale per output feature: half of bfloat16's bytes per token."""
        return Int8Linear(options)

    def int4(options: Int4Options, __: BuildContext) -> Int4Backend:
        """Weight-only int4, a scale and offset per group of inputs: a quarter of bfloat16's bytes (CPU)."""
        return Int4Backend(options)

    register("torch", torch_, config=NoOptions)
    register("avx2", avx2, config=KernelOptions)
    register("avx512", avx512, config=KernelOptions)
    register("neon", neon, config=KernelOptions)
    register("neon-bf16", neon_bf16, config=KernelOptions)
    register("int8", int8, config=KernelOptions, aliases=("int8-weight-only",))
    register("int4", int4, config=Int4Options, aliases=("int4-weight-only",))


@hookimpl
def choose_linear_backend(device: torch.device, dtype: torch.dtype) -> str | None:
    if not kernels_usable(device, dtype, "linear 'auto' picks torch"):
        return None
    return kernel_isas()[-1]  # each build is the widest of the backend of its name
