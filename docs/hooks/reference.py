"""mkdocs hook: reference sections rendered from the code at build time, so they cannot drift from it.

A page writes a marker on a line of its own and gets the rendered markdown in its place:

- ``<!-- generated: config-reference -->``: every field of a pipeline config, from the JSON Schema that
  ``janus config schema`` prints (built-in components only, so the site does not depend on what else is
  installed);
- ``<!-- generated: cli-reference -->``: the ``--help`` of every ``janus`` command, from the argparse parser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from janus_sdk.cli.main import build_parser
from janus_sdk.config.pipeline import SLOT_KINDS
from janus_sdk.config.schema import pipeline_json_schema
from janus_sdk.kinds import ComponentKind
from janus_sdk.plugins import BUILTIN_DISTRIBUTION, get_plugin_host
from janus_sdk.registry import Registry

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
HELP_WIDTH = 100


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs event: replace each marker with its rendered section."""
    return MARKER.sub(lambda match: render(match.group(1)), markdown)


def render(name: str) -> str:
    """The markdown of one generated section; an unknown name fails the build."""
    renderers: dict[str, Callable[[], str]] = {
        "config-reference": config_reference,
        "cli-reference": cli_reference,
    }
    if name not in renderers:
        raise ValueError(f"unknown generated section {name!r}; known: {', '.join(renderers)}")
    return renderers[name]()


# -- configuration -------------------------------------------------------------------------------------------
def builtin_registry() -> Registry:
    """The components that ship with janus-sdk, whatever else this environment has installed."""
    host = get_plugin_host()
    registry = Registry()
    for reg in [*host.registry.all(), *host.registry.replaced()]:
        if reg.distribution == BUILTIN_DISTRIBUTION:
            registry.add(reg)
    return registry


def config_reference(registry: Registry | None = None) -> str:
    """Markdown tables of every pipeline-config field, component and component parameter."""
    registry = registry if registry is not None else builtin_registry()
    schema = pipeline_json_schema(registry)
    defs: dict[str, Any] = schema.get("$defs", {})
    props: dict[str, Any] = schema["properties"]
    plain = {name: prop for name, prop in props.items() if name not in SLOT_KINDS and "$ref" not in prop}
    lines = ["### Top-level fields", "", *_table(plain, defs), ""]
    lines += ["### Components", ""]
    lines += [
        "Each slot takes `name` (a registered name or alias) and `params`, which are validated against "
        "that component's own options. Defaults shown are Janus-Pro-1B's; a checkpoint's `config.json` "
        "sets its own.",
        "",
    ]
    for slot in SLOT_KINDS:
        prop = props[slot]
        lines += [f"#### `{slot}`", "", _cell(prop.get("description", "")), ""]
        for choice in prop.get("oneOf", []):
            names = choice["properties"]["name"]["enum"]
            aliases = f" (aliases: {', '.join(f'`{a}`' for a in names[1:])})" if len(names) > 1 else ""
            lines += [f"**`{names[0]}`**{aliases}: {_cell(choice.get('description', ''))}", ""]
            params = _resolve(choice["properties"]["params"], defs)
            lines += (
                [*_table(params.get("properties", {}), defs), ""]
                if params.get("properties")
                else ["No parameters.", ""]
            )
    lines += ["### Settings", ""]
    for name, prop in props.items():
        if "$ref" in prop:
            model = _resolve(prop, defs)
            lines += [
                f"#### `{name}`",
                "",
                _cell(prop.get("description") or model.get("description", "")),
                "",
            ]
            lines += [*_table(model.get("properties", {}), defs), ""]
    lines += ["### Strategies chosen by the settings", ""]
    lines += [
        "Samplers and guidance strategies are components too, named by the settings' `sampler` and "
        "`guidance` fields (`{name, params}` or a bare name); the shorthand fields (`do_sample`, "
        "`temperature`, ..., `cfg_weight`) choose or fill in the built-ins (see Samplers and guidance "
        "above).",
        "",
    ]
    for kind in (ComponentKind.SAMPLER, ComponentKind.GUIDANCE):
        for reg in registry.all(kind):
            aliases = f" (aliases: {', '.join(f'`{a}`' for a in reg.aliases)})" if reg.aliases else ""
            lines += [f"**`{reg.name}`** ({kind.value}){aliases}: {_cell(reg.description)}", ""]
            params = reg.config.model_json_schema()
            lines += (
                [*_table(params["properties"], params.get("$defs", {})), ""]
                if params.get("properties")
                else ["No parameters.", ""]
            )
    return "\n".join(lines)


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if isinstance(ref, str) else prop


def _table(props: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, prop in props.items():
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else "required"
        cells = [f"`{name}`", _type(prop, defs), default, prop.get("description", "")]
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return rows


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short human reading of a property's JSON Schema: type, allowed values and bounds."""
    if "$ref" in prop:
        return str(_resolve(prop, defs).get("title", "object"))
    if "oneOf" in prop:  # a component: one {name, params} object per registered one, or its bare name
        names = [str(choice["title"]) for choice in prop["oneOf"] if choice.get("type") == "object"]
        return "`{name, params}` or a name: " + ", ".join(f"`{name}`" for name in names)
    if "anyOf" in prop:
        return " or ".join(_type(option, defs) for option in prop["anyOf"])
    if "enum" in prop:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("prefixItems")
        if items:
            kind = f"[{', '.join(_type(item, defs) for item in items)}]"
        elif "items" in prop:
            kind = f"list of {_type(prop['items'], defs)}"
    bounds = [f"{symbol} {prop[key]}" for key, symbol in _BOUNDS if key in prop]
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


_BOUNDS = (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤"))


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


# -- command line -----------------------------------------------------------------------------------------
def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Every command's --help, in order, each under a heading naming the command."""
    parser = parser or build_parser()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)  # argparse wraps to the terminal width; fix it for the site
    try:
        sections = [
            f"### `{name}`\n\n```text\n{sub.format_help().rstrip()}\n```\n" for name, sub in commands(parser)
        ]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(sections)


def commands(
    parser: argparse.ArgumentParser, prefix: str = "janus"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(`janus config schema`, its parser) for the root and every subcommand, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}")
