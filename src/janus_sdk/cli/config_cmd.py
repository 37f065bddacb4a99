"""`janus config`: the JSON Schema of pipeline configs, validating a config file, deriving one from a
checkpoint."""

from __future__ import annotations

import argparse
import json

from janus_sdk.config.files import dump_config
from janus_sdk.config.pipeline import PipelineConfig
from janus_sdk.config.schema import pipeline_json_schema
from janus_sdk.plugins import get_registry


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "config",
        help="pipeline config schema, validation and derivation",
        description="Work with pipeline config files (JSON, YAML or TOML).",
        epilog="examples:\n  janus config schema > pipeline.schema.json\n"
        "  janus config validate pipeline.yaml\n"
        "  janus config show --model tests/fixtures/janus-tiny/checkpoint --format yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_sub = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    schema = config_sub.add_parser(
        "schema", help="print the JSON Schema of pipeline configs (components of the installed plugins)"
    )
    schema.set_defaults(handler=run_schema)
    validate = config_sub.add_parser(
        "validate", help="check a config file; exit 1 with each bad field's path if invalid"
    )
    validate.add_argument("file", help="a .json, .yaml/.yml or .toml pipeline config")
    validate.set_defaults(handler=run_validate)
    show = config_sub.add_parser("show", help="print the full config derived from a checkpoint's own files")
    show.add_argument("--model", required=True, help="checkpoint directory in the official layout")
    show.add_argument("--format", choices=("json", "yaml", "toml"), default="json")
    show.set_defaults(handler=run_show)


def run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(pipeline_json_schema(get_registry()), indent=2))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    PipelineConfig.from_file(args.file)
    print(f"{args.file}: valid")
    return 0


def run_show(args: argparse.Namespace) -> int:
    config = PipelineConfig.from_checkpoint(args.model)
    print(dump_config(config.model_dump(mode="json"), args.format), end="")
    return 0
