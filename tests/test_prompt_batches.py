"""Batches of different prompts (janus-tiny, CPU, float32): one batched forward per step, and per-image seeds
that give each image what its own one-prompt call gives, whatever shares its batch.

Equality is of codes (and, for equal codes, of pixels), not of the LLM's floats: a batch sums its matmuls in
another order than one prompt's call (GEMM blocking depends on the number of rows; a left-padded row attends
over more, masked, positions), so hidden states differ by ~1e-6 (bounded by
`test_padded_rows_compute_what_they_would_alone`), far below what moves a sampled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from janus_plugins.samplers import SampleConfig, Sampler
from janus_sdk import BackendUnavailableError, InputError, JanusPipeline
from janus_sdk.interfaces import LLMBackbone
from janus_sdk.pipeline.decoding import PerRowSampler, generate_text_ids, new_cache
from janus_sdk.prompts import left_pad

CHECKPOINT = Path(__file__).parent / "fixtures" / "janus-tiny" / "checkpoint"
SHORT = "a cat"
LONG = "a lighthouse on a cliff at dusk, waves breaking below, oil painting with thick brush strokes"
IMAGE = Path(__file__).parent / "fixtures" / "janus-tiny" / "golden" / "input.png"


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    return JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def single_codes(pipe: JanusPipeline) -> Tensor:
    """Each image of `[SHORT, LONG]` x n=2 with seeds 3, 1, 4, 1 by its own one-prompt call."""
    calls = [(SHORT, 3), (SHORT, 1), (LONG, 4), (LONG, 1)]
    return torch.cat([pipe.generate_image_codes(prompt, n=1, seed=seed) for prompt, seed in calls])


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


@pytest.mark.parametrize("max_batch", [None, 3, 1])
def test_image_i_of_a_mixed_batch_is_its_own_calls_image(
    pipe: JanusPipeline, single_codes: Tensor, max_batch: int | None
) -> None:
    """Prompts of different lengths (left-padded), per-image seeds, any split into batches."""
    codes = pipe.generate_image_codes([SHORT, LONG], n=2, seed=[3, 1, 4, 1], max_batch=max_batch)
    assert codes.shape == (4, 576)
    assert torch.equal(codes, single_codes)
    assert not torch.equal(codes[1], codes[3])  # one seed, another prompt: another image


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_through_the_captured_decode_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The captured step reads the padding from its cache; fp32 without TF32, which moves floats by ~1e-3."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cuda = JanusPipeline.from_pretrained(CHECKPOINT, device="cuda", dtype="float32")
    codes = cuda.generate_image_codes([SHORT, LONG], seed=[3, 4])
    alone = [cuda.generate_image_codes(prompt, seed=seed) for prompt, seed in ((SHORT, 3), (LONG, 4))]
    assert torch.equal(codes, torch.cat(alone))
    images = cuda.generate_images([LONG, SHORT], seed=[7, 8])
    assert np.array_equal(pixels(images[1:]), pixels(cuda.generate_images(SHORT, seed=8)))


def test_the_pixels_too_whatever_they_are_decoded_with(pipe: JanusPipeline) -> None:
    batch = pipe.generate_images([LONG, SHORT], seed=[7, 8])
    alone = pipe.generate_images(LONG, seed=7) + pipe.generate_images(SHORT, seed=8)
    assert np.array_equal(pixels(batch), pixels(alone))


def test_an_int_seed_draws_the_whole_batch_from_one_generator(pipe: JanusPipeline) -> None:
    """The official semantics (what the goldens prove for n=2): a list of one prompt twice is n=2."""
    listed = pipe.generate_image_codes([SHORT, SHORT], seed=5, cfg_weight=1.0)
    assert torch.equal(listed, pipe.generate_image_codes(SHORT, n=2, seed=5, cfg_weight=1.0))
    assert not torch.equal(listed[0], listed[1])


def test_a_seed_list_of_the_wrong_length_names_both_before_any_model_work(
    pipe: JanusPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object) -> None:
        raise AssertionError("the model ran")

    monkeypatch.setattr(pipe.model.language_model, "new_cache", never)
    with pytest.raises(InputError, match=r"list of 3 .* 4 images \(2 prompt\(s\) x n=2\)"):
        pipe.generate_images([SHORT, LONG], n=2, seed=[1, 2, 3])
    with pytest.raises(InputError, match=r"seed\[1\] must be an integer"):
        pipe.generate_images([SHORT, LONG], seed=[1, -2])
    with pytest.raises(InputError, match="list of 1 but the call makes 2 answers"):
        pipe.chat_batch([SHORT, LONG], seed=[1])


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([SHORT, "  "], "prompt 1: the text-to-image prompt is empty"),
        ([SHORT, 3], "prompt 1: the text-to-image prompt must be a string, got int"),
        ([], "the list of text-to-image prompts is empty"),
        ({SHORT}, "a string or a list of strings, got set"),
    ],
)
def test_a_bad_prompt_of_a_list_is_named(pipe: JanusPipeline, prompts: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        pipe.generate_images(prompts)  # type: ignore[arg-type]


def test_chat_with_a_list_points_at_chat_batch(pipe: JanusPipeline) -> None:
    with pytest.raises(InputError, match="got list; to answer several prompts at once use chat_batch"):
        pipe.chat([SHORT, LONG])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="for one prompt use chat"):
        pipe.chat_batch(SHORT)
    with pytest.raises(InputError, match="prompt 1: a prompt must be a string or a conversation"):
        pipe.chat_batch([SHORT, 5])  # type: ignore[list-item]


class Sampling(TypedDict):
    """Settings passed alike to a batch and to its single chats."""

    do_sample: bool
    temperature: float
    max_new_tokens: int


def test_chat_batch_answers_are_the_single_chats(pipe: JanusPipeline) -> None:
    """Strings (of different lengths) and a conversation with an image, sampled with per-answer seeds."""
    conversation = [{"role": "user", "content": "What is in this picture?", "images": [IMAGE]}]
    settings = Sampling(do_sample=True, temperature=1.0, max_new_tokens=12)
    answers = pipe.chat_batch([SHORT, conversation, LONG], seed=[1, 2, 3], **settings)
    alone = [
        pipe.chat(SHORT, seed=1, **settings),
        pipe.chat(messages=conversation, seed=2, **settings),
        pipe.chat(LONG, seed=3, **settings),
    ]
    assert answers == alone
    assert len(set(answers)) == 3


def test_chat_batch_asks_every_string_about_the_images(pipe: JanusPipeline) -> None:
    questions = ["What is in this picture?", "Describe the colours."]
    answers = pipe.chat_batch(questions, images=[IMAGE], max_new_tokens=10)
    assert answers == [pipe.chat(q, images=[IMAGE], max_new_tokens=10) for q in questions]


class Scripted:
    """A sampler answering a fixed script, whatever the logits."""

    def __init__(self, script: Tensor) -> None:
        self.script, self.step = script, 0

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        self.step += 1
        return self.script[:, self.step - 1]


def test_each_row_of_a_text_batch_ends_on_its_own(pipe: JanusPipeline) -> None:
    """Row 0 ends at its EOS, row 1 after its own max_new_tokens; an ended row reads -1."""
    eos = pipe.tokenizer.eos_id
    script = torch.tensor([[5, eos, 7, 7, 7], [8, 9, 10, 11, 12]])
    embeds = torch.randn(
        2, 6, pipe.model.language_model.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        steps = generate_text_ids(
            pipe.model.language_model,
            embeds,
            Scripted(script),
            max_new_tokens=[5, 4],
            eos_id=eos,
            generator=None,
        )
        assert [t.tolist() for t in steps] == [[5, 8], [-1, 9], [-1, 10], [-1, 11]]


def test_per_row_sampling_draws_each_row_as_a_one_row_call() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    sampler = Sampler(SampleConfig(temperature=2.0))
    seeded = [torch.Generator().manual_seed(s) for s in (10, 11, 10)]
    picked = PerRowSampler([sampler] * 3, seeded)(logits, None)
    alone = [sampler(logits[i : i + 1], torch.Generator().manual_seed(s)) for i, s in enumerate((10, 11, 10))]
    assert torch.equal(picked, torch.cat(alone))


@pytest.fixture(scope="module", params=["sdpa", "eager", "avx2"])
def backbone(request: pytest.FixtureRequest) -> LLMBackbone:
    """The tiny backbone behind each attention backend: every one takes the padding mask."""
    try:
        pipeline = JanusPipeline.from_pretrained(
            CHECKPOINT, device="cpu", dtype="float32", attention=request.param
        )
    except BackendUnavailableError as exc:  # the avx2 kernels need an AVX2 CPU and a compiler
        pytest.skip(str(exc))
    return pipeline.model.language_model


def run_steps(llm: LLMBackbone, prompts: Tensor, steps: Tensor, padding: Tensor | None) -> list[Tensor]:
    """The last position's hidden states after the prompt and after each fed step."""
    rows, length = prompts.shape[:2]
    cache = new_cache(llm, rows, length + steps.shape[1], padding)
    hidden = [llm.hidden_states(prompts, cache, 0)[:, -1]]
    for step in range(steps.shape[1]):
        hidden.append(llm.hidden_states(steps[:, step : step + 1], cache, length + step)[:, -1])
    return hidden


