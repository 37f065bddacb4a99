"""One model, many clients: a bounded queue of jobs run in arrival order by a single worker thread, jobs that
can share a batch run together.

A job is work run on the worker; it reports what it produces (text pieces, progress, images) as events that
the request handler reads on the event loop. Every job ends with exactly one terminal event (`Done` or
`Failed`), also when it was cancelled or the server shuts down, so every accepted request gets exactly one
answer. Cancelling a job (its client went away) skips it if it is still queued, or makes its next `on_step`
return False, which stops the pipeline with GenerationCancelled.

A job with a `Batch` runs together with the jobs of the same key queued with it (those waiting when it
starts, and those arriving within `window_s`), up to its row budget: one forward pass per step for all of
them, which on every device costs far less than one pass each. Should the group fail on one job's input
(InputError, raised before any model work), each job is run alone, so that only the bad one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from janus_sdk.errors import GenerationCancelled, InputError
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
Outcome = Done | Failed


@dataclass(frozen=True)
class Batch:
    """How a job shares a run: jobs of one `key` (the same kind of work with the same settings) run together
    by `run`, at most `budget` rows in all, this job bringing `rows` (its images, or one answer) and `item`
    (its own inputs, for `run`). `run` gets the group in order and returns each job's outcome."""

    key: Hashable
    rows: int
    budget: int
    item: Any
    run: Callable[[list[Job]], list[Outcome]]


class QueueFull(Exception):
    """The queue holds `max_queue` waiting jobs already."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client disconnected while its job was waiting or running; the job is cancelled."""


class Job:
    """One request's work and the channel its events come back through."""

    def __init__(self, work: Callable[[Job], Any] | Batch, loop: asyncio.AbstractEventLoop) -> None:
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
    """A single thread running queued jobs in order (a job with a Batch together with its compatible
    followers); `submit` refuses when `max_queue` jobs wait already."""

    def __init__(self, max_queue: int, window_s: float = 0.0) -> None:
        self.max_queue = max_queue
        self.window_s = window_s
        self.stats = Stats()
        self._pending: deque[Job] = deque()
        self._changed = threading.Condition()
        self._running: list[Job] = []
        self._mean_seconds = 1.0
        self._thread = threading.Thread(target=self._loop, name="janus-worker", daemon=True)
        self._closed = False

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFull with a Retry-After estimate."""
        with self._changed:
            if self._closed:
                raise QueueFull(retry_after=5)
            if len(self._pending) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(retry_after=self._retry_after())
            self.stats.accepted += 1
            self._pending.append(job)
            self._changed.notify_all()

    def status(self) -> dict[str, Any]:
        """Queue depth and counters."""
        with self._changed:
            return {
                "waiting": len(self._pending),
                "running": len(self._running),
                "max_queue": self.max_queue,
                **vars(self.stats),
            }

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every queued and running job, let the thread finish them off, and stop it."""
        with self._changed:
            self._closed = True
            for job in self._running:
                job.cancel()
            self._changed.notify_all()
        self._thread.join(timeout)

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: one average run (at least 1 s, at most a minute)."""
        return max(1, min(60, math.ceil(self._mean_seconds)))

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            started = time.perf_counter()
            outcomes = self._run(group)
            with self._changed:
                self._running = []
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.perf_counter() - started)
                for outcome in outcomes:
                    counter = _outcome(outcome)
                    setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            for job, outcome in zip(group, outcomes, strict=True):
                job.emit(outcome)
        self._drain()

    def _take(self) -> list[Job] | None:
        """The next job and, for a batched one, the jobs that join it (waiting up to window_s for more while
        its budget has room); None once the worker is closed."""
        with self._changed:
            while not self._pending and not self._closed:
                self._changed.wait()
            if self._closed:
                return None
            group = self._running = [self._pending.popleft()]
            first = group[0].work
            if isinstance(first, Batch):
                deadline = time.monotonic() + self.window_s
                while self._join(group, first) < first.budget and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
            return group

    def _join(self, group: list[Job], first: Batch) -> int:
        """Move the queued jobs that fit `first`'s batch into `group`; the rows it holds now."""
        rows = sum(job.work.rows for job in group if isinstance(job.work, Batch))
        for job in list(self._pending):
            work = job.work
            if isinstance(work, Batch) and work.key == first.key and rows + work.rows <= first.budget:
                self._pending.remove(job)
                group.append(job)
                rows += work.rows
        return rows

    @classmethod
    def _run(cls, group: list[Job]) -> list[Outcome]:
        """Each job's outcome: a group through its batch's run (alone, each, if one job's input is bad)."""
        live = [job for job in group if not job.cancelled.is_set()]
        outcomes: dict[Job, Outcome] = {
            job: Failed(GenerationCancelled("cancelled before it started"))
            for job in group
            if job not in live
        }
        if live:
            try:
                work = live[0].work
                ran = work.run(live) if isinstance(work, Batch) else [Done(work(live[0]))]
                outcomes.update(zip(live, ran, strict=True))
            except InputError as exc:
                if len(live) == 1:
                    outcomes[live[0]] = Failed(exc)
                else:
                    outcomes.update((job, cls._run([job])[0]) for job in live)
            except Exception as exc:  # every failure becomes the jobs' answer; the worker never dies
                if not isinstance(exc, GenerationCancelled):
                    log.debug("job failed", exc_info=exc)
                outcomes.update((job, Failed(exc)) for job in live)
        return [outcomes[job] for job in group]

    def _drain(self) -> None:
        """After close: answer jobs still queued (they were submitted before the close) as cancelled."""
        with self._changed:
            left, self._pending = list(self._pending), deque()
            self.stats.cancelled += len(left)
        for job in left:
            job.emit(Failed(GenerationCancelled("the server is shutting down")))


def _outcome(event: Done | Failed) -> str:
    """The Stats counter a finished job adds to."""
    if isinstance(event, Done):
        return "completed"
    return "cancelled" if isinstance(event.error, GenerationCancelled) else "failed"
