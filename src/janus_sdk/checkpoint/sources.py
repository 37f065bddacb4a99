"""Where a model's files come from: a local directory as is, or a Hugging Face Hub repo id resolved to a
snapshot folder of the hub's cache, downloading only when the network may be used, else from the cache."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from janus_sdk.errors import CheckpointError

#: What a pipeline needs from a repo: configs, tokenizer/processor files, weights and shard indexes.
ALLOW_PATTERNS = ("*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer.model")

_TRUE = {"1", "on", "yes", "true"}


def resolve_model_source(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The local directory holding the model named `name_or_path` (a directory, or a Hub id like
    'deepseek-ai/Janus-Pro-1B'). `revision` and `cache_dir` only apply to Hub ids (cache_dir defaults to
    HF_HUB_CACHE). With HF_HUB_OFFLINE=1, or when the Hub cannot be reached, only the local cache is used."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"model source {path} is a file; pass the directory that holds config.json")
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        raise CheckpointError(
            f"model directory not found: {path} (for a Hugging Face Hub model, pass its id, e.g. 'org/name')"
        )
    cache = cache_dir or os.environ.get("HF_HUB_CACHE")
    try:
        return _from_hub(text, revision, os.fspath(cache) if cache else None)
    except HFValidationError as exc:
        raise CheckpointError(
            f"{text!r} is neither an existing directory nor a valid Hugging Face Hub repo id: {exc}"
        ) from None


def _looks_like_path(text: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else, or a name whose first part exists here, is a path."""
    if text.startswith((".", "/", "~", "\\")) or "\\" in text or Path(text).is_absolute():
        return True
    parts = text.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).exists())


def _offline() -> bool:
    """The hub reads HF_HUB_OFFLINE once at import; a value set later (e.g. by the caller) counts too."""
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _from_hub(repo_id: str, revision: str | None, cache_dir: str | None) -> Path:
    if _offline():
        reason = "offline mode is on (HF_HUB_OFFLINE=1), so nothing may be downloaded"
    else:
        try:
            return Path(_download(repo_id, revision, cache_dir, local_only=False))
        except RevisionNotFoundError:
            raise CheckpointError(f"Hugging Face Hub repo {repo_id!r} has no revision {revision!r}") from None
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"{repo_id!r} is not a local directory, and the Hugging Face Hub has no repo of that name "
                "that you may access (if it is private or gated, accept its terms on huggingface.co and run "
                "`hf auth login`)"
            ) from None
        except OSError as exc:  # every network / HTTP failure of huggingface_hub is an OSError
            reason = f"the Hub could not be reached ({type(exc).__name__}: {_first_line(exc)})"
    try:
        return Path(_download(repo_id, revision, cache_dir, local_only=True))
    except OSError as exc:
        raise CheckpointError(_not_cached(repo_id, revision, cache_dir, reason, exc)) from None


def _download(repo_id: str, revision: str | None, cache_dir: str | None, *, local_only: bool) -> str:
    return snapshot_download(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        allow_patterns=list(ALLOW_PATTERNS),
        local_files_only=local_only,
    )


def _not_cached(repo_id: str, revision: str | None, cache_dir: str | None, reason: str, exc: OSError) -> str:
    """What to do when a Hub model is neither downloadable now nor in the local cache."""
    rev = f" --revision {revision}" if revision else ""
    cache = cache_dir or constants.HF_HUB_CACHE
    # huggingface_hub words a cache miss as advice for its own API ("pass 'local_files_only=False'"), which
    # neither a caller of janus-sdk nor a CLI user can act on: the miss is said here, the fix below.
    detail = "" if isinstance(exc, LocalEntryNotFoundError) else f" ({_first_line(exc)})"
    network = (
        "unset HF_HUB_OFFLINE where the network may be used"
        if _offline()
        else "set HF_HUB_OFFLINE=1 to skip the network attempt on machines without access"
    )
    return (
        f"model {repo_id!r}{f' (revision {revision})' if revision else ''} is not a local directory, is "
        f"not in the Hugging Face cache {cache}{detail}, and {reason}. To fix it, either "
        f"download it on a machine with network access, `hf download {repo_id}{rev}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}{rev}`), and copy that cache here (point HF_HUB_CACHE at it), "
        f"or add `--local-dir DIR` to that command and pass DIR instead of the repo id; or {network}."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
