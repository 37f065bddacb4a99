"""Determinism on CPU: the same seed gives the same image codes, images and sampled text across calls, across
pipeline instances and across processes (a fresh interpreter with another hash seed prints the same hashes),
whatever the global torch RNG holds. What holds on CUDA is written down in SECURITY.md ("Reproducibility")."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from janus_sdk import JanusPipeline
from small_pipeline import INPUT_PNG, fast_pipeline

QUESTION = "What is shown in this image?"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprints(pipe: JanusPipeline, seed: int = 1234) -> dict[str, str]:
    """Hashes of seeded image codes (with guidance and top-k), their decoded images, and a sampled answer."""
    codes = pipe.generate_image_codes("a red cube on a blue table", n=2, cfg_weight=3.0, top_k=500, seed=seed)
    images = pipe.decode_images(codes)
    text = pipe.chat(
        QUESTION,
        images=[INPUT_PNG],
        max_new_tokens=12,
        do_sample=True,
        temperature=0.9,
        top_p=0.95,
        seed=seed,
    )
    return {
        "codes": sha(codes.numpy().tobytes()),
        "images": sha(images.numpy().tobytes()),
        "text": sha(text.encode("utf-8", "surrogatepass")),
    }


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    pipe: JanusPipeline = fast_pipeline()
    return pipe


@pytest.fixture(scope="module")
def expected(pipe: JanusPipeline) -> dict[str, str]:
    return fingerprints(pipe)


def test_same_seed_same_results_across_calls_and_instances(
    pipe: JanusPipeline, expected: dict[str, str]
) -> None:
    assert fingerprints(pipe) == expected
    assert fingerprints(fast_pipeline()) == expected
    assert fingerprints(pipe, seed=1235) != expected


@pytest.mark.slow
def test_same_seed_same_results_in_another_process(expected: dict[str, str], tmp_path: Path) -> None:
    tests = Path(__file__).parent
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        "from test_determinism import fingerprints\n"
        "from small_pipeline import fast_pipeline\n"
        "print(json.dumps(fingerprints(fast_pipeline())))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_the_global_rng_neither_matters_nor_changes(pipe: JanusPipeline) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = pipe.generate_image_codes("a cube", cfg_weight=1.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is left alone
    torch.manual_seed(99)
    b = pipe.generate_image_codes("a cube", cfg_weight=1.0, seed=7)
    assert torch.equal(a, b)


def test_a_generator_is_the_same_as_its_seed(pipe: JanusPipeline) -> None:
    by_seed = pipe.generate_image_codes("a cube", n=2, cfg_weight=1.0, seed=11)
    by_generator = pipe.generate_image_codes(
        "a cube", n=2, cfg_weight=1.0, seed=torch.Generator().manual_seed(11)
    )
    assert torch.equal(by_seed, by_generator)


def test_no_seed_means_fresh_randomness(pipe: JanusPipeline) -> None:
    first = pipe.generate_image_codes("a cube", cfg_weight=1.0)
    second = pipe.generate_image_codes("a cube", cfg_weight=1.0)
    assert not torch.equal(first, second)  # 16 codes of 16384 each: equal by chance with probability ~0


def test_generated_images_are_the_decoded_codes(pipe: JanusPipeline) -> None:
    images = pipe.generate_images("a cube", n=2, cfg_weight=1.0, seed=5)
    decoded = pipe.decode_images(pipe.generate_image_codes("a cube", n=2, cfg_weight=1.0, seed=5))
    assert [image.tobytes() for image in images] == [array.numpy().tobytes() for array in decoded]
