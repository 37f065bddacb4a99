"""Deprecated: the image preprocessing moved to janus_sdk.images, conversations and prompts to
janus_sdk.prompts; this module re-exports them for one release."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from janus_sdk import images, prompts

_MOVED: dict[str, ModuleType] = dict.fromkeys(
    ("ImageProcessorConfig", "ImageProcessor"), images
) | dict.fromkeys(
    (
        "IMAGE_TAG",
        "IMAGE_START_TAG",
        "IMAGE_END_TAG",
        "ProcessorConfig",
        "Message",
        "UnderstandingInputs",
        "build_understanding_inputs",
        "check_text",
        "expand_image_tokens",
        "format_generation_prompt",
        "build_generation_prompt_ids",
        "guidance_rows",
        "sample_rows",
        "left_pad",
    ),
    prompts,
)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MOVED[name]
    warnings.warn(
        f"janus_sdk.processing.{name} moved to {module.__name__}.{name}; import it from there "
        "(this module goes in the next release)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, name)
