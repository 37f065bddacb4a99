"""The torch side of a pipeline: the weight-bearing components under the official checkpoint names."""

from __future__ import annotations

from typing import Any

from torch import nn

from janus_sdk.interfaces import (
    Aligner,
    GenerationHead,
    ImageTokenizer,
    LinearBackend,
    LLMBackbone,
    VisualEncoder,
)

# Official top-level module name -> PipelineConfig slot.
MODULE_SLOTS = {
    "vision_model": "visual_encoder",
    "aligner": "aligner",
    "gen_vision_model": "image_tokenizer",
    "gen_aligner": "gen_aligner",
    "gen_head": "generation_head",
    "language_model": "llm_backbone",
}
PER_TOKEN_MODULES = ("language_model", "gen_head", "gen_aligner")
"""The modules whose every weight is read once per generated token (the generation aligner embeds each sampled
image token): where a linear backend pays off."""


class JanusModel(nn.Module):
    """Holds the components so that `state_dict()` keys equal the official checkpoint's
    (`vision_model.*`, ...).

    `gen_embed` (image code -> code embedding fed to the gen aligner) has no component of its own upstream
    either:
    it is sized by the image tokenizer's codebook and the gen aligner's input width.
    """

    # What each child is, for readers and type checkers (nn.Module stores them in _modules).
    vision_model: VisualEncoder
    aligner: Aligner
    gen_vision_model: ImageTokenizer
    gen_aligner: Aligner
    gen_head: GenerationHead
    language_model: LLMBackbone
    gen_embed: nn.Embedding

    def __init__(self, components: dict[str, Any]) -> None:
        super().__init__()
        for module_name, slot in MODULE_SLOTS.items():
            component = components[slot]
            if not isinstance(component, nn.Module):
                raise TypeError(f"{slot} component {type(component).__name__} is not a torch.nn.Module")
            self.add_module(module_name, component)
        self.gen_embed = nn.Embedding(
            components["image_tokenizer"].codebook_size, components["gen_aligner"].input_dim
        )

    def parameter_counts(self) -> dict[str, int]:
        """Values (parameters + persistent buffers) per top-level module, as stored in a checkpoint."""
        counts: dict[str, int] = {}
        for key, tensor in self.state_dict(keep_vars=True).items():
            top = key.split(".", 1)[0]
            counts[top] = counts.get(top, 0) + tensor.numel()
        return counts

    def convert_per_token_linears(self, backend: LinearBackend) -> None:
        """Replace each plain `nn.Linear` of the per-token modules with `backend`'s version of it."""
        for name in PER_TOKEN_MODULES:
            _convert_linears(getattr(self, name), backend)


def _convert_linears(module: nn.Module, backend: LinearBackend) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, backend.convert(child))
        else:
            _convert_linears(child, backend)
