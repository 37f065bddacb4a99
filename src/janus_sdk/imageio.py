"""Deprecated: to_uint8 and to_pil moved to janus_sdk.images; this module re-exports them for one release."""

from janus_sdk import images
from janus_sdk.deprecation import moved_names

__getattr__ = moved_names(__name__, dict.fromkeys(("to_uint8", "to_pil"), images))
