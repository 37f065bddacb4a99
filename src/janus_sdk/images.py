"""Images in and out: loading user images, preprocessing them for the understanding encoder, and turning
decoded pixels into uint8 arrays and PIL images.

Loading: a path, bytes or PIL image becomes an RGB PIL image, or else an InputError.

Faithful to the official `janus.utils.io.load_pil_images`, which is `PIL.Image.open(path).convert("RGB")`:

- Colour: everything becomes RGB; alpha is dropped (not composited), as `.convert("RGB")` does.
- Animations (GIF, APNG, WebP, multi-page TIFF): the first frame, which is the one PIL opens on.
- EXIF orientation: NOT applied by default, because the official code does not apply it and the model was run
  that way; a phone photo stored sideways therefore reaches the model sideways, exactly as with the reference
  code. Pass ``apply_exif_orientation=True`` to rotate it upright first (a deliberate deviation).
- Safety: the pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded, so a
  decompression bomb costs nothing. PIL's own global limit (``Image.MAX_IMAGE_PIXELS``; an error above twice
  that value) still applies on top and is reported the same way. Only the common raster formats of
  `IMAGE_FORMATS` are decoded (a deviation: the official code lets PIL try all of its decoders, among them
  EPS, which runs Ghostscript, and rarely used ones that are a needless attack surface for untrusted input).
- Failures: whatever a decoder raises on hostile data becomes an InputError naming the source; no PIL
  exception reaches the caller.

Preprocessing (`ImageProcessor`, the official VLMImageProcessor): RGB image -> resize so the long side is
`image_size` (truncating size rule, PIL bicubic) -> centre on a square canvas of the mean colour -> rescale by
1/255 (float64, then float32) -> normalise with mean/std (float32).

Pixels out (`to_uint8`, `to_pil`): with the official generation script's exact arithmetic.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TypeAlias

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from janus_sdk.errors import ImageTooLargeError, InputError

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | Image.Image
"""What `load_image` accepts: a file path, the encoded file's bytes, or an already opened PIL image."""

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest width x height accepted by default: PIL's own decompression-bomb warning threshold (about 89.5
megapixels). Janus shrinks every image to 384 x 384, so bigger inputs would only cost memory and time."""

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "ICO", "AVIF", "HEIF")
"""PIL format ids `load_image` decodes (those this PIL build has; HEIF only with the pillow-heif plugin)."""


def load_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, apply_exif_orientation: bool = False
) -> Image.Image:
    """Open `source` as an RGB image (first frame); InputError naming the problem and the source if not."""
    if isinstance(source, Image.Image):
        return _decode(source, "the given PIL image", max_pixels, apply_exif_orientation)
    name, stream = _open_stream(source)
    with stream:
        return _decode(stream, name, max_pixels, apply_exif_orientation)


def _decode(
    source: Image.Image | IO[bytes], name: str, max_pixels: int, apply_exif_orientation: bool
) -> Image.Image:
    """Check the size from the header, then decode; every PIL failure becomes an InputError naming `name`."""
    with warnings.catch_warnings():
        # We enforce our own limit, and the caller gets an RGB image or an InputError: PIL's warnings (the
        # bomb threshold, corrupt EXIF, palette transparency, ...) are noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        return _to_rgb(_open(source, name, max_pixels, apply_exif_orientation), name)


def check_image_file(source: str | os.PathLike[str]) -> None:
    """InputError now, worded as `load_image` would word it, when `source` is not a readable image file: for
    checks before anything slow runs (a model load). Reads the header only; size limits stay the loader's."""
    name, stream = _open_stream(source)
    with stream, _decoding(name):
        Image.open(stream, formats=_formats())


def _open(
    source: Image.Image | IO[bytes], name: str, max_pixels: int, apply_exif_orientation: bool
) -> Image.Image:
    with _decoding(name):
        image = source if isinstance(source, Image.Image) else Image.open(source, formats=_formats())
        _check_size(image, name, max_pixels)
        image.load()
        return ImageOps.exif_transpose(image) if apply_exif_orientation else image


@contextlib.contextmanager
def _decoding(name: str) -> Iterator[None]:
    """Every PIL failure inside becomes an InputError naming `name`."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name} is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InputError(
            f"{name} is not an image file PIL can read in a supported format ({', '.join(_formats())}); "
            "unknown format or corrupt header"
        ) from None
    except InputError:
        raise
    except Exception as exc:  # decoders fail on hostile data in arbitrary ways (OSError, SyntaxError, ...)
        raise InputError(
            f"{name} is corrupt or truncated and could not be decoded ({_reason(exc)})"
        ) from None


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """`convert` returns a new image, so a caller's image is never modified."""
    try:
        return image.convert("RGB")
    except Exception as exc:  # e.g. ValueError for a mode PIL cannot convert (La)
        raise InputError(
            f"{name} has mode {image.mode!r}, which cannot be converted to RGB ({_reason(exc)})"
        ) from None


