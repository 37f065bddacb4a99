"""From conversations and text-to-image prompts to model inputs, as the official VLChatProcessor does.

Conversations (understanding): conversation -> prompt string (chat template, system prompt first) -> token ids
with BOS -> each image tag id becomes <begin_of_image>, `num_image_tokens` x the image tag id, <end_of_image>;
the model later overwrites exactly those `num_image_tokens` positions (`images_seq_mask`) with image
embeddings (the pixels come from `janus_sdk.images.ImageProcessor`).

Text-to-image prompts: one user turn with an empty system prompt, then <begin_of_image>; the guidance
component builds each sample's rows from those ids (the official classifier-free guidance adds an
unconditional row in which everything between BOS and <begin_of_image> is padding). Prompts of different
lengths in one batch are left-padded (`left_pad`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from janus_sdk.errors import InputError
from janus_sdk.images import ImageProcessor, ImageSource
from janus_sdk.interfaces import ChatTemplate, Guidance, TextTokenizer

IMAGE_TAG = "<image_placeholder>"
IMAGE_START_TAG = "<begin_of_image>"
IMAGE_END_TAG = "<end_of_image>"


# ------------------------------------------------------------------------------------------------------------
# Conversations


class ProcessorConfig(BaseModel):
    """processor_config.json of a Janus checkpoint (official `VLChatProcessor` arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_tag: str = Field(default=IMAGE_TAG, description="Token marking an image in the prompt text.")
    image_start_tag: str = Field(default=IMAGE_START_TAG, description="Token opening an image's token span.")
    image_end_tag: str = Field(default=IMAGE_END_TAG, description="Token closing an image's token span.")
    num_image_tokens: int = Field(
        default=576, gt=0, description="Embedding positions per image (24 x 24 patches)."
    )
    add_special_token: bool = Field(
        default=False,
        description="Keep the tag token before each image span; only False is supported (with True the "
        "official processor counts the kept tag as an image position, one more than there are embeddings).",
    )
    sft_format: str = Field(
        default="deepseek", description="Name of the chat template the model was tuned with."
    )
    mask_prompt: bool = Field(default=True, description="Training only: mask prompt tokens out of the loss.")
    ignore_id: int = Field(default=-100, description="Training only: label id ignored by the loss.")

    @model_validator(mode="after")
    def _check(self) -> ProcessorConfig:
        if self.add_special_token:
            raise ValueError("add_special_token=True is not supported (see the field description); use false")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ProcessorConfig:
        """Read a checkpoint's processor_config.json (its `processor_class` is dropped)."""
        from janus_sdk.config.files import read_model_file  # the config package imports this module

        return read_model_file(cls, Path(path), drop=("processor_class",))


class Message(BaseModel):
    """One conversation turn; see `build_understanding_inputs` for where its images' tags go."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    role: Literal["user", "assistant", "system"] = Field(
        description="Who speaks; a system message sets the system prompt."
    )
    content: str = Field(default="", description="The turn's text; may hold image tags.")
    images: Sequence[ImageSource] = Field(
        default=(), description="Images of this turn, in order: file paths, encoded bytes or PIL images."
    )


@dataclass(frozen=True)
class UnderstandingInputs:
    """Model inputs for one conversation (batch of 1, the official `BatchedVLChatProcessorOutput` layout).

    Unlike the official batchify, a conversation without images has n = 0 images (the official code pads
    with one all-zero image whose embeddings are never used).
    """

    input_ids: Tensor  # [1, T] int64
    attention_mask: Tensor  # [1, T] int64, all ones
    images_seq_mask: Tensor  # [1, T] bool, True at the image embedding positions
    images_emb_mask: Tensor  # [1, n, num_image_tokens] bool
    pixel_values: Tensor  # [1, n, 3, S, S] float32
    prompt: str  # the rendered prompt (official `sft_format`)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> UnderstandingInputs:
        """Move every tensor to `device`; `dtype` (if given) casts pixel_values only, like the official."""
        return UnderstandingInputs(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            images_seq_mask=self.images_seq_mask.to(device),
            images_emb_mask=self.images_emb_mask.to(device),
            pixel_values=self.pixel_values.to(device=device, dtype=dtype or self.pixel_values.dtype),
            prompt=self.prompt,
        )


def build_understanding_inputs(
    messages: Sequence[Message],
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    image_processor: ImageProcessor,
    processor_config: ProcessorConfig,
    system_prompt: str | None = None,
) -> UnderstandingInputs:
    """Render, tokenise and expand one conversation, and preprocess its images.

    - The system prompt is, in order of precedence: a leading system message, `system_prompt`, the template's
      `default_system_prompt` (the official Janus-Pro one for the "deepseek" template).
    - Other messages alternate user / assistant, starting with a user turn; a conversation ending with a user
      turn gets an empty assistant turn, so the prompt ends with the assistant role and ":".
    - A message with images whose text has no image tag gets one tag per image in front of its text, then a
      newline (what the official inference script writes). Tags in the whole prompt must match the images.
    - Images are loaded with `image_processor.load` (its pixel limit and EXIF policy).
    """
    system, turns = _split_system(messages, system_prompt, template)
    check_text(system, "the system prompt")
    for i, message in enumerate(turns):
        check_text(message.content, f"message {i} (after any system message)")
    tag = processor_config.image_tag
    contents = [_with_image_tags(m, tag) for m in turns]
    images = [source for m in turns for source in m.images]
    if not images and not any(c.strip() for c in contents):
        raise InputError("the prompt is empty: give some text or at least one image")
    roles = {"user": template.user_role, "assistant": template.assistant_role}
    prompt = template.render([(roles[m.role], c) for m, c in zip(turns, contents, strict=True)], system)

    ids = torch.tensor(tokenizer.encode(prompt), dtype=torch.long)
    image_id = tokenizer.token_id(tag)
    num_tags = int((ids == image_id).sum())
    if num_tags != len(images):
        raise InputError(
            f"the conversation has {num_tags} image tag(s) {tag!r} but {len(images)} image(s); "
            f"give one image per tag, or leave the tags out to have them placed before each message's text"
        )
    pixel_values = image_processor([image_processor.load(source) for source in images])

    n = processor_config.num_image_tokens
    start_id = tokenizer.token_id(processor_config.image_start_tag)
    end_id = tokenizer.token_id(processor_config.image_end_tag)
    input_ids = expand_image_tokens(ids, image_id, start_id, end_id, n).unsqueeze(0)
    return UnderstandingInputs(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        images_seq_mask=input_ids == image_id,
        images_emb_mask=torch.ones((1, len(images), n), dtype=torch.bool),
        pixel_values=pixel_values.unsqueeze(0),
        prompt=prompt,
    )


def _split_system(
    messages: Sequence[Message], system_prompt: str | None, template: ChatTemplate
) -> tuple[str, list[Message]]:
    """The system prompt to use and the user/assistant turns, validated and closed with an assistant turn."""
    turns = list(messages)
    system = system_prompt
    if turns and turns[0].role == "system":
        if system_prompt is not None:
            raise InputError(
                "give the system prompt either as a system message or as system_prompt=, not both"
            )
        if turns[0].images:
            raise InputError("a system message cannot carry images")
        system, turns = turns[0].content, turns[1:]
    if not turns:
        raise InputError("the conversation has no user message")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            where = "a system message must come first" if message.role == "system" else "turns must alternate"
            raise InputError(
                f"message {i} (after any system message) has role {message.role!r} where {expected!r} was "
                f"expected: {where}, starting with a user turn"
            )
    if turns[-1].role == "user":
        turns.append(Message(role="assistant"))
    if system is None:
        system = template.default_system_prompt
    return system, turns


def check_text(text: object, what: str) -> None:
    """InputError unless `text` is a str the tokenizer can take (valid Unicode: no lone surrogates)."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} is not valid Unicode text: {exc.reason} at character {exc.start} "
            f"({text[exc.start : exc.end]!r})"
        ) from None


