"""VQ-16: the convolutional VQ autoencoder Janus-Pro uses to turn 384x384 images into 24x24 grids of codes.

Same architecture and parameter names as the official `VQModel` (LlamaGen's VQGAN), so a checkpoint's
`gen_vision_model.*` keys load as-is: GroupNorm(32, eps 1e-6) + swish pre-activation residual blocks,
asymmetric (0,1,0,1) zero pad + stride-2 conv to downsample, nearest x2 + conv to upsample, single-head
spatial attention at the lowest resolution, and a codebook compared and looked up on the unit sphere.
Inference only: no losses, no dropout. The encoder and decoder run in `janus_sdk.compute`'s compute dtype
(float32 for bfloat16 weights on CPUs that emulate bfloat16, where a bfloat16 decode would take over an hour),
each layer casting its own weights to its input's dtype; 3x3 convolutions go through NNPACK on the CPU.
Images are decoded one at a time, so that their pixels do not depend on the batch; on CUDA an image's
GroupNorms split their statistics and its decode replays a captured graph (`convolution`, `normalization`,
`captured`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from janus_plugins.vq16.captured import CapturedDecoder
from janus_plugins.vq16.config import GROUPNORM_GROUPS, VQ16Config
from janus_plugins.vq16.convolution import Conv2d, Conv3x3, coder_dtype, coder_layout
from janus_plugins.vq16.normalization import GroupNorm
from janus_sdk.compute import like_input
from janus_sdk.errors import InputError
from janus_sdk.interfaces import AttentionBackend

CODEBOOK_USAGE_SLOTS = 65536  # size of upstream's training-time `codebook_used` buffer, kept for key parity


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(GROUPNORM_GROUPS, channels, eps=1e-6)


def _conv3(in_ch: int, out_ch: int) -> Conv3x3:
    return Conv3x3(in_ch, out_ch)


def _norm_swish(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    # in place on the fresh GroupNorm output: one activation-sized allocation fewer per block
    return F.silu(norm(x), inplace=True)


class ResBlock(nn.Module):
    """Pre-activation residual block; a 1x1 `nin_shortcut` adapts the skip path when the width changes."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = _conv3(in_ch, out_ch)
        self.norm2 = _norm(out_ch)
        self.conv2 = _conv3(out_ch, out_ch)
        self.nin_shortcut = Conv2d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.conv1(_norm_swish(self.norm1, x))
        h = _norm_swish(self.norm2, h)  # conv1's output is freed before conv2 allocates its own
        out: Tensor = self.conv2(h)
        return out.add_(self.nin_shortcut(x))


class SpatialAttention(nn.Module):
    """Single-head self-attention over all H*W positions, channels as the head dimension.

    The 1x1 q/k/v/proj_out convs are applied as linear maps on the [B, HW, C] token view, which gives the
    backend contiguous [B, 1, HW, C] inputs without transposing three tensors back and forth.
    """

    def __init__(self, channels: int, attention: AttentionBackend) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.attention = attention

    @staticmethod
    def _pointwise(conv: nn.Conv2d, tokens: Tensor) -> Tensor:
        return F.linear(tokens, like_input(conv.weight, tokens).flatten(1), like_input(conv.bias, tokens))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = (self._pointwise(p, tokens).unsqueeze(1) for p in (self.q, self.k, self.v))
        # single head, default scale C ** -0.5: exactly upstream's softmax(q k^T / sqrt(C)) v
        out = self.attention.attend(q, k, v, causal=False).squeeze(1)
        return x + self._pointwise(self.proj_out, out).transpose(1, 2).view(b, c, h, w)


class Downsample(nn.Module):
    """Halve the resolution: zero-pad right and bottom by one, then a stride-2 3x3 conv (as upstream)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(F.pad(x, (0, 1, 0, 1)))
        return out


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return out


class _Level(nn.Module):
    """One resolution level: `depth` residual blocks, each followed by attention when `attention` is given."""

    def __init__(self, in_ch: int, out_ch: int, depth: int, attention: AttentionBackend | None) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(depth))
        self.attn = nn.ModuleList()
        if attention is not None:
            self.attn.extend(SpatialAttention(out_ch, attention) for _ in range(depth))

    def layers(self) -> Iterator[nn.Module]:
        """The level's modules in the order they run."""
        for i, block in enumerate(self.res):
            yield block
            if self.attn:
                yield self.attn[i]


class EncoderLevel(_Level):
    """Encoder level: blocks, then downsampling except at the last (lowest-resolution) level."""

    def __init__(
        self, in_ch: int, out_ch: int, depth: int, attention: AttentionBackend | None, last: bool
    ) -> None:
        super().__init__(in_ch, out_ch, depth, attention)
        self.downsample = nn.Identity() if last else Downsample(out_ch)

    def layers(self) -> Iterator[nn.Module]:
        yield from super().layers()
        yield self.downsample


