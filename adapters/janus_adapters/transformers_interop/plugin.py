"""janus-sdk plugin: load checkpoints stored in the layout of transformers' `JanusForConditionalGeneration`
(e.g. `deepseek-community/Janus-Pro-1B`, or what `janus convert --to transformers` writes) directly, with no
conversion on disk, and the `janus convert` command. Registered as the `transformers_interop` entry point of
the `janus_sdk` group.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from janus_adapters.transformers_interop import command
from janus_sdk.checkpoint.layouts import CheckpointLayoutView
from janus_sdk.config.official import official_config_to_pipeline_dict, read_json
from janus_sdk.errors import CheckpointError
from janus_sdk.hookspecs import hookimpl

TRANSFORMERS_MODEL_TYPE = "janus"


def is_transformers_layout(directory: Path) -> bool:
    """Whether `directory`'s config.json says transformers' `janus` model type (False when it cannot tell)."""
    try:
        return read_json(directory / "config.json").get("model_type") == TRANSFORMERS_MODEL_TYPE
    except CheckpointError:
        return False


@hookimpl
def open_checkpoint_layout(directory: Path) -> CheckpointLayoutView | None:
    """A transformers-layout checkpoint (config.json `model_type: janus`) in official terms, else None."""
    if not is_transformers_layout(directory):
        return None
    # Imports transformers (about 2 s): only when a checkpoint in its layout is opened.
    from janus_adapters.transformers_interop.layout import open_official_view

    files, weights = open_official_view(directory)
    pipeline_dict = official_config_to_pipeline_dict(
        files["config.json"],
        source=str(directory / "config.json"),
        tokenizer_config=files["tokenizer_config.json"],
        preprocessor_config=files["preprocessor_config.json"],
        processor_config=files["processor_config.json"],
    )
    pipeline_dict["checkpoint"] = str(directory)
    return CheckpointLayoutView(pipeline_dict, weights)


@hookimpl
def register_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command.add_commands(subcommands)
