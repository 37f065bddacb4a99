"""The backbone's KV cache: preallocated (static), written in place position by position."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

CapturedStep = Callable[[Tensor, int], Tensor]
"""A decode step captured for one cache: (embeddings [rows, 1, hidden], position) -> hidden states."""


@dataclass(eq=False)
class StaticKVCache:
    """Keys and values of every layer, [layers, B, kv_heads, max_length, head_dim], written by position;
    the rows' left padding, if any (`DeepSeekLLM.new_cache`); where decode steps are captured (CUDA), the
    captured step that writes into them (`captured.DecodeGraphs`)."""

    keys: Tensor
    values: Tensor
    padding: Tensor | None = None
    captured: CapturedStep | None = field(default=None, repr=False)

    @property
    def max_length(self) -> int:
        return int(self.keys.shape[3])
