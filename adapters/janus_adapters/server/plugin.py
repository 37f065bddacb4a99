"""janus-sdk plugin: the `janus serve` command (registered as the `server` entry point of the `janus_sdk`
group). Loads without the `server` extra; the command says what to install when it is missing."""

from __future__ import annotations

import argparse

from janus_adapters.server import command
from janus_sdk.hookspecs import hookimpl


@hookimpl
def register_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command.add_commands(subcommands)
