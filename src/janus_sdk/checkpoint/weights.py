"""Reading the tensors of a checkpoint directory lazily and safely, whatever layout it ships in.

Four layouts are understood, tried in this order (the order transformers uses): a single `model.safetensors`,
sharded safetensors with `model.safetensors.index.json`, a single `pytorch_model.bin`, and sharded
`pytorch_model-*.bin` with `pytorch_model.bin.index.json` (what Janus-Pro-7B ships). Safetensors files are
checked with `safe_open` and their header read up front. Pickled `.bin` files are read ONLY with
`torch.load(weights_only=True)`: unpickling anything other than tensors could run arbitrary code, so such a
file is refused; and only with torch >= 2.6, whose weights-only unpickler fixed CVE-2025-32434 (older ones
could be made to run code anyway). Nothing here ever writes into the checkpoint directory.

Tensor data is read with plain file reads into a tensor of its own, one tensor at a time, at the offset the
header gives (safetensors) or that `torch.load(map_location="meta", weights_only=True)` records for each
storage (.bin). Nothing stays memory-mapped: a mapping's pages count in the process's resident memory once
touched and stay there until the whole file is unmapped, so copying a model out of mapped shards held the
weights twice (peak RSS 1.5-2x the weight bytes). Read this way, the file's pages live only in the kernel's
page cache and loading peaks at the weights themselves plus, where the dtype changes, one tensor in flight.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch.torch_version import TorchVersion

from janus_sdk.errors import CheckpointError

CONFIG_FILE = "config.json"
#: Oldest torch whose `torch.load(weights_only=True)` is safe on hostile files (CVE-2025-32434).
SAFE_PICKLE_TORCH = "2.6"

#: dtypes a checkpoint tensor may have: float ones are cast to the model's dtype, the others kept as stored.
USABLE_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class LayoutKind(str, Enum):
    """How a checkpoint stores its weights."""

    SAFETENSORS = "safetensors"
    SAFETENSORS_SHARDED = "safetensors-sharded"
    BIN = "bin"
    BIN_SHARDED = "bin-sharded"


#: (kind, file the layout is recognised by), in order of preference.
LAYOUT_FILES: tuple[tuple[LayoutKind, str], ...] = (
    (LayoutKind.SAFETENSORS, "model.safetensors"),
    (LayoutKind.SAFETENSORS_SHARDED, "model.safetensors.index.json"),
    (LayoutKind.BIN, "pytorch_model.bin"),
    (LayoutKind.BIN_SHARDED, "pytorch_model.bin.index.json"),
)


@dataclass(frozen=True)
class CheckpointLayout:
    """The weight files of a checkpoint directory; `weight_map` (name -> file) only for sharded layouts."""

    directory: Path
    kind: LayoutKind
    files: tuple[Path, ...]
    index: Path | None = None
    weight_map: dict[str, Path] | None = None


def detect_layout(directory: str | Path) -> CheckpointLayout:
    """Find which layout `directory` uses, checking that config.json and every shard the index names exist."""
    directory = Path(directory).expanduser()
    if not directory.exists():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint path {directory} is a file; expected a directory holding config.json"
        )
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{directory / CONFIG_FILE} is missing: every checkpoint directory needs its config"
        )
    for kind, name in LAYOUT_FILES:
        path = directory / name
        if path.is_file():
            if kind in (LayoutKind.SAFETENSORS, LayoutKind.BIN):
                return CheckpointLayout(directory, kind, (path,))
            weight_map = _read_index(path)
            files = tuple(dict.fromkeys(weight_map.values()))
            return CheckpointLayout(directory, kind, files, index=path, weight_map=weight_map)
    looked_for = ", ".join(name for _, name in LAYOUT_FILES)
    raise CheckpointError(f"no weights found in {directory}: looked for {looked_for}")


def _read_index(index: Path) -> dict[str, Path]:
    """Parse an HF shard index into name -> shard path, refusing shards outside the directory or missing."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read shard index {index}: {exc}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"shard index {index} has no 'weight_map' object mapping tensor names to file names"
        )
    shards = {name: index.parent / name for name in set(weight_map.values())}
    outside = sorted(name for name in shards if Path(name).name != name)
    if outside:
        raise CheckpointError(f"shard index {index} names files outside its directory: {', '.join(outside)}")
    missing = sorted(name for name, path in shards.items() if not path.is_file())
    if missing:
        raise CheckpointError(f"shard index {index} lists shards that do not exist: {', '.join(missing)}")
    return {key: shards[shard] for key, shard in weight_map.items()}


