"""Device and dtype policy: turn what a user wrote ("auto", "cuda:1", "bf16", ...) into torch objects, and
refuse combinations that would fail later, deep inside a kernel, with an error saying what to use instead."""

from __future__ import annotations

import torch

from janus_sdk.errors import ConfigError

#: Accepted dtype names (and short aliases) -> dtype; "auto" is resolved per device.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(spec: str | torch.device) -> torch.device:
    """'auto' -> CUDA when this machine has a GPU, else the CPU; anything else must exist on this machine."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec.strip().lower() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (or another torch device name)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} asks for CUDA, but this PyTorch build sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device {spec!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0.."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {spec!r} asks for Apple MPS, which is not available here; use 'cpu' or 'auto'"
        )
    return device


def dtype_name(spec: str | torch.dtype) -> str:
    """The canonical name of a dtype setting: "auto", or the torch name of a supported dtype ("bf16",
    "torch.bfloat16" and torch.bfloat16 all give "bfloat16"); ConfigError listing the valid names
    otherwise."""
    if isinstance(spec, torch.dtype):
        if spec not in DTYPE_NAMES.values():
            raise ConfigError(f"dtype {spec} is not supported for model weights; use {_valid_names()}")
        return str(spec).removeprefix("torch.")
    name = spec.strip().lower().removeprefix("torch.")
    if name == "auto":
        return name
    if name not in DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {spec!r}; use {_valid_names()}")
    return str(DTYPE_NAMES[name]).removeprefix("torch.")


def resolve_dtype(spec: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on a CUDA GPU with native bf16 (else float16), float16 on MPS, float32 elsewhere.

    float16 on the CPU is refused: many CPU kernels have no float16 implementation, and the others are slow.
    """
    name = dtype_name(spec)
    if name == "auto":
        return _auto_dtype(device)
    dtype = DTYPE_NAMES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError(
            "float16 is not supported on the CPU: many CPU operations have no float16 kernels (and the "
            "others are slow); use bfloat16 (half the memory of float32) or float32 (exact) instead"
        )
    return dtype


def _auto_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native_bf16 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _valid_names() -> str:
    return "one of 'auto', " + ", ".join(repr(name) for name in DTYPE_NAMES)