def _with_image_tags(message: Message, tag: str) -> str:
    """The message text, with one tag per image and a newline put in front when the text has no tag."""
    if not message.images or tag in message.content:
        return message.content
    return tag * len(message.images) + "\n" + message.content


def expand_image_tokens(
    ids: Tensor, image_id: int, start_id: int, end_id: int, num_image_tokens: int
) -> Tensor:
    """[T] ids; each `image_id` becomes start_id, num_image_tokens x image_id, end_id (as add_image_token)."""
    is_tag = ids == image_id
    repeats = torch.where(is_tag, num_image_tokens + 2, 1)
    expanded = ids.repeat_interleave(repeats)
    starts = (torch.cumsum(repeats, 0) - repeats)[is_tag]
    expanded[starts] = start_id
    expanded[starts + num_image_tokens + 1] = end_id
    return expanded


# ----------------------------------------------------------------------------------------------------------
# Text-to-image prompts


def format_generation_prompt(
    prompt: str, template: ChatTemplate, image_start_tag: str = IMAGE_START_TAG
) -> str:
    """The official text-to-image prompt: one user turn, empty system prompt, then the image start tag."""
    check_text(prompt, "the text-to-image prompt")
    if not prompt.strip():
        raise InputError("the text-to-image prompt is empty")
    turns = [(template.user_role, prompt), (template.assistant_role, "")]
    return template.render(turns, system_prompt="") + image_start_tag