class DecoderLevel(_Level):
    """Decoder level: blocks, then upsampling except at the last (full-resolution) level."""

    def __init__(
        self, in_ch: int, out_ch: int, depth: int, attention: AttentionBackend | None, last: bool
    ) -> None:
        super().__init__(in_ch, out_ch, depth, attention)
        self.upsample = nn.Identity() if last else Upsample(out_ch)

    def layers(self) -> Iterator[nn.Module]:
        yield from super().layers()
        yield self.upsample


def _chain(layers: Iterable[nn.Module], x: Tensor) -> Tensor:
    """x through `layers` in turn. Only the activation at hand is referenced between layers: a level's
    input is not kept alive while its later blocks run (at 384x384, 75 MB per image)."""
    for layer in layers:
        x = layer(x)
    return x


def _level_layers(levels: nn.ModuleList) -> Iterator[nn.Module]:
    for level in levels:
        yield from cast(_Level, level).layers()


def _middle(channels: int, attention: AttentionBackend) -> nn.Sequential:
    """ResBlock, attention, ResBlock at the lowest resolution (keys mid.0, mid.1, mid.2)."""
    return nn.Sequential(
        ResBlock(channels, channels), SpatialAttention(channels, attention), ResBlock(channels, channels)
    )


class Encoder(nn.Module):
    """Pixels [B, 3, S, S] -> latent [B, z_channels, S/16, S/16]."""

    def __init__(self, cfg: VQ16Config, attention: AttentionBackend) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        last = len(widths) - 1
        self.conv_in = _conv3(3, cfg.ch)
        self.conv_blocks = nn.ModuleList(
            EncoderLevel(in_ch, out_ch, cfg.num_res_blocks, attention if i == last else None, last=i == last)
            for i, (in_ch, out_ch) in enumerate(zip([cfg.ch, *widths[:-1]], widths, strict=True))
        )
        self.mid = _middle(widths[-1], attention)
        self.norm_out = _norm(widths[-1])
        self.conv_out = _conv3(widths[-1], cfg.z_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = _chain(itertools.chain([self.conv_in], _level_layers(self.conv_blocks), [self.mid]), x)
        out: Tensor = self.conv_out(_norm_swish(self.norm_out, h))
        return out


class Decoder(nn.Module):
    """Latent [B, z_channels, g, g] -> images [B, 3, 16g, 16g]; levels run from the widest one down."""

    def __init__(self, cfg: VQ16Config, attention: AttentionBackend) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in reversed(cfg.ch_mult)]
        last = len(widths) - 1
        self.conv_in = _conv3(cfg.z_channels, widths[0])
        self.mid = _middle(widths[0], attention)
        self.conv_blocks = nn.ModuleList(
            DecoderLevel(in_ch, out_ch, cfg.num_res_blocks + 1, attention if i == 0 else None, last=i == last)
            for i, (in_ch, out_ch) in enumerate(zip([widths[0], *widths[:-1]], widths, strict=True))
        )
        self.norm_out = _norm(widths[-1])
        self.conv_out = _conv3(widths[-1], 3)

    def forward(self, z: Tensor) -> Tensor:
        h = _chain(itertools.chain([self.conv_in, self.mid], _level_layers(self.conv_blocks)), z)
        out: Tensor = self.conv_out(_norm_swish(self.norm_out, h))
        return out


class VectorQuantizer(nn.Module):
    """The codebook: nearest-entry search for encoding, row lookup for decoding."""

    codebook_used: Tensor

    def __init__(self, cfg: VQ16Config) -> None:
        super().__init__()
        self.l2_norm = cfg.codebook_l2_norm
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        if cfg.codebook_show_usage:
            self.register_buffer("codebook_used", torch.zeros(CODEBOOK_USAGE_SLOTS))

    def _unit(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=-1) if self.l2_norm else x

    def lookup(self, codes: Tensor) -> Tensor:
        """codes [...] -> entries [..., D]; normalising just the rows used equals normalising the table."""
        return self._unit(self.embedding.weight[codes])

    def nearest(self, z: Tensor) -> Tensor:
        """z [N, D] -> index [N] of the entry at the smallest squared distance (after L2 normalisation).

        |z|^2 is the same for every entry of a row, so argmin(|e|^2 - 2 z.e) picks the same entry as upstream.
        Computed in float32 even for a half-precision model: bf16 distances would tie between close entries.
        """
        codebook = self._unit(self.embedding.weight.float())
        distance = torch.addmm(codebook.square().sum(dim=1), self._unit(z.float()), codebook.t(), alpha=-2.0)
        return distance.argmin(dim=1)


def _run_coder(coder: nn.Module, x: Tensor, winograd: bool) -> Tensor:
    """`coder(x)` computed in the dtype and memory format measured fastest for x's (the weights') dtype,
    returned in x's dtype, NCHW.

    On the CPU one image at a time: NNPACK computes a batch by another algorithm, which took 1.8x as long as
    one call per image (4 Janus-Pro decodes, 2-core EPYC), and one image's activations are a batch's peak.
    """
    dtype = coder_dtype(x.dtype, x.device, winograd)
    layout = coder_layout(dtype, x.device, winograd)
    images = [x[i : i + 1] for i in range(len(x))] if x.device.type == "cpu" else [x]
    return torch.cat(
        [coder(image.to(dtype).contiguous(memory_format=layout)).to(x.dtype).contiguous() for image in images]
    )


