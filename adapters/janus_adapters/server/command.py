"""`janus serve`: one model behind an OpenAI-compatible HTTP API and a web page (needs the `server` extra).

Added to the CLI by this adapter's plugin (`janus_adapters.server.plugin`, the `register_commands` hook); the
server itself (FastAPI, uvicorn) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic import ValidationError

from janus_adapters.ray.command import add_serve_options, run_serve_on_ray
from janus_adapters.server.settings import ServerSettings
from janus_sdk.cli.model_cmds import add_model_options, check_model_options, load_pipeline
from janus_sdk.errors import ConfigError
from janus_sdk.registry import describe_validation_error

API_KEY_ENV = "JANUS_API_KEY"

LIMITS = (
    "max_queue",
    "max_body_bytes",
    "max_image_pixels",
    "max_chat_images",
    "max_n",
    "max_tokens",
    "default_max_tokens",
    "image_batch",
    "chat_batch",
    "batch_window_ms",
)
"""ServerSettings fields with a flag of their own (--max-queue, ...); unset flags keep the defaults."""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API with a web page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load one model and serve POST /v1/chat/completions (text + data-URI images, streaming), "
        "POST /v1/images/generations, GET /v1/models, GET /health, the OpenAPI docs at /docs and a chat / "
        "image-generation page at /. Requests are queued; concurrent ones with the same settings run as one "
        "batch. Needs: pip install 'janus-sdk[server]'.",
        epilog="examples:\n  janus serve --model tests/fixtures/janus-tiny/checkpoint --port 8000\n"
        f"  {API_KEY_ENV}=secret janus serve --model deepseek-ai/Janus-Pro-1B --host 0.0.0.0\n\n"
        "then e.g.: openai.OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='secret')",
    )
    add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--served-model-name",
        "--model-name",
        dest="model_name",
        help="model id clients send and /v1/models lists (default: the checkpoint's own name: its Hub id, "
        "the name its model card or config.json gives, else its folder's name)",
    )
    serve.add_argument(
        "--api-key",
        help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${API_KEY_ENV}; "
        "the variable keeps the key out of the process list)",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address without an API key (anyone reaching it can use it)",
    )
    serve.add_argument(
        "--allow-remote-images",
        action="store_true",
        help="fetch http(s) image URLs (lets clients make this host send requests)",
    )
    serve.add_argument("--no-web", action="store_true", help="do not serve the web page at /")
    for name in LIMITS:
        field = ServerSettings.model_fields[name]
        serve.add_argument(
            f"--{name.replace('_', '-')}", type=int, help=f"{field.description} (default {field.default})"
        )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level (default info)",
    )
    add_serve_options(serve)
    serve.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The ServerSettings the flags ask for (API key from the flag, else the environment)."""
    values: dict[str, Any] = {
        "model_name": args.model_name,
        "api_key": args.api_key or os.environ.get(API_KEY_ENV) or None,
        "allow_remote_images": args.allow_remote_images,
        "web_ui": not args.no_web,
    }
    values.update({name: getattr(args, name) for name in LIMITS if getattr(args, name) is not None})
    try:
        return ServerSettings(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, subject="server options")) from None


def run_serve(args: argparse.Namespace) -> int:
    try:
        from janus_adapters import server
    except ImportError as exc:
        raise ConfigError(
            f"janus serve needs the server extra ({exc.name} is missing): pip install 'janus-sdk[server]'"
        ) from None
    settings = settings_from_args(args)
    check_model_options(args)  # a bad option or --config before the port is taken and the model loads
    server.check_bind(args.host, settings.api_key, args.allow_unauthenticated)
    if args.ray:
        return run_serve_on_ray(args, settings)
    if args.replicas is not None or args.ray_address is not None:
        args.usage_error("--replicas and --ray-address go with --ray")
    sock = server.bind(args.host, args.port)  # fail on a taken port before the model loads
    try:
        pipeline = load_pipeline(args)
        app = server.create_app(pipeline, settings)
        url = server.url_of(sock)
        model = app.state.janus.model
        print(
            f"serving {model.name!r} at {url}  (web page {url}/, API {url}/v1, docs {url}/docs)",
            flush=True,
        )
        if model.test_model:
            print(
                f"note: {model.name!r} is a test model ({model.parameters:,} parameters, random weights): "
                "answers are gibberish and images noise",
                flush=True,
            )
        server.serve(app, sock, log_level=args.log_level)
    finally:
        sock.close()
    return 0
