"""Released models (`janus info --preset`): their real architectures, built on the meta device from the
official configs in `janus_sdk.config.presets`: names, shapes and counts, no weights."""

from __future__ import annotations

from typing import Any

import torch

from janus_sdk.config.official import official_config_to_pipeline_dict
from janus_sdk.config.pipeline import PipelineConfig
from janus_sdk.config.presets import official_preset
from janus_sdk.pipeline.janus import build_model, model_info
from janus_sdk.pipeline.model import JanusModel
from janus_sdk.plugins import get_registry
from janus_sdk.registry import BuildContext


def preset_model(name: str) -> tuple[PipelineConfig, JanusModel]:
    """The config and meta-device model of a released Janus model (e.g. 'Janus-Pro-7B')."""
    config = PipelineConfig.parse(
        official_config_to_pipeline_dict(official_preset(name), source=name), source=name
    )
    context = BuildContext(device=torch.device("meta"))
    return config, build_model(config, get_registry(), context)


def preset_info(name: str) -> dict[str, Any]:
    """What `janus info --preset NAME` prints."""
    config, model = preset_model(name)
    return {"preset": name, **model_info(config, model)}
