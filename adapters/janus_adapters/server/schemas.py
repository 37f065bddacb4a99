"""Request and response bodies of the OpenAI-compatible endpoints (the subset Janus can honour).

Requests forbid unknown fields, so a client that asks for something Janus cannot do (tools, logprobs, ...)
gets a 400 naming the field instead of a silently different answer. Fields OpenAI clients commonly send with
neutral values (n=1, user) are accepted; Janus knobs (top_k, repetition_penalty, cfg_weight, image seed, and
the `sampler` / `guidance` components by name, `{"name", "params"}` or a bare name) are extras.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from janus_sdk.config.generation import MAX_PENALTY, Strategy


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Request):
    """Where an input image is: a data URI (or an http(s) URL where the server allows it)."""

    url: str = Field(description="data:image/png;base64,... (or http(s):// when the server allows it).")
    detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="Accepted for compatibility; Janus always sees the image at 384x384."
    )


class TextPart(_Request):
    """A text part of a message."""

    type: Literal["text"]
    text: str


class ImagePart(_Request):
    """An image part of a message."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Request):
    """One turn. `developer` is treated as `system`; images may appear in user turns only."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] = Field(description="Text, or a list of text and image_url parts.")
    name: str | None = Field(default=None, description="Accepted and ignored.")


class StreamOptions(BaseModel):
    """OpenAI's stream_options; fields other than include_usage are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(
        default=False, description="End the stream with a chunk whose `usage` counts the tokens."
    )


class Usage(BaseModel):
    """Tokens of a request: the prompt's (text, chat template, 576 per image) and the answer's (its end token
    not counted)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions."""

    model: str = Field(description="The served model's id (see GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = Field(
        default=False, description="Answer as server-sent events, ending with `data: [DONE]`."
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens in the answer.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Same as max_tokens.")
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="0 = greedy; > 0 samples. Omitted = greedy unless top_p/top_k set.",
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass (samples).")
    top_k: int | None = Field(
        default=None, ge=0, description="Janus extra: sample among the k likeliest tokens."
    )
    seed: int | None = Field(default=None, ge=0, description="Seed for sampling: same seed, same answer.")
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 answer per request is supported.")
    stop: str | list[str] | None = Field(default=None, description="Not supported: must be empty.")
    presence_penalty: float | None = Field(
        default=None,
        ge=-MAX_PENALTY,
        le=MAX_PENALTY,
        description="Subtracted from the logit of every token already generated; 0 = off.",
    )
    frequency_penalty: float | None = Field(
        default=None,
        ge=-MAX_PENALTY,
        le=MAX_PENALTY,
        description="Subtracted from a token's logit once per time it was generated; 0 = off.",
    )
    repetition_penalty: float | None = Field(
        default=None, gt=0, description="Janus extra: CTRL repetition penalty on generated tokens; 1 = off."
    )
    sampler: Strategy = Field(
        default=None,
        description="Janus extra: the sampler by name ({name, params} or a bare name, e.g. 'min-p'); "
        "temperature, top_p and top_k then set its params of those names.",
    )
    logprobs: bool | None = Field(default=None, description="Not supported: false only.")
    stream_options: StreamOptions | None = Field(
        default=None, description="include_usage: a last chunk with the token usage (stream only)."
    )
    user: str | None = Field(default=None, description="Accepted and ignored.")

    @field_validator("stop")
    @classmethod
    def _no_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value:
            raise ValueError("stop sequences are not supported by this server")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs are not supported by this server")
        return value


class ImageGenerationRequest(_Request):
    """POST /v1/images/generations."""

    prompt: str = Field(min_length=1, description="What to draw.")
    model: str | None = Field(default=None, description="The served model's id; omitted = the served model.")
    n: int = Field(default=1, ge=1, description="Number of images.")
    response_format: Literal["b64_json", "url"] = Field(
        default="b64_json", description="Only b64_json: this server keeps no files to link to."
    )
    size: str | None = Field(
        default=None, description="'auto' or the model's native size (384x384 for Janus-Pro)."
    )
    quality: str | None = Field(default=None, description="Accepted and ignored.")
    style: str | None = Field(default=None, description="Accepted and ignored.")
    user: str | None = Field(default=None, description="Accepted and ignored.")
    stream: bool = Field(
        default=False, description="Janus extra: server-sent progress events and each image as it finishes."
    )
    cfg_weight: float | None = Field(
        default=None, ge=0, le=100, description="Classifier-free guidance weight."
    )
    temperature: float | None = Field(
        default=None, gt=0, le=10, description="Sampling temperature of image codes."
    )
    top_k: int | None = Field(default=None, ge=0, description="Sample among the k likeliest codes; 0 = all.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus mass of the code sampler.")
    seed: int | None = Field(
        default=None,
        ge=0,
        description="Image i gets seed + i: the same seed, the same images, whatever else runs.",
    )
    guidance: Strategy = Field(
        default=None,
        description="Janus extra: the guidance by name ({name, params} or a bare name, e.g. "
        "'cfg-zero-star'); cfg_weight then sets its param of that name.",
    )
    sampler: Strategy = Field(
        default=None,
        description="Janus extra: the sampler of the image codes by name ({name, params} or a bare name).",
    )


class AssistantMessage(BaseModel):
    """The answer's message."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """The one answer of a chat completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    """A complete (non-streamed) chat answer."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ImageData(BaseModel):
    """One generated image."""

    b64_json: str
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """The images of one generation request."""

    created: int
    data: list[ImageData]
    output_format: Literal["png"] = "png"
    size: str


class ModelCard(BaseModel):
    """One entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "janus-sdk"


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
