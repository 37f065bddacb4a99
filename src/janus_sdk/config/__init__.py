"""Typed configuration: the pipeline's components and settings, files, official checkpoints, presets."""

from janus_sdk.config.components import ComponentSpec, NoOptions
from janus_sdk.config.generation import GenerationConfig, ImageGenerationConfig
from janus_sdk.config.pipeline import PipelineConfig

__all__ = ["ComponentSpec", "GenerationConfig", "ImageGenerationConfig", "NoOptions", "PipelineConfig"]
