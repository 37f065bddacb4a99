"""The OpenAI-compatible app (`janus_adapters.server.create_app`) on Ray Serve: each replica loads the
pipeline once and serves the whole app (chat, images, web page); Serve's proxy spreads requests over them."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ray import serve
from starlette.types import ASGIApp

from janus_adapters.ray.cluster import gpus_in_cluster
from janus_adapters.server.settings import ServerSettings
from janus_sdk.pipeline.janus import JanusPipeline

APP_NAME = "janus"


def deploy(
    load: Callable[[], JanusPipeline], settings: ServerSettings, *, replicas: int, host: str, port: int
) -> str:
    """Start Serve's proxy at host:port and `replicas` replicas of the app (one GPU each when the cluster has
    GPUs, else one CPU); returns the URL once every replica has loaded its pipeline."""

    def build_app() -> ASGIApp:  # runs in each replica
        from janus_adapters.server import create_app

        return create_app(load(), settings)

    resources = {"num_cpus": 1, "num_gpus": 1 if gpus_in_cluster() else 0}
    replica = serve.deployment(name=APP_NAME, num_replicas=replicas, ray_actor_options=resources)
    serve.start(http_options={"host": host, "port": port})
    app = replica(serve.ingress(build_app)()).bind()
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def wait_forever() -> None:
    """Block until Ctrl-C (Serve answers requests in its own processes)."""
    threading.Event().wait()


def shut_down() -> None:
    """Stop the app and Serve's proxy."""
    serve.shutdown()  # type: ignore[no-untyped-call, unused-ignore]  # Ray's own (untyped; Any without ray)
