"""The Ray options of `janus generate` (--ray, --workers, --ray-address; added by this adapter's plugin) and
what `janus serve --ray` runs (its options are the serve command's own)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from janus_sdk.errors import ConfigError

if TYPE_CHECKING:
    from janus_adapters.server.settings import ServerSettings
    from janus_sdk.batch_job import BatchJob, JobProgress, JobReport

ADDRESS_HELP = (
    "the Ray cluster to join, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a local Ray)"
)


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """Add --ray, --replicas and --ray-address to `janus serve` (which calls `run_serve_on_ray` on --ray)."""
    ray_options(
        serve,
        "serve on Ray Serve: --replicas copies of the app, one pipeline each (a GPU each where there are "
        "GPUs), behind Serve's HTTP proxy at --host:--port",
        ("--replicas", "Ray Serve replicas (default 1)"),
    )


def extend_generate(generate: argparse.ArgumentParser) -> None:
    """Add --ray, --workers and --ray-address to `janus generate`, whose handler then runs a --prompts job on
    Ray when --ray is given."""
    ray_options(
        generate,
        "run the --prompts job over Ray actors, one pipeline each (a GPU each where there are GPUs); the "
        "same images and manifest as without --ray",
        ("--workers", "Ray actors to run the job on (default 2)"),
    )
    run_without_ray: Callable[[argparse.Namespace], int] = generate.get_default("handler")

    def run_generate(args: argparse.Namespace) -> int:
        if not args.ray:
            if args.workers is not None or args.ray_address is not None:
                args.usage_error("--workers and --ray-address go with --ray")
            return run_without_ray(args)
        if args.prompts is None:
            args.usage_error("--ray runs a --prompts FILE job; give --prompts FILE")
        if args.workers is not None and args.workers < 1:
            args.usage_error(f"--workers must be at least 1, got {args.workers}")
        from janus_sdk.cli.batch_cmd import run_batch

        return run_batch(args, run_on_ray)

    generate.set_defaults(handler=run_generate)


def run_on_ray(job: BatchJob, args: argparse.Namespace, on_progress: JobProgress | None) -> JobReport:
    """The job run over --workers Ray actors loading the model the options name."""
    ray_modules()
    from janus_adapters.ray.batch import RayWorkers, run_job
    from janus_adapters.ray.cluster import connect
    from janus_adapters.ray.loading import ModelSpec

    load = ModelSpec.from_args(args)
    workers = args.workers or 2
    connect(args.ray_address, num_cpus=workers)
    with RayWorkers(load, workers) as pool:
        return run_job(
            job, pool, args.out, max_batch=args.max_batch, overwrite=args.overwrite, on_progress=on_progress
        )


def run_serve_on_ray(args: argparse.Namespace, settings: ServerSettings) -> int:
    """`janus serve --ray`: the app on Ray Serve with --replicas replicas, until Ctrl-C."""
    replicas = 1 if args.replicas is None else args.replicas
    if replicas < 1:
        args.usage_error(f"--replicas must be at least 1, got {replicas}")
    ray_modules()
    from janus_adapters.ray.cluster import connect, joins_local
    from janus_adapters.ray.loading import ModelSpec
    from janus_adapters.ray.serving import deploy, shut_down, wait_forever
    from janus_adapters.server import bind

    load = ModelSpec.from_args(args)
    port = args.port
    if joins_local(args.ray_address):
        with bind(args.host, port) as sock:  # a taken port fails here; 0 picks a free one
            port = sock.getsockname()[1]
    connect(args.ray_address, num_cpus=replicas)
    url = deploy(load, settings, replicas=replicas, host=args.host, port=port)
    print(f"serving on Ray Serve ({replicas} replica(s)) at {url}  (API {url}/v1)", flush=True)
    try:
        wait_forever()
    finally:
        shut_down()
    return 0


def ray_options(parser: argparse.ArgumentParser, ray_help: str, count: tuple[str, str]) -> None:
    """--ray, the option that counts the pipelines (`count`: flag, help) and --ray-address, in a group."""
    group = parser.add_argument_group("scale-out on Ray (pip install 'janus-sdk[ray]')")
    group.add_argument("--ray", action="store_true", help=ray_help)
    group.add_argument(count[0], type=int, help=count[1])
    group.add_argument("--ray-address", metavar="ADDRESS", help=ADDRESS_HELP)


def ray_modules() -> None:
    """Import Ray, or say which extra installs it."""
    try:
        import ray.serve  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--ray needs the ray extra ({exc.name} is missing): pip install 'janus-sdk[ray]'"
        ) from None
