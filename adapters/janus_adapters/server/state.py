"""What every endpoint shares: the pipeline, the settings, the worker; and each job's steps."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from janus_adapters.server.errors import CLIENT_CLOSED, APIError, from_exception
from janus_adapters.server.identity import ServedModel
from janus_adapters.server.settings import ServerSettings
from janus_adapters.server.worker import Batch, ClientGone, Done, Event, Failed, Job, QueueFull, Worker
from janus_sdk.pipeline.janus import JanusPipeline


@dataclass
class ServerState:
    """The served model and its queue."""

    pipeline: JanusPipeline
    model: ServedModel
    settings: ServerSettings
    worker: Worker
    created: int = field(default_factory=lambda: int(time.time()))

    def check_model(self, model: str | None) -> None:
        """404 unless `model` is the served model's id (None means the served model)."""
        if model is not None and model != self.model.name:
            raise APIError(
                404,
                f"the model {model!r} does not exist; this server serves "
                f"{self.model.name!r} (see GET /v1/models)",
                type="not_found_error",
                param="model",
                code="model_not_found",
            )

    def submit(self, work: Callable[[Job], Any] | Batch) -> Job:
        """Queue `work` (alone, or a Batch to share with others) for the worker; 429 with Retry-After when
        the queue is full."""
        job = Job(work, asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except QueueFull as exc:
            raise APIError(
                429,
                f"the server is busy ({self.worker.max_queue} requests are waiting); retry in "
                f"{exc.retry_after} s",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        return job

    async def next_event(self, job: Job, request: Request) -> Event:
        """Wait (queue time included) for the job's next event; a failure becomes the HTTP error answer."""
        try:
            event = await job.next_event(request, self.settings.disconnect_poll_s)
        except ClientGone:
            raise APIError(CLIENT_CLOSED, "the client closed the request", code="cancelled") from None
        except BaseException:
            job.cancel()
            raise
        if isinstance(event, Failed):
            raise from_exception(event.error)
        return event

    async def collect(self, job: Job, request: Request, first: Event) -> list[Event]:
        """Every event of a job up to Done (for non-streamed answers); cancels it if the client goes away."""
        events = [first]
        while not isinstance(events[-1], Done):
            events.append(await self.next_event(job, request))
        job.close()
        return events

    def stream(self, job: Job, first: Event, render: Callable[[Event], Iterable[str]]) -> StreamingResponse:
        """Server-sent events, `render` making the lines of each event; a client leaving cancels the job."""

        async def relay() -> AsyncIterator[str]:
            event = first
            try:
                while True:
                    for chunk in render(event):
                        yield chunk
                    if isinstance(event, Done | Failed):
                        return
                    event = await job.next_event(None, self.settings.disconnect_poll_s)
            finally:  # normal end, or cancelled by Starlette when the client disconnected
                job.cancel()
                job.close()

        return StreamingResponse(
            relay(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def request_seed(given: int | None, configured: int | None) -> int:
    """A request's seed (an image request's first): its own, else the pipeline config's, else a random one."""
    if given is not None:
        return given
    return configured if configured is not None else secrets.randbits(63)


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event carrying JSON (or a literal such as [DONE])."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def sse_error(error: BaseException) -> str:
    """A failure after the stream began: OpenAI's error object as an event (OpenAI clients raise on it)."""
    return sse(from_exception(error).body())
