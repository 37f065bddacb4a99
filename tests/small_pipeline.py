"""The tiny checkpoint as the hardening, determinism and strategy tests build it: every weight, 64 x 64 images
(16 image codes instead of 576), and a guard that fails the test if any of the model's modules runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from janus_sdk import JanusPipeline, PipelineConfig
from janus_sdk.config.official import official_to_pipeline_dict
from janus_sdk.plugins import PluginHost

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
INPUT_PNG = FIXTURE / "golden" / "input.png"
SMALL_IMAGE_SIZE = 64
"""VQ image side of `fast_pipeline`: a 4 x 4 grid of 16 codes instead of 24 x 24 = 576."""


def fast_config(
    checkpoint: Path = CHECKPOINT, *, plugins: PluginHost | None = None, **overrides: Any
) -> PipelineConfig:
    """The config of `fast_pipeline`: the checkpoint's own, on the CPU in float32, with 64 x 64 images."""
    vq = official_to_pipeline_dict(checkpoint)["image_tokenizer"]
    overrides.setdefault(
        "image_tokenizer", {"name": vq["name"], "params": {**vq["params"], "image_size": SMALL_IMAGE_SIZE}}
    )
    registry = plugins.registry if plugins is not None else None
    return PipelineConfig.from_checkpoint(
        checkpoint, registry=registry, device="cpu", dtype="float32", **overrides
    )


def fast_pipeline(
    checkpoint: Path = CHECKPOINT, *, plugins: PluginHost | None = None, **overrides: Any
) -> JanusPipeline:
    """The tiny checkpoint with all its weights, generating 64 x 64 images (16 codes per image).

    The VQ decoder's convolutions do not depend on the image size, so the same weights and code paths run as
    for 384 x 384 images, 36 times faster: what tests of concurrency, determinism and safety need.
    """
    config = fast_config(checkpoint, plugins=plugins, **overrides)
    return JanusPipeline.from_config(config, plugins=plugins)


@contextmanager
def model_must_not_run(pipe: JanusPipeline) -> Iterator[None]:
    """Every module of the model fails the test if it is called inside the block."""

    def fail(module: nn.Module, _: Any) -> None:
        raise AssertionError(f"model work started: {type(module).__name__} was called")

    handles = [module.register_forward_pre_hook(fail) for module in pipe.model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
