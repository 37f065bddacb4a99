"""janus-sdk plugin: adds --ray, --workers and --ray-address to `janus generate` (registered as the `ray`
entry point of the `janus_sdk` group). Loads without the `ray` extra; --ray says what to install when it is
missing."""

from __future__ import annotations

import argparse

from janus_adapters.ray import command
from janus_sdk.hookspecs import hookimpl


@hookimpl
def register_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # the core's commands are added before any plugin's (janus_sdk.cli.main.build_parser)
    command.extend_generate(subcommands.choices["generate"])
