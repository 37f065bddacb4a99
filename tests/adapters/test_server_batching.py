"""Concurrent requests batched by the server: one forward pass per step for several clients, each client
getting what it would get alone for its seed (the real `openai` client against janus-tiny on 127.0.0.1)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from PIL import Image

from janus_adapters.server import ServerSettings, create_app, serve_in_thread
from janus_sdk.pipeline.janus import JanusPipeline

CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny" / "checkpoint"
MODEL = "janus-tiny"
SETTINGS = ServerSettings(
    model_name=MODEL, max_n=4, image_batch=4, chat_batch=3, batch_window_ms=30_000, max_tokens=64
)
"""A window far longer than any test: a group starts when its budget is full, so these tests do not depend
on when the requests arrive."""


@pytest.fixture(scope="module")
def pipeline() -> JanusPipeline:
    return JanusPipeline.from_pretrained(CHECKPOINT, device="cpu")


@pytest.fixture(scope="module")
def client(pipeline: JanusPipeline) -> Iterator[openai.OpenAI]:
    with serve_in_thread(create_app(pipeline, SETTINGS)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


class Calls:
    """Records the calls of one pipeline method (its first argument and keyword settings) while active."""

    def __init__(self, pipeline: JanusPipeline, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[Any, dict[str, Any]]] = []
        original: Callable[..., Any] = getattr(pipeline, method)

        def recorded(first: Any, **settings: Any) -> Any:
            self.seen.append((first, settings))
            return original(first, **settings)

        monkeypatch.setattr(pipeline, method, recorded)


def pixels(b64: str | None) -> np.ndarray[Any, Any]:
    assert b64 is not None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_concurrent_image_requests_share_a_batch_and_get_their_own_seeds_images(
    client: openai.OpenAI, pipeline: JanusPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(pipeline, "generate_images", monkeypatch)
    requests = [  # prompt, n, seed, cfg_weight: the first three fill one batch of 4, the last has its own
        ("a red fox", 2, 7, 5.0),
        ("a tall blue lighthouse at dusk", 1, 3, 5.0),
        ("a red fox", 1, 100, 5.0),
        ("a red fox", 4, 7, 2.0),
    ]

    def ask(prompt: str, n: int, seed: int, cfg: float) -> list[np.ndarray[Any, Any]]:
        answer = client.images.generate(
            model=MODEL, prompt=prompt, n=n, extra_body={"seed": seed, "cfg_weight": cfg}
        )
        return [pixels(image.b64_json) for image in answer.data or []]

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: ask(*r), requests))
    monkeypatch.undo()

    assert len(calls.seen) == 2, "one forward pass per step for each settings"
    by_cfg = {s["cfg_weight"]: sorted(zip(prompts, s["seed"], strict=True)) for prompts, s in calls.seen}
    assert by_cfg[5.0] == [
        ("a red fox", 7),
        ("a red fox", 8),
        ("a red fox", 100),
        ("a tall blue lighthouse at dusk", 3),
    ]
    assert by_cfg[2.0] == [("a red fox", seed) for seed in (7, 8, 9, 10)]
    # each image as its own call would make it (generate_images with a seed per image guarantees that,
    # tests/test_prompt_batches.py): here one call per cfg_weight, in request order
    for cfg in (5.0, 2.0):
        mine = [
            (prompt, seed + i, image)
            for (prompt, n, seed, c), images in zip(requests, answers, strict=True)
            if c == cfg
            for i, image in enumerate(images)
        ]
        expected = pipeline.generate_images(
            [prompt for prompt, _, _ in mine], seed=[seed for _, seed, _ in mine], cfg_weight=cfg
        )
        for (prompt, seed, image), alone in zip(mine, expected, strict=True):
            np.testing.assert_array_equal(image, np.asarray(alone), err_msg=f"{prompt!r} seed {seed}")


def test_concurrent_chats_are_decoded_together_each_with_its_own_seed_and_limit(
    client: openai.OpenAI, pipeline: JanusPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(pipeline, "stream_chat_batch", monkeypatch)
    requests = [("Tell me a story.", 11, 12), ("Hi", 5, 3), ("What is a lighthouse for?", 11, 20)]

    def ask(text: str, seed: int, limit: int) -> tuple[str, str, int]:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": text}],
            max_tokens=limit,
            temperature=0.9,
            seed=seed,
        )
        assert answer.usage is not None
        choice = answer.choices[0]
        return choice.message.content or "", choice.finish_reason, answer.usage.completion_tokens

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: ask(*r), requests))
    monkeypatch.undo()

    [(conversations, settings)] = calls.seen
    assert sorted(zip(settings["seed"], settings["max_new_tokens"], strict=True)) == [
        (5, 3),
        (11, 12),
        (11, 20),
    ]
    assert len(conversations) == 3
    for (text, seed, limit), (content, reason, tokens) in zip(requests, answers, strict=True):
        alone = pipeline.stream_chat(text, seed=seed, max_new_tokens=limit, do_sample=True, temperature=0.9)
        assert content == "".join(alone)
        assert (reason, tokens) == (alone.finish_reason, alone.usage.completion_tokens)
