"""Built-in plugin: guidance strategies for image generation.

Classifier-free guidance runs a conditional and an unconditional row per image, adjacent ([cond, uncond]), and
combines their logits as uncond + w * (cond - uncond). At w == 1 that is the conditional logits, so the
unconditional rows are skipped altogether (one branch), as is "none".
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


class CFGConfig(BaseModel):
    """Options of classifier-free guidance."""

    model_config = ConfigDict(extra="forbid")

    cfg_weight: float = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="Guidance weight w >= 0: 0 = unconditional, 1 = conditional only, Janus-Pro uses ~5.",
    )


class NoGuidanceConfig(BaseModel):
    """No options."""

    model_config = ConfigDict(extra="forbid")


class ClassifierFreeGuidance:
    """uncond + w * (cond - uncond) over adjacent [cond, uncond] rows."""

    def __init__(self, cfg_weight: float) -> None:
        self.cfg_weight = cfg_weight
        self.num_branches = 1 if cfg_weight == 1.0 else 2

    def combine(self, logits: Tensor) -> Tensor:
        if self.num_branches == 1:
            return logits
        cond, uncond = logits[0::2], logits[1::2]
        return uncond + self.cfg_weight * (cond - uncond)


class NoGuidance:
    """One conditional row per sample; logits pass through."""

    num_branches = 1

    def combine(self, logits: Tensor) -> Tensor:
        return logits


@hookimpl
def register_guidances(register: Register) -> None:
    def cfg(config: CFGConfig, _: BuildContext) -> ClassifierFreeGuidance:
        """Classifier-free guidance (the official image loop)."""
        return ClassifierFreeGuidance(config.cfg_weight)

    def none(_: NoGuidanceConfig, __: BuildContext) -> NoGuidance:
        """No guidance: conditional rows only."""
        return NoGuidance()

    register("cfg", cfg, config=CFGConfig, aliases=("classifier-free",))
    register("none", none, config=NoGuidanceConfig)