class _Reader(Protocol):
    """One opened weight file."""

    def keys(self) -> list[str]: ...
    def __contains__(self, name: object) -> bool: ...
    def shape_of(self, name: str) -> tuple[int, ...]: ...
    def dtype_code(self, name: str) -> str: ...
    def get(self, name: str) -> torch.Tensor: ...


class _SafetensorsReader:
    """A safetensors file: validated by `safe_open` and its header read on open, each tensor read on `get`."""

    def __init__(self, path: Path) -> None:
        try:
            safe_open(str(path), framework="pt", device="cpu")  # validates header, offsets and length
            with path.open("rb") as file:
                size = int.from_bytes(file.read(8), "little")
                header: dict[str, Any] = json.loads(file.read(size))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}"
            ) from None
        header.pop("__metadata__", None)
        self._path = path
        self._entries = {
            name: (str(info["dtype"]), tuple(info["shape"]), 8 + size + info["data_offsets"][0])
            for name, info in header.items()
        }

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype_code(self, name: str) -> str:
        return self._entries[name][0]

    def get(self, name: str) -> torch.Tensor:
        code, shape, offset = self._entries[name]
        return _read_into(self._path, offset, torch.empty(shape, dtype=USABLE_DTYPES[code]))


class _PickleReader:
    """A torch.save'd dict of tensors, unpickled with weights_only=True.

    Zip-format files (torch >= 1.6) are unpickled onto the meta device, which records where each storage's
    bytes are in the file; `get` reads them from there. Legacy (pre-zip) files, files written on a big-endian
    machine, and torch versions that record no offsets are read whole into memory instead."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._size = path.stat().st_size
        self._tensors = _load_bin(path, located=_locatable(path))
        self._located = all(t.is_meta for t in self._tensors.values())
        if self._located and not all(_file_offset(t) is not None for t in self._tensors.values()):
            self._tensors, self._located = _load_bin(path, located=False), False

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def dtype_code(self, name: str) -> str:
        return _code_of(self._tensors[name].dtype)

    def get(self, name: str) -> torch.Tensor:
        stored = self._tensors[name]
        if not self._located:
            return stored
        start = _file_offset(stored)
        assert start is not None  # checked on open
        offset = start + int(stored.storage_offset()) * stored.element_size()
        # the elements the tensor covers in its storage (all of them unless it is a strided view)
        span = 1 + sum((n - 1) * step for n, step in zip(stored.shape, stored.stride(), strict=True))
        span = span if stored.numel() else 0
        if offset + span * stored.element_size() > self._size:
            raise CheckpointError(
                f"tensor {name!r} of {self._path} lies past the end of the file (truncated or corrupt?)"
            )
        flat = _read_into(self._path, offset, torch.empty(span, dtype=stored.dtype))
        if stored.is_contiguous():
            return flat.view(stored.shape)
        return flat.as_strided(stored.shape, stored.stride()).contiguous()


def _locatable(path: Path) -> bool:
    """Whether the file's tensor bytes can be read in place: a zip-format file stored little-endian (as
    torch.save writes on every common machine), read on a little-endian machine."""
    if sys.byteorder != "little" or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            orders = [archive.read(n) for n in archive.namelist() if n.endswith("/byteorder")]
    except (zipfile.BadZipFile, OSError, KeyError):  # torch.load reports what is wrong with it
        return False
    return all(order.strip() == b"little" for order in orders)


def _file_offset(tensor: torch.Tensor) -> int | None:
    """Where the tensor's storage starts in its file (recorded by torch.load(map_location="meta",
    weights_only=True), torch >= 2.6), or None where this torch does not record it."""
    offset = getattr(tensor.untyped_storage(), "_checkpoint_offset", None)
    return offset if isinstance(offset, int) else None


def _read_into(path: Path, offset: int, out: torch.Tensor) -> torch.Tensor:
    """Fill the contiguous CPU tensor `out` with the bytes of `path` from `offset`; returns `out`."""
    if out.numel() == 0:
        return out
    buffer = out.view(-1).view(torch.uint8).numpy().data
    try:
        with path.open("rb", buffering=0) as file:
            file.seek(offset)
            done = 0
            while done < len(buffer):
                count = file.readinto(buffer[done:])
                if not count:
                    raise CheckpointError(
                        f"{path} ends {len(buffer) - done} bytes before the data its header describes "
                        "(truncated?); download it again"
                    )
                done += count
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    return out


def _code_of(dtype: torch.dtype) -> str:
    """The safetensors code of a torch dtype, or its torch name where it is not a usable one."""
    return next((code for code, usable in USABLE_DTYPES.items() if usable == dtype), str(dtype))


def _load_bin(path: Path, *, located: bool) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True: onto the meta device (`located`: shapes, dtypes and file offsets,
    no data) or whole into memory."""
    if TorchVersion(torch.__version__) < SAFE_PICKLE_TORCH:
        raise CheckpointError(
            f"refused to load {path}: reading pickled .bin checkpoints safely needs torch >= "
            f"{SAFE_PICKLE_TORCH} (this is {torch.__version__}, whose weights-only unpickler can be made to "
            "run code, CVE-2025-32434). Upgrade torch, or use a safetensors copy of the checkpoint."
        )
    try:
        data = torch.load(path, map_location="meta" if located else "cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: weights-only unpickling rejected it ({_unpickler_reason(exc)}). "
            "janus-sdk never unpickles arbitrary objects, because that can run code hidden in the file; this "
            "one is corrupt or holds more than plain tensors. Get (or make, from a source you trust) a "
            "safetensors copy."
        ) from None
    except Exception as exc:  # a corrupt pickle fails in arbitrary ways (IndexError, KeyError, EOFError, ...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {first_line}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise CheckpointError(
            f"{path} does not hold a flat dict of named tensors (found {type(data).__name__})"
        )
    return data


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """torch's message is long advice about weights_only=False; keep only the unpickler's own complaint."""
    text = str(exc)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if marker else text).splitlines() if line.strip()]
    reason = lines[0].split(" Please use")[0] if lines else type(exc).__name__
    return reason[:300]


