"""Typed config of the SigLIP understanding encoder: the official `CLIPVisionTower` params, plus the ViT sizes
that upstream takes from its `SigLIP_MODEL_CONFIG` preset table (optional here, filled in from the preset)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_MODEL = "siglip_large_patch16_384"

# The ViT sizes of upstream's presets (their own image_size is unused there: the tower takes `image_size`).
_LARGE: dict[str, Any] = dict(
    width=1024, layers=24, heads=16, mlp_ratio=4.0, patch_size=16, global_pool="map"
)
_SO400M: dict[str, Any] = dict(
    width=1152, layers=27, heads=16, mlp_ratio=3.7362, patch_size=14, global_pool="map"
)
PRESETS: dict[str, dict[str, Any]] = {
    "siglip_large_patch16_384": _LARGE,
    "siglip_so400m_patch14_384": _SO400M,
    "siglip_so400m_patch14_224": _SO400M,
}


class SigLIPConfig(BaseModel):
    """Janus `vision_config.params`; the Janus-Pro values are the defaults."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(384, gt=0, description="Side of the square input image in pixels.")
    model_name: str = Field(
        DEFAULT_MODEL, description=f"Preset giving the sizes not set here: one of {', '.join(PRESETS)}."
    )
    select_feature: Literal["same", "patch", "cls_patch"] = Field(
        "same",
        description="Which tokens to return. Upstream forces 'same' for SigLIP towers (they have no class "
        "token), so every value returns all patch tokens.",
    )
    select_layer: int = Field(
        -1,
        description="Last block to run: -1 (or 0) = all, -n = drop the last n-1 blocks, n > 0 = the first n "
        "blocks. Upstream builds only the kept blocks; the final LayerNorm follows the last of them.",
    )
    select_layers: list[int] | None = Field(
        None, description="Accepted for compatibility with official configs; upstream never uses it."
    )
    ckpt_path: str = Field(
        "", description="Accepted for compatibility; the tower's weights come from the model checkpoint."
    )
    pixel_mean: tuple[float, float, float] | None = Field(
        None, description="If given with pixel_std, the encoder first normalises its input: (x - mean) / std."
    )
    pixel_std: tuple[float, float, float] | None = Field(None, description="See pixel_mean.")
    width: int = Field(1024, gt=0, description="Token width (default: the model_name preset).")
    layers: int = Field(24, gt=0, description="Transformer blocks before select_layer (default: the preset).")
    heads: int = Field(16, gt=0, description="Attention heads; must divide width (default: the preset).")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / width (default: the preset).")
    patch_size: int = Field(16, gt=0, description="Side of the square patches (default: the preset).")
    global_pool: Literal["map", ""] = Field(
        "map",
        description="'map': the checkpoint holds an attention-pool head (`attn_pool.*`, never run by Janus); "
        "'': no head (default: the preset).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """Sizes missing from the params come from the model_name preset, as upstream takes them."""
        if not isinstance(data, dict):
            return data
        name = data.get("model_name", DEFAULT_MODEL)
        return {**PRESETS.get(name, {}), **data} if isinstance(name, str) else data

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown SigLIP model_name {name!r}; supported: {', '.join(PRESETS)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> SigLIPConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size < self.patch_size:
            raise ValueError(f"image_size {self.image_size} is smaller than patch_size {self.patch_size}")
        if self.num_blocks < 1:
            raise ValueError(f"select_layer {self.select_layer} keeps no block of {self.layers}")
        if (self.pixel_mean is None) != (self.pixel_std is None):
            raise ValueError("pixel_mean and pixel_std must be given together")
        return self

    @property
    def num_blocks(self) -> int:
        """Blocks actually built, from select_layer exactly as upstream's `create_siglip_vit` counts them."""
        if self.select_layer <= 0:
            return min(self.layers, self.layers + self.select_layer + 1)
        return min(self.layers, self.select_layer)

    @property
    def grid_size(self) -> int:
        """Patches per image side (the conv drops a remainder, as timm's PatchEmbed does)."""
        return self.image_size // self.patch_size
