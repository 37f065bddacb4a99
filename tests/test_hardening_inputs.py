"""Hostile prompts, parameters and configs: a clear InputError / ConfigError before any model work starts
(proved with forward pre-hooks on every module of the model, which fail the test if anything runs); and output
files: never overwritten without --overwrite, written atomically (no half-written PNG, no temp file left).
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from janus_sdk import ConfigError, InputError, JanusPipeline
from janus_sdk.cli import output
from janus_sdk.cli.main import main
from janus_sdk.pipeline.decoding import Progress
from small_pipeline import CHECKPOINT, INPUT_PNG, SMALL_IMAGE_SIZE, fast_pipeline, model_must_not_run


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    return fast_pipeline()


def refused(
    pipe: JanusPipeline, call: str, *args: Any, match: str | None = None, **kwargs: Any
) -> InputError:
    """Call `pipe.<call>` and check it raises InputError (matching `match`) without running the model."""
    with model_must_not_run(pipe), pytest.raises(InputError, match=match) as info:
        getattr(pipe, call)(*args, **kwargs)
    error = info.value
    assert error.__cause__ is None, "the error chains an internal exception"
    return error


def test_the_guard_itself_detects_model_work(pipe: JanusPipeline) -> None:
    with model_must_not_run(pipe), pytest.raises(AssertionError, match="model work started"):
        pipe.chat("hello", max_new_tokens=1)
    assert isinstance(pipe.chat("hello", max_new_tokens=1), str)  # and the hooks are gone afterwards


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize("prompt", ["", " ", "\n\t  \n"])
def test_empty_prompts(pipe: JanusPipeline, prompt: str) -> None:
    refused(pipe, "chat", prompt, match="empty")
    refused(pipe, "chat", messages=[{"role": "user", "content": prompt}], match="empty")
    refused(pipe, "generate_image_codes", prompt, match="empty")


def test_no_prompt_and_no_user_turn(pipe: JanusPipeline) -> None:
    refused(pipe, "chat", match="nothing to answer")
    refused(pipe, "chat", messages=[], match="no user message")
    refused(pipe, "chat", messages=[{"role": "assistant", "content": "hi"}], match="role 'assistant'")


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("chat", {"prompt": 123}),
        ("chat", {"prompt": "hi", "system_prompt": 5}),
        ("generate_image_codes", {"prompt": 123}),
        ("generate_image_codes", {"prompt": None}),
    ],
    ids=["chat-int", "system-int", "generate-int", "generate-none"],
)
def test_prompts_of_the_wrong_type(pipe: JanusPipeline, call: str, kwargs: dict[str, Any]) -> None:
    refused(pipe, call, match="must be a string", **kwargs)


@pytest.mark.parametrize("call", ["chat", "generate_image_codes"])
def test_text_that_is_not_valid_unicode(pipe: JanusPipeline, call: str) -> None:
    error = refused(pipe, call, "a lone surrogate \ud800 here")
    assert "not valid Unicode" in str(error) and "\\ud800" in str(error)


def test_control_characters_and_special_token_text_are_just_text(pipe: JanusPipeline) -> None:
    assert isinstance(pipe.chat("nul \x00 bell \x07 <|Assistant|>", max_new_tokens=1), str)
    # An image tag typed by the user is an image slot: without an image it is an error, not a crash.
    refused(pipe, "chat", "describe <image_placeholder>", match="1 image tag")


@pytest.mark.parametrize("images", [[None], [42], 42], ids=["list-of-none", "list-of-int", "int"])
def test_images_of_the_wrong_type(pipe: JanusPipeline, images: Any) -> None:
    assert "image" in str(refused(pipe, "chat", "what is this?", images=images))


def test_images_none_means_no_images(pipe: JanusPipeline) -> None:
    # None is outside chat's signature; the call takes it for no images all the same
    none = pipe.chat("hello", images=None, max_new_tokens=2)
    assert none == pipe.chat("hello", max_new_tokens=2)


def test_a_bare_path_is_one_image_or_a_clear_error(pipe: JanusPipeline) -> None:
    """images="cat.png" instead of ["cat.png"]: never read as one file per letter."""
    try:
        answer = pipe.chat("what is this?", images=str(INPUT_PNG), max_new_tokens=2)
    except InputError as exc:
        assert not re.search(r"image file '.'", str(exc)), str(exc)
        return
    assert answer == pipe.chat("what is this?", images=[INPUT_PNG], max_new_tokens=2)


@pytest.fixture(scope="module")
def short_context() -> JanusPipeline:
    """The tiny model with a context of 640 positions: one image (578 tokens) and a short question fit."""
    language = json.loads((CHECKPOINT / "config.json").read_text())["language_config"]
    params = {k: v for k, v in language.items() if k not in ("model_type", "torch_dtype")}
    return fast_pipeline(llm_backbone={"name": "llama", "params": {**params, "max_context": 640}})


def test_prompts_beyond_the_context(short_context: JanusPipeline) -> None:
    refused(short_context, "chat", "word " * 700, match="context is 640")
    refused(short_context, "chat", "two images", images=[INPUT_PNG, INPUT_PNG], match="fewer images")
    refused(short_context, "generate_image_codes", "word " * 700, match="context of 640")
    # One image and a short question fit; the answer is cut at the end of the context instead of failing.
    progress: list[Progress] = []
    short_context.chat("what?", images=[INPUT_PNG], max_new_tokens=512, on_step=progress.append)
    assert 0 < progress[0].total <= 640 - 578 and all(p.step <= p.total for p in progress)


# ---------------------------------------------------------------- parameters


BAD_CHAT_SETTINGS = [
    {"max_new_tokens": 0},
    {"max_new_tokens": -5},
    {"max_new_tokens": float("nan")},
    {"max_new_tokens": float("inf")},
    {"max_new_tokens": 10**9},
    {"max_new_tokens": 2.5},
    {"do_sample": True, "temperature": float("nan")},
    {"do_sample": True, "temperature": float("inf")},
    {"do_sample": True, "temperature": -1.0},
    {"do_sample": True, "temperature": 0.0},
    {"do_sample": True, "top_p": float("nan")},
    {"do_sample": True, "top_p": 0.0},
    {"do_sample": True, "top_p": -0.5},
    {"do_sample": True, "top_p": 1.5},
    {"do_sample": True, "top_k": -1},
    {"do_sample": "maybe"},
    {"temperature": "hot"},
    {"colour": "red"},
    {"max_tokens": 5},
]


@pytest.mark.parametrize(
    "settings", BAD_CHAT_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_bad_chat_settings_fail_before_any_model_work(pipe: JanusPipeline, settings: dict[str, Any]) -> None:
    error = refused(pipe, "chat", "hello", images=[INPUT_PNG], **settings)
    assert any(key in str(error) for key in settings)  # the message names the offending setting


BAD_IMAGE_SETTINGS = [
    {"n": -1},
    {"n": 65},
    {"n": 10**9},
    {"n": 2.5},
    {"n": float("nan")},
    {"cfg_weight": float("inf")},
    {"cfg_weight": 101.0},
    {"temperature": float("inf")},
    {"temperature": -0.5},
    {"top_p": float("nan")},
    {"top_k": -1},
    {"max_batch": 0},
    {"guidance": ""},
    {"steps": 50},
]


@pytest.mark.parametrize(
    "settings", BAD_IMAGE_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_bad_image_settings_fail_before_any_model_work(pipe: JanusPipeline, settings: dict[str, Any]) -> None:
    error = refused(pipe, "generate_image_codes", "a cube", **settings)
    assert any(key in str(error) for key in settings)


def test_unknown_setting_lists_the_allowed_ones(pipe: JanusPipeline) -> None:
    error = refused(pipe, "chat", "hi", colour="red")
    assert "colour" in str(error) and "max_new_tokens" in str(error) and "temperature" in str(error)
    error = refused(pipe, "generate_image_codes", "a cube", steps=50)
    assert "steps" in str(error) and "cfg_weight" in str(error)


@pytest.mark.parametrize("seed", [-1, float("nan"), 1.5, "seven", 2**70], ids=repr)
@pytest.mark.parametrize("call", ["chat", "generate_image_codes"])
def test_bad_seeds_fail_before_any_model_work(pipe: JanusPipeline, call: str, seed: Any) -> None:
    settings: dict[str, Any] = {"do_sample": True} if call == "chat" else {}
    error = refused(pipe, call, "hello", seed=seed, **settings)
    assert "seed" in str(error)


@pytest.mark.parametrize("call", ["chat", "generate_image_codes"])
def test_a_progress_callback_that_is_not_callable(pipe: JanusPipeline, call: str) -> None:
    refused(pipe, call, "hello", on_step=5, match="on_step")


@pytest.mark.parametrize("call", ["chat", "generate_image_codes"])
def test_a_temperature_so_small_the_logits_overflow(pipe: JanusPipeline, call: str) -> None:
    """logits / 1e-45 is inf in float32: refuse it up front, or sample like greedy, never a torch error."""
    chat = call == "chat"
    settings: dict[str, Any] = {"do_sample": True, "max_new_tokens": 3} if chat else {"cfg_weight": 1.0}
    try:
        result = getattr(pipe, call)("hello", temperature=1e-45, seed=0, **settings)
    except InputError as exc:
        assert "temperature" in str(exc)
        return
    if chat:
        assert result == pipe.chat("hello", max_new_tokens=3)
    else:
        assert result.shape == (1, (SMALL_IMAGE_SIZE // 16) ** 2)


def test_huge_n_is_refused_at_once(pipe: JanusPipeline) -> None:
    error = refused(pipe, "generate_images", "a cube", n=10**9)
    assert "64" in str(error)  # the limit, so the caller knows what to ask for


def test_hostile_codes_for_the_decoder(pipe: JanusPipeline) -> None:
    grid = SMALL_IMAGE_SIZE // 16
    for codes in (
        torch.full((1, grid**2), 16384),
        torch.full((1, grid**2), -1),
        torch.zeros(1, grid**2),
        torch.zeros(2, 3, dtype=torch.long),
        torch.zeros(0, grid**2, dtype=torch.long),
    ):
        refused(pipe, "decode_images", codes)


# ---------------------------------------------------------------- configs


def test_unknown_config_keys_fail_before_any_weight_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*_: Any, **__: Any) -> None:
        raise AssertionError("weights were loaded")

    monkeypatch.setattr("janus_sdk.pipeline.janus.load_state_into", no_loading)
    bad: list[dict[str, Any]] = [
        {"devcie": "cpu"},
        {"generation": {"max_tokens": 5}},
        {"generation": {"temperature": float("nan")}},
        {"image_generation": {"n": 0}},
        {"image_processor": {"max_pixels": 0}},
        {"visual_encoder": {"name": "siglip", "params": {"widht": 3}}},
    ]
    for overrides in bad:
        key = next(iter(overrides))
        with pytest.raises(ConfigError, match=key):
            JanusPipeline.from_config({"checkpoint": str(CHECKPOINT), "device": "cpu", **overrides})


def test_image_limits_are_pipeline_options() -> None:
    small = fast_pipeline(image_processor={"max_pixels": 300 * 203 - 1})
    refused(small, "chat", "what is this?", images=[INPUT_PNG], match="more than the limit of 60,899")


# ---------------------------------------------------------------- output files


def png(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), colour)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def failing_save(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Image.save writes part of a PNG, then fails (disk full, Ctrl-C, ...)."""

    def save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\x89PNG\r\n\x1a\n half an image")
        raise error

    monkeypatch.setattr(Image.Image, "save", save)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=repr)
