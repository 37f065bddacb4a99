"""The memory-bandwidth floor of a decode step: bytes that must be read once per step / sustained bandwidth.

A decode step reads every weight of the decoder layers, the final norm and the head once, plus the KV cache up
to the current position; at batch sizes this small nothing else comes close (activations are KiB). Prefill and
VQ decoding are compute-bound and get no floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from measure import synchronize

GIB = 1 << 30


def _best_seconds(run: Any, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def _copy_and_read_seconds(device: torch.device, nbytes: int, repeats: int) -> tuple[float, float]:
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    reads: tuple[Callable[[], object], ...] = (src.sum, lambda: torch.dot(src, src), src.amax)
    for run in (lambda: dst.copy_(src), *reads):
        run()
    copy = _best_seconds(lambda: dst.copy_(src), device, repeats)
    return copy, min(_best_seconds(run, device, repeats) for run in reads)


def measure_bandwidth(device: torch.device, nbytes: int = GIB, repeats: int = 5) -> dict[str, float]:
    """Sustained bandwidth in GB/s (1e9 bytes), best of `repeats` (after one untimed pass):

    - read_gbps: the fastest of three read-only passes over `nbytes` of float32 (sum, dot product with itself,
      max), the figure the floor uses: a decode step only reads its weights;
    - copy_gbps: a `nbytes` tensor copy, counting read + write (2 * nbytes per copy), for comparison only: on
      the 2-core Zen 4 VM of bench/RESULTS.md a copy moved 39 GB/s while no read-only pass passed 33 (writes
      take their own path to memory), so a floor from the copy would be one that no reader reaches;
    - floor_gbps: read_gbps.
    """
    copy, read = _copy_and_read_seconds(device, nbytes, repeats)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the buffers back before the next worker starts
    copy_gbps, read_gbps = 2 * nbytes / copy / 1e9, nbytes / read / 1e9
    return {"copy_gbps": copy_gbps, "read_gbps": read_gbps, "floor_gbps": read_gbps}


def image_step_modules(model: Any) -> tuple[nn.Module, ...]:
    """What a text-to-image decode step of a JanusModel reads once: decoder layers, final norm, gen head and
    gen aligner."""
    llm = model.language_model
    return llm.model.layers, llm.model.norm, model.gen_head, model.gen_aligner


def text_step_modules(model: Any) -> tuple[nn.Module, ...]:
    """What an understanding decode step of a JanusModel reads once: decoder layers, final norm, LM head."""
    llm = model.language_model
    return llm.model.layers, llm.model.norm, llm.lm_head


def largest_tensors(model: nn.Module, nbytes: int = GIB // 2) -> list[Tensor]:
    """The model's largest parameters, together at least `nbytes` where the model holds that much (the
    embedding table and the LM head of a Janus model): memory to read in place, without allocating any."""
    chosen: list[Tensor] = []
    held = 0
    for tensor in sorted(model.parameters(), key=lambda t: t.numel() * t.element_size(), reverse=True):
        if held >= nbytes:
            break
        chosen.append(tensor)
        held += tensor.numel() * tensor.element_size()
    return chosen


def read_in_place_gbps(tensors: list[Tensor], device: torch.device, repeats: int = 3) -> float:
    """GB/s of the fastest pass that reads `tensors` once where they lie (each seen as float32, the three
    reductions of `measure_bandwidth`, best of `repeats`): the memory's read speed seconds before or after a
    workload, where a shared machine's bandwidth may have moved in the minutes between the run's other
    readings. Few large tensors (`largest_tensors`): a pass over a decode step's ~170 weights, one call each,
    read ~10% slower than one over a single buffer here, the calls' own cost."""
    words = [_as_float32(t) for t in tensors]
    reductions: tuple[Callable[[Tensor], object], ...] = (torch.sum, lambda w: torch.dot(w, w), torch.amax)

    def read_with(reduce: Callable[[Tensor], object]) -> float:
        return _best_seconds(lambda: [reduce(w) for w in words], device, repeats)

    return sum(w.numel() * 4 for w in words) / min(map(read_with, reductions)) / 1e9


def module_bytes(modules: tuple[nn.Module, ...]) -> int:
    """Bytes of the modules' parameters as they are held (int8 weights and their scales included)."""
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def _as_float32(tensor: Tensor) -> Tensor:
    """The tensor's bytes (whole 4-byte words of them) as a flat float32 view: any dtype, int8 included
    (a value that is not a number reads as fast, and the fastest of the passes counts)."""
    flat = tensor.detach().reshape(-1).view(torch.uint8)
    return flat[: flat.numel() // 4 * 4].view(torch.float32)


def _numel(*modules: nn.Module) -> int:
    return sum(t.numel() for m in modules for t in m.parameters())


@dataclass(frozen=True)
class StepBytes:
    """Bytes one decode step reads: weights once, plus K and V of every cached position of every row."""

    image_weights: int  # decoder layers + final norm + gen head + gen aligner (text-to-image)
    text_weights: int  # decoder layers + final norm + lm head (understanding)
    kv_per_position: int  # K + V, all layers, one row, one position
    total_weights: int  # every weight of the model (the memory budget)

    @classmethod
    def of(cls, model: Any, dtype: torch.dtype) -> StepBytes:
        """From a JanusModel (meta-built is enough: only shapes are read), at `dtype`."""
        scale = torch.empty((), dtype=dtype).element_size()
        cfg = model.language_model.config
        kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        return cls(
            image_weights=_numel(*image_step_modules(model)) * scale,
            text_weights=_numel(*text_step_modules(model)) * scale,
            kv_per_position=2 * cfg.num_hidden_layers * kv_heads * head_dim * scale,
            total_weights=sum(t.numel() for t in model.state_dict().values()) * scale,
        )

    def image_step(self, position: int, rows: int) -> int:
        """Bytes of a text-to-image decode step attending over `position` cached positions."""
        return self.image_weights + self.kv(position, rows)

    def text_step(self, position: int) -> int:
        """Bytes of an understanding decode step (one row) attending over `position` cached positions."""
        return self.text_weights + self.kv(position, 1)

    def kv(self, position: int, rows: int) -> int:
        """Bytes of K and V a decode step of `rows` rows reads at `position` cached positions."""
        return self.kv_per_position * rows * position

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
