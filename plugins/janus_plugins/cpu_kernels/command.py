"""`janus kernels`: where the CPU kernels are built, and building them now (e.g. in a Docker image)."""

from __future__ import annotations

import argparse

from janus_plugins import cpu_kernels
from janus_sdk.hookspecs import hookimpl


@hookimpl
def register_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "kernels",
        help="where the CPU kernels are built, and build them now",
        description="The CPU kernels (x86: AVX2 with AVX-512 tiles; ARM64: NEON with SDOT and BFDOT tiles) "
        "compile once per machine (source, torch and Python versions) into the janus-sdk cache folder. "
        "`janus kernels` shows where and whether they are built; `janus kernels build` builds them now (e.g. "
        "in a Docker image or at install), trying again after a failed build.",
        epilog="examples:\n  janus kernels\n  janus kernels build",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=("status", "build"), default="status")
    parser.set_defaults(handler=_kernels_command)


def _kernels_command(args: argparse.Namespace) -> int:
    if args.action == "build":
        print(f"built: {cpu_kernels.build()}")
        return 0
    folder = cpu_kernels.build_dir()
    failed = folder / cpu_kernels.FAILED
    if failed.exists():
        state = (
            f"failed to build: {failed.read_text(encoding='utf-8').strip()} (`janus kernels build` retries)"
        )
    elif any(folder.glob("*.so")):
        state = "built"
    else:
        state = "not built yet (built on first use, or now with `janus kernels build`)"
    print(f"{folder}: {state}")
    return 0
