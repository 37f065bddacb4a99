"""Reading a checkpoint in DeepSeek's official layout (config.json with language_config, vision_config, ...,
plus preprocessor_config.json, processor_config.json, tokenizer_config.json) as a PipelineConfig dict.

Sub-config `cls` names (CLIPVisionTower, MlpProjector, VQ-16, vision_head) and the LLM's `model_type` (llama)
are looked up as registry aliases, so a plugin that registers another class name is picked up without changes
here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from janus_sdk.errors import CheckpointError

# Sub-config of the official config.json -> PipelineConfig slot.
OFFICIAL_SLOTS = {
    "vision_config": "visual_encoder",
    "aligner_config": "aligner",
    "gen_vision_config": "image_tokenizer",
    "gen_aligner_config": "gen_aligner",
    "gen_head_config": "generation_head",
}

# Bookkeeping keys of transformers configs that describe the file, not the model.
_LLM_BOOKKEEPING = {
    "model_type",
    "torch_dtype",
    "dtype",
    "_name_or_path",
    "architectures",
    "transformers_version",
    "_attn_implementation",
    "use_cache",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
}
_PROCESSOR_BOOKKEEPING = {"processor_class", "image_processor_type"}


def read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON object file (config.json, processor_config.json, ...), in any layout;
    CheckpointError naming the file when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint needs it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


def read_optional_json(path: Path) -> dict[str, Any] | None:
    """`read_json`, or None when the file does not exist."""
    return read_json(path) if path.exists() else None


def official_to_pipeline_dict(directory: Path) -> dict[str, Any]:
    """Map the official files of `directory` to PipelineConfig fields (unvalidated)."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    optional = {
        name: read_optional_json(directory / f"{name}.json")
        for name in ("tokenizer_config", "preprocessor_config", "processor_config")
    }
    data = official_config_to_pipeline_dict(
        read_json(directory / "config.json"), source=str(directory / "config.json"), **optional
    )
    data["checkpoint"] = str(directory)
    return data


def official_config_to_pipeline_dict(
    config: dict[str, Any],
    *,
    source: str = "config.json",
    tokenizer_config: dict[str, Any] | None = None,
    preprocessor_config: dict[str, Any] | None = None,
    processor_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Map the contents of the official config files to PipelineConfig fields (unvalidated)."""
    missing = [key for key in (*OFFICIAL_SLOTS, "language_config") if key not in config]
    if missing:
        raise CheckpointError(
            f"{source} is not a Janus config in the official layout: missing {', '.join(missing)}"
        )
    data: dict[str, Any] = {}
    for key, slot in OFFICIAL_SLOTS.items():
        sub = config[key]
        if not isinstance(sub, dict) or "cls" not in sub:
            raise CheckpointError(f"{source}: {key} has no 'cls' naming its component class")
        data[slot] = {"name": sub["cls"], "params": dict(sub.get("params") or {})}
    language = dict(config["language_config"])
    data["llm_backbone"] = {
        "name": language.get("model_type", "llama"),
        "params": {k: v for k, v in language.items() if k not in _LLM_BOOKKEEPING},
    }
    if tokenizer_config and tokenizer_config.get("tokenizer_class"):
        data["text_tokenizer"] = {"name": tokenizer_config["tokenizer_class"]}
    if preprocessor_config:
        data["image_processor"] = {
            k: v for k, v in preprocessor_config.items() if k not in _PROCESSOR_BOOKKEEPING
        }
    if processor_config:
        fields = {k: v for k, v in processor_config.items() if k not in _PROCESSOR_BOOKKEEPING}
        data["processor"] = fields
        if "sft_format" in fields:
            data["chat_template"] = {"name": fields["sft_format"]}
    return data
