"""Built-in janus-sdk components, each one a plugin registered through the `janus_sdk` entry points."""
