"""POST /v1/chat/completions: OpenAI chat messages in, a Janus answer out (whole, or streamed as chunks).

Concurrent chats with the same sampling settings are decoded together (up to the server's `chat_batch`),
each with a seed of its own: a request with seed s gets `pipeline.chat(messages=..., seed=s)`'s answer
whatever else shares its batch (one without a seed gets a random one).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from janus_adapters.server.errors import APIError
from janus_adapters.server.inputs import load_image_url
from janus_adapters.server.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ImagePart,
    Usage,
)
from janus_adapters.server.settings import ServerSettings
from janus_adapters.server.state import ServerState, request_seed, sse, sse_error
from janus_adapters.server.worker import Batch, Done, Event, Failed, Job, Outcome, Text
from janus_sdk.errors import GenerationCancelled
from janus_sdk.pipeline.decoding import Progress
from janus_sdk.pipeline.janus import JanusPipeline
from janus_sdk.text_stream import ChatBatchStream

PENALTIES = {"presence_penalty", "frequency_penalty", "repetition_penalty"}
"""The request's penalties, settings of whichever sampler runs."""


def chat_router(state: ServerState) -> APIRouter:
    """The chat endpoint, bound to the server's state."""
    router = APIRouter()

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "JSON, or server-sent chunks when stream is true",
            }
        },
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> ChatCompletion | Response:
        """Answer a conversation (text and data-URI images), optionally streamed as server-sent events."""
        state.check_model(body.model)
        settings = generation_settings(body, state.settings)
        pipeline = state.pipeline
        messages = await run_in_threadpool(
            to_janus_messages, body.messages, state.settings, pipeline.config.processor.image_tag
        )

        limit = settings.pop("max_new_tokens")
        work = Batch(
            key=("chat", json.dumps(settings, sort_keys=True)),
            rows=1,
            budget=state.settings.chat_batch,
            item=_Request(messages, request_seed(body.seed, pipeline.config.generation.seed), limit),
            run=_ChatRun(pipeline, settings),
        )
        job = state.submit(work)
        first = await state.next_event(job, request)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        reply = _Reply(state.model.name, include_usage=include_usage)
        if body.stream:
            return state.stream(job, first, reply.chunks)
        return reply.completion(await state.collect(job, request, first))

    return router


def generation_settings(body: ChatCompletionRequest, limits: ServerSettings) -> dict[str, Any]:
    """OpenAI sampling fields -> GenerationConfig settings.

    temperature 0 means greedy; a positive temperature, or top_p / top_k alone, means sampling (temperature 1
    by default). With none of them the answer is greedy, as in the official Janus inference script. A named
    `sampler` is used as given, temperature / top_p / top_k setting its params of those names; the penalties
    apply to whichever sampler runs.
    """
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"{param} is {max_tokens}, more than this server's limit of {limits.max_tokens}",
            param=param,
            code="limit_exceeded",
        )
    settings: dict[str, Any] = {
        "max_new_tokens": max_tokens or min(limits.default_max_tokens, limits.max_tokens),
        **body.model_dump(include=PENALTIES, exclude_none=True),
    }
    sampling = (body.temperature or 0) > 0 or (
        body.temperature is None and (body.top_p, body.top_k) != (None, None)
    )
    if body.sampler is not None:
        settings.update(
            sampler=body.sampler.model_dump(),
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
        )
    elif sampling:
        settings.update(
            do_sample=True, temperature=body.temperature or 1.0, top_p=body.top_p, top_k=body.top_k
        )
    return settings


def to_janus_messages(messages: list[ChatMessage], limits: ServerSettings, tag: str) -> list[dict[str, Any]]:
    """OpenAI messages -> janus Message dicts, decoding every image (blocking: run it in a thread).

    Images that come before all of a message's text are left for the pipeline to place (the official layout);
    images between text parts are put where they stand, as image tags (`tag`).
    """
    count = sum(
        isinstance(p, ImagePart) for m in messages if not isinstance(m.content, str) for p in m.content
    )
    if count > limits.max_chat_images:
        raise APIError(
            400,
            f"the conversation has {count} images, more than this server's limit of {limits.max_chat_images}",
            param="messages",
            code="limit_exceeded",
        )
    return [_message(m, i, limits, tag) for i, m in enumerate(messages)]


