"""Materialising a module built on the meta device from checkpoint tensors, one tensor at a time.

Components are built under `with torch.device("meta")` (no memory, no random init), then `load_state_into`
checks that the checkpoint fits (one error listing every missing, unexpected, mis-shaped or mis-typed tensor),
converts each tensor to the target dtype (floating tensors only: integer and bool tensors keep their stored
dtype) and device, and assigns it with `load_state_dict(assign=True)`. A tensor read in the target dtype and
device becomes the parameter itself; one that is converted is dropped as soon as its converted copy exists, so
the weights are held once (plus one tensor in flight).

Tensors that are not in the checkpoint (non-persistent buffers such as rotary `inv_freq`, computed at build
time) need care, because a meta build leaves them without data. After the weights are assigned:

1. a non-persistent buffer that was created on a real device (e.g. built under `with torch.device("cpu")`) is
   moved to the target device, keeping its dtype (such tables are float32 on purpose);
2. every submodule with a `rebuild_buffers(device)` method (the `RebuildsBuffers` protocol) gets it called,
   parents before children, to recreate what it computes on the target device;
3. anything still on the meta device is a plugin bug and raises PluginError naming it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from janus_sdk.checkpoint.layouts import WeightSource
from janus_sdk.errors import CheckpointError, ConfigError, PluginError

#: At most this many names are listed per kind of mismatch; the rest are counted.
MAX_LISTED = 10


@runtime_checkable
class RebuildsBuffers(Protocol):
    """A module that computes buffers (not stored in checkpoints) and recreates them after loading."""

    def rebuild_buffers(self, device: torch.device) -> None: ...


def load_state_into(
    module: nn.Module,
    weights: WeightSource,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    prefix: str = "",
    ignore: Iterable[str] = (),
) -> nn.Module:
    """Fill `module` (usually built on meta) from the checkpoint tensors named `prefix + <state_dict key>`.

    Checkpoint tensors outside `prefix` belong to other components and are not looked at. `ignore` holds
    checkpoint names (fnmatch patterns allowed) that may exist without a counterpart in the module, e.g. a
    training-only buffer a config chose not to build; Janus-Pro checkpoints need none. Returns `module`.
    """
    if not dtype.is_floating_point:
        raise ConfigError(f"model dtype must be a floating-point type, got {dtype}")
    device = torch.device(device)
    patterns = tuple(ignore)
    expected = module.state_dict(keep_vars=True)
    available = {
        name[len(prefix) :]: name
        for name in weights
        if name.startswith(prefix) and not any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }
    _check_fit(module, weights, expected, available, prefix)
    state = {key: _materialize(weights.get(available[key]), dtype, device) for key in expected}
    module.load_state_dict(state, strict=True, assign=True)
    _place_computed_tensors(module, persistent=set(expected), device=device)
    return module


def _materialize(stored: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The stored tensor as the module holds it: contiguous, on `device`, floating ones in `dtype`. A tensor
    that already is all that is kept as it is (`WeightSource.get` hands over tensors the caller may keep), so
    the weights are never copied twice."""
    target = dtype if stored.is_floating_point() else stored.dtype
    return stored.to(device=device, dtype=target, memory_format=torch.contiguous_format)


def _check_fit(
    module: nn.Module,
    weights: WeightSource,
    expected: Mapping[str, torch.Tensor],
    available: Mapping[str, str],
    prefix: str,
) -> None:
    """Raise one CheckpointError describing every way the checkpoint slice differs from the module; each
    tensor found in the checkpoint is named with the file that holds it."""
    missing = [f"{prefix}{key} {list(t.shape)}" for key, t in expected.items() if key not in available]
    unexpected = [
        f"{name} {list(weights.shape_of(name))} (in {weights.file_of(name).name})"
        for key, name in available.items()
        if key not in expected
    ]
    misshaped, mistyped = [], []
    for key, tensor in expected.items():
        if key not in available:
            continue
        name = available[key]
        where = f"(in {weights.file_of(name).name})"
        found = weights.shape_of(name)
        if found != tuple(tensor.shape):
            misshaped.append(
                f"{name}: model expects {list(tensor.shape)}, checkpoint has {list(found)} {where}"
            )
        stored = weights.dtype_of(name)
        if stored.is_floating_point != tensor.is_floating_point():
            mistyped.append(f"{name}: model expects {tensor.dtype}, checkpoint has {stored} {where}")
    sections = [
        _section("missing from the checkpoint", missing),
        _section("in the checkpoint but not in the model", unexpected),
        _section("with the wrong shape", misshaped),
        _section("with the wrong kind of dtype (floating vs integer)", mistyped),
    ]
    if any(sections):
        where = f" (checkpoint names starting with {prefix!r})" if prefix else ""
        raise CheckpointError(
            f"checkpoint {weights.directory} does not fit {type(module).__name__}{where}:\n"
            + "\n".join(s for s in sections if s)
            + "\nThe component's config probably does not match this checkpoint (sizes, layer counts, ...)."
        )


def _section(title: str, lines: list[str]) -> str:
    if not lines:
        return ""
    shown = [f"    {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"    ... and {len(lines) - MAX_LISTED} more")
    return f"  {len(lines)} tensor(s) {title}:\n" + "\n".join(shown)


def _place_computed_tensors(module: nn.Module, *, persistent: set[str], device: torch.device) -> None:
    """Move non-persistent buffers to `device`, let modules rebuild theirs, refuse leftover meta ones."""
    for owner, sub in module.named_modules():
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if (f"{owner}.{name}" if owner else name) not in persistent and not buffer.is_meta:
                setattr(sub, name, buffer.to(device))
    for sub in module.modules():
        if isinstance(sub, RebuildsBuffers):
            sub.rebuild_buffers(device)
    leftover = [name for name, t in chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if leftover:
        raise PluginError(
            f"{type(module).__name__} still has tensors on the meta device after loading: "
            f"{', '.join(leftover[:MAX_LISTED])}{' ...' if len(leftover) > MAX_LISTED else ''}. Tensors "
            "that are not in the checkpoint must be built on a real device (under "
            "`with torch.device('cpu')`) or recreated by a `rebuild_buffers(device)` method of their module."
        )
