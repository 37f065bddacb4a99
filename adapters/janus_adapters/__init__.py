"""Bridges from janus-sdk to the outside world: other checkpoint layouts, serving, UI."""
