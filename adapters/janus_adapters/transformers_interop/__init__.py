"""Interop with transformers' `JanusForConditionalGeneration`: converting checkpoints between DeepSeek's
official layout and the transformers layout (`deepseek-community/Janus-Pro-*`), in both directions, and
loading the transformers layout directly in the SDK (`plugin`, an `open_checkpoint_layout` hook).

See `convert` for what is written and for the known behaviour differences of transformers' port.
"""

from janus_adapters.transformers_interop.config import CHAT_TEMPLATE, TokenIds
from janus_adapters.transformers_interop.convert import Layout, convert_checkpoint, detect_janus_layout
from janus_adapters.transformers_interop.keymap import Reshape, Route, route_official, route_transformers
from janus_adapters.transformers_interop.layout import EXTRAS_FILE, OfficialView, open_official_view

__all__ = [
    "CHAT_TEMPLATE",
    "EXTRAS_FILE",
    "Layout",
    "OfficialView",
    "Reshape",
    "Route",
    "TokenIds",
    "convert_checkpoint",
    "detect_janus_layout",
    "open_official_view",
    "route_official",
    "route_transformers",
]
