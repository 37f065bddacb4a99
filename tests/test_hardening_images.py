"""Hostile and unusual images through `load_image`, the `ImageProcessor` and `JanusPipeline.chat`.

Every case either works like the official path (`Image.open(...).convert("RGB")`, then resize + pad) or raises
InputError with a message naming the source and the problem; no PIL exception escapes. A bounded number of
derandomised examples, no example database written, and no time limit per example: what keeps a hostile image
from running long is the pixel limit checked before decoding, which the tests assert as behaviour.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps

from janus_sdk import InputError, JanusPipeline
from janus_sdk.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    ImageProcessor,
    ImageProcessorConfig,
    load_image,
)
from small_pipeline import INPUT_PNG, fast_pipeline, model_must_not_run

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROCESSOR = ImageProcessor()
SIDE = PROCESSOR.image_size
FILL = (127 / 255 - 0.5) / 0.5  # the pad colour (127, 127, 127) after rescaling and normalising


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def official(data: bytes) -> np.ndarray:
    """What the official `load_pil_images` gives for these bytes."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def outcome(source: Any, **kwargs: Any) -> Image.Image | InputError:
    """The loaded image, or the InputError, checked for being clean (no chained PIL exception)."""
    try:
        image = load_image(source, **kwargs)
    except InputError as exc:
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), "PIL trace"
        assert "image" in str(exc)
        return exc
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    assert PROCESSOR.resize_and_pad(image).shape == (SIDE, SIDE, 3)
    return image


# ---------------------------------------------------------------- fuzzing

SEEDS = {
    "png": encode(noise(23, 17)),
    "jpeg": encode(noise(23, 17), "JPEG"),
    "jpeg-progressive": encode(noise(23, 17), "JPEG", progressive=True),
    "gif": encode(noise(23, 17), "GIF", save_all=True, append_images=[noise(23, 17, 1)]),
    "apng": encode(noise(23, 17), "PNG", save_all=True, append_images=[noise(23, 17, 1)]),
    "webp": encode(noise(23, 17), "WEBP"),
    "bmp": encode(noise(23, 17), "BMP"),
    "tiff": encode(noise(23, 17), "TIFF"),
    "tiff-lzw": encode(noise(23, 17), "TIFF", compression="tiff_lzw"),
    "ppm": encode(noise(23, 17), "PPM"),
    "png-16bit": encode(Image.fromarray(np.arange(391, dtype=np.uint16).reshape(17, 23) * 150)),
}
MAGICS = [data[:8] for data in SEEDS.values()]


@FUZZ
@given(st.one_of(st.binary(max_size=4096), st.tuples(st.sampled_from(MAGICS), st.binary(max_size=2048))))
def test_random_bytes(data: bytes | tuple[bytes, bytes]) -> None:
    outcome(data if isinstance(data, bytes) else data[0] + data[1])


@FUZZ
@given(
    st.sampled_from(sorted(SEEDS)),
    st.one_of(st.none(), st.integers(min_value=0)),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
)
def test_truncated_and_damaged_files(fmt: str, cut: int | None, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SEEDS[fmt])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    result = outcome(bytes(data))
    if isinstance(result, Image.Image):  # it decoded: then exactly like the official code
        np.testing.assert_array_equal(np.asarray(result), official(bytes(data)))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "jpeg-progressive", "gif", "webp", "tiff"])
