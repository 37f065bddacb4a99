"""`janus`: entry point, global options and the error policy.

Exit codes: 0 ok, 2 usage error (argparse), 1 runtime error printed as one line with its cause (`--debug`
shows the traceback instead), 130 interrupted by Ctrl-C (which, in an interactive chat, first stops the
answer being written: see cli/interactive.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from janus_sdk.cli import config_cmd, model_cmds, plugins_cmd, tune_cmd
from janus_sdk.errors import JanusError
from janus_sdk.plugins import get_plugin_host

EPILOG = """examples:
  janus chat --model tests/fixtures/janus-tiny/checkpoint --image photo.png "Describe this image."
  janus generate --model deepseek-ai/Janus-Pro-1B -n 4 --seed 0 --out out/ "a red fox in snow"
  janus plugins --json
  janus config validate pipeline.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (every subcommand has --help with examples)."""
    parser = argparse.ArgumentParser(
        prog="janus",
        description="Run DeepSeek Janus-Pro: chat about images, generate images, manage plugins.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (model_cmds, plugins_cmd, config_cmd, tune_cmd):
        module.add_commands(sub)
    get_plugin_host().add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (JanusError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc).strip() or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
