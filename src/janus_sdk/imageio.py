"""Deprecated: to_uint8 and to_pil moved to janus_sdk.images; this module re-exports them for one release."""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from janus_sdk import images

_MOVED: dict[str, ModuleType] = dict.fromkeys(("to_uint8", "to_pil"), images)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MOVED[name]
    warnings.warn(
        f"janus_sdk.imageio.{name} moved to {module.__name__}.{name}; import it from there "
        "(this module goes in the next release)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, name)