def test_a_failure_mid_save_leaves_no_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    old = tmp_path / "000.png"
    png((1, 2, 3)).save(old)
    before = listing(tmp_path)
    failing_save(monkeypatch, error)
    with pytest.raises(type(error)):
        output.save_png_atomic(png((9, 9, 9)), tmp_path / "new.png", overwrite=False)
    with pytest.raises(type(error)):
        output.save_png_atomic(png((9, 9, 9)), old, overwrite=True)
    assert listing(tmp_path) == before  # new.png absent, 000.png unchanged, no temporary file left


def test_existing_files_are_never_overwritten_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "001.png").write_bytes(b"precious")
    with pytest.raises(InputError, match="--overwrite"):
        output.planned_paths(out, 2, grid=False, overwrite=False)
    # A file that appears after planning (during a long generation) is not replaced either.
    paths = output.planned_paths(tmp_path / "later", 2, grid=True, overwrite=False)
    paths.images[1].parent.mkdir()
    paths.images[1].write_bytes(b"appeared meanwhile")
    with pytest.raises(InputError, match=r"001\.png already exists"):
        output.write_outputs([png((1, 1, 1)), png((2, 2, 2))], paths, grid=True)
    assert paths.images[1].read_bytes() == b"appeared meanwhile"
    assert sorted(listing(paths.images[0].parent)) == ["000.png", "001.png"]  # no temp files
    # A dangling symlink is an existing file too.
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "000.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(InputError, match="--overwrite"):
        output.planned_paths(tmp_path / "links", 1, grid=False, overwrite=False)


