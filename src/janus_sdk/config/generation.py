"""Settings of one chat answer or one text-to-image request, with their allowed ranges."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_NEW_TOKENS = 16384
MAX_IMAGES_PER_REQUEST = 64
MAX_CFG_WEIGHT = 100


# Smaller temperatures overflow the scaled logits in float32 (NaN probabilities): use greedy decoding instead.
MIN_TEMPERATURE = 1e-5
MAX_SEED = 2**64 - 1


class GenerationConfig(BaseModel):
    """How a chat answer is decoded."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(
        default=512, ge=1, le=MAX_NEW_TOKENS, description="Most tokens to generate; stops earlier at EOS."
    )
    do_sample: bool = Field(
        default=False, description="Sample (temperature / top-k / top-p) instead of greedy decoding."
    )
    temperature: float = Field(
        default=1.0,
        ge=MIN_TEMPERATURE,
        allow_inf_nan=False,
        description="Softmax temperature when sampling, >= 1e-5 (use greedy decoding for 0).",
    )
    top_k: int = Field(default=0, ge=0, description="Sample among the k most likely tokens; 0 = no limit.")
    top_p: float = Field(
        default=1.0, gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling mass in (0, 1]."
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the sampling generator; None = nondeterministic.",
    )

    @property
    def sampler(self) -> tuple[str, dict[str, float | int]]:
        """The sampler component (name, params) these settings ask for."""
        if not self.do_sample:
            return "greedy", {}
        return "sample", {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


class ImageGenerationConfig(BaseModel):
    """How images are generated (the official text-to-image loop's parameters)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(
        default=1, ge=1, le=MAX_IMAGES_PER_REQUEST, description="Images to generate for the prompt."
    )
    cfg_weight: float = Field(
        default=5.0,
        ge=0,
        le=MAX_CFG_WEIGHT,
        allow_inf_nan=False,
        description="Classifier-free guidance weight: 0 = unconditional, 1 = no guidance, Janus-Pro uses 5.",
    )
    temperature: float = Field(
        default=1.0,
        ge=MIN_TEMPERATURE,
        allow_inf_nan=False,
        description="Softmax temperature of the image sampler, >= 1e-5.",
    )
    top_k: int = Field(
        default=0, ge=0, description="Sample among the k most likely codes; 0 = all (the official sampler)."
    )
    top_p: float = Field(
        default=1.0, gt=0, le=1, allow_inf_nan=False, description="Nucleus mass; 1 = all (official)."
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the sampling generator; None = nondeterministic.",
    )
    guidance: str = Field(
        default="cfg", description="Guidance strategy component: 'cfg' (classifier-free) or 'none'."
    )
    max_batch: int | None = Field(
        default=None,
        ge=1,
        description="Most images sampled together (each needs one or two LLM rows); larger n runs in chunks. "
        "Each chunk draws from the same generator in turn, so a seed reproduces the whole run for the same "
        "n and max_batch; the tokens equal the reference's only when all n images are in one chunk.",
    )

    @model_validator(mode="after")
    def _guidance_named(self) -> ImageGenerationConfig:
        if not self.guidance:
            raise ValueError("guidance must name a guidance component, e.g. 'cfg' or 'none'")
        return self

    @property
    def sampler(self) -> tuple[str, dict[str, float | int]]:
        """The sampler component (name, params) these settings ask for."""
        return "sample", {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
