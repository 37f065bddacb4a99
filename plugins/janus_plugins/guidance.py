"""Built-in plugin: guidance strategies for image generation.

Classifier-free guidance runs a conditional and an unconditional row per image, adjacent ([cond, uncond]): the
unconditional row is the prompt with every token between BOS and the image start token replaced by the pad id
(the official layout). The logits combine as uncond + w * (cond - uncond). At w == 1 that is the conditional
logits, so the unconditional rows are skipped altogether (one branch), as is "none".
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

Schedule = Literal["constant", "linear", "cosine"]


def cond_uncond_rows(prompt_ids: Tensor, pad_id: int) -> Tensor:
    """[2, L]: the prompt, and its unconditional copy with positions 1..L-2 padded (BOS and the image start
    token kept), as the official generation script builds them."""
    rows = prompt_ids.repeat(2, 1)
    rows[1, 1:-1] = pad_id
    return rows


class GuidanceWeight(BaseModel):
    """The weight both built-in guidances take."""

    model_config = ConfigDict(extra="forbid")

    cfg_weight: float = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="Guidance weight w >= 0 (under a 'cfg' schedule: the weight at the last step): "
        "0 = unconditional, 1 = conditional only, Janus-Pro uses ~5.",
    )


class CFGConfig(GuidanceWeight):
    """Options of classifier-free guidance."""

    schedule: Schedule = Field(
        "constant",
        description="How the weight moves over the image's tokens: 'constant' (cfg_weight throughout), "
        "'linear' or 'cosine' (from start_weight at the first token to cfg_weight at the last).",
    )
    start_weight: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="Weight at the first token under a 'linear' or 'cosine' schedule (1 = no guidance).",
    )


class CFGZeroStarConfig(GuidanceWeight):
    """Options of CFG-Zero*."""

    epsilon: float = Field(
        1e-8, gt=0, allow_inf_nan=False, description="Guards the scale's division by the unconditional norm."
    )


class NoGuidanceConfig(BaseModel):
    """No options."""

    model_config = ConfigDict(extra="forbid")


class ClassifierFreeGuidance:
    """uncond + w(step) * (cond - uncond) over adjacent [cond, uncond] rows, w following `schedule`."""

    def __init__(self, cfg_weight: float, schedule: Schedule = "constant", start_weight: float = 1.0) -> None:
        self.cfg_weight, self.schedule, self.start_weight = cfg_weight, schedule, start_weight
        unguided = cfg_weight == 1.0 and (schedule == "constant" or start_weight == 1.0)
        self.num_branches = 1 if unguided else 2

    def weight(self, step: int, total: int) -> float:
        """w at `step` (0-based) of `total`: the schedule's ramp from start_weight to cfg_weight."""
        if self.schedule == "constant":
            return self.cfg_weight
        t = step / max(total - 1, 1)
        ramp = t if self.schedule == "linear" else (1 - math.cos(math.pi * t)) / 2
        return self.start_weight + (self.cfg_weight - self.start_weight) * ramp

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        return cond_uncond_rows(prompt_ids, pad_id) if self.num_branches == 2 else prompt_ids[None]

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        if self.num_branches == 1:
            return logits
        cond, uncond = logits[0::2], logits[1::2]
        return uncond + self.weight(step, total) * (cond - uncond)


class CFGZeroStar:
    """CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
    arXiv 2503.18886), its optimized scale carried over to logits.

    The paper guides a flow's velocity with s * v_u + w * (v_c - s * v_u), where s = <v_c, v_u> / |v_u|^2
    projects the conditional prediction onto the unconditional one, so that guidance pushes only along what
    the condition adds. Here the vectors are one sample's conditional and unconditional logits over the
    codebook, each centred first (softmax ignores a constant added to a row, so only the centred logits
    carry information, and their inner product is then well defined). w = 1 gives the conditional logits;
    an unconditional row that is a scaled copy of the conditional one gives them too, at any w. The paper's
    other half, zeroing the first ODE steps, has no counterpart here: zero logits would draw the first codes
    uniformly at random.
    """

    num_branches = 2

    def __init__(self, config: CFGZeroStarConfig) -> None:
        self.cfg_weight, self.epsilon = config.cfg_weight, config.epsilon

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        return cond_uncond_rows(prompt_ids, pad_id)

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        cond, uncond = logits[0::2], logits[1::2]
        cond = cond - cond.mean(dim=-1, keepdim=True)
        uncond = uncond - uncond.mean(dim=-1, keepdim=True)
        norm = (uncond * uncond).sum(dim=-1, keepdim=True).clamp_min(self.epsilon)
        scaled = (cond * uncond).sum(dim=-1, keepdim=True) / norm * uncond
        return scaled + self.cfg_weight * (cond - scaled)


class NoGuidance:
    """One conditional row per sample; logits pass through."""

    num_branches = 1

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        return prompt_ids[None]

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        return logits


@hookimpl
def register_guidances(register: Register) -> None:
    def cfg(config: CFGConfig, _: BuildContext) -> ClassifierFreeGuidance:
        """Classifier-free guidance (the official image loop), optionally on a schedule."""
        return ClassifierFreeGuidance(config.cfg_weight, config.schedule, config.start_weight)

    def cfg_zero_star(config: CFGZeroStarConfig, _: BuildContext) -> CFGZeroStar:
        """CFG-Zero*: classifier-free guidance with the optimized scale (Fan et al. 2025)."""
        return CFGZeroStar(config)

    def none(_: NoGuidanceConfig, __: BuildContext) -> NoGuidance:
        """No guidance: conditional rows only."""
        return NoGuidance()

    register("cfg", cfg, config=CFGConfig, aliases=("classifier-free",))
    register("cfg-zero-star", cfg_zero_star, config=CFGZeroStarConfig, aliases=("cfg-zero*", "cfg_zero_star"))
    register("none", none, config=NoGuidanceConfig)
