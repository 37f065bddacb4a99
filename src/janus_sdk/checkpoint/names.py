"""A checkpoint's own name, read from the checkpoint: what the server calls its model and what a batch job's
manifest records as the checkpoint that made an image.

The name is the checkpoint's own where it has one, so that the same model is named the same wherever it is
read from (a client written for `deepseek-ai/Janus-Pro-1B` on another OpenAI-compatible server works with
ours unchanged; a job resumed on another machine, whose Hub cache is elsewhere, finds its images its own):

1. a Hugging Face Hub id that is not a local folder: the id as given (`deepseek-ai/Janus-Pro-1B`);
2. a snapshot folder of the Hub's cache (`.../models--deepseek-ai--Janus-Pro-1B/snapshots/<commit>`, where
   `from_pretrained` puts a Hub id): the repo id it holds;
3. a folder whose model card (README.md) names the model: its `model_name`, or the `name` of its first
   `model-index` entry (where the Hub's model cards keep it);
4. a folder whose config.json names the Hub repo it came from in `_name_or_path` (transformers writes it);
5. otherwise the folder's own name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|\Z)", re.DOTALL)
_HUB_CACHE_REPO = "models--"
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""org/name, as the Hub spells repo ids (and never with '--' or '..')."""


def checkpoint_name(source: str | Path) -> str:
    """The checkpoint's own name (the rules in this module's docstring)."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return str(source)
    path = path.resolve()
    return _hub_cache_repo(path) or _card_name(path) or _config_name(path) or path.name


def _hub_cache_repo(path: Path) -> str | None:
    """org/name of a snapshot folder in the Hub's cache (repo ids cannot contain '--', so it maps back)."""
    repo = path.parent.parent.name
    if path.parent.name != "snapshots" or not repo.startswith(_HUB_CACHE_REPO):
        return None
    return repo[len(_HUB_CACHE_REPO) :].replace("--", "/") or None


def _card_name(path: Path) -> str | None:
    """The name the model card's metadata gives (None without a card, metadata or name)."""
    try:
        match = _FRONT_MATTER.match((path / "README.md").read_text(encoding="utf-8"))
        metadata = yaml.safe_load(match.group(1)) if match else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(metadata, dict):
        return None
    index = metadata.get("model-index")
    entry = index[0] if isinstance(index, list) and index else None
    return _text(metadata.get("model_name")) or _text(entry.get("name") if isinstance(entry, dict) else None)


def _config_name(path: Path) -> str | None:
    """config.json's `_name_or_path` when it is a Hub repo id (a local path there says nothing)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    name = _text(config.get("_name_or_path")) if isinstance(config, dict) else None
    if name is None or not _HUB_REPO_ID.fullmatch(name) or "--" in name or ".." in name:
        return None
    return name


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
