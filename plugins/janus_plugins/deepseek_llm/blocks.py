"""The LLaMA building blocks of the backbone: RMSNorm, the SwiGLU MLP and rotary position embedding.

Written here rather than imported from transformers' modeling code, whose internals change between releases.
They round where transformers' LLaMA modules round (tests/plugins/test_llama_blocks.py holds them to it), so
bfloat16 results are the same bits and DeepSeek's reference outputs still hold; the CPU kernels and the
compiled ops of `layer_ops` follow the same arithmetic. Parameter names equal the official checkpoint keys.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from janus_sdk.projections import project


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x normalised in float32, rounded to x's dtype, then scaled: the weight multiplies the rounded value,
    so the product is in the weight's dtype and bfloat16 weights give bfloat16 results."""
    wide = x.float()
    return weight * (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def silu_mul(gate: Tensor, up: Tensor) -> Tensor:
    """The SwiGLU product of the gate and up projections."""
    return functional.silu(gate) * up


def rotate(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """q, k [B, T, heads, D] rotated by the tables cos, sin [B, T, D], returned as [B, heads, T, D] (the
    layout attention takes)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return _rotated(q.transpose(1, 2), cos, sin), _rotated(k.transpose(1, 2), cos, sin)


def _rotated(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin, where rotate_half(x) = (-second half, first half) of the last dim."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (`weight`, initialised to ones)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class MLP(nn.Module):
    """SwiGLU feed-forward: down_proj(silu(gate_proj(x)) * up_proj(x))."""

    def __init__(self, dim: int, hidden: int, *, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down_proj(silu_mul(*self.gate_and_up(x)))
        return out

    def gate_and_up(self, x: Tensor) -> list[Tensor]:
        """The two projections of x, in one call where the linear backend can (`project`)."""
        return project(x, (self.gate_proj, self.up_proj))


class RotaryEmbedding(nn.Module):
    """cos and sin tables of positions for the default RoPE (no scaling).

    `inv_freq` is computed in float32, a buffer that is not in checkpoints; the angles are float32 products of
    positions and frequencies, their cos and sin rounded to the activations' dtype.
    """

    inv_freq: Tensor

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Tables [B, T, head_dim] for `positions` [B, T] (any integers, negative included), in x's dtype."""
        freqs = positions[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)
