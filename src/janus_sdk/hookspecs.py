"""The hooks a janus-sdk plugin can implement.

Each register hook receives a `register` callback; call it once per component::

    @hookimpl
    def register_visual_encoders(register):
        register("my-encoder", build_my_encoder, config=MyEncoderConfig, aliases=("MyEncoderClass",))

`build_my_encoder(config, context)` gets the validated config model instance and a `BuildContext`
(checkpoint directory, device, dtype, attention backend) and returns an object satisfying the kind's
interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    import torch

    from janus_sdk.checkpoint.layouts import CheckpointLayoutView
    from janus_sdk.registry import Register

PROJECT = "janus_sdk"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_visual_encoders(register: Register) -> None:
    """Register understanding encoders (pixels -> patch features)."""


@hookspec
def register_aligners(register: Register) -> None:
    """Register aligners / projectors (features -> LLM embedding space)."""


@hookspec
def register_image_tokenizers(register: Register) -> None:
    """Register discrete image tokenizers (image <-> code grid)."""


@hookspec
def register_generation_heads(register: Register) -> None:
    """Register image-token heads (LLM hidden state -> image-code logits)."""


@hookspec
def register_text_tokenizers(register: Register) -> None:
    """Register text tokenizers."""


@hookspec
def register_chat_templates(register: Register) -> None:
    """Register conversation formats (turns -> prompt string)."""


@hookspec
def register_llm_backbones(register: Register) -> None:
    """Register language-model backbones (input embeddings -> hidden states, with a KV cache)."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register sampling strategies (logits -> token ids)."""


@hookspec
def register_guidances(register: Register) -> None:
    """Register guidance strategies (rows per sample, and how their logits combine)."""


@hookspec
def register_attention_backends(register: Register) -> None:
    """Register attention backends."""


@hookspec
def register_linear_backends(register: Register) -> None:
    """Register linear backends (how the per-token linear layers compute: kernels, packed or int8 weights)."""


@hookspec(firstresult=True)
def choose_attention_backend(device: torch.device, dtype: torch.dtype) -> str | None:
    """Name the attention backend to use when a config says "auto"; the first plugin that answers decides."""


@hookspec(firstresult=True)
def choose_linear_backend(device: torch.device, dtype: torch.dtype) -> str | None:
    """Name the linear backend to use when a config says "auto"; the first plugin that answers decides."""


@hookspec
def register_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add commands to the `janus` CLI: `parser = subcommands.add_parser(NAME, help=...)`, its arguments, and
    `parser.set_defaults(handler=run)` where `run(args)` returns the exit code. Raise a `JanusError` for a
    failure the user can fix: the CLI prints it as one line."""


@hookspec(firstresult=True)
def open_checkpoint_layout(directory: Path) -> CheckpointLayoutView | None:
    """Read a checkpoint directory stored in a layout other than DeepSeek's official one.

    Return None when `directory` is not in your layout (the official layout is built in and tried after every
    plugin); otherwise its PipelineConfig fields and its tensors under the official names. Raise a
    `JanusError` (e.g. CheckpointError) when it is in your layout but broken.
    """
