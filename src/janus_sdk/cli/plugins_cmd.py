"""`janus plugins`: every plugin, its distribution and version, and the components it registers."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from janus_sdk.plugins import get_plugin_host


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "plugins", help="list plugins and their components",
        description="List every janus-sdk plugin (built-in and installed), with the components it registers.",
        epilog="examples:\n  janus plugins\n  janus plugins --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    host = get_plugin_host()
    plugins = host.plugins()
    if args.json:
        print(json.dumps([asdict(p) for p in plugins], indent=2))
        return 0
    for info in plugins:
        status = "FAILED" if info.errors else "ok"
        print(f"{info.name}  ({info.distribution} {info.version})  [{status}]  {info.module}")
        for kind, name in info.components:
            reg = host.registry.get(kind, name)
            aliases = f"  aliases: {', '.join(reg.aliases)}" if reg.aliases else ""
            print(f"    {kind:<18} {name}{aliases}")
        for error in info.errors:
            print(f"    error: {error}")
    return 0
