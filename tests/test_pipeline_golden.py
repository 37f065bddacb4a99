"""The whole pipeline, through the public API, against the official implementation's goldens (janus-tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor

from janus_plugins import cpu_kernels
from janus_sdk import BackendUnavailableError, JanusPipeline
from janus_sdk.kinds import ComponentKind
from janus_sdk.pipeline.decoding import generate_image_codes
from janus_sdk.prompts import build_generation_prompt_ids, guidance_rows

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
MANIFEST = json.loads((FIXTURE / "golden" / "manifest.json").read_text())["info"]


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(FIXTURE / "golden" / "golden.safetensors")


@pytest.fixture(scope="module", params=["torch", "kernel"])
def pipe(request: pytest.FixtureRequest) -> JanusPipeline:
    """The tiny pipeline with torch's linear layers and with the kernel's base build for this CPU (avx2 on
    x86, neon on ARM64; where it builds): both must reproduce the reference."""
    here = cpu_kernels.target()
    if request.param == "kernel" and here is None:
        pytest.skip("the kernels have no build for this CPU")
    linear = here.isa if request.param == "kernel" and here is not None else "torch"
    try:
        return JanusPipeline.from_pretrained(
            FIXTURE / "checkpoint", device="cpu", dtype="float32", linear=linear
        )
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def _uint8_close(ours: Tensor, reference: Tensor) -> None:
    diff = (ours.int() - reference.int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff == 0).float().mean()) >= 0.999


def test_greedy_chat_reproduces_reference_ids_and_text(
    pipe: JanusPipeline, golden: dict[str, Tensor]
) -> None:
    image = Image.open(FIXTURE / "golden" / "input.png")
    conversation = MANIFEST["und_conversation"][0]["content"]
    answer = pipe.chat(conversation, images=[image], max_new_tokens=16, do_sample=False)
    assert answer == MANIFEST["greedy_text"]


def test_default_placeholder_rule_gives_the_same_prompt(pipe: JanusPipeline) -> None:
    """Images without a tag in the text: one tag per image before the text, then a newline."""
    image = Image.open(FIXTURE / "golden" / "input.png")
    explicit = pipe.chat(
        "<image_placeholder>\nWhat is shown in this image?", images=[image], max_new_tokens=4
    )
    implicit = pipe.chat("What is shown in this image?", images=[image], max_new_tokens=4)
    assert implicit == explicit


def test_stream_chat_concatenates_to_chat(pipe: JanusPipeline, golden: dict[str, Tensor]) -> None:
    image = Image.open(FIXTURE / "golden" / "input.png")
    stream = pipe.stream_chat("What is shown in this image?", images=[image], max_new_tokens=16)
    assert stream.usage.completion_tokens == 0  # counted as decoded
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == MANIFEST["greedy_text"]
    # the usage: the official prompt's ids (576 image tokens included) and the answer's, its EOS not counted
    assert stream.usage.prompt_tokens == golden["und_input_ids"].shape[1]
    greedy = golden["greedy_ids"].flatten().tolist()
    eos = pipe.tokenizer.eos_id
    answer = greedy[: greedy.index(eos)] if eos in greedy else greedy
    assert stream.usage.completion_tokens == len(answer)
    assert stream.usage.total_tokens == stream.usage.prompt_tokens + len(answer)


class TeacherForcing:
    """A Sampler that records the logits it is shown and answers with predetermined tokens."""

    def __init__(self, tokens: Tensor) -> None:
        self.tokens, self.step, self.logits = tokens, 0, []  # type: ignore[var-annotated]

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        self.logits.append(logits.clone())
        token = self.tokens[:, self.step]
        self.step += 1
        return token


def _image_loop(pipe: JanusPipeline, sampler: object, *, num_tokens: int = 576) -> Tensor:
    guidance = pipe._component(ComponentKind.GUIDANCE, "cfg", {"cfg_weight": 5.0})
    ids = build_generation_prompt_ids(
        MANIFEST["gen_conversation"][0]["content"], pipe.tokenizer, pipe.chat_template
    )
    rows = guidance_rows(ids, 2, guidance, pipe.tokenizer.pad_id)
    model = pipe.model
    with torch.inference_mode():
        return generate_image_codes(
            model.language_model,
            model.language_model.embed_tokens(rows),
            gen_head=model.gen_head,
            gen_embed=model.gen_embed,
            gen_aligner=model.gen_aligner,
            guidance=guidance,
            sampler=sampler,  # type: ignore[arg-type]
            num_tokens=num_tokens,
            generator=None,
        )


def test_teacher_forced_cfg_logits_match_reference_at_every_step(
    pipe: JanusPipeline, golden: dict[str, Tensor]
) -> None:
    forced = golden["gen_forced_tokens"]
    sampler = TeacherForcing(forced)
    assert torch.equal(_image_loop(pipe, sampler), forced)
    logits = torch.stack(sampler.logits, dim=1)  # [2, 576, 16384]
    torch.testing.assert_close(logits[:, :32], golden["gen_forced_cfg_logits_first32"], atol=5e-4, rtol=0)
    logprob = torch.log_softmax(logits, dim=-1).gather(-1, forced[..., None]).squeeze(-1)
    torch.testing.assert_close(logprob, golden["gen_forced_logprob"], atol=5e-4, rtol=0)
    robust = golden["gen_forced_cfg_top2_gap"] >= 1e-3
    assert torch.equal(logits.argmax(-1)[robust], golden["gen_forced_cfg_argmax"][robust])


def test_seeded_generation_reproduces_reference_tokens_and_images(
    pipe: JanusPipeline, golden: dict[str, Tensor]
) -> None:
    prompt = MANIFEST["gen_conversation"][0]["content"]
    seed = MANIFEST["sample_seed"]
    codes = pipe.generate_image_codes(prompt, n=2, cfg_weight=5.0, temperature=1.0, seed=seed)
    assert torch.equal(codes, golden["gen_sampled_tokens"].long())
    images = pipe.generate_images(prompt, n=2, cfg_weight=5.0, temperature=1.0, seed=seed)
    reference = load_file(FIXTURE / "golden" / "sampled_images.safetensors")["gen_sampled_images_uint8"]
    _uint8_close(torch.from_numpy(np.stack([np.asarray(im) for im in images])), reference)


def test_vq_decode_matches_reference_uint8(pipe: JanusPipeline, golden: dict[str, Tensor]) -> None:
    _uint8_close(pipe.decode_images(golden["vq_code_grid"].long()), golden["vq_decode_uint8"])


def test_vq_encode_matches_reference_codes(pipe: JanusPipeline, golden: dict[str, Tensor]) -> None:
    codes = pipe.encode_image(Image.open(FIXTURE / "golden" / "input.png"))
    reliable = golden["vq_encode_dist_gap"] >= 1e-4
    assert torch.equal(codes[reliable], golden["vq_encode_indices"][reliable])


def test_sharded_bin_checkpoint_loads_the_same_tensors(pipe: JanusPipeline) -> None:
    other = JanusPipeline.from_pretrained(FIXTURE / "checkpoint-bin", device="cpu", dtype="float32")
    ours, theirs = pipe.model.state_dict(), other.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
