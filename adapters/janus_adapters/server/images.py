"""POST /v1/images/generations: images as base64 PNG, or (Janus extra) streamed with progress as they finish.

Concurrent requests with the same settings are sampled together, up to the server's `image_batch` images per
forward pass. Every image has a seed of its own, so what shares its batch does not change it: image i of a
request with seed s is `pipeline.generate_images(prompt, n=1, seed=s + i)`'s, streamed or not, alone or
batched (a request without a seed gets a random one).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from PIL import Image

from janus_adapters.server.errors import APIError
from janus_adapters.server.schemas import ImageData, ImageGenerationRequest, ImagesResponse
from janus_adapters.server.state import ServerState, request_seed, sse, sse_error
from janus_adapters.server.worker import Batch, Done, Event, Failed, Job, Outcome, Picture, Step
from janus_sdk.errors import GenerationCancelled
from janus_sdk.pipeline.decoding import Progress, ProgressCallback
from janus_sdk.pipeline.janus import JanusPipeline

SETTINGS = {"guidance", "cfg_weight", "sampler", "temperature", "top_k", "top_p"}
"""The request fields that are ImageGenerationConfig settings."""
PROGRESS_EVENTS = 50
"""About how many progress events a streamed group of images sends."""


def images_router(state: ServerState) -> APIRouter:
    """The image generation endpoint, bound to the server's state."""
    router = APIRouter()
    side = int(state.pipeline.components["image_tokenizer"].image_size)
    native_size = f"{side}x{side}"

    @router.post(
        "/v1/images/generations",
        response_model=ImagesResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "JSON, or server-sent progress and image events when stream is true",
            }
        },
    )
    async def generations(body: ImageGenerationRequest, request: Request) -> ImagesResponse | Response:
        """Generate `n` images for a prompt; extras: guidance, cfg_weight, sampler, temperature, top_k, top_p,
        seed, stream."""
        state.check_model(body.model)
        _check(body, state.settings.max_n, native_size)
        settings = body.model_dump(include=SETTINGS, exclude_none=True)
        first_seed = request_seed(body.seed, state.pipeline.config.image_generation.seed)
        seeds = [(first_seed + i) % 2**64 for i in range(body.n)]
        work = Batch(
            key=("images", json.dumps(settings, sort_keys=True)),
            rows=body.n,
            budget=state.settings.image_batch,
            item=_Request(body.prompt, seeds, body.stream),
            run=_ImageRun(state.pipeline, settings, state.settings.image_batch),
        )
        job = state.submit(work)
        first = await state.next_event(job, request)
        if body.stream:
            return state.stream(job, first, _stream_events)
        pictures = sorted(
            (e for e in await state.collect(job, request, first) if isinstance(e, Picture)),
            key=lambda p: p.index,
        )
        return ImagesResponse(
            created=int(time.time()),
            size=native_size,
            data=[ImageData(b64_json=_b64(p.png)) for p in pictures],
        )

    return router


@dataclass(frozen=True)
class _Request:
    """One request's part of a batch: its prompt, a seed per image, whether it streams progress."""

    prompt: str
    seeds: list[int]
    stream: bool


class _ImageRun:
    """Runs a group of image requests of one settings: their images in chunks of at most `budget`, each
    request told of its own images' progress and sent each image as it is decoded."""

    def __init__(self, pipeline: JanusPipeline, settings: dict[str, Any], budget: int) -> None:
        self.pipeline, self.settings, self.budget = pipeline, settings, budget

    def __call__(self, jobs: list[Job]) -> list[Outcome]:
        images = [(job, index) for job in jobs for index in range(len(_request(job).seeds))]
        for first in range(0, len(images), self.budget):
            chunk = images[first : first + self.budget]
            try:
                pictures = self.pipeline.generate_images(
                    [_request(job).prompt for job, _ in chunk],
                    seed=[_request(job).seeds[index] for job, index in chunk],
                    on_step=_reporter(chunk),
                    **self.settings,
                )
            except GenerationCancelled:  # every request of the chunk was cancelled; go on with the rest
                continue
            for (job, index), picture in zip(chunk, pictures, strict=True):
                job.emit(Picture(index, _png(picture), picture.size))
        cancelled = Failed(GenerationCancelled("cancelled while it ran"))
        return [cancelled if job.cancelled.is_set() else Done(None) for job in jobs]


def _request(job: Job) -> _Request:
    assert isinstance(job.work, Batch)
    request: _Request = job.work.item
    return request


def _check(body: ImageGenerationRequest, max_n: int, native_size: str) -> None:
    if body.response_format == "url":
        raise APIError(
            400,
            "response_format 'url' is not supported: this server keeps no image files to link to; "
            "use 'b64_json'",
            param="response_format",
            code="unsupported_value",
        )
    if body.n > max_n:
        raise APIError(
            400,
            f"n is {body.n}, more than this server's limit of {max_n} images per request",
            param="n",
            code="limit_exceeded",
        )
    if body.size not in (None, "auto", native_size):
        raise APIError(
            400,
            f"size {body.size!r} is not available: this model makes {native_size} images; "
            f"omit size or send 'auto' or '{native_size}'",
            param="size",
            code="unsupported_value",
        )


def _reporter(chunk: list[tuple[Job, int]]) -> ProgressCallback:
    """on_step for a chunk of images: each request streaming progress hears of its own images in the chunk
    (throttled); says stop once every request of the chunk was cancelled."""
    jobs = list(dict.fromkeys(job for job, _ in chunk))
    spans = {job: [index for owner, index in chunk if owner is job] for job in jobs}

    def on_step(progress: Progress) -> bool:
        every = max(1, progress.total // PROGRESS_EVENTS)
        due = progress.step % every == 0 or progress.step in (1, progress.total)
        going = False
        for job in jobs:
            going |= job.on_step(progress)
            span = spans[job]
            if due and _request(job).stream:
                job.emit(Step(span[0], len(span), len(_request(job).seeds), progress.step, progress.total))
        return going

    return on_step


def _stream_events(event: Event) -> Iterable[str]:
    if isinstance(event, Step):
        yield sse(
            {
                "type": "janus.progress",
                "finished": event.finished,
                "running": event.running,
                "n": event.n,
                "step": event.step,
                "total": event.total,
            }
        )
    elif isinstance(event, Picture):
        yield sse(
            {
                "type": "image_generation.completed",
                "index": event.index,
                "b64_json": _b64(event.png),
                "output_format": "png",
                "size": f"{event.size[0]}x{event.size[1]}",
            }
        )
    elif isinstance(event, Done):
        yield sse("[DONE]")
    elif isinstance(event, Failed):
        yield sse_error(event.error)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
