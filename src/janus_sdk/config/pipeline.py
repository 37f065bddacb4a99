"""`PipelineConfig`: which component fills each slot of a Janus pipeline, with what parameters, and the
settings.

Each component's `params` are validated against that component's own config model (from the plugin that
registered it), so a typo in a SigLIP option is reported with its full path, e.g.
`visual_encoder.params.width`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from janus_sdk.config.components import ComponentSpec, registry_of
from janus_sdk.config.files import read_config_file
from janus_sdk.config.generation import GenerationConfig, ImageGenerationConfig
from janus_sdk.devices import dtype_name
from janus_sdk.errors import ConfigError, UnknownComponentError
from janus_sdk.images import ImageProcessorConfig
from janus_sdk.kinds import ComponentKind
from janus_sdk.prompts import ProcessorConfig
from janus_sdk.registry import (
    COMPONENT_PARAMS_ERROR,
    UNKNOWN_COMPONENT_ERROR,
    Registry,
    describe_errors,
    describe_validation_error,
)

if TYPE_CHECKING:
    from janus_sdk.plugins import PluginHost

AUTO = "auto"  # a backend (attention, linear) chosen by the plugins' choose_* hooks for the device and dtype
BACKEND_KINDS = (ComponentKind.ATTENTION_BACKEND, ComponentKind.LINEAR_BACKEND)


def _checked(kind: ComponentKind) -> AfterValidator:
    """Validate a ComponentSpec's params against the registered component of `kind`, filling in defaults.

    The registry comes from the validation context (`PipelineConfig.parse(..., registry=...)`), else the
    process-wide one. A backend (attention, linear) may also be "auto": the plugins choose when the pipeline
    is built.
    Errors carry the component's own errors, to be reported with full paths (visual_encoder.params.width).
    """

    def check(spec: ComponentSpec, info: ValidationInfo) -> ComponentSpec:
        if kind in BACKEND_KINDS and spec.name == AUTO:
            return spec
        try:
            registration = registry_of(info).get(kind, spec.name)
        except UnknownComponentError as exc:
            raise PydanticCustomError(UNKNOWN_COMPONENT_ERROR, "{reason}", {"reason": str(exc)}) from None
        try:
            params = registration.config.model_validate(spec.params).model_dump(mode="json")
        except ValidationError as exc:
            context = {
                "component": f"{kind.value} {spec.name!r}",
                "errors": exc.errors(),
                "model": registration.config,
            }
            message = "invalid params of {component}"
            raise PydanticCustomError(COMPONENT_PARAMS_ERROR, message, context) from None
        return ComponentSpec(name=spec.name, params=params)

    return AfterValidator(check)


def _dtype_name(value: Any) -> Any:
    """torch dtypes and aliases ("bf16", "torch.bfloat16") -> the canonical name; an unknown name fails with
    the valid ones. Other types are left to the str check."""
    if isinstance(value, (str, torch.dtype)):
        try:
            return dtype_name(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


def _device_name(value: Any) -> Any:
    """A torch.device -> its name ("cuda:1"); whether it exists is checked when the pipeline is built."""
    return str(value) if isinstance(value, torch.device) else value


def _spec(name: str, **params: Any) -> ComponentSpec:
    return ComponentSpec(name=name, params=params)


class PipelineConfig(BaseModel):
    """Everything needed to build a Janus pipeline. Defaults describe Janus-Pro-1B."""

    # validate_default: the default components get their params checked and filled in like given ones.
    model_config = ConfigDict(extra="forbid", validate_default=True)

    checkpoint: str | None = Field(
        default=None,
        description="Where the weights and tokenizer files are: a local directory in the official layout or "
        "a Hugging Face Hub id such as 'deepseek-ai/Janus-Pro-1B'.",
    )
    device: Annotated[str, BeforeValidator(_device_name)] = Field(
        default="auto",
        description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1', ... (or a torch.device)",
    )
    dtype: Annotated[str, BeforeValidator(_dtype_name)] = Field(
        default="auto",
        description="'auto' (bfloat16 on CUDA with bf16 support, float32 on CPU), 'float32', 'bfloat16', "
        "'float16' (CUDA only), an alias ('bf16', 'fp32', ...) or a torch.dtype; kept as its canonical name.",
    )
    attention: Annotated[ComponentSpec, _checked(ComponentKind.ATTENTION_BACKEND)] = Field(
        default_factory=lambda: _spec(AUTO),
        description="Attention backend: 'sdpa', 'eager', 'xformers', 'avx2' (CPU decode-step kernel), or "
        "'auto' (the plugins choose for the device and dtype; SDPA when none does).",
    )
    linear: Annotated[ComponentSpec, _checked(ComponentKind.LINEAR_BACKEND)] = Field(
        default_factory=lambda: _spec(AUTO),
        description="How the linear layers read once per token (LLM, generation head and aligner) compute: "
        "'torch', 'avx2' / 'avx512' (weight-streaming CPU kernels), 'int8' / 'int4' (weight-only), or 'auto' "
        "(the plugins choose for the device and dtype; torch's own when none does).",
    )
    visual_encoder: Annotated[ComponentSpec, _checked(ComponentKind.VISUAL_ENCODER)] = Field(
        default_factory=lambda: _spec("siglip"), description="Understanding encoder (pixels -> features)."
    )
    aligner: Annotated[ComponentSpec, _checked(ComponentKind.ALIGNER)] = Field(
        default_factory=lambda: _spec(
            "mlp", projector_type="mlp_gelu", depth=2, input_dim=1024, n_embed=2048
        ),
        description="Understanding aligner (patch features -> LLM embeddings).",
    )
    image_tokenizer: Annotated[ComponentSpec, _checked(ComponentKind.IMAGE_TOKENIZER)] = Field(
        default_factory=lambda: _spec("vq16"), description="Image tokenizer of generation (codes <-> images)."
    )
    gen_aligner: Annotated[ComponentSpec, _checked(ComponentKind.ALIGNER)] = Field(
        default_factory=lambda: _spec("mlp", projector_type="mlp_gelu", depth=2, input_dim=8, n_embed=2048),
        description="Generation aligner (image-code embeddings -> LLM embeddings).",
    )
    generation_head: Annotated[ComponentSpec, _checked(ComponentKind.GENERATION_HEAD)] = Field(
        default_factory=lambda: _spec(
            "vision_head", n_embed=2048, image_token_embed=2048, image_token_size=16384
        ),
        description="Image-token head (LLM hidden state -> image-code logits).",
    )
    llm_backbone: Annotated[ComponentSpec, _checked(ComponentKind.LLM_BACKBONE)] = Field(
        default_factory=lambda: _spec(
            "deepseek-llm",
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            vocab_size=102400,
            max_position_embeddings=16384,
        ),
        description="Language-model backbone.",
    )
    text_tokenizer: Annotated[ComponentSpec, _checked(ComponentKind.TEXT_TOKENIZER)] = Field(
        default_factory=lambda: _spec("hf-tokenizer"), description="Text tokenizer (from the checkpoint)."
    )
    chat_template: Annotated[ComponentSpec, _checked(ComponentKind.CHAT_TEMPLATE)] = Field(
        default_factory=lambda: _spec("deepseek"), description="Conversation format."
    )
    image_processor: ImageProcessorConfig = Field(
        default_factory=ImageProcessorConfig, description="Image preprocessing for understanding."
    )
    processor: ProcessorConfig = Field(
        default_factory=ProcessorConfig, description="Prompt assembly settings."
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="Default settings of chat answers."
    )
    image_generation: ImageGenerationConfig = Field(
        default_factory=ImageGenerationConfig, description="Default settings of text-to-image."
    )

    @classmethod
    def parse(
        cls, data: dict[str, Any], source: str = "config", *, registry: Registry | None = None
    ) -> PipelineConfig:
        """Validate a dict, turning Pydantic's error into a ConfigError naming each bad field path.

        Components are looked up in `registry` (default: the process-wide one of the installed plugins).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"invalid {source}: expected a mapping of settings, got {type(data).__name__}")
        try:
            return cls.model_validate(data, context={"registry": registry} if registry is not None else None)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, subject=source, model=cls)) from None

    @classmethod
    def from_file(cls, path: str | Path, *, registry: Registry | None = None) -> PipelineConfig:
        """Load a JSON, YAML or TOML pipeline config."""
        return cls.parse(read_config_file(path), source=str(path), registry=registry)

    @classmethod
    def from_checkpoint(
        cls,
        directory: str | Path,
        *,
        registry: Registry | None = None,
        plugins: PluginHost | None = None,
        overrides_source: str = "overrides",
        **overrides: Any,
    ) -> PipelineConfig:
        """Derive the config from a checkpoint directory's own files: the official layout, or any layout a
        plugin reads (`open_checkpoint_layout` hook, e.g. transformers' JanusForConditionalGeneration).

        `plugins` is the host whose layout readers are asked (default: the process-wide one); components are
        looked up in `registry` (default: that host's). `overrides` replace whole top-level fields, e.g.
        ``device="cpu"`` or ``visual_encoder={"name": ...}``; `overrides_source` names them in errors.
        """
        from janus_sdk.plugins import get_plugin_host

        host = plugins or get_plugin_host()
        view = host.open_checkpoint_layout(directory)
        view.weights.close()
        return cls.from_layout(
            view.pipeline_dict,
            directory,
            registry=registry or host.registry,
            overrides_source=overrides_source,
            **overrides,
        )

    @classmethod
    def from_layout(
        cls,
        pipeline_dict: dict[str, Any],
        directory: str | Path,
        *,
        registry: Registry | None = None,
        overrides_source: str = "overrides",
        **overrides: Any,
    ) -> PipelineConfig:
        """Validate the fields a `CheckpointLayoutView` derived from `directory`, with `overrides` on top.

        A problem in an overridden field is reported as one of `overrides_source` (e.g. the arguments of
        `JanusPipeline.from_pretrained`), the others as the checkpoint's config.json's."""
        context = {"registry": registry} if registry is not None else None
        try:
            return cls.model_validate({**pipeline_dict, **overrides}, context=context)
        except ValidationError as exc:
            errors = exc.errors()
            given = [err for err in errors if err["loc"] and err["loc"][0] in overrides]
            stored = [err for err in errors if not (err["loc"] and err["loc"][0] in overrides)]
            reports = [
                describe_errors(found, subject=subject, model=cls)
                for found, subject in ((given, overrides_source), (stored, f"{directory}/config.json"))
                if found
            ]
            raise ConfigError("\n".join(reports)) from None

    def component_specs(self) -> dict[str, tuple[ComponentKind, ComponentSpec]]:
        """Every component slot: slot name -> (kind, spec)."""
        return {slot: (SLOT_KINDS[slot], getattr(self, slot)) for slot in SLOT_KINDS}


SLOT_KINDS: dict[str, ComponentKind] = {
    "attention": ComponentKind.ATTENTION_BACKEND,
    "linear": ComponentKind.LINEAR_BACKEND,
    "visual_encoder": ComponentKind.VISUAL_ENCODER,
    "aligner": ComponentKind.ALIGNER,
    "image_tokenizer": ComponentKind.IMAGE_TOKENIZER,
    "gen_aligner": ComponentKind.ALIGNER,
    "generation_head": ComponentKind.GENERATION_HEAD,
    "llm_backbone": ComponentKind.LLM_BACKBONE,
    "text_tokenizer": ComponentKind.TEXT_TOKENIZER,
    "chat_template": ComponentKind.CHAT_TEMPLATE,
}
