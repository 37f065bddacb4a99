"""The browser page of `janus serve`: plain HTML, CSS and JavaScript, served as they are (no build step)."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
"""index.html, app.js and style.css."""
