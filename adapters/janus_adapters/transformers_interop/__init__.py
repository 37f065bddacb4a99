"""Interop with transformers' `JanusForConditionalGeneration`: converting checkpoints between DeepSeek's
official layout and the transformers layout (`deepseek-community/Janus-Pro-*`), in both directions, and
loading the transformers layout directly in the SDK (`plugin`, an `open_checkpoint_layout` hook).

See `convert` for what is written and for the known behaviour differences of transformers' port. The names
below are imported on first use: they import transformers (about 2 s), which the plugin's registration (every
`janus` command) should not pay.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from janus_adapters.transformers_interop.config import CHAT_TEMPLATE, TokenIds
    from janus_adapters.transformers_interop.convert import Layout, convert_checkpoint, detect_janus_layout
    from janus_adapters.transformers_interop.keymap import Reshape, Route, route_official, route_transformers
    from janus_adapters.transformers_interop.layout import EXTRAS_FILE, OfficialView, open_official_view

_HOMES = {
    "CHAT_TEMPLATE": "config",
    "TokenIds": "config",
    "Layout": "convert",
    "convert_checkpoint": "convert",
    "detect_janus_layout": "convert",
    "Reshape": "keymap",
    "Route": "keymap",
    "route_official": "keymap",
    "route_transformers": "keymap",
    "EXTRAS_FILE": "layout",
    "OfficialView": "layout",
    "open_official_view": "layout",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
