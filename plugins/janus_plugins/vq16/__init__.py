"""Built-in plugin: the VQ-16 image tokenizer of Janus-Pro (image <-> 24x24 grid of 16384 codes)."""

from __future__ import annotations

from janus_plugins.vq16.config import VQ16Config
from janus_plugins.vq16.model import VQ16
from janus_sdk.hookspecs import hookimpl
from janus_sdk.plugins import attention_for
from janus_sdk.registry import BuildContext, Register

__all__ = ["VQ16", "VQ16Config", "build_vq16"]


def build_vq16(config: VQ16Config, context: BuildContext) -> VQ16:
    """VQ-16 tokenizer whose spatial attention runs on the pipeline's backend (SDPA when none is given)."""
    return VQ16(config, attention_for(context))


@hookimpl
def register_image_tokenizers(register: Register) -> None:
    register(
        "vq16",
        build_vq16,
        config=VQ16Config,
        aliases=("VQ-16",),
        description="VQ-16 (LlamaGen VQGAN): 384x384 images <-> 24x24 codes, L2-normalised 16384x8 codebook",
    )
