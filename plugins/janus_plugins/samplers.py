"""Built-in plugin: sampling strategies (logits [B, V] -> token ids [B]).

All randomness comes from the explicit torch.Generator. `sample` with defaults is the official image sampler:
softmax(logits / temperature) followed by one torch.multinomial call, so a seeded generator reproduces the
reference script run after torch.manual_seed(seed) token for token.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from janus_sdk.config.generation import MIN_TEMPERATURE
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


class GreedyConfig(BaseModel):
    """Greedy decoding has no options."""

    model_config = ConfigDict(extra="forbid")


class SampleConfig(BaseModel):
    """Options of temperature / top-k / top-p sampling."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(
        1.0, ge=MIN_TEMPERATURE, allow_inf_nan=False, description="Divides the logits; >= 1e-5."
    )
    top_k: int = Field(0, ge=0, description="Keep only the k most likely tokens; 0 keeps all.")
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Keep the smallest set of tokens whose probability reaches p.",
    )


class GreedySampler:
    """argmax of the logits (ties go to the lowest id, like torch.argmax)."""

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        return logits.argmax(dim=-1)


class Sampler:
    """softmax(logits / temperature), optionally cut to top-k and top-p, then one multinomial draw per row."""

    def __init__(self, config: SampleConfig) -> None:
        self.temperature = config.temperature
        self.top_k = config.top_k
        self.top_p = config.top_p

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        logits = logits / self.temperature
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = (
                cumulative - sorted_logits.softmax(dim=-1) >= self.top_p
            )  # keeps at least the top token
            logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@hookimpl
def register_samplers(register: Register) -> None:
    def greedy(_: GreedyConfig, __: BuildContext) -> GreedySampler:
        """Always the most likely token."""
        return GreedySampler()

    def sample(config: SampleConfig, _: BuildContext) -> Sampler:
        """Temperature, top-k and top-p sampling with torch.multinomial (the official image sampler)."""
        return Sampler(config)

    register("greedy", greedy, config=GreedyConfig, aliases=("argmax",))
    register("sample", sample, config=SampleConfig, aliases=("multinomial", "top_p", "top_k"))
