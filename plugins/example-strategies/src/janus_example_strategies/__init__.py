"""An example janus-sdk plugin with two strategies, written as a tutorial: the sampler "no-repeat-ngram" and
the guidance "cfg-interval".

Strategies are plugins like the model's parts, with the same four pieces (config model, component, factory,
register hook; see the example-encoder plugin for each in detail) and the same entry point in pyproject.toml.
What differs is the interface, and that the pipeline builds a strategy afresh for every generation call, on
no particular device, so a strategy holds no weights and may keep state for the length of one run.

A pipeline config selects them like this (YAML); `--sampler NAME --sampler-param KEY=VALUE` and
`--guidance NAME --guidance-param KEY=VALUE` do the same on the command line::

    generation:
      sampler: {name: no-repeat-ngram, params: {ngram_size: 3}}
    image_generation:
      guidance: {name: cfg-interval, params: {cfg_weight: 5, start: 0.0, end: 0.5}}
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

__all__ = [
    "IntervalGuidance",
    "IntervalGuidanceConfig",
    "NoRepeatNgramConfig",
    "NoRepeatNgramSampler",
    "register_guidances",
    "register_samplers",
]


# -- A sampler that reads the history ----------------------------------------------------------------------
# `janus_sdk.interfaces.Sampler`: called with logits [B, V] (float32) and the run's torch.Generator, it
# returns the next ids [B] (int64, on the logits' device). A sampler that sets `uses_history = True` is also
# handed `history=`, the ids generated so far in this run, [B, t] (t = 0 at the first step, the prompt
# excluded).
# The pipeline checks what comes back: a wrong shape, dtype or device, or an id outside the vocabulary, is an
# error naming this plugin at the first step.


class NoRepeatNgramConfig(BaseModel):
    """Options of the "no-repeat-ngram" sampler."""

    model_config = ConfigDict(extra="forbid")

    ngram_size: int = Field(
        default=3, ge=1, description="No n-gram of this many tokens is generated twice (1: no token twice)."
    )
    temperature: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="0 = the most likely allowed token; > 0 = sample the allowed tokens at this temperature.",
    )


class NoRepeatNgramSampler:
    """Forbids every token that would complete an n-gram the run has generated already, then picks."""

    uses_history = True

    def __init__(self, config: NoRepeatNgramConfig) -> None:
        self.n, self.temperature = config.ngram_size, config.temperature

    def __call__(self, logits: Tensor, generator: torch.Generator | None, *, history: Tensor) -> Tensor:
        if history.shape[1] >= self.n:
            # Every n-gram so far ([B, windows, n]) whose first n-1 tokens equal the last n-1 generated:
            # its last token would repeat it.
            grams = history.unfold(1, self.n, 1)
            tail = history[:, history.shape[1] - self.n + 1 :]
            repeats = (grams[..., :-1] == tail[:, None, :]).all(dim=-1)
            banned = torch.zeros_like(logits, dtype=torch.long).scatter_reduce(
                1, grams[..., -1], repeats.long(), reduce="amax"
            )
            logits = logits.masked_fill(banned.bool(), float("-inf"))
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# -- A guidance with its own rows and a schedule -----------------------------------------------------------
# `janus_sdk.interfaces.Guidance`: `num_branches` LLM rows per image, built by `rows` from the prompt ids, and
# `combine`, which turns the logits of those rows into one row per image at each step, knowing the step and
# the number of steps. The rows of one image are adjacent in the batch.


class IntervalGuidanceConfig(BaseModel):
    """Options of the "cfg-interval" guidance."""

    model_config = ConfigDict(extra="forbid")

    cfg_weight: float = Field(
        default=5.0, ge=0, allow_inf_nan=False, description="Weight inside the interval."
    )
    start: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of the image's tokens after which guidance starts."
    )
    end: float = Field(
        default=0.5, ge=0, le=1, description="Fraction of the image's tokens after which guidance stops."
    )

    @model_validator(mode="after")
    def _ordered(self) -> IntervalGuidanceConfig:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class IntervalGuidance:
    """Classifier-free guidance applied only within an interval of the steps, after Kynkäänniemi et al. 2024
    ("Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models",
    arXiv 2404.07724): outside it, the image's tokens follow the conditional logits alone."""

    num_branches = 2  # [conditional, unconditional]

    def __init__(self, config: IntervalGuidanceConfig) -> None:
        self.cfg_weight, self.start, self.end = config.cfg_weight, config.start, config.end

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        """The conditional row is the prompt; the unconditional one keeps BOS and the image start token and
        pads the rest (Janus-Pro's layout)."""
        rows = prompt_ids.repeat(2, 1)
        rows[1, 1:-1] = pad_id
        return rows

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        cond, uncond = logits[0::2], logits[1::2]
        if not self.start <= step / total < self.end:
            return cond
        return uncond + self.cfg_weight * (cond - uncond)


# -- Factories and register hooks --------------------------------------------------------------------------


def build_no_repeat_ngram(config: NoRepeatNgramConfig, context: BuildContext) -> NoRepeatNgramSampler:
    """Greedy or sampled decoding that never repeats an n-gram."""
    return NoRepeatNgramSampler(config)


def build_interval_guidance(config: IntervalGuidanceConfig, context: BuildContext) -> IntervalGuidance:
    """Classifier-free guidance within an interval of the steps."""
    return IntervalGuidance(config)


@hookimpl
def register_samplers(register: Register) -> None:
    register(
        "no-repeat-ngram",
        build_no_repeat_ngram,
        config=NoRepeatNgramConfig,
        description="Never generates an n-gram twice (example plugin).",
    )


@hookimpl
def register_guidances(register: Register) -> None:
    register(
        "cfg-interval",
        build_interval_guidance,
        config=IntervalGuidanceConfig,
        description="Classifier-free guidance within an interval of the steps (example plugin).",
    )
