"""An example janus-sdk plugin, written as a tutorial: a visual encoder called "patch-stats".

A plugin provides components (visual encoders, aligners, samplers, ...). Providing one takes four pieces of
code, the four sections of this module, plus one table in pyproject.toml:

1. a config model: the options a user may set, validated by Pydantic;
2. the component: an object that satisfies its kind's interface, here `janus_sdk.interfaces.VisualEncoder`;
3. a factory: ``(config, context) -> component``, called whenever a pipeline builds the component;
4. a register hook: tells janus-sdk the component's name, factory and config model;
5. (pyproject.toml) an entry point in the ``janus_sdk`` group naming this module, so janus-sdk finds it.

The encoder itself is deliberately simple. It cuts the image into square patches and describes each patch by
the mean and standard deviation of its red, green and blue values, spread over `feature_dim` numbers with a
fixed cosine formula. It has no weights at all, which makes it a handy stand-in for SigLIP when testing a
pipeline. A pipeline config selects it like this (YAML)::

    visual_encoder:
      name: patch-stats
      params: {feature_dim: 1024}
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from janus_sdk.errors import InputError
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

__all__ = ["PatchStatsConfig", "PatchStatsEncoder", "build_patch_stats", "register_visual_encoders"]

# Each patch is summarised by 6 statistics: the mean of R, G, B, then the standard deviation of R, G, B.
NUM_STATS = 6


# -- 1. The config model -----------------------------------------------------------------------------------
# Everything a user can write under `params:` in a pipeline config. janus-sdk validates the params against
# this model before calling the factory, and reports mistakes with their full path, e.g.
# `visual_encoder.params.feature_dim: Input should be greater than 0`. Conventions of janus-sdk configs:
# extra="forbid" (a misspelt key is an error, not silently ignored), a description on every field (it ends
# up in `janus config schema`, which editors use to complete config files), the real model's values as
# defaults.


class PatchStatsConfig(BaseModel):
    """Options of the "patch-stats" visual encoder."""

    model_config = ConfigDict(extra="forbid")

    feature_dim: int = Field(
        default=1024,
        gt=0,
        description="Numbers per patch; must equal the aligner's input_dim (Janus-Pro: 1024, as SigLIP).",
    )
    image_size: int = Field(
        default=384, gt=0, description="Side of the square input images in pixels (Janus-Pro: 384)."
    )
    patch_size: int = Field(
        default=16, gt=0, description="Side of a square patch in pixels; must divide image_size."
    )

    # Checks that involve several fields go in a model validator; raising ValueError becomes a config error.
    @model_validator(mode="after")
    def _patches_tile_the_image(self) -> PatchStatsConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide image_size {self.image_size}")
        return self


# -- 2. The component --------------------------------------------------------------------------------------
# A visual encoder must satisfy `janus_sdk.interfaces.VisualEncoder`: the attributes image_size, num_tokens
# and feature_dim, and a call taking normalised pixels [B, 3, image_size, image_size] (values in [-1, 1])
# and returning features [B, num_tokens, feature_dim]. janus-sdk checks the attributes when it builds the
# component, and names any that is missing.
#
# It is a torch.nn.Module because the pipeline keeps its weight-bearing components in one module under the
# checkpoint's names (the encoder under `vision_model`) and moves them to the device together. The pipeline
# builds it under `with torch.device("meta")` and then loads the checkpoint's tensors into it, so a
# component never creates tensors in __init__ that it cannot get from the checkpoint. This one creates
# none: no nn.Parameter, no buffer. The numbers the formula needs are made in forward, on the input's device.


class PatchStatsEncoder(nn.Module):
    """Per-patch colour statistics: [B, 3, S, S] -> [B, (S / patch_size)**2, feature_dim]; no weights."""

    def __init__(self, config: PatchStatsConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.feature_dim = config.feature_dim
        self.grid_size = config.image_size // config.patch_size
        self.num_tokens = self.grid_size**2
        self.num_harmonics = math.ceil(config.feature_dim / NUM_STATS)

    def forward(self, pixel_values: Tensor) -> Tensor:
        expected = [3, self.image_size, self.image_size]
        if pixel_values.dim() != 4 or list(pixel_values.shape[1:]) != expected:
            # Errors a caller can cause are janus_sdk.errors types with a message saying what was wrong.
            raise InputError(
                f"patch-stats expects pixel values [B, {', '.join(map(str, expected))}], "
                f"got {list(pixel_values.shape)}"
            )
        batch, grid, patch = pixel_values.shape[0], self.grid_size, self.patch_size
        pixels = pixel_values.float()  # statistics in float32 whatever the pipeline's dtype
        # [B, 3, grid*patch, grid*patch] -> [B, grid*grid, 3, patch*patch]: the pixels of each patch and
        # channel, patches in raster order (token index = row * grid + column), as SigLIP orders its tokens.
        patches = (
            pixels.reshape(batch, 3, grid, patch, grid, patch)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(batch, grid * grid, 3, patch * patch)
        )
        stats = torch.cat([patches.mean(dim=-1), patches.std(dim=-1, correction=0)], dim=-1)  # [B, N, 6]
        # Feature j = cos(pi * k * stats[j % 6]) with harmonic k = j // 6 + 1: bounded in [-1, 1],
        # deterministic, and the harmonics make different numbers out of the same statistic.
        harmonics = torch.arange(1, self.num_harmonics + 1, device=pixels.device, dtype=pixels.dtype)
        features = torch.cos(math.pi * harmonics[:, None] * stats[..., None, :])  # [B, N, harmonics, 6]
        return features.flatten(start_dim=2)[..., : self.feature_dim].to(pixel_values.dtype)


# -- 3. The factory ----------------------------------------------------------------------------------------
# Called with the validated config and a BuildContext (checkpoint directory, device, dtype, the pipeline's
# attention backend). It only constructs the component: the pipeline chooses the device (the meta device while
# building) and loads the weights, so the factory neither moves nor initialises anything. Its first docstring
# line is the description `janus plugins` shows when register() is given none.


def build_patch_stats(config: PatchStatsConfig, context: BuildContext) -> PatchStatsEncoder:
    """Per-patch colour statistics (parameter-free stand-in for SigLIP)."""
    return PatchStatsEncoder(config)


# -- 4. The register hook ----------------------------------------------------------------------------------
# One hook per kind of component, named register_<kind>s (see janus_sdk.hookspecs): register_visual_encoders,
# register_aligners, register_samplers, ... Each receives a `register` callback; call it once per component.
# - the name is what configs use (`visual_encoder: {name: patch-stats}`);
# - aliases are other names that select the same component, e.g. the class name a checkpoint's config.json
#   gives (the built-in SigLIP is also called "CLIPVisionTower" for that reason);
# - override=True would replace a component of the same name from another plugin instead of clashing with it.


@hookimpl
def register_visual_encoders(register: Register) -> None:
    register(
        "patch-stats",
        build_patch_stats,
        config=PatchStatsConfig,
        aliases=("PatchStatsEncoder",),
        description="Per-patch colour statistics, no weights (example plugin).",
    )
