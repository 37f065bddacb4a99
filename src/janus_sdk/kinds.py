"""The kinds of component a plugin can provide: each has one register hook and one interface."""

from __future__ import annotations

import enum

from janus_sdk import interfaces


class ComponentKind(str, enum.Enum):
    """A kind of swappable component; the value is the name used in configs and on the CLI."""

    VISUAL_ENCODER = "visual_encoder"
    ALIGNER = "aligner"
    IMAGE_TOKENIZER = "image_tokenizer"
    GENERATION_HEAD = "generation_head"
    TEXT_TOKENIZER = "text_tokenizer"
    CHAT_TEMPLATE = "chat_template"
    LLM_BACKBONE = "llm_backbone"
    SAMPLER = "sampler"
    GUIDANCE = "guidance"
    ATTENTION_BACKEND = "attention_backend"
    LINEAR_BACKEND = "linear_backend"

    @property
    def hook_name(self) -> str:
        """The register-style hook through which plugins provide this kind (e.g. `register_samplers`)."""
        return f"register_{self.value}s"

    @property
    def interface(self) -> type:
        """The Protocol every component of this kind satisfies."""
        return _INTERFACES[self]


_INTERFACES: dict[ComponentKind, type] = {
    ComponentKind.VISUAL_ENCODER: interfaces.VisualEncoder,
    ComponentKind.ALIGNER: interfaces.Aligner,
    ComponentKind.IMAGE_TOKENIZER: interfaces.ImageTokenizer,
    ComponentKind.GENERATION_HEAD: interfaces.GenerationHead,
    ComponentKind.TEXT_TOKENIZER: interfaces.TextTokenizer,
    ComponentKind.CHAT_TEMPLATE: interfaces.ChatTemplate,
    ComponentKind.LLM_BACKBONE: interfaces.LLMBackbone,
    ComponentKind.SAMPLER: interfaces.Sampler,
    ComponentKind.GUIDANCE: interfaces.Guidance,
    ComponentKind.ATTENTION_BACKEND: interfaces.AttentionBackend,
    ComponentKind.LINEAR_BACKEND: interfaces.LinearBackend,
}
