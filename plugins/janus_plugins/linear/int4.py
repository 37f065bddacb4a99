"""Weight-only int4, group-wise: a quarter of bfloat16's bytes per token, through torch's own int4 CPU kernel.

Each run of `group_size` input features of an output row gets a scale and an offset (asymmetric: the group's
minimum maps to code 0, its maximum to 15), and the weight is w ~ (q - 8) * scale + zero with q in 0..15,
the form `torch.ops.aten._weight_int4pack_mm_for_cpu` computes from (torch packs the codes itself,
`_convert_weight_to_int4pack_for_cpu`). It is the kernel torchao and gpt-fast call for int4 on CPU (ours have
no int4 path): on a 2-core Zen 4 it computes one row at 40 G weights/s against the int8 kernel's 34 and the
bfloat16 one's 15, and loses from 4 rows on (bench/linear_kernels.py). Layers whose in-features are not a
multiple of the group size stay as they are.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from janus_sdk.errors import BackendUnavailableError

INNER_K_TILES = 2
"""How torch's packing interleaves the codes (2, 4 or 8); its kernel needs in_features % (16 * this) == 0."""
CODES = 16


class Int4Options(BaseModel):
    """Options of the int4 backend."""

    model_config = ConfigDict(extra="forbid")

    group_size: Literal[32, 64, 128, 256] = Field(
        default=64,
        description="Input features per scale and offset: smaller groups follow the weights more closely "
        "(bench/quality.py measures the cost) and add 4 bytes per group and output feature.",
    )


def quantize_groups(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """[out, in] float -> (codes [out, in] int32 in 0..15, scale [out, in / group], zero [out, in / group]),
    w ~ (codes - 8) * scale + zero, in float32."""
    out_features, in_features = weight.shape
    groups = weight.float().view(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / (CODES - 1)).clamp(min=torch.finfo(torch.float32).tiny)
    codes = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, CODES - 1).to(torch.int32)
    return codes.view(out_features, in_features), scale, low + (CODES // 2) * scale


class Int4Linear(nn.Module):
    """A linear layer computing from int4 codes packed by torch, with one scale and offset per group."""

    def __init__(self, linear: nn.Linear, group_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.group_size = group_size
        weight = linear.weight.detach()
        codes, scale, zero = quantize_groups(weight, group_size)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
        self.packed = nn.Parameter(packed, requires_grad=False)
        # [in / group, out, 2] in the activations' dtype, as the kernel takes them
        scales_and_zeros = torch.stack([scale.T, zero.T], dim=-1).contiguous().to(weight.dtype)
        self.scales_and_zeros = nn.Parameter(scales_and_zeros, requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        y: Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed, self.group_size, self.scales_and_zeros
        )
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group_size={self.group_size}"


class Int4Backend:
    """Weight-only int4 for the per-token linear layers (CPU; bfloat16 or float32 activations)."""

    name = "int4"

    def __init__(self, options: Int4Options | None = None) -> None:
        self.group_size = (options or Int4Options()).group_size

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        if device.type != "cpu" or dtype not in (torch.bfloat16, torch.float32):
            raise BackendUnavailableError(
                "linear backend 'int4' runs torch's int4 CPU kernel, on the CPU in bfloat16 or float32, not "
                f"on {device.type} in {str(dtype).removeprefix('torch.')}; use linear 'int8' or 'torch'"
            )

    def convert(self, linear: nn.Linear) -> nn.Module:
        if linear.in_features % max(self.group_size, 16 * INNER_K_TILES):
            return linear
        return Int4Linear(linear, self.group_size)