def test_padded_rows_compute_what_they_would_alone(backbone: LLMBackbone) -> None:
    """Blanks never reach a row's real positions (any filler gives the same bits), and each row is its own
    run up to the order of float32 sums."""
    hidden_size = backbone.hidden_size
    gen = torch.Generator().manual_seed(0)
    short, long = (
        torch.randn(2, 5, hidden_size, generator=gen),
        torch.randn(2, 17, hidden_size, generator=gen),
    )
    steps = torch.randn(4, 3, hidden_size, generator=gen)
    with torch.inference_mode():
        batch, padding = left_pad([short, long], 0.0)
        assert padding is not None and padding.tolist() == [12, 12, 0, 0]
        noisy, _ = left_pad([short, long], 1e4)
        padded = run_steps(backbone, batch, steps, padding)
        assert all(
            torch.equal(a, b) for a, b in zip(padded, run_steps(backbone, noisy, steps, padding), strict=True)
        )
        assert all(bool(h.isfinite().all()) for h in padded)
        for rows, prompts in ((slice(0, 2), short), (slice(2, 4), long)):
            alone = run_steps(backbone, prompts, steps[rows], None)
            for a, b in zip(padded, alone, strict=True):
                torch.testing.assert_close(a[rows], b, atol=1e-5, rtol=0)


