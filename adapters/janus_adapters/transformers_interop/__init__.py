"""Interop with transformers' `JanusForConditionalGeneration`: converting checkpoints between DeepSeek's
official layout and the transformers layout (`deepseek-community/Janus-Pro-*`), in both directions.

See `convert` for what is written and for the known behaviour differences of transformers' port.
"""

from janus_adapters.transformers_interop.config import CHAT_TEMPLATE, TokenIds
from janus_adapters.transformers_interop.convert import (
    EXTRAS_FILE,
    Layout,
    convert_checkpoint,
    detect_janus_layout,
)
from janus_adapters.transformers_interop.keymap import Reshape, Route, route_official, route_transformers

__all__ = [
    "CHAT_TEMPLATE",
    "EXTRAS_FILE",
    "Layout",
    "Reshape",
    "Route",
    "TokenIds",
    "convert_checkpoint",
    "detect_janus_layout",
    "route_official",
    "route_transformers",
]
