"""One model, many clients: a bounded queue of jobs run in arrival order by a single worker thread.

A job is a function run on the worker; it reports what it produces (text pieces, progress, images) as events
that the request handler reads on the event loop. Every job ends with exactly one terminal event (`Done` or
`Failed`), also when it was cancelled or the server shuts down, so every accepted request gets exactly one
answer. Cancelling a job (its client went away) skips it if it is still queued, or makes its next `on_step`
return False, which stops the pipeline with GenerationCancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from janus_sdk.errors import GenerationCancelled
from janus_sdk.pipeline.decoding import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Text:
    """A piece of a chat answer."""

    text: str


@dataclass(frozen=True)
class Step:
    """Progress of the group of `running` images after the first `finished` ones, out of `n`."""

    finished: int
    running: int
    n: int
    step: int
    total: int


@dataclass(frozen=True)
class Picture:
    """A finished image, PNG-encoded."""

    index: int
    png: bytes
    size: tuple[int, int]


@dataclass(frozen=True)
class Done:
    """The job finished; `result` is what its work function returned."""

    result: Any


@dataclass(frozen=True)
class Failed:
    """The job raised (GenerationCancelled when it was cancelled)."""

    error: BaseException


Event = Text | Step | Picture | Done | Failed


class QueueFull(Exception):
    """The queue holds `max_queue` waiting jobs already."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client disconnected while its job was waiting or running; the job is cancelled."""


class Job:
    """One request's work and the channel its events come back through."""

    def __init__(self, work: Callable[[Job], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.work = work
        self.cancelled = threading.Event()
        self.last_progress: Progress | None = None
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._getter: asyncio.Task[Event] | None = None

    # -- worker side -----------------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Hand an event to the request handler (thread-safe; dropped once the server's loop is gone)."""
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def on_step(self, progress: Progress) -> bool:
        """The pipeline's progress callback: remembers where it is and says False once cancelled."""
        self.last_progress = progress
        return not self.cancelled.is_set()

    # -- handler side ----------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop this job as soon as possible (no-op once it has finished)."""
        self.cancelled.set()

    async def next_event(self, request: Request | None = None, poll_s: float = 0.25) -> Event:
        """The next event; while waiting, checks every `poll_s` whether `request`'s client went away."""
        if self._getter is None:
            self._getter = asyncio.ensure_future(self._events.get())
        while True:  # the getter survives timeouts, so no event is ever lost
            done, _ = await asyncio.wait({self._getter}, timeout=poll_s)
            if done:
                event, self._getter = self._getter.result(), None
                return event
            if request is not None and await request.is_disconnected():
                self.cancel()
                raise ClientGone

    def close(self) -> None:
        """Drop the pending event getter (the handler stops listening)."""
        if self._getter is not None:
            self._getter.cancel()
            self._getter = None


@dataclass
class Stats:
    """Counters shown by /health."""

    accepted: int = 0
    rejected: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class Worker:
    """A single thread running queued jobs in order; `submit` refuses when `max_queue` jobs wait already."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.stats = Stats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running: Job | None = None
        self._mean_seconds = 1.0
        self._thread = threading.Thread(target=self._loop, name="janus-worker", daemon=True)
        self._closed = False

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFull with a Retry-After estimate."""
        with self._lock:
            if self._closed:
                raise QueueFull(retry_after=5)
            if self._waiting >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(retry_after=self._retry_after())
            self._waiting += 1
            self.stats.accepted += 1
        self._queue.put(job)

    def status(self) -> dict[str, Any]:
        """Queue depth and counters."""
        with self._lock:
            return {
                "waiting": self._waiting,
                "running": self._running is not None,
                "max_queue": self.max_queue,
                **vars(self.stats),
            }

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every queued and running job, let the thread finish them off, and stop it."""
        with self._lock:
            self._closed = True
            running = self._running
        if running is not None:
            running.cancel()
        self._queue.put(None)
        self._thread.join(timeout)

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: one average job (at least 1 s, at most a minute)."""
        return max(1, min(60, math.ceil(self._mean_seconds)))

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._drain()
                return
            with self._lock:
                self._waiting -= 1
                self._running = job
                if self._closed:
                    job.cancel()
            started = time.perf_counter()
            event = self._run(job)
            with self._lock:
                self._running = None
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.perf_counter() - started)
                counter = _outcome(event)
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            job.emit(event)

    @staticmethod
    def _run(job: Job) -> Done | Failed:
        if job.cancelled.is_set():
            return Failed(GenerationCancelled("cancelled before it started"))
        try:
            return Done(job.work(job))
        except Exception as exc:  # every failure becomes the job's answer; the worker never dies
            if not isinstance(exc, GenerationCancelled):
                log.debug("job failed", exc_info=exc)
            return Failed(exc)

    def _drain(self) -> None:
        """After close: answer jobs still queued (they were submitted before the close) as cancelled."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                with self._lock:
                    self._waiting -= 1
                    self.stats.cancelled += 1
                job.emit(Failed(GenerationCancelled("the server is shutting down")))


def _outcome(event: Done | Failed) -> str:
    """The Stats counter a finished job adds to."""
    if isinstance(event, Done):
        return "completed"
    return "cancelled" if isinstance(event.error, GenerationCancelled) else "failed"
