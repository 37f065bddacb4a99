"""The elementwise parts of a decoder layer (RMSNorm, rotary embedding with the cache write, the SwiGLU
product), as one strategy object per step: torch's ops, or on AVX2 CPUs one kernel call each.

On a CPU a decode step is ~170 weight-streaming matmuls and, between them, ~1,300 small torch ops (a LLaMA
RMSNorm is 8 of them, the rotary embedding 14) at tens of microseconds each: about 30 ms of a 1B bfloat16
step of 190 ms. The kernels do each part in one call and round where transformers' modules round, so
bfloat16 results equal torch's bit for bit (float32 within the order of a sum).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
from torch import Tensor
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm, apply_rotary_pos_emb

from janus_plugins.linear.kernels import avx2_kernels, kernels_usable

Position = int | Tensor
"""Where a block of positions starts: an int, or a one-element int64 tensor for the single position of a
captured decode step (the cache is then written with index_copy_ and read whole, masked beyond it)."""


class TorchLayerOps:
    """transformers' LLaMA modules and torch ops: every device, every dtype."""

    def rms_norm(self, x: Tensor, norm: LlamaRMSNorm) -> Tensor:
        return norm(x)  # type: ignore[no-any-return]

    def add_rms_norm(self, x: Tensor, delta: Tensor, norm: LlamaRMSNorm) -> tuple[Tensor, Tensor]:
        """The residual add and the next norm: (x + delta, norm(x + delta))."""
        total = x + delta
        return total, self.rms_norm(total, norm)

    def rotary_into_cache(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: tuple[Tensor, Tensor],
        keys: Tensor,
        values: Tensor,
        start: Position,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rotates q and k ([B, T, heads, D]) and writes k, v into the layer's caches ([B, heads, L, D]) at
        start..; returns q as [B, heads, T, D] and the keys and values to attend over."""
        q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), *rope)
        v = v.transpose(1, 2)
        if isinstance(start, Tensor):  # one position, at a place known only on the device
            keys.index_copy_(2, start, k)
            values.index_copy_(2, start, v)
            return q, keys, values
        end = start + q.shape[2]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return q, keys[:, :, :end], values[:, :, :end]

    def swiglu(self, mlp: LlamaMLP, x: Tensor) -> Tensor:
        return mlp(x)  # type: ignore[no-any-return]


class AVX2LayerOps(TorchLayerOps):
    """The same results from the AVX2 kernels (CPU, float32/bfloat16, integer start positions)."""

    def __init__(self, kernels: ModuleType) -> None:
        self.kernels = kernels

    def rms_norm(self, x: Tensor, norm: LlamaRMSNorm) -> Tensor:
        out: Tensor = self.kernels.rms_norm(x.contiguous(), norm.weight, norm.variance_epsilon)
        return out

    def add_rms_norm(self, x: Tensor, delta: Tensor, norm: LlamaRMSNorm) -> tuple[Tensor, Tensor]:
        total, normed = self.kernels.add_rms_norm(
            x.contiguous(), delta.contiguous(), norm.weight, norm.variance_epsilon
        )
        return total, normed

    def rotary_into_cache(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: tuple[Tensor, Tensor],
        keys: Tensor,
        values: Tensor,
        start: Position,
    ) -> tuple[Tensor, Tensor, Tensor]:
        if isinstance(start, Tensor):
            return super().rotary_into_cache(q, k, v, rope, keys, values, start)
        q = q.contiguous()
        cos, sin = rope
        self.kernels.rotary_into_cache(
            q, k.contiguous(), v.contiguous(), cos.contiguous(), sin.contiguous(), keys, values, start
        )
        end = start + q.shape[1]
        return q.transpose(1, 2), keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def swiglu(self, mlp: LlamaMLP, x: Tensor) -> Tensor:
        product = self.kernels.silu_mul(mlp.gate_proj(x), mlp.up_proj(x))
        return mlp.down_proj(product)  # type: ignore[no-any-return]


TORCH_OPS = TorchLayerOps()


@functools.cache
def layer_ops(device: torch.device, dtype: torch.dtype) -> TorchLayerOps:
    """The ops for hidden states on `device` in `dtype`: the AVX2 kernels where they can run (a failure to
    compile them is logged once), else torch's."""
    if kernels_usable(device, dtype, "decoder layers use torch ops"):
        return AVX2LayerOps(avx2_kernels())
    return TORCH_OPS
