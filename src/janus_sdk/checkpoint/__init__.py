"""Checkpoint I/O: finding a model's files, reading official Janus checkpoints safely and lazily, loading them
into meta-built modules, and converting pickled checkpoints to safetensors."""

from janus_sdk.checkpoint.convert import convert_to_safetensors, parse_size
from janus_sdk.checkpoint.loading import RebuildsBuffers, load_state_into
from janus_sdk.checkpoint.sources import resolve_model_source
from janus_sdk.checkpoint.weights import (
    CheckpointLayout,
    CheckpointWeights,
    LayoutKind,
    detect_layout,
    open_checkpoint,
)

__all__ = [
    "CheckpointLayout",
    "CheckpointWeights",
    "LayoutKind",
    "RebuildsBuffers",
    "convert_to_safetensors",
    "detect_layout",
    "load_state_into",
    "open_checkpoint",
    "parse_size",
    "resolve_model_source",
]