class VQ16(nn.Module):
    """The VQ-16 image tokenizer; satisfies janus_sdk.interfaces.ImageTokenizer.

    Codes are flattened in raster order (index = y * grid_size + x). Call under `torch.inference_mode()`.
    """

    def __init__(self, cfg: VQ16Config, attention: AttentionBackend) -> None:
        super().__init__()
        self.config = cfg
        self.codebook_size = cfg.codebook_size
        self.code_dim = cfg.codebook_embed_dim
        self.image_size = cfg.image_size
        self.grid_size = cfg.grid_size
        self.encoder = Encoder(cfg, attention)
        self.decoder = Decoder(cfg, attention)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, kernel_size=1)
        for conv in self.modules():
            if isinstance(conv, Conv3x3):
                conv.winograd = cfg.winograd
        self.captured_decoder = CapturedDecoder(self.decoder)

    # -- encoding ------------------------------------------------------------------------------------------

    def encode(self, pixels: Tensor) -> Tensor:
        """[B, 3, image_size, image_size] in [-1, 1] -> codes [B, grid_size**2] (int64)."""
        return self.quantize_latent(self.encode_latent(pixels))[1]

    def encode_latent(self, pixels: Tensor) -> Tensor:
        """Pixels -> continuous latent before quantisation [B, code_dim, g, g] (encoder + quant_conv)."""
        self._check_pixels(pixels)
        weight = self.quant_conv.weight
        features = _run_coder(
            self.encoder, pixels.to(device=weight.device, dtype=weight.dtype), self.config.winograd
        )
        latent: Tensor = self.quant_conv(features)
        return latent

    def quantize_latent(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Latent [B, D, g, g] -> (quantised latent [B, D, g, g], codes [B, g*g]).

        The quantised latent is the codebook entries themselves; upstream's straight-through z + (e - z)
        equals them up to float rounding and only matters for training.
        """
        b, d, h, w = latent.shape
        codes = self.quantize.nearest(latent.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h * w)
        return self._arrange(self.quantize.lookup(codes)), codes

    # -- decoding ------------------------------------------------------------------------------------------

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, grid_size**2] -> images [B, 3, image_size, image_size], roughly in [-1, 1], unclipped."""
        return self.decode_latent(self.codes_to_latent(codes))

    def codes_to_latent(self, codes: Tensor) -> Tensor:
        """Codes [B, g*g] -> codebook entries as a latent [B, D, g, g] (upstream's get_codebook_entry)."""
        self._check_codes(codes)
        return self._arrange(
            self.quantize.lookup(codes.to(self.quantize.embedding.weight.device, torch.long))
        )

    def _arrange(self, rows: Tensor) -> Tensor:
        """Entries [B, g*g, D] in raster order -> latent [B, D, g, g]."""
        g = self.grid_size
        # contiguous NCHW (not the channels-last strides of the permute) so every conv below keeps one layout
        return rows.view(rows.shape[0], g, g, self.code_dim).permute(0, 3, 1, 2).contiguous()

    def decode_latent(self, latent: Tensor) -> Tensor:
        """Quantised latent [B, D, g, g] -> images [B, 3, S, S] (post_quant_conv + decoder), one image at a
        time: an image's pixels never depend on what it is decoded with (a batched convolution may sum in
        another order), so a seed gives the same pixels however the images were grouped."""
        return torch.cat([self._decode_one(latent[i : i + 1]) for i in range(len(latent))])

    def _decode_one(self, latent: Tensor) -> Tensor:
        features = self.post_quant_conv(latent)
        if features.is_cuda and self.config.cuda_graphs:
            return self.captured_decoder(features)
        return _run_coder(self.decoder, features, self.config.winograd)

    # -- input checks --------------------------------------------------------------------------------------

    def _check_pixels(self, pixels: Tensor) -> None:
        s = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s) or pixels.shape[0] == 0:
            raise InputError(
                f"VQ-16 encode expects pixels of shape [B, 3, {s}, {s}] with B >= 1, got {list(pixels.shape)}"
            )
        if not pixels.is_floating_point():
            raise InputError(f"VQ-16 encode expects float pixels in [-1, 1], got dtype {pixels.dtype}")

    def _check_codes(self, codes: Tensor) -> None:
        n = self.grid_size**2
        if codes.ndim != 2 or codes.shape[1] != n or codes.shape[0] == 0:
            raise InputError(
                f"VQ-16 decode expects codes of shape [B, {n}] with B >= 1 (a {self.grid_size}x"
                f"{self.grid_size} grid in raster order), got {list(codes.shape)}"
            )
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise InputError(f"VQ-16 decode expects integer codes, got dtype {codes.dtype}")
        low, high = torch.stack(torch.aminmax(codes)).tolist()  # one device sync for both bounds
        if low < 0 or high >= self.codebook_size:
            raise InputError(
                f"VQ-16 codes must lie in [0, {self.codebook_size}), got values from {low} to {high}"
            )
