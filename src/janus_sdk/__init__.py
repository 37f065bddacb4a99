"""janus-sdk: run DeepSeek's Janus-Pro (image understanding, text-to-image) from Python and the command line.

The library API::

    from janus_sdk import JanusPipeline
    pipe = JanusPipeline.from_pretrained("deepseek-ai/Janus-Pro-1B")
    pipe.chat("Describe this image.", images=["cat.png"])
    pipe.generate_images("a red fox in snow", n=4, seed=0)

Components come from plugins (`janus plugins` lists them); see `janus_sdk.hookspecs` to write one.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from janus_sdk.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    GenerationCancelled,
    InputError,
    JanusError,
    PluginError,
    UnknownComponentError,
)

if TYPE_CHECKING:
    from janus_sdk.config import ComponentSpec, GenerationConfig, ImageGenerationConfig, PipelineConfig
    from janus_sdk.hookspecs import hookimpl
    from janus_sdk.kinds import ComponentKind
    from janus_sdk.pipeline.decoding import Progress
    from janus_sdk.pipeline.janus import JanusPipeline
    from janus_sdk.plugins import PluginWarning, get_component, get_plugin_host, get_registry
    from janus_sdk.registry import BuildContext, Registration
    from janus_sdk.text_stream import ChatStream, TokenUsage

_LAZY = {
    "ComponentSpec": "janus_sdk.config",
    "GenerationConfig": "janus_sdk.config",
    "ImageGenerationConfig": "janus_sdk.config",
    "PipelineConfig": "janus_sdk.config",
    "hookimpl": "janus_sdk.hookspecs",
    "ComponentKind": "janus_sdk.kinds",
    "Progress": "janus_sdk.pipeline.decoding",
    "JanusPipeline": "janus_sdk.pipeline.janus",
    "PluginWarning": "janus_sdk.plugins",
    "get_component": "janus_sdk.plugins",
    "get_plugin_host": "janus_sdk.plugins",
    "get_registry": "janus_sdk.plugins",
    "BuildContext": "janus_sdk.registry",
    "Registration": "janus_sdk.registry",
    "ChatStream": "janus_sdk.text_stream",
    "TokenUsage": "janus_sdk.text_stream",
}
"""Names imported on first use: all of them need torch (1.5-2 s to import), which `import janus_sdk` (for
its exceptions, its version, or a CLI that only prints help) should not pay."""


def __getattr__(name: str) -> Any:
    """Import a lazily exported name from its module on first use and keep it here."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'janus_sdk' has no attribute {name!r}")


try:
    __version__ = version("janus-sdk")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "BackendUnavailableError",
    "BuildContext",
    "ChatStream",
    "CheckpointError",
    "ComponentKind",
    "ComponentSpec",
    "ConfigError",
    "GenerationCancelled",
    "GenerationConfig",
    "ImageGenerationConfig",
    "InputError",
    "JanusError",
    "JanusPipeline",
    "PipelineConfig",
    "PluginError",
    "PluginWarning",
    "Progress",
    "Registration",
    "TokenUsage",
    "UnknownComponentError",
    "__version__",
    "get_component",
    "get_plugin_host",
    "get_registry",
    "hookimpl",
]