def build_generation_prompt_ids(
    prompt: str, tokenizer: TextTokenizer, template: ChatTemplate, image_start_tag: str = IMAGE_START_TAG
) -> list[int]:
    """Token ids of `format_generation_prompt` (BOS first, the image start token last)."""
    return tokenizer.encode(format_generation_prompt(prompt, template, image_start_tag))


def guidance_rows(
    prompt_ids: Sequence[int] | Tensor, num_samples: int, guidance: Guidance, pad_id: int
) -> Tensor:
    """int64 [num_samples * num_branches, L]: the rows `guidance` builds for one sample from the prompt ids,
    once per sample (a sample's rows adjacent, as the image loop expects)."""
    ids = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(-1)
    if num_samples < 1:
        raise InputError(f"the number of images to generate must be at least 1, got {num_samples}")
    if ids.numel() < 2:
        raise InputError(
            f"a generation prompt needs at least BOS and the image start token, got {ids.tolist()}"
        )
    return guidance.rows(ids, pad_id).repeat(num_samples, 1)


def sample_rows(
    prompts: Sequence[Sequence[int]], guidance: Guidance, pad_id: int
) -> tuple[Tensor, Tensor | None]:
    """The rows of one sample per prompt (ids as `build_generation_prompt_ids` gives them), in order, a
    sample's rows adjacent, left-padded to the longest prompt: (rows [samples * branches, L], the padding of
    each row or None when the prompts are of one length), as the image loop takes them."""
    return left_pad([guidance_rows(ids, 1, guidance, pad_id) for ids in prompts], pad_id)


def left_pad(blocks: Sequence[Tensor], fill: float) -> tuple[Tensor, Tensor | None]:
    """Blocks [rows_i, L_i, ...] stacked into [sum rows_i, max L_i, ...], each row's values after `fill`
    (left padding): (the batch, how many fill positions each row starts with, int64; None when none has)."""
    longest = max(block.shape[1] for block in blocks)
    if all(block.shape[1] == longest for block in blocks):
        return torch.cat(list(blocks)), None
    padded = [
        torch.cat(
            [block.new_full((block.shape[0], longest - block.shape[1], *block.shape[2:]), fill), block], 1
        )
        for block in blocks
    ]
    padding = [longest - block.shape[1] for block in blocks for _ in range(block.shape[0])]
    return torch.cat(padded), torch.tensor(padding, dtype=torch.long)
