"""Typed config of the VQ-16 image tokenizer: the official `gen_vision_config.params` keys plus the sizes
upstream hard-codes in `VQ_16()` / `ModelArgs` / `Encoder` / `Decoder`, defaulting to the real values."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

GROUPNORM_GROUPS = 32  # upstream's Normalize(): GroupNorm(32, C, eps=1e-6) everywhere


class VQ16Config(BaseModel):
    """Sizes of the VQ-16 tokenizer (LlamaGen's VQGAN with an L2-normalised 16384 x 8 codebook)."""

    model_config = ConfigDict(extra="forbid")

    image_token_size: int = Field(
        default=16384, gt=0, description="Number of image tokens (official params key; equals codebook_size)."
    )
    n_embed: int = Field(
        default=8, gt=0, description="Width of one code (official params key; equals codebook_embed_dim)."
    )
    ch: int = Field(
        default=128, gt=0, description="Base channel width of encoder and decoder (upstream: 128)."
    )
    ch_mult: list[int] = Field(
        default_factory=lambda: [1, 1, 2, 2, 4],
        min_length=1,
        description="Channel multiplier per resolution level; every level after the first halves the size.",
    )
    z_channels: int = Field(
        default=256, gt=0, description="Channels of the latent between encoder/decoder and the quant convs."
    )
    num_res_blocks: int = Field(
        default=2,
        gt=0,
        description="Residual blocks per encoder level (the decoder uses one more per level).",
    )
    codebook_size: int = Field(default=16384, gt=0, description="Number of codebook entries.")
    codebook_embed_dim: int = Field(
        default=8, gt=0, description="Width of a codebook entry (the quantised latent)."
    )
    codebook_l2_norm: bool = Field(
        default=True, description="Compare and look up codes on the unit sphere (Janus: True)."
    )
    codebook_show_usage: bool = Field(
        default=True,
        description="Keep the 65536-float `quantize.codebook_used` training buffer (checkpoints have it).",
    )
    image_size: int = Field(
        default=384, gt=0, description="Side of the square images the tokenizer encodes and decodes."
    )

    winograd: bool = Field(
        default=True,
        description="On the CPU, run float32 3x3 convolutions through NNPACK's Winograd transform where it "
        "measured faster than torch's on this machine (a decode 2.5x faster on a 2-core EPYC; results within "
        "~1e-5 relative of direct convolution; ~0.27 GB of workspace kept once used). False: torch's own.",
    )
    cuda_graphs: bool = Field(
        default=True,
        description="On CUDA, decode each image through a CUDA graph captured on first use (per latent "
        "shape and dtype): the decoder's few hundred kernel launches otherwise cost more host time than one "
        "image's GPU work. The graph keeps one image's activations allocated for its replays; a batch "
        "replays it once per image (images decode one at a time: pixels never depend on the batch).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> VQ16Config:
        if self.image_token_size != self.codebook_size:
            raise ValueError(
                f"image_token_size {self.image_token_size} must equal codebook_size {self.codebook_size}"
            )
        if self.n_embed != self.codebook_embed_dim:
            raise ValueError(
                f"n_embed {self.n_embed} must equal codebook_embed_dim {self.codebook_embed_dim}"
            )
        if any(m <= 0 for m in self.ch_mult):
            raise ValueError(f"ch_mult entries must be positive, got {self.ch_mult}")
        widths = sorted({self.ch * m for m in self.ch_mult})
        if any(w % GROUPNORM_GROUPS for w in widths):
            raise ValueError(
                f"every ch * ch_mult width must be a multiple of {GROUPNORM_GROUPS} (GroupNorm), got {widths}"
            )
        if self.image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the downsampling factor "
                f"{self.downsample_factor} (2 ** (len(ch_mult) - 1))"
            )
        return self

    @property
    def downsample_factor(self) -> int:
        """Pixels per code along one side (16 for VQ-16)."""
        return int(2 ** (len(self.ch_mult) - 1))

    @property
    def grid_size(self) -> int:
        """Codes per side of the code grid (24 for 384-pixel images)."""
        return self.image_size // self.downsample_factor
