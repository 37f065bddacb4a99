"""Built-in plugin: the SigLIP-L/16 understanding encoder of Janus-Pro (official class `CLIPVisionTower`)."""

from __future__ import annotations

from functools import partial

from janus_plugins.siglip.config import SigLIPConfig
from janus_plugins.siglip.model import Attend, SigLIPVisionEncoder, sdpa
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

__all__ = ["SigLIPConfig", "SigLIPVisionEncoder", "build_siglip"]


def build_siglip(config: SigLIPConfig, context: BuildContext) -> SigLIPVisionEncoder:
    """SigLIP ViT understanding encoder (pixels -> patch features), using the pipeline's attention backend."""
    attend: Attend = sdpa if context.attention is None else partial(context.attention.attend, causal=False)
    return SigLIPVisionEncoder(config, attend)


@hookimpl
def register_visual_encoders(register: Register) -> None:
    register(
        "siglip", build_siglip, config=SigLIPConfig, aliases=("CLIPVisionTower", "siglip_large_patch16_384")
    )
