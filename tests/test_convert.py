"""Converting the official pickled .bin checkpoint to safetensors: bit-identical tensors, carried-over files,
sharding, and a destination that is never clobbered by accident."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import janus_sdk.checkpoint.convert as convert_module
from janus_sdk.checkpoint import LayoutKind, convert_to_safetensors, open_checkpoint, parse_size
from janus_sdk.errors import CheckpointError

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
ST_DIR = FIXTURE / "checkpoint"
BIN_DIR = FIXTURE / "checkpoint-bin"
OTHER_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def assert_same_tensors_as_reference(converted: Path) -> None:
    with open_checkpoint(ST_DIR) as reference, open_checkpoint(converted) as out:
        assert sorted(out.keys()) == sorted(reference.keys())
        for name in reference:
            got, want = out.get(name), reference.get(name)
            assert got.dtype == want.dtype == torch.bfloat16
            assert got.shape == want.shape and torch.equal(got.view(torch.int16), want.view(torch.int16)), (
                name
            )


def test_bin_to_single_safetensors(tmp_path: Path) -> None:
    source_before = digests(BIN_DIR)
    dst = convert_to_safetensors(BIN_DIR, tmp_path / "out")
    assert dst == (tmp_path / "out").resolve()
    assert sorted(p.name for p in dst.iterdir()) == sorted((*OTHER_FILES, "model.safetensors"))
    assert open_checkpoint(dst).layout.kind is LayoutKind.SAFETENSORS
    assert_same_tensors_as_reference(dst)
    out = digests(dst)
    for name in OTHER_FILES:
        assert out[name] == source_before[name]
    assert digests(BIN_DIR) == source_before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging left behind


def test_bin_to_sharded_safetensors(tmp_path: Path) -> None:
    dst = convert_to_safetensors(BIN_DIR, tmp_path / "out", max_shard_size="4MB")
    shards = sorted(p.name for p in dst.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    with open_checkpoint(dst) as weights:  # greedy: a shard exceeds the limit only when one tensor does
        for shard in shards:
            in_shard = [n for n in weights if weights.file_of(n).name == shard]
            total = sum(weights.nbytes_of(n) for n in in_shard)
            assert total <= 4_000_000 or len(in_shard) == 1
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    with open_checkpoint(ST_DIR) as reference:
        assert index["metadata"]["total_size"] == sum(reference.nbytes_of(n) for n in reference)
        assert set(index["weight_map"]) == set(reference.keys())
    assert set(index["weight_map"].values()) == set(shards)
    assert open_checkpoint(dst).layout.kind is LayoutKind.SAFETENSORS_SHARDED
    assert_same_tensors_as_reference(dst)


def test_safetensors_round_trip_keeps_every_byte_of_the_tensors(tmp_path: Path) -> None:
    sharded = convert_to_safetensors(ST_DIR, tmp_path / "sharded", max_shard_size=2_000_000)
    single = convert_to_safetensors(sharded, tmp_path / "single")
    assert_same_tensors_as_reference(single)


def test_existing_destination_is_not_overwritten(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists and is not empty; pass overwrite=True"):
        convert_to_safetensors(BIN_DIR, dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    convert_to_safetensors(BIN_DIR, dst, overwrite=True)
    assert not (dst / "keep.txt").exists()
    assert_same_tensors_as_reference(dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_destination_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert_same_tensors_as_reference(convert_to_safetensors(BIN_DIR, tmp_path / "out"))


def test_failed_overwrite_leaves_the_old_destination_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    calls = []

    def failing_save(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(convert_module, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        convert_to_safetensors(BIN_DIR, dst, max_shard_size="4MB", overwrite=True)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_destination_must_be_outside_the_source(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(BIN_DIR, source)
    before = digests(source)
    for dst in (source, source / "converted", tmp_path):
        with pytest.raises(CheckpointError, match="must be outside the source checkpoint"):
            convert_to_safetensors(source, dst, overwrite=True)
    assert digests(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_destination_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        convert_to_safetensors(BIN_DIR, tmp_path / "out", overwrite=True)


def test_parse_size() -> None:
    assert parse_size(123) == 123
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500 MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5kib") == 1536
    for bad in ("5 parsecs", "GB", "-1", "0"):
        with pytest.raises(CheckpointError, match="shard size"):
            parse_size(bad)