@functools.cache
def _formats() -> tuple[str, ...]:
    Image.init()  # registers every decoder PIL has, so the check below sees them all
    return tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open_stream(source: str | os.PathLike[str] | bytes) -> tuple[str, IO[bytes]]:
    """A readable binary stream for `source` and a name for it in error messages."""
    if isinstance(source, bytes):
        if not source:
            raise InputError("image bytes are empty")
        return f"image bytes ({len(source)} bytes)", io.BytesIO(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"an image must be a file path, bytes or a PIL.Image.Image, got {type(source).__name__}"
        )
    path = Path(source)
    name = f"image file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{name} does not exist" if not path.exists() else f"{name} is not a regular file")
    try:
        return name, path.open("rb")
    except OSError as exc:
        raise InputError(f"{name} cannot be opened: {exc.strerror or exc}") from None


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InputError(f"{name} has zero size ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageTooLargeError(name, width, height, max_pixels)


# ----------------------------------------------------------------------------------------------------------
# Preprocessing for the understanding encoder


class ImageProcessorConfig(BaseModel):
    """preprocessor_config.json of a Janus checkpoint (official `VLMImageProcessor` arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(default=384, gt=0, description="Side of the square image the encoder takes.")
    min_size: int = Field(
        default=14, gt=0, description="Smallest side after resizing (thin images are stretched)."
    )
    image_mean: tuple[float, float, float] = Field(
        default=(0.5, 0.5, 0.5),
        description="Per-channel mean subtracted after rescaling; also sets the pad colour.",
    )
    image_std: tuple[float, float, float] = Field(
        default=(0.5, 0.5, 0.5),
        description="Per-channel standard deviation divided out after subtracting the mean.",
    )
    rescale_factor: float = Field(
        default=1.0 / 255.0, gt=0, description="Factor from uint8 values to [0, 1]."
    )
    do_normalize: bool = Field(default=True, description="Whether to apply the mean/std normalisation.")
    background_color: tuple[int, int, int] | None = Field(
        default=None,
        description="Informational only: the official processor ignores this key and pads with "
        "int(255 * image_mean); if present it must agree with that colour.",
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        gt=0,
        description="Largest width x height of an input image, checked from its header before decoding "
        "(decompression-bomb guard; not an official key).",
    )
    apply_exif_orientation: bool = Field(
        default=False,
        description="Rotate photos upright by their EXIF orientation tag first; off like the official code "
        "(not an official key).",
    )

    @property
    def fill_color(self) -> tuple[int, int, int]:
        """Colour of the square canvas, derived from `image_mean` exactly as the official processor does."""
        red, green, blue = (int(255 * m) for m in self.image_mean)
        return red, green, blue

    @model_validator(mode="after")
    def _check(self) -> ImageProcessorConfig:
        if self.background_color is not None and tuple(self.background_color) != self.fill_color:
            raise ValueError(
                f"background_color {list(self.background_color)} disagrees with the colour the official "
                f"processor derives from image_mean, {list(self.fill_color)}; remove it or make the two agree"
            )
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {list(self.image_std)}")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ImageProcessorConfig:
        """Read a checkpoint's preprocessor_config.json, minus `image_processor_type`, `processor_class`."""
        from janus_sdk.config.files import read_model_file  # the config package imports this module

        return read_model_file(cls, Path(path), drop=("image_processor_type", "processor_class"))


class ImageProcessor:
    """Official VLMImageProcessor: resize + pad to a square, then rescale and normalise to [N, 3, S, S]."""

    def __init__(self, config: ImageProcessorConfig | None = None) -> None:
        self.config = config or ImageProcessorConfig()
        self.image_size = self.config.image_size
        self._mean = torch.tensor(self.config.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.config.image_std, dtype=torch.float32).view(1, 3, 1, 1)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing: long side -> image_size, truncated (not rounded), >= min_size."""
        side, floor, longest = self.config.image_size, self.config.min_size, max(width, height)
        return max(int(width / longest * side), floor), max(int(height / longest * side), floor)

    def load(self, source: ImageSource) -> Image.Image:
        """`load_image` with this processor's pixel limit and EXIF policy."""
        config = self.config
        return load_image(
            source, max_pixels=config.max_pixels, apply_exif_orientation=config.apply_exif_orientation
        )

    def resize_and_pad(self, image: Image.Image) -> np.ndarray:
        """uint8 [S, S, 3]: PIL bicubic resize (torchvision's path for PIL images), centred on the canvas."""
        if not isinstance(image, Image.Image):
            raise InputError(f"the image processor takes PIL images (see `load`), got {type(image).__name__}")
        if image.width <= 0 or image.height <= 0:
            raise InputError(f"cannot process an image of zero size ({image.width}x{image.height})")
        # Other modes go through load_image, whose conversion reports failures as InputError.
        rgb = image if image.mode == "RGB" else load_image(image, max_pixels=self.config.max_pixels)
        width, height = self.resized_size(rgb.width, rgb.height)
        resized = np.asarray(rgb.resize((width, height), Image.Resampling.BICUBIC))
        side = max(width, height)  # == image_size unless image_size < min_size
        canvas = np.empty((side, side, 3), dtype=np.uint8)
        canvas[...] = self.config.fill_color
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = resized
        return canvas

    def __call__(self, images: Sequence[Image.Image]) -> Tensor:
        """float32 [N, 3, S, S] pixel values (N may be 0)."""
        side = self.config.image_size
        batch = (
            np.stack([self.resize_and_pad(image) for image in images])
            if images
            else np.empty((0, side, side, 3), dtype=np.uint8)
        )
        # HF `rescale` multiplies in float64 and casts to float32; `normalize` then works in float32.
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float64)
        pixels = pixels.mul_(self.config.rescale_factor).to(torch.float32)
        if self.config.do_normalize:
            pixels = (pixels - self._mean) / self._std
        return pixels.contiguous()


# ----------------------------------------------------------------------------------------------------------
# Pixels out


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
