"""`janus plugins`: every plugin, its distribution and version, and the components it registers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from janus_sdk.plugins import PluginHost, PluginInfo, get_plugin_host


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "plugins",
        help="list plugins and their components",
        description="List every janus-sdk plugin (built-in and installed), with the components it registers "
        "and any error that kept it (or one of its hooks) from loading.",
        epilog="examples:\n  janus plugins\n  janus plugins --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    host = get_plugin_host()
    plugins = [_describe(host, info) for info in host.plugins()]
    if args.json:
        print(json.dumps(plugins, indent=2))
        return 0
    for p in plugins:
        status = "FAILED" if p["errors"] else "ok"
        print(f"{p['name']}  ({p['distribution']} {p['version']})  [{status}]  {p['module']}")
        for comp in p["components"]:
            aliases = f"  aliases: {', '.join(comp['aliases'])}" if comp["aliases"] else ""
            override = "  (override)" if comp["override"] else ""
            print(f"    {comp['kind']:<18} {comp['name']}{aliases}{override}")
        for error in p["errors"]:
            print(f"    error: {error}")
    return 0


def _describe(host: PluginHost, info: PluginInfo) -> dict[str, Any]:
    """One plugin as a JSON object; each component with its aliases, override flag and description."""
    regs = [host.registry.get(kind, name) for kind, name in info.components]
    return {
        "name": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "module": info.module,
        "components": [
            {
                "kind": r.kind.value,
                "name": r.name,
                "aliases": list(r.aliases),
                "override": r.override,
                "description": r.description,
            }
            for r in regs
        ],
        "errors": list(info.errors),
    }
