"""Converting a checkpoint (any layout `CheckpointWeights` reads, e.g. Janus-Pro's pickled .bin shards) into
safetensors: faster to open, memory-mappable and free of pickle. Tensors are copied bit for bit (dtype kept),
one output shard at a time; every other file (configs, tokenizer, processor) is carried over unchanged."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from janus_sdk.checkpoint.weights import CheckpointWeights
from janus_sdk.errors import CheckpointError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
#: Weight files of the known layouts (and their shards): never carried over as "other files".
WEIGHT_FILE = re.compile(r"(pytorch_model|model)(-\d+-of-\d+)?\.(bin|safetensors)(\.index\.json)?")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(size: int | str) -> int:
    """A byte count from an int or a string like '5GB' (10**9) or '500MiB' (2**20), like transformers."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", size)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise CheckpointError(
                f"invalid shard size {size!r}; write e.g. 5GB, 500MB, 2GiB or a number of bytes"
            )
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise CheckpointError(f"shard size must be positive, got {size!r}")
    return value


def convert_to_safetensors(
    src_dir: str | Path,
    dst_dir: str | Path,
    *,
    max_shard_size: int | str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the checkpoint in `src_dir` to `dst_dir` as `model.safetensors`, or as shards of at most
    `max_shard_size` bytes (a larger tensor gets a shard of its own) plus `model.safetensors.index.json`.

    An existing non-empty `dst_dir` is only replaced with `overwrite=True`, and then as a whole: everything is
    written into a temporary sibling directory first, which takes the destination's place once complete.
    """
    src = Path(src_dir).expanduser().resolve()
    dst = Path(dst_dir).expanduser().resolve()
    if dst == src or dst.is_relative_to(src) or src.is_relative_to(dst):
        raise CheckpointError(
            f"destination {dst} must be outside the source checkpoint {src} (and not contain it)"
        )
    if dst.is_file():
        raise CheckpointError(f"destination {dst} is a file; pass a directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise CheckpointError(
            f"destination {dst} already exists and is not empty; pass overwrite=True to replace it"
        )
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        with CheckpointWeights(src) as weights:
            _write_weights(weights, staging, limit)
        copy_other_files(src, staging)
        swap_in_directory(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst


def _write_weights(weights: CheckpointWeights, out: Path, limit: int | None) -> None:
    sizes = {name: weights.nbytes_of(name) for name in weights}
    for filename, names in shard_files(sizes, limit, out):
        _save_shard(weights, names, out / filename)


def shard_files(sizes: Mapping[str, int], limit: int | None, out: Path) -> Iterator[tuple[str, list[str]]]:
    """(file name, tensor names) of each safetensors file to write for tensors of `sizes` bytes: one
    `model.safetensors`, or shards of at most `limit` bytes whose `model.safetensors.index.json` is written
    into `out` here."""
    shards = list(_plan_shards(sizes, limit))
    if len(shards) == 1:
        yield SAFETENSORS_FILE, shards[0]
        return
    weight_map: dict[str, str] = {}
    for number, names in enumerate(shards, start=1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        weight_map.update(dict.fromkeys(names, filename))
        yield filename, names
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
    (out / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _plan_shards(sizes: Mapping[str, int], limit: int | None) -> Iterator[list[str]]:
    """Greedy, as transformers does: a new shard starts when the next tensor would overflow."""
    shard: list[str] = []
    size = 0
    for name, nbytes in sizes.items():
        if shard and limit is not None and size + nbytes > limit:
            yield shard
            shard, size = [], 0
        shard.append(name)
        size += nbytes
    yield shard


def _save_shard(weights: CheckpointWeights, names: list[str], path: Path) -> None:
    """safetensors stores tensors apart: ones sharing storage in a pickle (tied weights) are copied."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name in names:
        tensor = weights.get(name).contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    save_file(tensors, str(path), metadata={"format": "pt"})


def copy_other_files(src: Path, out: Path) -> None:
    """Carry over configs, tokenizer and processor files (and folders), never weights of a known layout."""
    for entry in src.iterdir():
        if WEIGHT_FILE.fullmatch(entry.name):
            continue
        if entry.is_dir():
            shutil.copytree(entry, out / entry.name)
        else:
            shutil.copy2(entry, out / entry.name)


def swap_in_directory(staging: Path, dst: Path) -> None:
    """Put the finished `staging` at `dst`; an old `dst` is moved aside first and deleted afterwards."""
    if not dst.exists():
        staging.rename(dst)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    retired.rmdir()
    dst.rename(retired)
    try:
        staging.rename(dst)
    except OSError:
        retired.rename(dst)
        raise
    shutil.rmtree(retired, ignore_errors=True)
