"""Reading the tensors of a checkpoint directory lazily and safely, whatever layout it ships in.

Four layouts are understood, tried in this order (the order transformers uses): a single `model.safetensors`,
sharded safetensors with `model.safetensors.index.json`, a single `pytorch_model.bin`, and sharded
`pytorch_model-*.bin` with `pytorch_model.bin.index.json` (what Janus-Pro-7B ships). Safetensors files are
opened with `safe_open` (memory-mapped, only the header is parsed up front). Pickled `.bin` files are read
ONLY with `torch.load(weights_only=True, mmap=True)`: unpickling anything other than tensors could run
arbitrary code, so such a file is refused; and only with torch >= 2.6, whose weights-only unpickler fixed
CVE-2025-32434 (older ones could be made to run code anyway). Nothing here ever writes into the checkpoint
directory.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

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
    """A memory-mapped safetensors file: the header is parsed (and validated) on open, data read on `get`."""

    def __init__(self, path: Path) -> None:
        try:
            self._file: Any = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}"
            ) from None
        self._names: list[str] = list(self._file.keys())  # type: ignore[no-untyped-call]
        self._name_set = frozenset(self._names)

    def keys(self) -> list[str]:
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._name_set

    def shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(name).get_shape())

    def dtype_code(self, name: str) -> str:
        return str(self._file.get_slice(name).get_dtype())

    def get(self, name: str) -> torch.Tensor:
        return self._file.get_tensor(name)  # type: ignore[no-any-return]


class _PickleReader:
    """A torch.save'd dict of tensors, unpickled with weights_only=True, memory-mapped when possible."""

    def __init__(self, path: Path) -> None:
        self._tensors = _load_bin(path)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def dtype_code(self, name: str) -> str:
        return _code_of(self._tensors[name].dtype)

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]


def _code_of(dtype: torch.dtype) -> str:
    """The safetensors code of a torch dtype, or its torch name where it is not a usable one."""
    return next((code for code, usable in USABLE_DTYPES.items() if usable == dtype), str(dtype))


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True; old (pre-zip) files cannot be memory-mapped and are read whole."""
    if TorchVersion(torch.__version__) < SAFE_PICKLE_TORCH:
        raise CheckpointError(
            f"refused to load {path}: reading pickled .bin checkpoints safely needs torch >= "
            f"{SAFE_PICKLE_TORCH} (this is {torch.__version__}, whose weights-only unpickler can be made to "
            "run code, CVE-2025-32434). Upgrade torch, or use a safetensors copy of the checkpoint."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
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


class CheckpointWeights:
    """Lazy, read-only access to the tensors of a checkpoint directory.

    Files are opened on first use and kept open (memory-mapped) until `close()`. Tensors returned by `get` may
    be views of those mappings (private, so writing to them never reaches the file): copy them to keep them.
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

    def __enter__(self) -> CheckpointWeights:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop every open file (and its memory mapping, once no tensor from it is alive)."""
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
        """The tensor's shape, read from the file's header (safetensors) or its mapped pickle (.bin)."""
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
        """The tensor as stored (CPU, stored dtype); possibly a view of the file's memory mapping."""
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
