"""The SigLIP ViT of Janus (`CLIPVisionTower` around timm's `VisionTransformer`) in plain torch.

Module and parameter names follow timm, so the `vision_model.*` slice of an official checkpoint loads as-is:
conv patch embed, learned position embedding (no class token), pre-LN blocks with fused qkv and exact-erf
GELU, final LayerNorm. The attention-pool head is built only to hold its checkpoint weights: Janus skips it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from janus_plugins.siglip.config import SigLIPConfig
from janus_sdk.compute import run_in_compute_dtype
from janus_sdk.errors import InputError

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]
"""Non-causal attention: q, k, v [B, H, T, Dh] -> [B, H, T, Dh]."""

LN_EPS = 1e-6  # timm's partial(nn.LayerNorm, eps=1e-6) in the official siglip_vit.py


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Default attention when the pipeline supplies no backend."""
    return F.scaled_dot_product_attention(q, k, v)


class PatchEmbed(nn.Module):
    """Non-overlapping conv patchify: [B, 3, S, S] -> [B, (S // P)**2, W] in raster order."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch_size, stride=patch_size)

    def forward(self, pixels: Tensor) -> Tensor:
        x: Tensor = self.proj(pixels)
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm's Mlp; HF SigLIP's tanh GELU would be wrong here)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, width: int, heads: int, attend: Attend) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attend = attend

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out: Tensor = self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, t, c))
        return out


class Block(nn.Module):
    """Pre-LN transformer block, no layer scale."""

    def __init__(self, width: int, heads: int, hidden: int, attend: Attend) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = Attention(width, heads, attend)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


class AttentionPoolWeights(nn.Module):
    """The parameters of timm's `AttentionPoolLatent` head (MAP pooling). Janus builds the tower with
    ignore_head=True, so the head never runs; it exists so that checkpoints load strictly."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, width))
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, hidden)


class VisionTransformer(nn.Module):
    """timm's ViT as Janus configures it: no class token, final norm applied, head ignored."""

    def __init__(self, config: SigLIPConfig, attend: Attend) -> None:
        super().__init__()
        hidden = int(config.width * config.mlp_ratio)
        self.patch_embed = PatchEmbed(config.patch_size, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size**2, config.width))
        self.blocks = nn.ModuleList(
            Block(config.width, config.heads, hidden, attend) for _ in range(config.num_blocks)
        )
        self.norm = nn.LayerNorm(config.width, eps=LN_EPS)
        self.attn_pool = AttentionPoolWeights(config.width, hidden) if config.global_pool == "map" else None

    def forward(self, pixels: Tensor) -> Tensor:
        """Block by block in the compute dtype (see `janus_sdk.compute`): at most one block's weights are
        ever upcast at a time."""
        x = run_in_compute_dtype(self.patch_embed, pixels) + self.pos_embed
        for block in self.blocks:
            x = run_in_compute_dtype(block, x)
        return run_in_compute_dtype(self.norm, x)


class SigLIPVisionEncoder(nn.Module):
    """Janus `CLIPVisionTower` for SigLIP: pixels [B, 3, S, S] -> patch features [B, (S // P)**2, width].

    Mounted as `vision_model`, so its parameters are `vision_tower.*` exactly as in the official checkpoints.
    """

    def __init__(self, config: SigLIPConfig, attend: Attend = sdpa) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.num_tokens = config.grid_size**2
        self.feature_dim = config.width
        # Plain tuples, not buffers: the loader builds on the meta device and only fills checkpoint tensors.
        self.pixel_norm = None if config.pixel_mean is None else (config.pixel_mean, config.pixel_std)
        self.vision_tower = VisionTransformer(config, attend)

    def forward(self, pixel_values: Tensor) -> Tensor:
        size = self.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise InputError(f"pixel_values must be [B, 3, {size}, {size}], got {list(pixel_values.shape)}")
        if self.pixel_norm is not None:
            mean, std = (
                torch.tensor(v, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
                for v in self.pixel_norm
            )
            pixel_values = (pixel_values - mean) / std
        out: Tensor = self.vision_tower(pixel_values)
        return out
