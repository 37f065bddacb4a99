"""A checkpoint directory as the SDK sees it, whatever layout it is stored in: the PipelineConfig fields it
implies and its tensors under the official Janus names.

The official layout is built in (`official_layout`); a plugin that understands another layout (e.g. the
transformers `JanusForConditionalGeneration` one) answers the `open_checkpoint_layout` hook with a
`CheckpointLayoutView` whose `weights` translate names and shapes on the fly, so loading stays the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from janus_sdk.checkpoint.weights import open_checkpoint
from janus_sdk.config.official import official_to_pipeline_dict


class WeightSource(Protocol):
    """Read-only, lazy access to named tensors: what `load_state_into` and the converters read through.

    `CheckpointWeights` is one; a layout plugin's view is another (official names over other stored names).
    `get` hands over a tensor the caller may keep: a loaded module holds it as its parameter when its dtype
    and device already fit, so it should be memory of its own rather than a view of a file mapping (whose
    pages would then stay resident beside any converted copies).
    """

    directory: Path

    def keys(self) -> list[str]: ...
    def __contains__(self, name: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    def file_of(self, name: str) -> Path: ...
    def shape_of(self, name: str) -> tuple[int, ...]: ...
    def dtype_of(self, name: str) -> torch.dtype: ...
    def nbytes_of(self, name: str) -> int: ...
    def get(self, name: str) -> torch.Tensor: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class CheckpointLayoutView:
    """One checkpoint directory in official terms.

    `pipeline_dict`: PipelineConfig fields (unvalidated, `checkpoint` included), as
    `official_to_pipeline_dict` gives them for the official layout. `weights`: the tensors under the official
    names and shapes the built-in components expect.
    """

    pipeline_dict: dict[str, Any]
    weights: WeightSource


def official_layout(directory: Path) -> CheckpointLayoutView:
    """The built-in reading of DeepSeek's official layout (config.json with language_config, ...)."""
    return CheckpointLayoutView(official_to_pipeline_dict(directory), open_checkpoint(directory))
