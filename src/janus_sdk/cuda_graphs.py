"""Capturing a call as a CUDA graph, so that a step of a few hundred small kernels costs one launch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def capture(run: Callable[[], T], device: torch.device) -> tuple[torch.cuda.CUDAGraph, T]:
    """Runs `run` twice on a side stream (allocations, autotuning and lazy initialisation must happen before
    capture), then captures one call. Returns the graph and the captured call's output, which every replay
    writes anew: `run` must read its inputs from tensors the caller refills before each replay."""
    side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = run()
    return graph, output