def test_the_captured_steps_form_takes_the_padding_too(backbone: LLMBackbone) -> None:
    """CUDA graphs replay `run_layers` at a tensor position over the whole cache (masked beyond it); run here
    on the CPU, that form gives a padded batch's steps as the ordinary one does."""
    gen = torch.Generator().manual_seed(1)
    batch, padding = left_pad(
        [
            torch.randn(1, 4, backbone.hidden_size, generator=gen),
            torch.randn(1, 9, backbone.hidden_size, generator=gen),
        ],
        0.0,
    )
    steps = torch.randn(2, 3, backbone.hidden_size, generator=gen)
    run_layers = backbone.run_layers  # type: ignore[attr-defined]
    with torch.inference_mode():
        ordinary = run_steps(backbone, batch, steps, padding)
        cache = new_cache(backbone, 2, 9 + 3, padding)
        captured_form = [backbone.hidden_states(batch, cache, 0)[:, -1]]
        for step in range(3):
            position = torch.tensor([9 + step])
            captured_form.append(run_layers(steps[:, step : step + 1], cache, position)[:, -1])
    for a, b in zip(ordinary, captured_form, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("padded", [False, True], ids=["same-length", "left-padded"])
def test_a_prompts_repeated_rows_go_through_the_layers_once(
    backbone: LLMBackbone, padded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n images of one prompt repeat its rows (n conditional, n unconditional): the layers compute each
    distinct row once and every row gets its keys and values, so the steps after the prompt are what they
    are when every row goes through the layers."""
    hidden_size = backbone.hidden_size
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(1, t, hidden_size, generator=gen) for t in (5 if padded else 9, 9))
    prompts, padding = left_pad([a, b, a, b, a], 0.0)
    steps = torch.randn(5, 3, hidden_size, generator=gen)
    widths: list[int] = []  # rows of each prompt that reaches the first layer

    def record(_: object, args: tuple[Tensor, ...]) -> None:
        if args[0].shape[1] > 1:
            widths.append(args[0].shape[0])

    hook = backbone.model.layers[0].register_forward_pre_hook(record)  # type: ignore[attr-defined]
    try:
        with torch.inference_mode():
            once = run_steps(backbone, prompts, steps, padding)
            monkeypatch.setattr("janus_plugins.deepseek_llm.model.distinct_rows", lambda *_: None)
            every = run_steps(backbone, prompts, steps, padding)
    finally:
        hook.remove()
    assert widths == [2, 5]
    for x, y in zip(once, every, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
