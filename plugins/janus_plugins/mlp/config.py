"""Typed configs of the two-layer MLP modules: the aligners (`MlpProjector`) and the image-token head
(`vision_head`), with the official `params` keys and the Janus-Pro-1B values as defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MlpProjectorConfig(BaseModel):
    """Janus `aligner_config.params` / `gen_aligner_config.params`."""

    model_config = ConfigDict(extra="forbid")

    projector_type: Literal["identity", "linear", "mlp_gelu"] = Field(
        "mlp_gelu",
        description="'mlp_gelu': Linear, then (GELU, Linear) x (depth - 1); 'linear': one Linear; "
        "'identity': nothing. Upstream's 'low_high_hybrid_split_mlp_gelu' needs a two-tensor hybrid encoder, "
        "which Janus-Pro does not have.",
    )
    input_dim: int = Field(1024, gt=0, description="Input width (SigLIP width, or the VQ code width 8).")
    n_embed: int = Field(2048, gt=0, description="Output width: the LLM hidden size.")
    depth: int = Field(2, ge=1, description="Linear layers of 'mlp_gelu' (ignored by the other types).")

    @model_validator(mode="after")
    def _identity_keeps_width(self) -> MlpProjectorConfig:
        if self.projector_type == "identity" and self.input_dim != self.n_embed:
            raise ValueError(
                f"projector_type 'identity' cannot map input_dim {self.input_dim} to n_embed {self.n_embed}"
            )
        return self


class VisionHeadConfig(BaseModel):
    """Janus `gen_head_config.params`."""

    model_config = ConfigDict(extra="forbid")

    n_embed: int = Field(2048, gt=0, description="LLM hidden size (input width).")
    image_token_embed: int = Field(2048, gt=0, description="Width of the hidden layer between the Linears.")
    image_token_size: int = Field(16384, gt=0, description="Number of image codes (output logits).")
