"""An OpenAI-compatible HTTP server for one Janus model, with a web page (`janus serve`; extra `server`).

>>> from janus_adapters.server import ServerSettings, create_app, serve_in_thread  # doctest: +SKIP
>>> pipe = JanusPipeline.from_pretrained("DIR")                                   # doctest: +SKIP
>>> app = create_app(pipe, ServerSettings(model_name="janus-pro-1b"))             # doctest: +SKIP
>>> with serve_in_thread(app) as base_url: ...                                    # doctest: +SKIP

The names below are imported on first use, so that `janus_adapters.server.settings` (all the CLI needs to
describe its flags) loads without FastAPI installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from janus_adapters.server.app import create_app
    from janus_adapters.server.runner import bind, serve, serve_in_thread, url_of
    from janus_adapters.server.security import check_bind, is_loopback
    from janus_adapters.server.settings import ServerSettings

_HOMES = {
    "create_app": "app",
    "bind": "runner",
    "serve": "runner",
    "serve_in_thread": "runner",
    "url_of": "runner",
    "check_bind": "security",
    "is_loopback": "security",
    "ServerSettings": "settings",
}

__all__ = [
    "ServerSettings",
    "bind",
    "check_bind",
    "create_app",
    "is_loopback",
    "serve",
    "serve_in_thread",
    "url_of",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