def _message(message: ChatMessage, index: int, limits: ServerSettings, tag: str) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    if isinstance(message.content, str):
        return {"role": role, "content": message.content}
    images: list[Image.Image] = []
    texts: list[str | None] = []  # None marks an image's place
    for j, part in enumerate(message.content):
        if isinstance(part, ImagePart):
            if role != "user":
                raise APIError(
                    400,
                    f"messages[{index}]: only user messages may carry images",
                    param=f"messages[{index}].content[{j}]",
                    code="invalid_value",
                )
            images.append(
                load_image_url(part.image_url.url, limits, f"messages[{index}].content[{j}].image_url")
            )
            texts.append(None)
        else:
            texts.append(part.text)
    first_text = next((k for k, t in enumerate(texts) if t is not None), len(texts))
    if None in texts[first_text:]:  # images between texts: tags where they stand
        content = "\n".join(tag if t is None else t for t in texts)
    else:  # images first (or none): the pipeline puts their tags in front, as the official code does
        content = "\n".join(t for t in texts if t is not None)
    return {"role": role, "content": content, "images": images}


@dataclass(frozen=True)
class _Request:
    """One chat's part of a batch: its conversation, its seed, its token limit."""

    messages: list[dict[str, Any]]
    seed: int
    max_new_tokens: int


class _ChatRun:
    """Decodes a group of chats of one settings together, each request sent its own answer's pieces."""

    def __init__(self, pipeline: JanusPipeline, settings: dict[str, Any]) -> None:
        self.pipeline, self.settings = pipeline, settings

    def __call__(self, jobs: list[Job]) -> list[Outcome]:
        requests = [_request(job) for job in jobs]

        def on_step(progress: Progress) -> bool:
            going = False
            for job in jobs:
                going |= job.on_step(progress)
            return going

        stream = self.pipeline.stream_chat_batch(
            [request.messages for request in requests],
            seed=[request.seed for request in requests],
            max_new_tokens=[request.max_new_tokens for request in requests],
            on_step=on_step,
            **self.settings,
        )
        for index, piece in stream:
            jobs[index].emit(Text(piece))
        cancelled = Failed(GenerationCancelled("cancelled while it ran"))
        return [
            cancelled if job.cancelled.is_set() else Done(_finished(stream, index))
            for index, job in enumerate(jobs)
        ]


def _request(job: Job) -> _Request:
    assert isinstance(job.work, Batch)
    request: _Request = job.work.item
    return request


def _finished(stream: ChatBatchStream, index: int) -> _Finished:
    tokens = stream.usage[index]
    usage = Usage(
        prompt_tokens=tokens.prompt_tokens,
        completion_tokens=tokens.completion_tokens,
        total_tokens=tokens.total_tokens,
    )
    return _Finished(stream.finish_reason(index), usage)


@dataclass(frozen=True)
class _Finished:
    """What a chat job returns: why the answer ended, and its token usage."""

    reason: Literal["stop", "length"]
    usage: Usage


class _Reply:
    """Renders a job's events as an OpenAI chat completion or its stream of chunks (with a last chunk of
    token usage when the request's stream_options ask for it, and `usage: null` on the others)."""

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._started = False

    def completion(self, events: list[Event]) -> ChatCompletion:
        text = "".join(e.text for e in events if isinstance(e, Text))
        finished: _Finished = next(e.result for e in events if isinstance(e, Done))
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[Choice(message=AssistantMessage(content=text), finish_reason=finished.reason)],
            usage=finished.usage,
        )

    def chunks(self, event: Event) -> Iterable[str]:
        if not self._started:
            self._started = True
            yield self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, Text):
            yield self._chunk({"content": event.text})
        elif isinstance(event, Done):
            finished: _Finished = event.result
            yield self._chunk({}, finished.reason)
            if self.include_usage:
                yield sse({**self._envelope(), "choices": [], "usage": finished.usage.model_dump()})
            yield sse("[DONE]")
        elif isinstance(event, Failed):
            yield sse_error(event.error)

    def _envelope(self) -> dict[str, Any]:
        kind = "chat.completion.chunk"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> str:
        chunk = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return sse(chunk | {"usage": None} if self.include_usage else chunk)
