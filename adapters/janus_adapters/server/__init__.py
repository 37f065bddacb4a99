"""An OpenAI-compatible HTTP server for one Janus model, with a web page (`janus serve`; extra `server`).

>>> from janus_adapters.server import ServerSettings, create_app, serve_in_thread  # doctest: +SKIP
>>> pipe = JanusPipeline.from_pretrained("DIR")                                   # doctest: +SKIP
>>> app = create_app(pipe, ServerSettings(model_name="janus-pro-1b"))             # doctest: +SKIP
>>> with serve_in_thread(app) as base_url: ...                                    # doctest: +SKIP
"""

from janus_adapters.server.app import create_app
from janus_adapters.server.runner import bind, serve, serve_in_thread, url_of
from janus_adapters.server.security import check_bind, is_loopback
from janus_adapters.server.settings import ServerSettings

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
