"""POST /v1/images/generations: images as base64 PNG, or (Janus extra) streamed with progress as they finish.

Images are sampled in groups of the server's `image_batch` from one generator, so a seed gives the same images
as `pipeline.generate_images(prompt, n=n, max_batch=image_batch, seed=seed)`, streamed or not.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterable

import torch
from fastapi import APIRouter, Request, Response
from PIL import Image

from janus_adapters.server.errors import APIError
from janus_adapters.server.schemas import ImageData, ImageGenerationRequest, ImagesResponse
from janus_adapters.server.state import ServerState, sse, sse_error
from janus_adapters.server.worker import Done, Event, Failed, Job, Picture, Step
from janus_sdk.pipeline.decoding import Progress, ProgressCallback

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
        pipeline, batch = state.pipeline, state.settings.image_batch

        def work(job: Job) -> None:
            generator = torch.Generator(device=pipeline.device)
            if body.seed is None:
                generator.seed()
            else:
                generator.manual_seed(body.seed)
            for first in range(0, body.n, batch):
                count = min(batch, body.n - first)
                images = pipeline.generate_images(
                    body.prompt,
                    n=count,
                    seed=generator,
                    on_step=_reporter(job, first, count, body.n, body.stream),
                    **settings,
                )
                for index, image in enumerate(images, start=first):
                    job.emit(Picture(index, _png(image), image.size))

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


def _reporter(job: Job, first: int, count: int, n: int, stream: bool) -> ProgressCallback:
    """on_step for one group of images: cancellation always, progress events (throttled) when streaming."""

    def on_step(progress: Progress) -> bool:
        every = max(1, progress.total // PROGRESS_EVENTS)
        if stream and (progress.step % every == 0 or progress.step in (1, progress.total)):
            job.emit(Step(first, count, n, progress.step, progress.total))
        return job.on_step(progress)

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
