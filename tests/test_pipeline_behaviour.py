"""Pipeline behaviour beyond the goldens: components, attention, limits, cancellation, threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from janus_sdk import BackendUnavailableError, GenerationCancelled, InputError, JanusPipeline, hookimpl
from janus_sdk.config import PipelineConfig
from janus_sdk.pipeline.decoding import Progress
from janus_sdk.plugins import PluginHost

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
MANIFEST = json.loads((FIXTURE / "golden" / "manifest.json").read_text())["info"]
QUESTION = "What is shown in this image?"


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.open(FIXTURE / "golden" / "input.png").convert("RGB")


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    return JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")


def test_eager_attention_gives_the_reference_answer_too(image: Image.Image) -> None:
    eager = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32", attention="eager")
    assert eager.components["attention"].name == "eager"
    assert eager.chat(QUESTION, images=[image], max_new_tokens=16) == MANIFEST["greedy_text"]


def test_xformers_where_it_cannot_run_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailableError, match="sdpa"):
        JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", attention="xformers")


class ChoosesEager:
    """A plugin deciding the attention backend for "auto"."""

    @hookimpl
    def choose_attention_backend(self, device: torch.device, dtype: torch.dtype) -> str:
        return "eager"


def test_auto_attention_asks_the_plugins() -> None:
    host = PluginHost()
    host.load_entry_points()
    host.register(ChoosesEager(), "chooser")
    try:
        config = PipelineConfig.from_checkpoint(
            CHECKPOINT, registry=host.registry, attention={"name": "auto"}, device="cpu"
        )
        assert JanusPipeline.from_config(config, plugins=host).components["attention"].name == "eager"
    finally:
        host.unregister("chooser")


def test_bfloat16_pipeline_runs_and_stays_close(pipe: JanusPipeline, image: Image.Image) -> None:
    bf16 = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    assert isinstance(bf16.chat(QUESTION, images=[image], max_new_tokens=4), str)
    codes = bf16.generate_image_codes("a cube", cfg_weight=1.0, seed=0)
    assert codes.shape == (1, 576) and int(codes.max()) < 16384


def test_prompt_beyond_the_context_names_both_numbers() -> None:
    small = JanusPipeline.from_config(
        PipelineConfig.from_checkpoint(
            CHECKPOINT,
            device="cpu",
            llm_backbone={"name": "llama", "params": {**_tiny_llm_params(), "max_context": 100}},
        )
    )
    with pytest.raises(InputError, match=r"\b\d+ tokens long but the model's context is 100"):
        small.chat("word " * 200)
    with pytest.raises(InputError, match="context of 100"):
        small.generate_images("a cube")


def _tiny_llm_params() -> dict[str, Any]:
    params = json.loads((CHECKPOINT / "config.json").read_text())["language_config"]
    return {k: v for k, v in params.items() if k not in ("model_type", "torch_dtype")}


@pytest.mark.parametrize(
    "settings",
    [
        {"n": 0},
        {"cfg_weight": -1.0},
        {"cfg_weight": float("nan")},
        {"temperature": 0.0},
        {"top_p": 1.5},
        {"n": 10_000},
        {"colour": "red"},
    ],
)
def test_bad_image_settings_fail_before_any_model_work(pipe: JanusPipeline, settings: dict[str, Any]) -> None:
    def never(_: Progress) -> None:
        raise AssertionError("the model ran")

    with pytest.raises(InputError):
        pipe.generate_images("a cube", on_step=never, **settings)


def test_empty_prompt_is_refused(pipe: JanusPipeline) -> None:
    with pytest.raises(InputError):
        pipe.chat("")


def test_cancelling_through_the_callback_leaves_the_pipeline_usable(
    pipe: JanusPipeline, image: Image.Image
) -> None:
    steps: list[int] = []

    def stop_at_five(progress: Progress) -> bool:
        steps.append(progress.step)
        return progress.step < 5

    with pytest.raises(GenerationCancelled):
        pipe.generate_image_codes("a cube", cfg_weight=1.0, seed=0, on_step=stop_at_five)
    assert steps == [1, 2, 3, 4, 5]
    assert pipe.chat(QUESTION, images=[image], max_new_tokens=16) == MANIFEST["greedy_text"]


def test_threads_sharing_a_pipeline_get_the_serial_results(pipe: JanusPipeline, image: Image.Image) -> None:
    serial = [pipe.chat(QUESTION, images=[image], max_new_tokens=8, do_sample=True, seed=s) for s in range(3)]
    results: dict[int, str] = {}

    def work(seed: int) -> None:
        results[seed] = pipe.chat(QUESTION, images=[image], max_new_tokens=8, do_sample=True, seed=seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[s] for s in range(3)] == serial


def test_same_seed_same_images_and_chunking_is_deterministic(pipe: JanusPipeline) -> None:
    a = pipe.generate_image_codes("a cube", n=2, cfg_weight=1.0, seed=7, max_batch=1)
    b = pipe.generate_image_codes("a cube", n=2, cfg_weight=1.0, seed=7, max_batch=1)
    assert torch.equal(a, b) and a.shape == (2, 576)


def test_multi_turn_messages(pipe: JanusPipeline, image: Image.Image) -> None:
    answer = pipe.chat(
        messages=[
            {"role": "user", "content": QUESTION, "images": [image]},
            {"role": "assistant", "content": MANIFEST["greedy_text"]},
            {"role": "user", "content": "And the colours?"},
        ],
        max_new_tokens=4,
    )
    assert isinstance(answer, str)
    with pytest.raises(InputError, match="either prompt"):
        pipe.chat("hi", messages=[{"role": "user", "content": "hi"}])