def test_overwrite_replaces_and_files_get_normal_permissions(tmp_path: Path) -> None:
    (tmp_path / "000.png").write_bytes(b"old")
    paths = output.planned_paths(tmp_path, 1, grid=False, overwrite=True)
    output.write_outputs([png((5, 6, 7))], paths, grid=False)
    assert Image.open(tmp_path / "000.png").getpixel((0, 0)) == (5, 6, 7)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "000.png").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    assert sorted(listing(tmp_path)) == ["000.png"]


class FakePipeline:
    """Stands in for a loaded model in `janus generate`: instant 8 x 8 images."""

    def generate_images(self, prompt: str, **_: Any) -> list[Image.Image]:
        return [png((10, 20, 30)), png((40, 50, 60))]


def test_cli_generate_refuses_to_overwrite_and_survives_a_failed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("janus_sdk.cli.model_cmds.load_pipeline", lambda args: FakePipeline())
    out = tmp_path / "imgs"
    args = ["generate", "--model", str(CHECKPOINT), "-n", "2", "--out", str(out), "--no-progress", "a cube"]
    assert main(args) == 0
    first = listing(out)
    assert sorted(first) == ["000.png", "001.png"]
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err
    assert listing(out) == first
    failing_save(monkeypatch, OSError(28, "No space left on device"))
    assert main([*args, "--overwrite"]) == 1
    assert "No space left" in capsys.readouterr().err
    assert listing(out) == first  # the old images survive whole, and no temp file is left
    assert Image.open(io.BytesIO(first["001.png"])).getpixel((0, 0)) == (40, 50, 60)
