"""The SDK's own exceptions: every failure a user can cause surfaces as one of these, with a message that says
what was wrong and how to fix it (never a stack trace from deep inside torch or PIL)."""

from __future__ import annotations


class JanusError(Exception):
    """Base class of every error janus-sdk raises on purpose."""


class ConfigError(JanusError, ValueError):
    """A configuration (file, dict or keyword arguments) is invalid."""


class UnknownComponentError(JanusError, LookupError):
    """No plugin registers a component of this kind under this name."""


class PluginError(JanusError):
    """A plugin failed to import, raised in a hook, or registered something invalid."""


class CheckpointError(JanusError):
    """A checkpoint directory or weight file is missing, corrupt, unsafe or does not fit the model."""


class InputError(JanusError, ValueError):
    """A prompt, image or generation parameter given to a pipeline is invalid."""


class ImageTooLargeError(InputError):
    """An image has more pixels than the caller's limit (checked from its header, before decoding): `name`,
    its `width` x `height` and the `limit`, for callers that word the fix their own way (a server's flag)."""

    def __init__(self, name: str, width: int, height: int, limit: int) -> None:
        self.name, self.width, self.height, self.limit = name, width, height, limit
        super().__init__(
            f"{name} has {width}x{height} = {width * height:,} pixels, more than the limit of {limit:,} "
            f"(pass a larger max_pixels if the image is trusted)"
        )


class BackendUnavailableError(JanusError):
    """An attention backend (or other accelerated path) cannot run on this device, dtype or install."""


class GenerationCancelled(JanusError):
    """A progress callback asked to stop a generation."""
