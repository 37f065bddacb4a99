"""The workloads: text-to-image with CFG, understanding (prefill + decode), VQ decode. Each runs once untimed
(warm-up: allocator, kernels, lazy init), then once timed; results are plain dicts for the JSON file."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

from measure import StepClock, edge_medians, synchronize
from systems import NUM_IMAGE_TOKENS, System

WARMUP_TOKENS = 2  # prefill + one decode step


def _timed(device: torch.device, run: Any, clock: StepClock | None) -> tuple[float, list[float]]:
    clock = clock or StepClock(device)
    clock.start()
    run(clock)
    total = clock.stop()
    return total, clock.steps()


def _summary(total: float, steps: list[float], tokens: int) -> dict[str, Any]:
    if len(steps) != tokens:
        raise RuntimeError(f"the system produced {len(steps)} tokens where {tokens} were asked for")
    start, end, k = edge_medians(steps)
    return {
        "total_s": total,
        "first_step_s": steps[0],
        "start_ms": start * 1e3,
        "end_ms": end * 1e3,
        "window": k,
        "steps_ms": [s * 1e3 for s in steps],
    }


def text_to_image(
    system: System,
    device: torch.device,
    prompt_ids: list[int],
    n: int,
    tokens: int,
    clock: StepClock | None = None,
) -> dict[str, Any]:
    """n images (2n rows), `tokens` image tokens each (576 = a whole image); the timed run on `clock`
    (default: a StepClock)."""
    with torch.inference_mode():
        system.text_to_image(prompt_ids, n, min(WARMUP_TOKENS, tokens), StepClock(device))
        total, steps = _timed(device, lambda c: system.text_to_image(prompt_ids, n, tokens, c), clock)
    return {
        "n": n,
        "rows": 2 * n,
        "prompt_len": len(prompt_ids),
        "tokens": tokens,
        "s_per_image": total / n,
        **_summary(total, steps, tokens),
    }


def understand(
    system: System, device: torch.device, embeds: Tensor, tokens: int, clock: StepClock | None = None
) -> dict[str, Any]:
    """Prefill of the one-image prompt `embeds` [1, T, hidden], then `tokens` greedy tokens; the timed run on
    `clock` (default: a StepClock). The warm-up prefills the whole prompt too: what a system measures or
    sets up on first use at that length (ours: the prompt attention's measured choice) stays out of the timed
    run."""
    with torch.inference_mode():
        system.understand(embeds, min(WARMUP_TOKENS, tokens), StepClock(device))
        total, steps = _timed(device, lambda c: system.understand(embeds, tokens, c), clock)
    prompt_len = embeds.shape[1]
    summary = _summary(total, steps, tokens)
    decode = steps[1:]
    return {
        "prompt_len": prompt_len,
        "tokens": tokens,
        "prefill_s": steps[0],
        "prefill_tok_s": prompt_len / steps[0],
        "decode_ms": statistics.median(decode) * 1e3 if decode else None,
        "decode_tok_s": len(decode) / sum(decode) if decode else None,
        **summary,
    }


class _OverBudget(Exception):
    """Raised from a convolution's pre-hook when a VQ decode has run past its time budget."""


def vq_decode(
    system: System, device: torch.device, codes: Tensor, repeats: int, budget_s: float
) -> dict[str, Any] | None:
    """Codes [n, 576] -> n 384x384 images in one call; best and median of `repeats` timed runs after a warm-up
    one.

    A decode still running after `budget_s` seconds (a bfloat16 convolution on a CPU without native bfloat16
    can take minutes) is stopped at its next convolution: the result then says how far it got, a lower bound.
    """
    if codes.shape[1] != NUM_IMAGE_TOKENS:
        raise ValueError(f"VQ decode takes {NUM_IMAGE_TOKENS} codes per image, got {codes.shape[1]}")
    convs = [m for m in system.module.modules() if isinstance(m, nn.Conv2d)]
    done, start = 0, time.perf_counter()

    def check(_: nn.Module, __: Any) -> None:
        nonlocal done
        if time.perf_counter() - start > budget_s:
            raise _OverBudget
        done += 1

    handles = [conv.register_forward_pre_hook(check) for conv in convs]
    times: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(1 + repeats):
                synchronize(device)
                done, start = 0, time.perf_counter()
                if system.vq_decode(codes) is None:
                    return None
                synchronize(device)
                if i:
                    times.append(time.perf_counter() - start)
    except _OverBudget:
        return {
            "images": codes.shape[0],
            "stopped_after_s": time.perf_counter() - start,
            "convolutions_run": done,
            "convolutions": len(convs),
            "warm_up": not times,
        }
    finally:
        for handle in handles:
            handle.remove()
    return {
        "images": codes.shape[0],
        "best_s": min(times),
        "median_s": statistics.median(times),
        "times_s": times,
    }
