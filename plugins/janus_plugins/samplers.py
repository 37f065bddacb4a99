"""Built-in plugin: sampling strategies (logits [B, V] -> token ids [B]).

All randomness comes from the explicit torch.Generator. `sample` with defaults is the official image sampler:
softmax(logits / temperature) followed by one torch.multinomial call, so a seeded generator reproduces the
reference script run after torch.manual_seed(seed) token for token.

Every sampler here takes the same three penalties on the tokens generated so far (not the prompt), neutral by
default: then the sampler does not ask for the history and the logits it draws from are untouched.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from janus_sdk.config.generation import MIN_TEMPERATURE, penalty_field
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


class Penalties(BaseModel):
    """Penalties on tokens already generated, params of every built-in sampler (names as in the OpenAI API
    for presence and frequency; `repetition_penalty` as in transformers)."""

    model_config = ConfigDict(extra="forbid")

    repetition_penalty: float = penalty_field(
        "repetition_penalty",
        "Divides the positive logits and multiplies the negative ones of tokens already generated (CTRL, "
        "Keskar et al. 2019); > 1 discourages repeats, 1 = off.",
    )
    presence_penalty: float = penalty_field(
        "presence_penalty", "Subtracted from the logit of every token generated at least once; 0 = off."
    )
    frequency_penalty: float = penalty_field(
        "frequency_penalty", "Subtracted from a token's logit once per time it was generated; 0 = off."
    )

    @property
    def active(self) -> bool:
        """Whether any penalty changes the logits."""
        return (self.repetition_penalty, self.presence_penalty, self.frequency_penalty) != (1.0, 0.0, 0.0)


def penalize(logits: Tensor, history: Tensor, penalties: Penalties) -> Tensor:
    """logits [B, V] with the penalties applied for the ids `history` [B, t]: first the repetition penalty,
    then (as OpenAI documents it) logit - count * frequency_penalty - (count > 0) * presence_penalty."""
    counts = torch.zeros_like(logits).scatter_add_(1, history, torch.ones_like(history, dtype=logits.dtype))
    seen = counts > 0
    if penalties.repetition_penalty != 1.0:
        factor = penalties.repetition_penalty
        logits = torch.where(seen, torch.where(logits > 0, logits / factor, logits * factor), logits)
    return logits - penalties.frequency_penalty * counts - penalties.presence_penalty * seen


class GreedyConfig(Penalties):
    """Greedy decoding takes only the penalties."""


class SampleConfig(Penalties):
    """Options of temperature / top-k / top-p sampling."""

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


class MinPConfig(Penalties):
    """Options of min-p sampling."""

    p: float = Field(
        0.1,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Keep the tokens at least p times as likely as the most likely one (after temperature).",
    )
    temperature: float = Field(
        1.0, ge=MIN_TEMPERATURE, allow_inf_nan=False, description="Divides the logits; >= 1e-5."
    )


class _Penalized:
    """Applies the penalties, when any is set, before the sampler's own rule (`pick`)."""

    def __init__(self, penalties: Penalties) -> None:
        self.penalties = penalties
        self.uses_history = penalties.active

    def __call__(
        self, logits: Tensor, generator: torch.Generator | None, history: Tensor | None = None
    ) -> Tensor:
        if history is not None and self.uses_history:
            logits = penalize(logits, history, self.penalties)
        return self.pick(logits, generator)

    def pick(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


class GreedySampler(_Penalized):
    """argmax of the logits (ties go to the lowest id, like torch.argmax)."""

    def __init__(self, config: GreedyConfig | None = None) -> None:
        super().__init__(config or GreedyConfig())

    def pick(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        return logits.argmax(dim=-1)


class Sampler(_Penalized):
    """softmax(logits / temperature), optionally cut to top-k and top-p, then one multinomial draw per row."""

    def __init__(self, config: SampleConfig) -> None:
        super().__init__(config)
        self.temperature = config.temperature
        self.top_k = config.top_k
        self.top_p = config.top_p

    def pick(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
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


class MinPSampler(_Penalized):
    """Min-p sampling (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM
    Outputs", arXiv 2407.01082): the cut-off follows the model's confidence, p times the top probability."""

    def __init__(self, config: MinPConfig) -> None:
        super().__init__(config)
        self.p = config.p
        self.temperature = config.temperature

    def pick(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = torch.softmax(logits / self.temperature, dim=-1)
        kept = probs * (probs >= self.p * probs.amax(dim=-1, keepdim=True))
        return torch.multinomial(kept, num_samples=1, generator=generator).squeeze(-1)  # kept need no norm


@hookimpl
def register_samplers(register: Register) -> None:
    def greedy(config: GreedyConfig, _: BuildContext) -> GreedySampler:
        """Always the most likely token."""
        return GreedySampler(config)

    def sample(config: SampleConfig, _: BuildContext) -> Sampler:
        """Temperature, top-k and top-p sampling with torch.multinomial (the official image sampler)."""
        return Sampler(config)

    def min_p(config: MinPConfig, _: BuildContext) -> MinPSampler:
        """Min-p sampling: keep the tokens at least p times as likely as the top one."""
        return MinPSampler(config)

    register("greedy", greedy, config=GreedyConfig, aliases=("argmax",))
    register("sample", sample, config=SampleConfig, aliases=("multinomial", "top_p", "top_k"))
    register("min-p", min_p, config=MinPConfig, aliases=("min_p",))