def open_checkpoint(directory: str | Path) -> CheckpointWeights:
    """Open a checkpoint directory for lazy reading (see `CheckpointWeights`)."""
    return CheckpointWeights(directory)


_Source = TypeVar("_Source", bound="ClosedOnExit")


class ClosedOnExit:
    """`with source:` closes it at the end: the context-manager half that every WeightSource shares."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Source) -> _Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class CheckpointWeights(ClosedOnExit):
    """Lazy, read-only access to the tensors of a checkpoint directory.

    A file's header (safetensors) or pickle (.bin) is read on first use and kept until `close()`; no file
    stays open or mapped in between. Each `get` reads one tensor into memory of its own, which the caller may
    keep (a loaded model holds these tensors: no second copy is made).
    """

    def __init__(self, directory: str | Path) -> None:
        self.layout = detect_layout(directory)
        self.directory = self.layout.directory
        self._readers: dict[Path, _Reader] = {}
        if self.layout.weight_map is not None:
            self._file_of = dict(self.layout.weight_map)
        else:
            (only,) = self.layout.files
            self._file_of = dict.fromkeys(self._reader(only).keys(), only)

    def close(self) -> None:
        """Forget the headers read so far (a later `get` reads them again)."""
        self._readers.clear()

    def keys(self) -> list[str]:
        """Tensor names in checkpoint order."""
        return list(self._file_of)

    def __contains__(self, name: object) -> bool:
        return name in self._file_of

    def __len__(self) -> int:
        return len(self._file_of)

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def file_of(self, name: str) -> Path:
        """The file that holds tensor `name`."""
        try:
            return self._file_of[name]
        except KeyError:
            raise CheckpointError(f"checkpoint {self.directory} has no tensor named {name!r}") from None

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, read from the file's header (safetensors) or its pickle (.bin)."""
        return self._locate(name)[1].shape_of(name)

    def dtype_of(self, name: str) -> torch.dtype:
        """The tensor's stored dtype; CheckpointError when it is not one janus-sdk can use."""
        path, reader = self._locate(name)
        code = reader.dtype_code(name)
        if code not in USABLE_DTYPES:
            usable = ", ".join(str(d).removeprefix("torch.") for d in USABLE_DTYPES.values())
            raise CheckpointError(
                f"tensor {name!r} in {path} has dtype {code}, which cannot be used (usable: {usable})"
            )
        return USABLE_DTYPES[code]

    def nbytes_of(self, name: str) -> int:
        """Size of the stored tensor in bytes, without reading it."""
        return math.prod(self.shape_of(name)) * self.dtype_of(name).itemsize

    def get(self, name: str) -> torch.Tensor:
        """The tensor as stored (CPU, stored dtype), read now into memory of its own."""
        self.dtype_of(name)
        return self._locate(name)[1].get(name)

    def _locate(self, name: str) -> tuple[Path, _Reader]:
        path = self.file_of(name)
        reader = self._reader(path)
        if self.layout.weight_map is not None and name not in reader:
            raise CheckpointError(
                f"shard index {self.layout.index} maps {name!r} to {path}, which does not contain it"
            )
        return path, reader

    def _reader(self, path: Path) -> _Reader:
        if path not in self._readers:
            safetensors = self.layout.kind in (LayoutKind.SAFETENSORS, LayoutKind.SAFETENSORS_SHARDED)
            self._readers[path] = _SafetensorsReader(path) if safetensors else _PickleReader(path)
        return self._readers[path]
