"""Clocks and memory probes shared by every workload.

Step times on CUDA come from events recorded in the stream (read after one final synchronize), so timing a
step never stalls the host and the loops run as they would untimed; on CPU they come from time.perf_counter.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Wall time of one run and the time of each of its steps (start -> first mark, then mark -> mark)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._marks: list[float] = []
        self._events: list[torch.cuda.Event] = []
        self._t0 = self._t1 = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        if self._cuda:
            self._events = [torch.cuda.Event(enable_timing=True)]  # type: ignore[no-untyped-call]
            self._events[0].record()

    def mark(self) -> None:
        """Called by the system under test once per generated token (or other unit of work)."""
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            self._events.append(event)
        else:
            self._marks.append(time.perf_counter())

    def stop(self) -> float:
        """Seconds from start() to now, after all queued device work is done."""
        synchronize(self.device)
        self._t1 = time.perf_counter()
        return self._t1 - self._t0

    def steps(self) -> list[float]:
        """Seconds per step."""
        if self._cuda:
            return [a.elapsed_time(b) / 1e3 for a, b in pairwise(self._events)]
        return [b - a for a, b in pairwise([self._t0, *self._marks])]


class ReadingClock(StepClock):
    """A StepClock that reads the memory between steps (`read()`: GB/s of one pass over weights in place) and
    leaves the readings out of the steps' times: each step then has the bandwidth read just before and just
    after it, where a shared machine's moves by tens of percent within seconds. For a run of its own, not the
    one the peers are compared with: the readings add a pass over the weights read between every two steps."""

    def __init__(self, device: torch.device, read: Callable[[], float]) -> None:
        super().__init__(device)
        self._read = read
        self.readings: list[float] = []  # before step 0, then after each step
        self._steps: list[float] = []
        self._begin = 0.0

    def start(self) -> None:
        self.readings.append(self._read())
        super().start()
        self._begin = self._t0

    def mark(self) -> None:
        synchronize(self.device)
        self._steps.append(time.perf_counter() - self._begin)
        self.readings.append(self._read())
        synchronize(self.device)
        self._begin = time.perf_counter()

    def steps(self) -> list[float]:
        return list(self._steps)


def window(num_steps: int) -> int:
    """How many decode steps the 'start' and 'end' per-token figures each take the median of."""
    return max(1, min(16, (num_steps - 1) // 4))


def edge_medians(steps: list[float]) -> tuple[float, float, int]:
    """(median of the first, median of the last `window` decode steps, window); step 0 (prefill) excluded."""
    decode = steps[1:] or steps
    k = window(len(steps))
    return statistics.median(decode[:k]), statistics.median(decode[-k:]), k


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    Linux: VmHWM of /proc/self/status, the peak of this process image; getrusage's ru_maxrss is no use in a
    child process there, as it keeps the parent's peak across fork + exec."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def cuda_peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
