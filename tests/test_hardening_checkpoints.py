"""Untrusted checkpoints, end to end through `JanusPipeline.from_pretrained` (tests/test_checkpoint_io.py
covers the reader on its own): pickles are never executed, damaged or mismatched files give a CheckpointError
naming the file and the tensor, and loading + chat + generation never write into the checkpoint directory."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from janus_sdk import CheckpointError, JanusPipeline
from janus_sdk.checkpoint import convert_to_safetensors
from small_pipeline import INPUT_PNG, fast_pipeline

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
ST_DIR = FIXTURE / "checkpoint"
BIN_DIR = FIXTURE / "checkpoint-bin"
SHARD_2 = "pytorch_model-00002-of-00002.bin"


def load(directory: Path) -> JanusPipeline:
    return JanusPipeline.from_pretrained(directory, device="cpu", dtype="float32")


def refused(directory: Path, *fragments: str) -> str:
    """Loading `directory` raises a CheckpointError whose message holds every fragment; returns it."""
    with pytest.raises(CheckpointError) as info:
        load(directory)
    message = str(info.value)
    assert info.value.__cause__ is None
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


# ---------------------------------------------------------------- pickles


class Evil:
    """Unpickling this runs code: it creates `marker` (a stand-in for os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-save", "plain-pickle"])
@pytest.mark.parametrize("env", [False, True], ids=["", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def test_a_shard_whose_pickle_would_run_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool, env: bool
) -> None:
    if env:  # torch's escape hatch back to full unpickling must not reach our explicit weights_only=True
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    directory = Path(shutil.copytree(BIN_DIR, tmp_path / "ck"))
    tensors: dict[str, Any] = torch.load(BIN_DIR / SHARD_2, weights_only=True)
    victim = sorted(tensors)[0]
    tensors[victim] = Evil(marker)  # the shard still lists every tensor the index promises
    if legacy:
        (directory / SHARD_2).write_bytes(pickle.dumps(tensors, protocol=2))
    else:
        torch.save(tensors, directory / SHARD_2)
    message = refused(directory, "refused", str(directory / SHARD_2), "run code")
    assert not marker.exists(), "the pickle's code ran"
    assert "weights_only=False" not in message  # torch's advice to turn the protection off is not passed on


def test_pickles_are_not_read_with_a_torch_whose_weights_only_mode_is_unsafe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_unpickling(*_: Any, **__: Any) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")  # weights_only=True bypassable (CVE-2025-32434)
    monkeypatch.setattr(torch, "load", no_unpickling)
    refused(BIN_DIR, "refused", "torch >= 2.6", "2.5.1+cu121", "CVE-2025-32434", "safetensors")


def test_safetensors_are_preferred_and_a_pickle_beside_them_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    directory = Path(shutil.copytree(ST_DIR, tmp_path / "ck"))
    torch.save({"x": Evil(marker)}, directory / "pytorch_model.bin")

    def no_unpickling(*_: Any, **__: Any) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    assert isinstance(fast_pipeline(directory).chat("hi", max_new_tokens=1), str)
    assert not marker.exists()


# ---------------------------------------------------------------- damaged safetensors


def header_length(data: bytes) -> int:
    return int(struct.unpack("<Q", data[:8])[0])


def with_header(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The file with its JSON header edited (and padded to 8 bytes, as safetensors writes it)."""
    start = 8 + header_length(data)
    header = json.loads(data[8:start])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[start:]


def _stretch_first_tensor(header: dict[str, Any]) -> None:
    header["aligner.layers.0.bias"]["data_offsets"][1] += 10**9


def _overlap_tensors(header: dict[str, Any]) -> None:
    header["aligner.layers.0.weight"]["data_offsets"] = header["aligner.layers.0.bias"]["data_offsets"]


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "truncated-length": lambda d: d[:5],
    "header-only": lambda d: d[: 8 + header_length(d)],
    "truncated-data": lambda d: d[: len(d) // 2],
    "last-byte-missing": lambda d: d[:-1],
    "garbage-json": lambda d: d[:8] + b"!" + d[9:],
    "huge-header-length": lambda d: struct.pack("<Q", 2**62) + d[8:],
    "offsets-past-the-end": lambda d: with_header(d, _stretch_first_tensor),
    "overlapping-tensors": lambda d: with_header(d, _overlap_tensors),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_safetensors_name_the_file(tmp_path: Path, damage: str) -> None:
    directory = Path(shutil.copytree(ST_DIR, tmp_path / "ck"))
    weights = directory / "model.safetensors"
    weights.write_bytes(DAMAGE[damage](weights.read_bytes()))
    refused(directory, str(weights))


def _reshape(tensors: dict[str, torch.Tensor]) -> None:
    tensors["aligner.layers.0.weight"] = tensors["aligner.layers.0.weight"][:-1]


def _integer(tensors: dict[str, torch.Tensor]) -> None:
    tensors["gen_head.vision_head.bias"] = tensors["gen_head.vision_head.bias"].to(torch.int32)


def _complex(tensors: dict[str, torch.Tensor]) -> None:
    tensors["language_model.model.norm.weight"] = tensors["language_model.model.norm.weight"].to(
        torch.complex64
    )


def _extra(tensors: dict[str, torch.Tensor]) -> None:
    tensors["vision_model.backdoor.weight"] = torch.zeros(3)


def _missing(tensors: dict[str, torch.Tensor]) -> None:
    del tensors["gen_embed.weight"]


MISMATCHES: dict[str, tuple[Callable[[dict[str, torch.Tensor]], None], tuple[str, ...]]] = {
    "wrong-shape": (_reshape, ("aligner.layers.0.weight", "wrong shape", "[63, 32]", "model.safetensors")),
    "integer-dtype": (_integer, ("gen_head.vision_head.bias", "torch.int32", "model.safetensors")),
    "unusable-dtype": (_complex, ("language_model.model.norm.weight", "C64", "model.safetensors")),
    "unexpected-tensor": (_extra, ("vision_model.backdoor.weight", "not in the model", "model.safetensors")),
    "missing-tensor": (_missing, ("gen_embed.weight", "missing from the checkpoint")),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_a_tensor_that_does_not_fit_is_named_with_its_file(tmp_path: Path, case: str) -> None:
    edit, fragments = MISMATCHES[case]
    directory = Path(shutil.copytree(ST_DIR, tmp_path / "ck"))
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")
    refused(directory, str(directory), *fragments)


# ---------------------------------------------------------------- sharded checkpoints


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint as safetensors shards of at most 4 MB plus model.safetensors.index.json."""
    out = convert_to_safetensors(BIN_DIR, tmp_path_factory.mktemp("sharded") / "ck", max_shard_size="4MB")
    assert len(list(out.glob("model-*-of-*.safetensors"))) >= 3
    return out


def shard_copy(sharded: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = Path(shutil.copytree(sharded, tmp_path / "ck"))
    return directory, json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]


def write_index(directory: Path, weight_map: dict[str, str]) -> None:
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_the_sharded_copy_loads(sharded: Path) -> None:
    assert isinstance(fast_pipeline(sharded).chat("hi", max_new_tokens=1), str)


def test_a_shard_listed_in_the_index_but_missing(sharded: Path, tmp_path: Path) -> None:
    directory, weight_map = shard_copy(sharded, tmp_path)
    last = sorted(set(weight_map.values()))[-1]
    (directory / last).unlink()
    refused(directory, "lists shards that do not exist", last)


def test_an_index_pointing_at_the_wrong_shard(sharded: Path, tmp_path: Path) -> None:
    directory, weight_map = shard_copy(sharded, tmp_path)
    shards = sorted(set(weight_map.values()))
    name = next(n for n, shard in weight_map.items() if shard == shards[-1])
    write_index(directory, {**weight_map, name: shards[0]})
    refused(directory, name, shards[0], "does not contain it")


@pytest.mark.parametrize("target", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors"])
def test_an_index_naming_files_outside_the_directory(sharded: Path, tmp_path: Path, target: str) -> None:
    directory, weight_map = shard_copy(sharded, tmp_path)
    write_index(directory, {**weight_map, next(iter(weight_map)): target})
    refused(directory, "outside its directory", target)


def test_a_corrupt_index(sharded: Path, tmp_path: Path) -> None:
    directory, _ = shard_copy(sharded, tmp_path)
    (directory / "model.safetensors.index.json").write_text("{not json")
    refused(directory, "cannot read shard index", "model.safetensors.index.json")
    (directory / "model.safetensors.index.json").write_text('{"weight_map": {"a": 1}}')
    refused(directory, "weight_map")


def test_a_wrong_shape_in_a_shard_names_that_shard(sharded: Path, tmp_path: Path) -> None:
    directory, weight_map = shard_copy(sharded, tmp_path)
    last = sorted(set(weight_map.values()))[-1]
    name = sorted(n for n, shard in weight_map.items() if shard == last and n.endswith(".weight"))[0]
    tensors = load_file(directory / last)
    tensors[name] = torch.zeros(2, 2, dtype=tensors[name].dtype)
    save_file(tensors, directory / last)
    refused(directory, f"{name}: model expects", "checkpoint has [2, 2]", f"(in {last})")


# ---------------------------------------------------------------- read-only


def fingerprint(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `root` (and root itself): kind, mode, size, mtime and, for files, the sha256."""
    entries = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return entries


def test_loading_chatting_and_generating_never_write_into_the_checkpoint() -> None:
    before = fingerprint(FIXTURE)
    pipe = fast_pipeline(ST_DIR)
    pipe.chat("What is shown?", images=[INPUT_PNG], max_new_tokens=2)
    codes = pipe.generate_image_codes("a red cube", cfg_weight=2.0, seed=0)
    pipe.decode_images(codes)
    bin_pipe = load(BIN_DIR)
    bin_pipe.chat("What is shown?", images=[INPUT_PNG], max_new_tokens=2)
    bin_pipe.encode_image(INPUT_PNG)
    del pipe, bin_pipe
    assert fingerprint(FIXTURE) == before
