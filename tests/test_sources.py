"""Model sources: local directories, and Hub ids resolved from a fake Hugging Face cache. No test may touch
the network: every way to open a connection or resolve a host name is replaced by one that records and
refuses."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from janus_sdk.checkpoint import open_checkpoint, resolve_model_source
from janus_sdk.errors import CheckpointError

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny" / "checkpoint"
REPO = "deepseek-ai/Janus-Pro-1B"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse (and record) every connection and DNS lookup, whatever library attempts it."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def blocked(*args: object, **kwargs: object) -> None:
            attempts.append(what)
            raise OSError(f"network access is forbidden in tests ({what})")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/...}, via HF_HUB_CACHE."""
    cache = tmp_path / "hub"
    repo = cache / "models--deepseek-ai--Janus-Pro-1B"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(FIXTURE / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_local_directory_is_used_as_is(no_network: list[str]) -> None:
    assert resolve_model_source(FIXTURE) == FIXTURE
    assert resolve_model_source(str(FIXTURE)) == FIXTURE
    assert no_network == []


def test_missing_paths_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for spec in ("./nothing", "/no/such/dir", "~/no-such-janus-dir", "models/janus", "a/b/c", tmp_path / "x"):
        with pytest.raises(CheckpointError, match="model directory not found"):
            resolve_model_source(spec)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(CheckpointError, match=r"weights\.bin is a file"):
        resolve_model_source("weights.bin")
    assert no_network == []


@pytest.mark.usefixtures("hf_cache")
def test_hub_id_from_the_cache_in_offline_mode(
    monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_model_source(REPO)
    assert path.name == COMMIT and (path / "config.json").is_file()
    assert len(open_checkpoint(path)) == 420
    assert resolve_model_source(REPO, revision=COMMIT) == path
    assert no_network == []


def test_explicit_cache_dir(hf_cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE")
    assert resolve_model_source(REPO, cache_dir=hf_cache).is_relative_to(hf_cache)
    assert no_network == []


def test_offline_and_not_cached_says_what_to_do(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = listing(hf_cache)
    with pytest.raises(CheckpointError) as info:
        resolve_model_source("deepseek-ai/Janus-Pro-7B", revision="v2")
    message = str(info.value)
    assert "'deepseek-ai/Janus-Pro-7B'" in message and str(hf_cache) in message
    assert "hf download deepseek-ai/Janus-Pro-7B --revision v2" in message
    assert "huggingface-cli download" in message and "--local-dir" in message
    assert "HF_HUB_OFFLINE" in message
    assert listing(hf_cache) == before
    assert no_network == []


@pytest.mark.usefixtures("hf_cache")
def test_unreachable_hub_falls_back_to_the_cache(
    monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    """Online mode, but the hub cannot be reached: the first call fails like a dead network would."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls: list[dict[str, Any]] = []

    def unreachable(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs)
        if not kwargs["local_files_only"]:
            raise LocalEntryNotFoundError("Connection error: the Hub could not be reached")
        return str(snapshot_download(repo_id, **kwargs))

    monkeypatch.setattr("janus_sdk.checkpoint.sources.snapshot_download", unreachable)
    path = resolve_model_source(REPO)
    assert path.name == COMMIT
    assert [c["local_files_only"] for c in calls] == [False, True]
    patterns = calls[0]["allow_patterns"]
    for wanted in ("config.json", "tokenizer.json", "model.safetensors", "model.safetensors.index.json"):
        assert any(Path(wanted).match(p) for p in patterns), wanted
    assert any(Path("pytorch_model-00001-of-00002.bin").match(p) for p in patterns)
    assert no_network == []

    with pytest.raises(CheckpointError) as info:
        resolve_model_source("deepseek-ai/Janus-Pro-7B")
    message = str(info.value)
    assert "the Hub could not be reached" in message and "hf download deepseek-ai/Janus-Pro-7B" in message
    assert "HF_HUB_OFFLINE=1" in message


@pytest.mark.usefixtures("hf_cache")
def test_real_hub_client_with_a_dead_network_uses_the_cache(
    monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    """The unpatched hub client in online mode, every connection refused by the fixture: the cache serves."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    assert resolve_model_source(REPO).name == COMMIT
    assert no_network, "the online attempt must have been made (and refused)"
    assert set(no_network) <= {"getaddrinfo", "connect", "connect_ex", "create_connection"}


def test_invalid_repo_id(no_network: list[str]) -> None:
    with pytest.raises(CheckpointError, match="neither an existing directory nor a valid"):
        resolve_model_source("bad--name!")
    assert no_network == []
