"""What a server operator can tune: the served model's name, authentication and every per-request limit.

Defaults are safe for a public-facing process: bounded queue, bounded bodies and images, no remote fetching.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from janus_sdk.config.generation import MAX_IMAGES_PER_REQUEST, MAX_NEW_TOKENS

MiB = 1024 * 1024


class ServerSettings(BaseModel):
    """Options of one serving process (`janus serve` flags map onto these fields one to one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str | None = Field(
        default=None,
        min_length=1,
        description="Model id that clients send as `model` and /v1/models lists (default: the checkpoint's "
        "own name: its Hub id, the name its model card or config.json gives, else its folder's name).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="If set, every /v1/* request must carry `Authorization: Bearer <key>`."
    )
    max_queue: int = Field(
        default=16,
        ge=1,
        description="Requests waiting behind the running one; more get 429 with Retry-After.",
    )
    max_body_bytes: int = Field(
        default=16 * MiB,
        ge=1024,
        description="Largest request body (JSON with base64 images) in bytes; 413 above.",
    )
    max_image_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        description="Largest width x height of an input image, checked before decoding (Janus sees 384x384).",
    )
    max_chat_images: int = Field(default=4, ge=0, description="Most images in one chat conversation.")
    max_n: int = Field(
        default=4,
        ge=1,
        le=MAX_IMAGES_PER_REQUEST,
        description="Most images one /v1/images/generations call makes.",
    )
    max_tokens: int = Field(
        default=2048, ge=1, le=MAX_NEW_TOKENS, description="Largest max_tokens a chat request may ask for."
    )
    default_max_tokens: int = Field(
        default=512,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="Answer length when a chat request gives no max_tokens (capped by max_tokens).",
    )
    image_batch: int = Field(
        default=4,
        ge=1,
        description="Most images sampled together in one forward pass, from one request or from concurrent "
        "ones with the same settings: more images per minute, each finishing later. Images do not depend on "
        "it (every image has a seed of its own).",
    )
    chat_batch: int = Field(
        default=8, ge=1, description="Most concurrent chat answers (with the same settings) decoded together."
    )
    batch_window_ms: int = Field(
        default=50,
        ge=0,
        description="How long a request that could share a batch waits for concurrent ones to join it.",
    )
    allow_remote_images: bool = Field(
        default=False,
        description="Fetch http(s) image_url values. Off by default: it lets clients make this host send "
        "requests.",
    )
    remote_image_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds allowed to fetch one remote image (with allow_remote_images).",
    )
    disconnect_poll_s: float = Field(
        default=0.25, gt=0, description="How often a waiting request checks whether its client went away."
    )
    web_ui: bool = Field(default=True, description="Serve the chat / generation page at /.")
