"""`janus serve`: one model behind an OpenAI-compatible HTTP API and a web page (needs the `server` extra)."""

from __future__ import annotations

import argparse
import os
from pathlib import PurePath
from typing import Any

from pydantic import ValidationError

from janus_sdk.errors import ConfigError
from janus_sdk.registry import describe_validation_error

API_KEY_ENV = "JANUS_API_KEY"

# flag -> (ServerSettings field, type, help); unset flags keep the settings' defaults
LIMIT_FLAGS: dict[str, tuple[str, type, str]] = {
    "--max-queue": ("max_queue", int, "requests waiting behind the running one; more get 429 (default 16)"),
    "--max-body-bytes": ("max_body_bytes", int, "largest request body in bytes (default 16 MiB)"),
    "--max-image-pixels": (
        "max_image_pixels",
        int,
        "largest input image, width x height (default 4096x4096)",
    ),
    "--max-chat-images": ("max_chat_images", int, "most images in one conversation (default 4)"),
    "--max-n": ("max_n", int, "most images per generation request (default 4)"),
    "--max-tokens": ("max_tokens", int, "largest max_tokens a chat request may ask for (default 2048)"),
    "--default-max-tokens": (
        "default_max_tokens",
        int,
        "answer length when a request gives none (default 512)",
    ),
    "--image-batch": ("image_batch", int, "images sampled together; larger is faster on a GPU (default 1)"),
}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API with a web page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load one model and serve POST /v1/chat/completions (text + data-URI images, streaming), "
        "POST /v1/images/generations, GET /v1/models, GET /health, the OpenAPI docs at /docs and a chat / "
        "image-generation page at /. Requests are queued and run one at a time. Needs: pip install "
        "'janus-sdk[server]'.",
        epilog="examples:\n  janus serve --model tests/fixtures/janus-tiny/checkpoint --port 8000\n"
        f"  {API_KEY_ENV}=secret janus serve --model deepseek-ai/Janus-Pro-1B --host 0.0.0.0\n\n"
        "then e.g.: openai.OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='secret')",
    )
    from janus_sdk.cli.model_cmds import MODEL_HELP

    serve.add_argument("--model", required=True, help=MODEL_HELP)
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    serve.add_argument(
        "--dtype", default="auto", help="auto, float32, bfloat16, float16 (CUDA) (default auto)"
    )
    serve.add_argument("--attention", help="attention backend: sdpa (default), eager, xformers")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--model-name", help="model id clients use (default: the checkpoint's folder name)")
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
    for flag, (_, kind, text) in LIMIT_FLAGS.items():
        serve.add_argument(flag, type=kind, help=text)
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level (default info)",
    )
    serve.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The ServerSettings the flags ask for (API key from the flag, else the environment)."""
    from janus_adapters.server import ServerSettings

    values: dict[str, Any] = {
        "model_name": args.model_name or PurePath(str(args.model).rstrip("/\\")).name or str(args.model),
        "api_key": args.api_key or os.environ.get(API_KEY_ENV) or None,
        "allow_remote_images": args.allow_remote_images,
        "web_ui": not args.no_web,
    }
    for flag, (field, _, _) in LIMIT_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            values[field] = value
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
    server.check_bind(args.host, settings.api_key, args.allow_unauthenticated)
    sock = server.bind(args.host, args.port)  # fail on a taken port before the model loads
    try:
        from janus_sdk.pipeline.janus import JanusPipeline

        pipeline = JanusPipeline.from_pretrained(
            args.model, device=args.device, dtype=args.dtype, attention=args.attention
        )
        app = server.create_app(pipeline, settings)
        url = server.url_of(sock)
        print(
            f"serving {settings.model_name!r} at {url}  (web page {url}/, API {url}/v1, docs {url}/docs)",
            flush=True,
        )
        server.serve(app, sock, log_level=args.log_level)
    finally:
        sock.close()
    return 0
