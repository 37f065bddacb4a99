"""Decoded images -> uint8 pixels and PIL images, with the official generation script's exact arithmetic."""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from janus_sdk.errors import InputError


def to_uint8(images: Tensor) -> Tensor:
    """Float images [B, 3, H, W] roughly in [-1, 1] -> uint8 [B, H, W, 3] (NHWC), on the same device.

    Matches `generation_inference.py` bit for bit: clip((x + 1) / 2 * 255, 0, 255) in float32, then a cast
    that truncates toward zero (numpy's assignment into a uint8 array), not rounding.
    """
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise InputError(
            f"to_uint8 expects float images of shape [B, 3, H, W], got {list(images.shape)} ({images.dtype})"
        )
    scaled = images.float().add(1).div_(2).mul_(255).clamp_(0, 255)  # same float32 op order as numpy
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_pil(images_uint8: Tensor) -> list[Image.Image]:
    """uint8 images [B, H, W, 3] (as returned by `to_uint8`) -> one RGB PIL image per row."""
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3 or images_uint8.dtype != torch.uint8:
        raise InputError(
            f"to_pil expects uint8 images of shape [B, H, W, 3], "
            f"got {list(images_uint8.shape)} ({images_uint8.dtype})"
        )
    return [Image.fromarray(array) for array in images_uint8.cpu().numpy()]
