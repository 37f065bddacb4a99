"""Processor: configs, image preprocessing and model inputs, against the official goldens of janus-tiny."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor

from janus_plugins.deepseek_chat.template import JANUS_PRO_SYSTEM_PROMPT, DeepSeekChatTemplate
from janus_plugins.deepseek_chat.tokenizer import HFTextTokenizer
from janus_plugins.guidance import ClassifierFreeGuidance, NoGuidance
from janus_sdk.errors import ConfigError, InputError
from janus_sdk.images import ImageProcessor, ImageProcessorConfig
from janus_sdk.prompts import (
    Message,
    ProcessorConfig,
    UnderstandingInputs,
    build_generation_prompt_ids,
    build_understanding_inputs,
    expand_image_tokens,
    format_generation_prompt,
    guidance_rows,
)

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
INPUT_PNG = FIXTURE / "golden" / "input.png"
QUESTION = "What is shown in this image?"
GEN_PROMPT = "A red cube on a blue table."
EOS_TEXT = "<｜end▁of▁sentence｜>"


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(FIXTURE / "golden" / "golden.safetensors")


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return dict(json.loads((FIXTURE / "golden" / "manifest.json").read_text(encoding="utf-8"))["info"])


@pytest.fixture(scope="module")
def tokenizer() -> HFTextTokenizer:
    return HFTextTokenizer.from_directory(CHECKPOINT)


@pytest.fixture(scope="module")
def template() -> DeepSeekChatTemplate:
    return DeepSeekChatTemplate()


@pytest.fixture(scope="module")
def image_processor() -> ImageProcessor:
    return ImageProcessor(ImageProcessorConfig.from_file(CHECKPOINT / "preprocessor_config.json"))


@pytest.fixture(scope="module")
def processor_config() -> ProcessorConfig:
    return ProcessorConfig.from_file(CHECKPOINT / "processor_config.json")


@pytest.fixture
def build(
    tokenizer: HFTextTokenizer,
    template: DeepSeekChatTemplate,
    image_processor: ImageProcessor,
    processor_config: ProcessorConfig,
) -> Any:
    def run(messages: list[Message], system_prompt: str | None = None) -> UnderstandingInputs:
        return build_understanding_inputs(
            messages, tokenizer, template, image_processor, processor_config, system_prompt
        )

    return run


def _rgb(path: Path = INPUT_PNG) -> Image.Image:
    return Image.open(path).convert("RGB")


# -- configs -------------------------------------------------------------------------------------------------


def test_official_config_files_validate(
    image_processor: ImageProcessor, processor_config: ProcessorConfig
) -> None:
    config = image_processor.config
    assert (config.image_size, config.min_size, config.do_normalize) == (384, 14, True)
    assert config.image_mean == config.image_std == (0.5, 0.5, 0.5)
    assert config.fill_color == (127, 127, 127)
    assert config == ImageProcessorConfig(background_color=(127, 127, 127))  # the defaults are Janus-Pro's
    assert processor_config == ProcessorConfig()
    assert processor_config.num_image_tokens == 576 and processor_config.image_tag == "<image_placeholder>"


def test_pad_colour_is_derived_from_the_mean_like_the_official_processor() -> None:
    clip = ImageProcessorConfig(image_mean=(0.48145466, 0.4578275, 0.40821073))
    assert clip.fill_color == (122, 116, 104)  # int(255 * m), truncated
    with pytest.raises(ValueError, match="disagrees"):
        ImageProcessorConfig(background_color=(0, 0, 0))


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.json"):
        ImageProcessorConfig.from_file(tmp_path / "missing.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ProcessorConfig.from_file(bad_json)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"image_size": 384, "imag_mean": [0.5] * 3}), encoding="utf-8")
    with pytest.raises(ConfigError, match="imag_mean: unknown key"):
        ImageProcessorConfig.from_file(unknown)
    special = tmp_path / "special.json"
    special.write_text(json.dumps({"add_special_token": True}), encoding="utf-8")
    with pytest.raises(ConfigError, match="add_special_token"):
        ProcessorConfig.from_file(special)


# -- images --------------------------------------------------------------------------------------------------


def test_resize_and_pad_matches_golden_exactly(
    image_processor: ImageProcessor, golden: dict[str, Tensor], info: dict[str, Any]
) -> None:
    width, height = image_processor.resized_size(*info["image_size_wh"])
    assert [height, width] == info["resize_target_hw"]  # 259 x 384: truncation (rounding would give 260)
    padded = image_processor.resize_and_pad(_rgb())
    assert padded.dtype == np.uint8 and padded.shape == (384, 384, 3)
    np.testing.assert_array_equal(padded, golden["image_resized_padded_uint8"].numpy())
    left, top = info["paste_offset_xy"]
    assert (padded[:top] == 127).all() and (padded[top + height :] == 127).all() and left == 0


def test_min_size_and_tall_images_are_centred_horizontally(image_processor: ImageProcessor) -> None:
    assert image_processor.resized_size(1000, 10) == (384, 14)
    padded = image_processor.resize_and_pad(Image.new("RGB", (100, 300), (255, 0, 0)))
    width = 128  # int(100 / 300 * 384)
    left = (384 - width) // 2
    assert (padded[:, left : left + width] == [255, 0, 0]).all()
    assert (padded[:, :left] == 127).all() and (padded[:, left + width :] == 127).all()


def test_pixel_values_match_golden(image_processor: ImageProcessor, golden: dict[str, Tensor]) -> None:
    pixels = image_processor([_rgb()])
    assert pixels.dtype == torch.float32 and pixels.shape == (1, 3, 384, 384)
    torch.testing.assert_close(pixels, golden["und_pixel_values"][0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("do_normalize", [True, False])
def test_rescale_then_normalise_follows_the_hf_arithmetic(do_normalize: bool) -> None:
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    processor = ImageProcessor(
        ImageProcessorConfig(image_size=32, image_mean=mean, image_std=std, do_normalize=do_normalize)
    )
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    expected = (np.asarray(image).astype(np.float64) * (1 / 255)).astype(np.float32).transpose(2, 0, 1)
    if do_normalize:
        mean32, std32 = (np.array(v, dtype=np.float32)[:, None, None] for v in (mean, std))
        expected = (expected - mean32) / std32
    np.testing.assert_array_equal(processor([image])[0].numpy(), expected)


def test_no_images_gives_an_empty_batch(image_processor: ImageProcessor) -> None:
    assert image_processor([]).shape == (0, 3, 384, 384)


# -- understanding inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [QUESTION, f"<image_placeholder>\n{QUESTION}"], ids=["tag-inserted", "tag-written"]
)
def test_understanding_inputs_match_golden(
    build: Any, tokenizer: HFTextTokenizer, golden: dict[str, Tensor], info: dict[str, Any], content: str
) -> None:
    inputs = build([Message(role="user", content=content, images=(INPUT_PNG,))])
    assert inputs.prompt == info["und_sft_format"]
    assert tokenizer.encode(inputs.prompt) == golden["und_text_ids"].tolist()
    for name in ("input_ids", "attention_mask", "images_seq_mask", "images_emb_mask"):
        actual, expected = getattr(inputs, name), golden[f"und_{name}"]
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), name
    assert inputs.pixel_values.dtype == torch.float32
    torch.testing.assert_close(inputs.pixel_values, golden["und_pixel_values"], atol=1e-6, rtol=0)


def test_official_conversation_with_empty_assistant_turn_gives_the_same_inputs(
    build: Any, golden: dict[str, Tensor]
) -> None:
    inputs = build([Message(role="user", content=QUESTION, images=(INPUT_PNG,)), Message(role="assistant")])
    assert torch.equal(inputs.input_ids, golden["und_input_ids"])


def test_two_images_in_one_message(
    build: Any, tokenizer: HFTextTokenizer, image_processor: ImageProcessor
) -> None:
    second = Image.new("RGB", (50, 80), (10, 200, 30))
    inputs = build([Message(role="user", content="Compare them.", images=(INPUT_PNG, second))])
    assert (
        "<|User|>: <image_placeholder><image_placeholder>\nCompare them.\n\n<|Assistant|>:" in inputs.prompt
    )
    ids = inputs.input_ids[0]
    image_id, start, end = (
        tokenizer.token_id(t) for t in ("<image_placeholder>", "<begin_of_image>", "<end_of_image>")
    )
    assert len(ids) == len(tokenizer.encode(inputs.prompt)) + 2 * (576 + 1)
    starts = (ids == start).nonzero().flatten().tolist()
    assert len(starts) == 2 and starts[1] == starts[0] + 578
    for s in starts:
        assert (ids[s + 1 : s + 577] == image_id).all() and ids[s + 577] == end
    assert int(inputs.images_seq_mask.sum()) == 2 * 576
    assert inputs.images_emb_mask.shape == (1, 2, 576) and bool(inputs.images_emb_mask.all())
    assert inputs.pixel_values.shape == (1, 2, 3, 384, 384)
    torch.testing.assert_close(inputs.pixel_values[0], image_processor([_rgb(), second]), atol=0, rtol=0)


def test_images_across_turns_follow_message_order(build: Any, image_processor: ImageProcessor) -> None:
    second = Image.new("RGB", (30, 30), (0, 0, 255))
    inputs = build(
        [
            Message(role="user", content="First?", images=(INPUT_PNG,)),
            Message(role="assistant", content="A picture."),
            Message(role="user", content="And this <image_placeholder>?", images=(second,)),
        ]
    )
    assert inputs.prompt.endswith(
        "<|User|>: <image_placeholder>\nFirst?\n\n<|Assistant|>: A picture."
        + EOS_TEXT
        + "<|User|>: And this <image_placeholder>?\n\n<|Assistant|>:"
    )
    torch.testing.assert_close(inputs.pixel_values[0], image_processor([_rgb(), second]), atol=0, rtol=0)


def test_multi_turn_prompt_follows_the_official_template(build: Any) -> None:
    inputs = build(
        [
            Message(role="user", content="  Hello!  "),
            Message(role="assistant", content="Hi! This is Tony."),
            Message(role="user", content="Who are you?"),
        ]
    )
    # By hand from conversation.py (DeepSeek style, sep="\n\n", sep2=EOS) and the processor's strip() calls.
    expected = (
        JANUS_PRO_SYSTEM_PROMPT
        + "\n\n<|User|>: Hello!\n\n<|Assistant|>: Hi! This is Tony."
        + EOS_TEXT
        + "<|User|>: Who are you?\n\n<|Assistant|>:"
    )
    assert inputs.prompt == expected
    assert inputs.pixel_values.shape == (1, 0, 3, 384, 384) and inputs.images_emb_mask.shape == (1, 0, 576)
    assert not inputs.images_seq_mask.any()


def test_system_prompt_sources(build: Any) -> None:
    user = Message(role="user", content="Hi")
    assert build([user], system_prompt="").prompt == "<|User|>: Hi\n\n<|Assistant|>:"
    assert build([user], system_prompt="Be brief.").prompt == "Be brief.\n\n<|User|>: Hi\n\n<|Assistant|>:"
    system = Message(role="system", content="Be kind.")
    assert build([system, user]).prompt == "Be kind.\n\n<|User|>: Hi\n\n<|Assistant|>:"
    with pytest.raises(InputError, match="not both"):
        build([system, user], system_prompt="x")


@pytest.mark.parametrize(
    ("content", "images", "tags", "count"),
    [
        ("<image_placeholder> and <image_placeholder>", (INPUT_PNG,), 2, 1),
        ("<image_placeholder> hi", (), 1, 0),
    ],
)
def test_mismatched_image_and_tag_counts(
    build: Any, content: str, images: tuple[Path, ...], tags: int, count: int
) -> None:
    with pytest.raises(
        InputError, match=rf"{tags} image tag\(s\) '<image_placeholder>' but {count} image\(s\)"
    ):
        build([Message(role="user", content=content, images=images)])


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "no user message"),
        ([Message(role="user", content="  ")], "prompt is empty"),
        ([Message(role="assistant", content="Hi")], "role 'assistant' where 'user'"),
        ([Message(role="user", content="a"), Message(role="user", content="b")], "alternate"),
        ([Message(role="user", content="a"), Message(role="system", content="b")], "must come first"),
        (
            [Message(role="system", content="s", images=(INPUT_PNG,)), Message(role="user")],
            "cannot carry images",
        ),
        ([Message(role="user", content="see", images=(FIXTURE / "missing.png",))], "does not exist"),
    ],
)
def test_invalid_conversations(build: Any, messages: list[Message], match: str) -> None:
    with pytest.raises(InputError, match=match):
        build(messages)


def test_an_image_alone_is_a_valid_prompt(build: Any) -> None:
    inputs = build([Message(role="user", images=(INPUT_PNG,))])
    assert inputs.prompt.endswith("<|User|>: <image_placeholder>\n\n<|Assistant|>:")


def test_to_casts_only_pixel_values(build: Any) -> None:
    inputs = build([Message(role="user", content=QUESTION, images=(INPUT_PNG,))]).to("cpu", torch.bfloat16)
    assert inputs.pixel_values.dtype == torch.bfloat16 and inputs.input_ids.dtype == torch.int64


def test_expand_image_tokens() -> None:
    ids = torch.tensor([1, 9, 2, 9, 3])
    expected = [1, 7, 9, 9, 8, 2, 7, 9, 9, 8, 3]
    assert expand_image_tokens(ids, image_id=9, start_id=7, end_id=8, num_image_tokens=2).tolist() == expected
    assert expand_image_tokens(torch.tensor([4, 5]), 9, 7, 8, 576).tolist() == [4, 5]


# -- text-to-image prompts -----------------------------------------------------------------------------------


def test_generation_prompt_matches_golden(
    tokenizer: HFTextTokenizer,
    template: DeepSeekChatTemplate,
    golden: dict[str, Tensor],
    info: dict[str, Any],
) -> None:
    assert format_generation_prompt(GEN_PROMPT, template) == info["gen_prompt_formatted"]
    ids = build_generation_prompt_ids(GEN_PROMPT, tokenizer, template)
    assert ids == golden["gen_prompt_ids"].tolist()
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.token_id("<begin_of_image>")
    with pytest.raises(InputError, match="empty"):
        format_generation_prompt(" \n", template)


def test_guidance_rows_match_golden(tokenizer: HFTextTokenizer, golden: dict[str, Tensor]) -> None:
    """The cfg guidance builds the official [cond, uncond] layout, bit for bit; one branch, the prompt."""
    prompt = golden["gen_prompt_ids"]
    rows = guidance_rows(prompt, 2, ClassifierFreeGuidance(5.0), pad_id=tokenizer.pad_id)
    assert rows.dtype == torch.int64
    assert torch.equal(rows, golden["gen_cond_uncond_ids"].long())
    for one_branch in (ClassifierFreeGuidance(1.0), NoGuidance()):
        cond_only = guidance_rows(prompt.tolist(), 3, one_branch, pad_id=tokenizer.pad_id)
        assert torch.equal(cond_only, prompt.repeat(3, 1))


@pytest.mark.parametrize(("ids", "samples"), [([1, 2, 3], 0), ([1], 1)])
def test_guidance_rows_rejects_bad_arguments(ids: list[int], samples: int) -> None:
    with pytest.raises(InputError):
        guidance_rows(ids, samples, ClassifierFreeGuidance(5.0), pad_id=0)


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("processing", "left_pad", "prompts"),
        ("processing", "ImageProcessor", "images"),
        ("imageio", "to_pil", "images"),
    ],
)
def test_moved_names_still_import_from_their_old_module_with_a_warning(old: str, name: str, new: str) -> None:
    before, after = (importlib.import_module(f"janus_sdk.{module}") for module in (old, new))
    moved = rf"janus_sdk\.{old}\.{name} moved to janus_sdk\.{new}\.{name}"
    with pytest.warns(DeprecationWarning, match=moved):
        assert getattr(before, name) is getattr(after, name)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        before.missing  # noqa: B018