def test_every_truncation_is_an_input_error_or_the_official_image(fmt: str) -> None:
    data = SEEDS[fmt]
    errors = 0
    for cut in range(0, len(data), max(1, len(data) // 41)):
        result = outcome(data[:cut])
        if isinstance(result, InputError):
            errors += 1
            assert "truncated" in str(result) or "not an image file" in str(result) or "empty" in str(result)
        else:
            np.testing.assert_array_equal(np.asarray(result), official(data[:cut]))
    assert errors > 0


def test_a_decoder_failing_in_an_unexpected_way_is_still_an_input_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for failure in (
        NotImplementedError("odd pixel format"),
        IndexError("list index out of range"),
        KeyError(3),
    ):

        def broken_load(self: ImageFile.ImageFile, failure: Exception = failure) -> None:
            raise failure

        monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
        result = outcome(SEEDS["png"])
        assert isinstance(result, InputError) and type(failure).__name__ in str(result)


@pytest.mark.parametrize(
    "data",
    [
        encode(noise(8, 8).convert("RGBA"), "DDS"),  # a DDS variant used to leak NotImplementedError
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",  # EPS would start Ghostscript
        encode(noise(8, 8), "PCX"),
        b"<svg xmlns='http://www.w3.org/2000/svg' width='8' height='8'/>",
    ],
    ids=["dds", "eps", "pcx", "svg"],
)
def test_formats_outside_the_allowed_list_are_refused(data: bytes) -> None:
    result = outcome(data)
    assert isinstance(result, InputError) and "supported format" in str(result)
    assert "PNG, JPEG" in str(result)


def test_allowed_formats_are_the_common_raster_ones() -> None:
    assert {"PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"} <= set(IMAGE_FORMATS)
    assert not {"EPS", "PDF", "DDS", "FITS", "SPIDER"} & set(IMAGE_FORMATS)


# ---------------------------------------------------------------- sizes and aspect ratios

SIDES = st.one_of(st.integers(1, 64), st.sampled_from([1, 2, 13, 14, 15, 383, 384, 385, 1000, 5000]))


@settings(FUZZ, max_examples=60)
@given(SIDES, SIDES)
def test_any_size_is_resized_and_centred_like_the_official_processor(width: int, height: int) -> None:
    image = load_image(Image.new("RGB", (width, height), (200, 30, 90)))
    new_w, new_h = PROCESSOR.resized_size(width, height)
    assert max(new_w, new_h) == SIDE and min(new_w, new_h) >= 14
    pixels = PROCESSOR([image])[0]
    assert pixels.shape == (3, SIDE, SIDE) and bool(pixels.isfinite().all())
    top, left = (SIDE - new_h) // 2, (SIDE - new_w) // 2
    inside = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    inside[top : top + new_h, left : left + new_w] = True
    assert bool(((pixels[:, ~inside] - FILL).abs() < 1e-6).all())  # the padding is the mean colour
    expected = torch.tensor([200, 30, 90]).view(3, 1) / 255 * 2 - 1
    assert torch.allclose(pixels[:, inside], expected, atol=1.5 / 127.5)  # bicubic keeps a flat colour


@pytest.mark.parametrize(("width", "height"), [(1, 5000), (5000, 1), (1, 1)])
def test_extreme_aspect_ratios_and_one_pixel(width: int, height: int) -> None:
    image = load_image(encode(noise(width, height)))
    canvas = PROCESSOR.resize_and_pad(image)
    new_w, new_h = PROCESSOR.resized_size(width, height)
    assert (new_w, new_h) == {(1, 5000): (14, 384), (5000, 1): (384, 14), (1, 1): (384, 384)}[(width, height)]
    top, left = (SIDE - new_h) // 2, (SIDE - new_w) // 2
    expected = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(canvas[top : top + new_h, left : left + new_w], expected)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (up to 2**31 - 1) but that holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_zero_pixel_images() -> None:
    for source in (
        png_header_only(0, 7),
        png_header_only(7, 0),
        Image.new("RGB", (0, 5)),
        Image.new("L", (5, 0)),
    ):
        assert isinstance(outcome(source), InputError)
    with pytest.raises(InputError, match="zero size"):
        PROCESSOR([Image.new("RGB", (0, 3))])


# ---------------------------------------------------------------- decompression bombs


def patched(fmt: str, offset: Callable[[bytes], int], layout: str) -> Callable[[int, int], bytes]:
    """A 1 x 1 image file of `fmt` whose header is rewritten to claim width x height."""

    def claiming(width: int, height: int) -> bytes:
        data = bytearray(encode(Image.new("RGB", (1, 1)), fmt))
        at = offset(bytes(data))
        values = (height, width) if layout.startswith(">") else (width, height)
        data[at : at + struct.calcsize(layout)] = struct.pack(layout, *values)
        return bytes(data)

    return claiming


BOMBS: dict[str, Callable[[int, int], bytes]] = {
    "png": png_header_only,
    "gif": patched("GIF", lambda d: 6, "<HH"),
    "bmp": patched("BMP", lambda d: 18, "<ii"),
    "jpeg": patched("JPEG", lambda d: d.index(b"\xff\xc0") + 5, ">HH"),
    "ppm": lambda w, h: f"P6\n{w} {h}\n255\n".encode(),
}


@FUZZ
@given(st.sampled_from(sorted(BOMBS)), st.integers(1, 65535), st.integers(1, 65535), st.integers(1, 10**6))
def test_a_header_claiming_more_pixels_than_the_limit_is_refused_before_decoding(
    fmt: str, width: int, height: int, max_pixels: int
) -> None:
    result = outcome(BOMBS[fmt](width, height), max_pixels=max_pixels)
    if width * height > max_pixels:
        assert isinstance(result, InputError)
        assert "more than the limit" in str(result) or "too large to decode safely" in str(result)


@pytest.mark.parametrize("fmt", sorted(BOMBS))
def test_the_default_limit_refuses_bombs(fmt: str) -> None:
    assert ImageProcessorConfig().max_pixels == DEFAULT_MAX_PIXELS <= 100_000_000
    for width, height, message in [(10_000, 10_000, "more than the limit"), (60_000, 60_000, "too large")]:
        result = outcome(BOMBS[fmt](width, height))
        assert isinstance(result, InputError) and message in str(result), result


def test_the_limit_is_an_option_of_the_processor() -> None:
    tight = ImageProcessor(ImageProcessorConfig(max_pixels=300 * 203 - 1))
    with pytest.raises(InputError, match="more than the limit of 60,899"):
        tight.load(INPUT_PNG)
    assert ImageProcessor(ImageProcessorConfig(max_pixels=300 * 203)).load(INPUT_PNG).size == (300, 203)


# ---------------------------------------------------------------- modes, frames, orientation


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (10, 6))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.paste(1, (5, 0, 10, 6))
    image.info["transparency"] = 0  # the red half is fully transparent
    return image


MODES: dict[str, Callable[[], bytes]] = {
    "I;16": lambda: encode(Image.fromarray(np.arange(60, dtype=np.uint16).reshape(6, 10) * 1000)),
    "CMYK-jpeg": lambda: encode(Image.new("CMYK", (10, 6), (0, 255, 255, 0)), "JPEG"),
    "P-transparency-png": lambda: encode(palette_with_transparency()),
    "P-transparency-gif": lambda: encode(palette_with_transparency(), "GIF"),
    "LA": lambda: encode(Image.new("LA", (10, 6), (90, 0))),
    "RGBA": lambda: encode(Image.new("RGBA", (10, 6), (250, 10, 10, 0))),
    "1": lambda: encode(Image.new("1", (10, 6), 1)),
    "I-tiff": lambda: encode(Image.new("I", (10, 6), 70_000), "TIFF"),
    "F-tiff": lambda: encode(Image.new("F", (10, 6), 3.5), "TIFF"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_modes_become_rgb_like_the_official_convert(mode: str) -> None:
    data = MODES[mode]()
    image = outcome(data)
    assert isinstance(image, Image.Image)
    np.testing.assert_array_equal(np.asarray(image), official(data))


def test_alpha_is_dropped_not_composited() -> None:
    """The official `.convert("RGB")`: a fully transparent red pixel stays red."""
    assert load_image(MODES["RGBA"]()).getpixel((0, 0)) == (250, 10, 10)


def test_a_mode_pil_cannot_convert_is_an_input_error() -> None:
    source = Image.new("La", (4, 4))
    with pytest.raises(InputError, match=r"mode 'La'.*cannot be converted to RGB"):
        load_image(source)
    with pytest.raises(InputError, match="cannot be converted to RGB"):
        PROCESSOR([source])
    with pytest.raises(InputError, match="takes PIL images"):
        PROCESSOR([np.zeros((4, 4, 3), dtype=np.uint8)])  # type: ignore[list-item]


def frames(fmt: str) -> bytes:
    first, second = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    return encode(
        first, fmt, save_all=True, append_images=[second], **({"lossless": True} if fmt == "WEBP" else {})
    )


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animations_and_multi_page_files_give_their_first_frame(fmt: str) -> None:
    data = frames(fmt)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert load_image(data).getpixel((4, 4)) == (255, 0, 0)


def exif_photo(orientation: int) -> bytes:
    """A JPEG 'photo' (red left, blue right, a green top-left corner) with an EXIF orientation tag."""
    image = Image.new("RGB", (48, 24), (255, 0, 0))
    image.paste((0, 0, 255), (24, 0, 48, 24))
    image.paste((0, 255, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_ignored_by_default_and_honoured_when_asked(orientation: int) -> None:
    data = exif_photo(orientation)
    as_stored = load_image(data)
    np.testing.assert_array_equal(np.asarray(as_stored), official(data))  # the official behaviour
    upright = load_image(data, apply_exif_orientation=True)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    np.testing.assert_array_equal(np.asarray(upright), np.asarray(expected))
    assert upright.size == ((24, 48) if orientation >= 5 else (48, 24))
    processor = ImageProcessor(ImageProcessorConfig(apply_exif_orientation=True))
    np.testing.assert_array_equal(np.asarray(processor.load(data)), np.asarray(expected))


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    pipe: JanusPipeline = fast_pipeline()
    return pipe


CHAT_CASES: dict[str, Callable[[], bytes]] = {
    "one-pixel": lambda: encode(noise(1, 1)),
    "1x5000": lambda: encode(noise(1, 5000)),
    "5000x1": lambda: encode(noise(5000, 1)),
    "animated-gif": lambda: frames("GIF"),
    **{name: MODES[name] for name in ("I;16", "CMYK-jpeg", "P-transparency-png", "LA", "RGBA")},
}


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
def test_chat_takes_unusual_images_like_their_official_rgb_version(pipe: JanusPipeline, case: str) -> None:
    data = CHAT_CASES[case]()
    assert isinstance(pipe.chat("What is shown?", images=[data], max_new_tokens=1), str)
    processor = pipe.image_processor
    reference = Image.fromarray(official(data))
    assert torch.equal(processor([processor.load(data)]), processor([reference]))


@pytest.mark.parametrize(
    "source",
    [b"\x00\x01garbage" * 20, SEEDS["png"][:200], SEEDS["jpeg"][:300], BOMBS["png"](10_000, 10_000), b""],
    ids=["random", "truncated-png", "truncated-jpeg", "bomb", "empty"],
)
def test_chat_refuses_bad_images_before_any_model_work(pipe: JanusPipeline, source: bytes) -> None:
    with model_must_not_run(pipe), pytest.raises(InputError) as info:
        pipe.chat("What is shown?", images=[source], max_new_tokens=1)
    assert info.value.__cause__ is None and "image bytes" in str(info.value)


def test_chat_orientation_policy_is_a_pipeline_option(pipe: JanusPipeline) -> None:
    data = exif_photo(6)
    stored, upright = (
        Image.open(io.BytesIO(data)).convert("RGB"),
        load_image(data, apply_exif_orientation=True),
    )
    upright_pipe = fast_pipeline(image_processor={"apply_exif_orientation": True})
    assert torch.equal(
        pipe.image_processor([pipe.image_processor.load(data)]), pipe.image_processor([stored])
    )
    turned = upright_pipe.image_processor
    assert torch.equal(turned([turned.load(data)]), turned([upright]))
    assert not torch.equal(turned([upright]), turned([stored]))
    assert upright_pipe.chat("What?", images=[data], max_new_tokens=2) == upright_pipe.chat(
        "What?", images=[upright], max_new_tokens=2
    )
