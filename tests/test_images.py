"""load_image: RGB output, first frame, EXIF policy, and InputError (no PIL traceback) for bad inputs."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from janus_sdk.errors import InputError
from janus_sdk.images import load_image

INPUT_PNG = Path(__file__).parent / "fixtures" / "janus-tiny" / "golden" / "input.png"


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _raises_input_error(source: object, match: str, **kwargs: int) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    error = info.value
    assert error.__cause__ is None and (
        error.__context__ is None or error.__suppress_context__
    )  # no PIL trace
    return error


@pytest.mark.parametrize("kind", ["str", "path", "bytes", "pil"])
def test_every_source_kind_gives_the_official_rgb_image(kind: str) -> None:
    expected = np.asarray(Image.open(INPUT_PNG).convert("RGB"))  # official load_pil_images
    sources: dict[str, str | Path | bytes | Image.Image] = {
        "str": str(INPUT_PNG),
        "path": INPUT_PNG,
        "bytes": INPUT_PNG.read_bytes(),
        "pil": Image.open(INPUT_PNG),
    }
    image = load_image(sources[kind])
    assert image.mode == "RGB" and image.size == (300, 203)
    np.testing.assert_array_equal(np.asarray(image), expected)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "CMYK"])
def test_other_modes_are_converted_like_convert_rgb(mode: str) -> None:
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (12, 9, 4), dtype=np.uint8), "RGBA").convert(mode)
    image = load_image(_encode(original, "TIFF"))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.asarray(original.convert("RGB")))


def test_a_given_pil_image_is_not_modified() -> None:
    original = Image.new("RGBA", (5, 4), (1, 2, 3, 4))
    load_image(original)
    assert original.mode == "RGBA"


def test_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_is_ignored_like_the_official_code_unless_asked_for() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _encode(Image.new("RGB", (40, 20), (0, 255, 0)), exif=exif)
    assert load_image(data).size == (40, 20)
    assert load_image(data, apply_exif_orientation=True).size == (20, 40)


def test_missing_file(tmp_path: Path) -> None:
    _raises_input_error(tmp_path / "nope.png", "does not exist")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    _raises_input_error(tmp_path, "not a regular file")


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"this is not an image", "not an image file"), (b"\x89PNG\r\n\x1a\n garbage", "corrupt or truncated")],
)
def test_corrupt_bytes(data: bytes, match: str) -> None:
    _raises_input_error(data, match)


def test_empty_bytes() -> None:
    _raises_input_error(b"", "empty")


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = _encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    error = _raises_input_error(path, "corrupt or truncated")
    assert "truncated.png" in str(error)


def test_zero_pixel_images() -> None:
    _raises_input_error(_png_header_only(0, 5), "not an image file")  # PIL refuses the header itself
    _raises_input_error(Image.new("RGB", (0, 0)), "zero size")


def test_more_pixels_than_max_pixels() -> None:
    error = _raises_input_error(INPUT_PNG, "more than the limit", max_pixels=300 * 203 - 1)
    assert "300x203" in str(error)
    assert load_image(INPUT_PNG, max_pixels=300 * 203).size == (300, 203)
    _raises_input_error(Image.new("RGB", (10, 10)), "more than the limit", max_pixels=99)


def test_decompression_bomb_is_refused_from_the_header_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Between PIL's warning and error thresholds: PIL only warns (silenced), our default limit refuses it.
        _raises_input_error(_png_header_only(10_000, 10_000), "more than the limit")
        # Above PIL's own hard limit, even when ours would allow it: still an InputError.
        _raises_input_error(_png_header_only(20_000, 20_000), "too large", max_pixels=10**9)


def test_wrong_source_type() -> None:
    _raises_input_error(123, "must be a file path, bytes or a PIL")
