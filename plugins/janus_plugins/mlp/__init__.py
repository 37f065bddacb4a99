"""Built-in plugin: MLP aligners (official class `MlpProjector`) and the image-token head (`vision_head`)."""

from __future__ import annotations

from janus_plugins.mlp.config import MlpProjectorConfig, VisionHeadConfig
from janus_plugins.mlp.model import MlpProjector, VisionHead
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

__all__ = [
    "MlpProjector",
    "MlpProjectorConfig",
    "VisionHead",
    "VisionHeadConfig",
    "build_mlp_projector",
    "build_vision_head",
]


def build_mlp_projector(config: MlpProjectorConfig, context: BuildContext) -> MlpProjector:
    """MLP projector from encoder features (or code embeddings) to the LLM embedding space."""
    return MlpProjector(config)


def build_vision_head(config: VisionHeadConfig, context: BuildContext) -> VisionHead:
    """Two-layer GELU head from LLM hidden states to image-code logits."""
    return VisionHead(config)


@hookimpl
def register_aligners(register: Register) -> None:
    register("mlp", build_mlp_projector, config=MlpProjectorConfig, aliases=("MlpProjector", "mlp_gelu"))


@hookimpl
def register_generation_heads(register: Register) -> None:
    register("vision_head", build_vision_head, config=VisionHeadConfig, aliases=("VisionHead",))
