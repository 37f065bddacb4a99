"""What tests share besides fixtures (conftest.py): the janus-tiny fixture's paths, the example plugin's,
a tuner's fake timer, this CPU's kernel attention backend, the environment of a subprocess that sees a pip
target folder, and `Pause`, which holds a pipeline call at a step."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from janus_plugins.attention.cpu import KernelAttention
from janus_plugins.cpu_kernels import target
from janus_sdk import tuning
from janus_sdk.errors import BackendUnavailableError

if TYPE_CHECKING:
    from janus_sdk.pipeline.decoding import Progress, ProgressCallback
    from janus_sdk.pipeline.janus import JanusPipeline

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
EXAMPLE_PLUGIN = REPO / "plugins" / "example-encoder"
EXAMPLE_DISTRIBUTION = "janus-example-encoder"

Pin = Callable[[str], tuning.Tuner]
"""`pinned(pins)` (conftest.py): the process-wide tuner takes those choices until the test ends."""


def fake_timer(seconds: dict[str, float], calls: list[str] | None = None) -> tuning.Timer:
    """A timer that runs each candidate once and reports the given seconds for it."""

    def timer(candidate: str, run: Callable[[], object], limit: float) -> float:
        run()
        if calls is not None:
            calls.append(candidate)
        return seconds[candidate]

    return timer


def kernel_attention_here() -> KernelAttention:
    """This machine's kernel attention backend (avx2 on x86, neon on ARM64); skips the test where the kernels
    have no build or cannot run."""
    here = target()
    if here is None:
        pytest.skip("the kernels have no build for this CPU")
    attention = KernelAttention(here.isa, here.isa)
    try:
        attention.check(torch.device("cpu"), torch.float32)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    return attention


def env_seeing(site: Path) -> dict[str, str]:
    """The environment of a subprocess that sees what pip installed into the folder `site` (on PYTHONPATH)."""
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


class Pause:
    """Inside the `with` block, the first call of `pipeline.<method>` that reaches progress step `at` waits
    there (in its progress callback, on whichever thread runs it) until the block ends: what a server's client
    sees mid-run, and what Stop or a disconnect does then, no longer depends on the machine's speed."""

    def __init__(self, pipeline: JanusPipeline, method: str, at: int) -> None:
        self.pipeline, self.method, self.at = pipeline, method, at
        self._reached, self._go = threading.Event(), threading.Event()
        self._ask: Callable[[], bool | None] = lambda: True

    def wait_reached(self) -> None:
        """Return once the held call waits at step `at`."""
        assert self._reached.wait(60), f"the call never reached step {self.at} of {self.method}"

    def cancelled_by_server(self) -> bool:
        """Whether the held call's own progress callback now says stop (its job was cancelled)."""
        return self._ask() is False

    def __enter__(self) -> Pause:
        original: Callable[..., Any] = getattr(self.pipeline, self.method)

        def held(*args: Any, on_step: ProgressCallback, **kwargs: Any) -> Any:
            def step(progress: Progress) -> bool | None:
                if progress.step == self.at and not self._reached.is_set():
                    self._ask = lambda: on_step(progress)
                    self._reached.set()
                    self._go.wait(60)
                return on_step(progress)

            return original(*args, on_step=step, **kwargs)

        setattr(self.pipeline, self.method, held)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._go.set()
        delattr(self.pipeline, self.method)
