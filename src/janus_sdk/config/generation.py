"""Settings of one chat answer or one text-to-image request, with their allowed ranges.

The sampler and the guidance are components like the pipeline's other slots: `sampler` / `guidance` name one
(`{"name", "params"}`, or a bare name) and its params are checked against the component's own config model.
The older flat fields (`do_sample`, `temperature`, `top_k`, `top_p`, the penalties, `cfg_weight`) stay as
shorthand, by one rule (docs/configuration.md, "Samplers and guidance"):

- no spec: the shorthand describes a built-in: `greedy` or `sample` (by `do_sample`; images always sample) and
  `cfg`, each taking the shorthand fields it has a param for;
- a spec: each shorthand field that was set (in the same settings or, for a call, in the pipeline's defaults)
  overrides the spec's param of the same name; one the component has no param for is an error, and so is
  `do_sample`, which only picks between the built-ins.

A call that names a sampler or guidance replaces the defaults' choice, shorthand included (`merge_settings`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from janus_sdk.config.components import ComponentSpec, bare_name, registry_of
from janus_sdk.errors import UnknownComponentError
from janus_sdk.kinds import ComponentKind
from janus_sdk.registry import COMPONENT_PARAMS_ERROR, CONFLICT_ERROR, UNKNOWN_COMPONENT_ERROR

MAX_NEW_TOKENS = 16384
MAX_IMAGES_PER_REQUEST = 64
MAX_CFG_WEIGHT = 100
MAX_PENALTY = 2.0  # OpenAI's range for presence_penalty and frequency_penalty


# Smaller temperatures overflow the scaled logits in float32 (NaN probabilities): use greedy decoding instead.
MIN_TEMPERATURE = 1e-5
MAX_SEED = 2**64 - 1

#: Shorthand fields of the chat sampler: params of the built-in samplers.
TEXT_SAMPLER_PARAMS = (
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)

Strategy = Annotated[ComponentSpec | None, BeforeValidator(bare_name)]


def resolve_strategy(
    settings: BaseModel,
    info: ValidationInfo,
    field: str,
    kind: ComponentKind,
    default: str,
    shorthand: tuple[str, ...],
    selector: str | None = None,
) -> ComponentSpec:
    """The component `field` of `settings` stands for, its params merged with the shorthand by the rule of
    the module docstring and validated against the component's config model (errors with their paths).

    `selector` is the shorthand field that chose `default` (do_sample), an error alongside a spec."""
    spec: ComponentSpec | None = getattr(settings, field)
    name = default if spec is None else spec.name
    try:
        registration = registry_of(info).get(kind, name)
    except UnknownComponentError as exc:
        reason = {"reason": str(exc), "field": field}
        raise PydanticCustomError(UNKNOWN_COMPONENT_ERROR, "{reason}", reason) from None
    takes = registration.config.model_fields
    if spec is None:
        params = {key: getattr(settings, key) for key in shorthand if key in takes}
    else:
        given = [key for key in shorthand if key in settings.model_fields_set]
        if selector is not None and selector in settings.model_fields_set:
            message = (
                f"{selector} picks between the built-in samplers; with {field} {name!r} named, leave it out"
            )
            raise PydanticCustomError(CONFLICT_ERROR, message)
        foreign = [key for key in given if key not in takes]
        if foreign:
            message = (
                f"{', '.join(foreign)} set, but {kind.value} {name!r} has no such param (its params: "
                f"{', '.join(takes) or 'none'}); set {field}.params instead"
            )
            raise PydanticCustomError(CONFLICT_ERROR, message)
        params = {**spec.params, **{key: getattr(settings, key) for key in given}}
    try:
        registration.config.model_validate(params)
    except ValidationError as exc:
        context: dict[str, Any] = {"errors": exc.errors(), "model": registration.config, "field": field}
        raise PydanticCustomError(COMPONENT_PARAMS_ERROR, "invalid params", context) from None
    return ComponentSpec(name=name, params=params)


def penalty_field(name: str, description: str) -> Any:
    """The Field of a penalty on tokens already generated, one definition of each range and neutral value for
    the generation shorthand and the samplers' params: `repetition_penalty` (> 0, 1 = off, transformers'
    CTRL penalty), `presence_penalty` and `frequency_penalty` (in [-2, 2] as in the OpenAI API, 0 = off)."""
    if name == "repetition_penalty":
        return Field(default=1.0, gt=0, allow_inf_nan=False, description=description)
    return Field(default=0.0, ge=-MAX_PENALTY, le=MAX_PENALTY, allow_inf_nan=False, description=description)


class GenerationConfig(BaseModel):
    """How a chat answer is decoded."""

    model_config = ConfigDict(extra="forbid")

    #: Shorthand fields by the strategy field they stand for (`merge_settings` drops them together).
    SHORTHAND: ClassVar[dict[str, tuple[str, ...]]] = {"sampler": ("do_sample", *TEXT_SAMPLER_PARAMS)}

    max_new_tokens: int = Field(
        default=512, ge=1, le=MAX_NEW_TOKENS, description="Most tokens to generate; stops earlier at EOS."
    )
    do_sample: bool = Field(
        default=False,
        description="Shorthand: sample (temperature / top-k / top-p) instead of greedy decoding.",
    )
    temperature: float = Field(
        default=1.0,
        ge=MIN_TEMPERATURE,
        allow_inf_nan=False,
        description="Shorthand: softmax temperature when sampling, >= 1e-5 (use greedy decoding for 0).",
    )
    top_k: int = Field(
        default=0, ge=0, description="Shorthand: sample among the k most likely tokens; 0 = no limit."
    )
    top_p: float = Field(
        default=1.0,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Shorthand: nucleus sampling mass in (0, 1].",
    )
    repetition_penalty: float = penalty_field(
        "repetition_penalty",
        "Shorthand: divides the positive logits (multiplies the negative ones) of tokens already generated "
        "(CTRL, Keskar et al. 2019); 1 = off.",
    )
    presence_penalty: float = penalty_field(
        "presence_penalty",
        "Shorthand: presence_penalty as in the OpenAI API, in [-2, 2], subtracted from the logit of every "
        "token generated at least once; 0 = off.",
    )
    frequency_penalty: float = penalty_field(
        "frequency_penalty",
        "Shorthand: frequency_penalty as in the OpenAI API, in [-2, 2], subtracted from the logit of every "
        "token times the number of times it was generated; 0 = off.",
    )
    sampler: Strategy = Field(
        default=None,
        description="Sampler component ({name, params} or a bare name: 'greedy', 'sample', 'min-p', or a "
        "plugin's); unset = 'greedy' or 'sample' by do_sample.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the sampling generator; None = nondeterministic.",
    )
    _sampler: ComponentSpec = PrivateAttr()

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> GenerationConfig:
        default = "sample" if self.do_sample else "greedy"
        self._sampler = resolve_strategy(
            self, info, "sampler", ComponentKind.SAMPLER, default, TEXT_SAMPLER_PARAMS, selector="do_sample"
        )
        return self

    @property
    def sampler_spec(self) -> ComponentSpec:
        """The sampler component these settings ask for, shorthand merged into its params."""
        return self._sampler


class ImageGenerationConfig(BaseModel):
    """How images are generated (the official text-to-image loop's parameters)."""

    model_config = ConfigDict(extra="forbid")

    SHORTHAND: ClassVar[dict[str, tuple[str, ...]]] = {
        "guidance": ("cfg_weight",),
        "sampler": ("temperature", "top_k", "top_p"),
    }

    n: int = Field(
        default=1, ge=1, le=MAX_IMAGES_PER_REQUEST, description="Images to generate for the prompt."
    )
    cfg_weight: float = Field(
        default=5.0,
        ge=0,
        le=MAX_CFG_WEIGHT,
        allow_inf_nan=False,
        description="Shorthand: classifier-free guidance weight: 0 = unconditional, 1 = no guidance, "
        "Janus-Pro uses 5.",
    )
    temperature: float = Field(
        default=1.0,
        ge=MIN_TEMPERATURE,
        allow_inf_nan=False,
        description="Shorthand: softmax temperature of the image sampler, >= 1e-5.",
    )
    top_k: int = Field(
        default=0,
        ge=0,
        description="Shorthand: sample among the k most likely codes; 0 = all (the official sampler).",
    )
    top_p: float = Field(
        default=1.0,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Shorthand: nucleus mass; 1 = all (official).",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the sampling generator; None = nondeterministic.",
    )
    guidance: Strategy = Field(
        default=None,
        description="Guidance component ({name, params} or a bare name: 'cfg', 'cfg-zero-star', 'none', or a "
        "plugin's); unset = 'cfg' with cfg_weight.",
    )
    sampler: Strategy = Field(
        default=None,
        description="Sampler component of the image codes ({name, params} or a bare name); unset = 'sample' "
        "with temperature, top_k, top_p (the official sampler).",
    )
    max_batch: int | None = Field(
        default=None,
        ge=1,
        description="Most images sampled together (each needs one or two LLM rows); larger n runs in chunks. "
        "Each chunk draws from the same generator in turn, so a seed reproduces the whole run for the same "
        "n and max_batch; the tokens equal the reference's only when all n images are in one chunk.",
    )
    _sampler: ComponentSpec = PrivateAttr()
    _guidance: ComponentSpec = PrivateAttr()

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ImageGenerationConfig:
        self._guidance = resolve_strategy(
            self, info, "guidance", ComponentKind.GUIDANCE, "cfg", self.SHORTHAND["guidance"]
        )
        self._sampler = resolve_strategy(
            self, info, "sampler", ComponentKind.SAMPLER, "sample", self.SHORTHAND["sampler"]
        )
        return self

    @property
    def sampler_spec(self) -> ComponentSpec:
        """The sampler component of the image codes, shorthand merged into its params."""
        return self._sampler

    @property
    def guidance_spec(self) -> ComponentSpec:
        """The guidance component, shorthand (cfg_weight) merged into its params."""
        return self._guidance
