"""Loading user images: a path, bytes or PIL image becomes an RGB PIL image, or else an InputError.

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
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TypeAlias

from PIL import Image, ImageOps, UnidentifiedImageError

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
