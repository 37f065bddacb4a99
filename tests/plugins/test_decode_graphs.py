"""Captured decode steps kept with the model (deepseek_llm.captured), checked on the CPU.

A CUDA graph cannot be captured here, so these tests capture with `eager_capture`: the step runs eagerly at
every replay and writes into the output of its first run, as a replayed graph writes into its static output.
Everything else is what runs on CUDA: the pool, the buckets, the views of a bucket's rows, the static inputs,
the position as a tensor and the attention over the whole cache, masked. tests/test_cuda.py runs the same
through real graphs where there is a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from janus_plugins.deepseek_llm.cache import StaticKVCache
from janus_plugins.deepseek_llm.captured import LENGTH_STEP, DecodeGraphs, Replayable, bucket_of
from janus_plugins.deepseek_llm.model import DeepSeekLLM
from janus_sdk import JanusPipeline
from small_pipeline import fast_pipeline

PROMPTS = ["a", "a much longer prompt than the first", "a third"]


class EagerCapture:
    """A stand-in for cuda_graphs.capture that counts captures and replays the step eagerly."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, run: Callable[[], Tensor], device: torch.device) -> tuple[Replayable, Tensor]:
        self.count += 1
        output = run()

        class Replay:
            def replay(self) -> None:
                output.copy_(run())

        return Replay(), output


def backbone(pipe: JanusPipeline) -> DeepSeekLLM:
    llm = pipe.model.language_model
    assert isinstance(llm, DeepSeekLLM)
    return llm


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    return fast_pipeline()


@pytest.fixture
def captures(pipe: JanusPipeline) -> Iterator[EagerCapture]:
    """The pipeline's backbone prepared with kept captured steps for this test, plain again afterwards."""
    llm = backbone(pipe)
    capture = EagerCapture()
    llm.prepare(pipe.device, pipe.dtype, capture=capture)
    yield capture
    llm.prepare(pipe.device, pipe.dtype)


def kept_buckets(pipe: JanusPipeline) -> list[tuple[int, int]]:
    plan = backbone(pipe).plan
    assert plan is not None and plan.graphs is not None
    return list(plan.graphs.buckets)


def test_buckets_round_rows_to_powers_of_two_and_lengths_to_steps() -> None:
    assert bucket_of(1, 1) == (1, LENGTH_STEP)
    assert bucket_of(2, LENGTH_STEP) == (2, LENGTH_STEP)
    assert bucket_of(3, LENGTH_STEP + 1) == (4, 2 * LENGTH_STEP)
    assert bucket_of(6, 700) == (8, 768)


def test_the_pipeline_chooses_its_decode_step_when_it_is_built(pipe: JanusPipeline) -> None:
    plan = backbone(pipe).plan
    assert plan is not None and (plan.device, plan.dtype) == (pipe.device, pipe.dtype)
    assert plan.graphs is None  # nothing is captured on the CPU
    x = torch.zeros(1, dtype=pipe.dtype)
    assert backbone(pipe).plan_for(x) is plan  # not chosen again per call
    assert backbone(pipe).plan_for(x.double()).dtype == torch.float64  # another dtype chooses anew
    backbone(pipe).prepare(pipe.device, pipe.dtype)


def test_captured_steps_give_the_eager_results_and_are_captured_once_per_bucket(
    pipe: JanusPipeline, pinned: Callable[[str], object]
) -> None:
    pinned("off")  # torch's paths, unmeasured: what is compared here is eager against captured steps
    image = pipe.generate_image_codes("a red cube", seed=3)
    prompts = pipe.generate_image_codes(PROMPTS, seed=[4, 5, 6])
    three = pipe.generate_image_codes("a red cube", n=3, seed=[7, 8, 9])
    answer = pipe.chat("hello", max_new_tokens=6, seed=1)

    llm = backbone(pipe)
    capture = EagerCapture()
    llm.prepare(pipe.device, pipe.dtype, capture=capture)
    try:
        assert torch.equal(pipe.generate_image_codes("a red cube", seed=3), image)
        assert capture.count == 1
        assert torch.equal(pipe.generate_image_codes("a red cube", seed=3), image)
        assert capture.count == 1  # the next call replays the kept step
        # 6 rows of three padded prompts: a bucket of 8, its last 2 rows blanks
        assert torch.equal(pipe.generate_image_codes(PROMPTS, seed=[4, 5, 6]), prompts)
        # the same bucket unpadded: the padding of the call before is gone
        assert torch.equal(pipe.generate_image_codes("a red cube", n=3, seed=[7, 8, 9]), three)
        assert pipe.chat("hello", max_new_tokens=6, seed=1) == answer
        assert capture.count == 3
        assert kept_buckets(pipe) == [(2, LENGTH_STEP), (8, LENGTH_STEP), (1, LENGTH_STEP)]
    finally:
        llm.prepare(pipe.device, pipe.dtype)


def test_interleaved_generations_do_not_share_a_cache(pipe: JanusPipeline, captures: EagerCapture) -> None:
    alone = [pipe.chat("hello", max_new_tokens=5, seed=s) for s in (1, 2)]
    count = captures.count
    first, second = (iter(pipe.stream_chat("hello", max_new_tokens=5, seed=s)) for s in (1, 2))
    pieces: list[list[str]] = [[], []]
    for _ in range(5):  # both streams in flight, step by step
        for stream, got in zip((first, second), pieces, strict=True):
            got.append(next(stream, ""))
    pieces[0].extend(first)
    pieces[1].extend(second)
    assert ["".join(p) for p in pieces] == alone
    assert captures.count == count + 1  # the second stream captured on a bucket of its own, not kept
    assert kept_buckets(pipe) == [(1, LENGTH_STEP)]


def test_past_keep_the_least_recently_used_idle_bucket_is_dropped() -> None:
    capture = EagerCapture()

    def new_cache(rows: int, length: int) -> StaticKVCache:
        return StaticKVCache(torch.zeros(1, rows, 1, length, 2), torch.zeros(1, rows, 1, length, 2))

    def step(embeds: Tensor, cache: StaticKVCache, position: Tensor) -> Tensor:
        return embeds * 2

    graphs = DecodeGraphs(new_cache, step, hidden_size=2, keep=2, capture=capture)
    graphs.lease(1, 10, None)  # dropped at once: idle
    used = graphs.lease(2, 10, None)
    held = graphs.lease(4, 10, None)
    assert list(graphs.buckets) == [(2, LENGTH_STEP), (4, LENGTH_STEP)]  # the idle one dropped
    del used
    again = graphs.lease(1, 10, torch.tensor([3]))
    assert list(graphs.buckets) == [(4, LENGTH_STEP), (1, LENGTH_STEP)]
    assert held.max_length == again.max_length == LENGTH_STEP
    assert again.padding is not None and again.padding.tolist() == [3]
    assert again.captured is not None and capture.count == 0  # captured at the first decode step
    assert again.captured(torch.ones(1, 1, 2), 5).tolist() == [[[2.0, 2.0]]]
    assert capture.count == 1


def test_keep_zero_keeps_no_bucket() -> None:
    def new_cache(rows: int, length: int) -> StaticKVCache:
        return StaticKVCache(torch.zeros(1, rows, 1, length, 2), torch.zeros(1, rows, 1, length, 2))

    graphs = DecodeGraphs(new_cache, lambda e, c, p: e, hidden_size=2, keep=0, capture=EagerCapture())
    cache = graphs.lease(2, 10, None)
    assert cache.captured is not None and cache.max_length == LENGTH_STEP and not graphs.buckets


def test_a_bucket_made_in_inference_mode_serves_calls_outside_it(
    pipe: JanusPipeline, captures: EagerCapture
) -> None:
    llm = backbone(pipe)
    with torch.inference_mode():
        llm.new_cache(2, 10)  # made (and left) in inference mode, as the pipeline's calls make it
    cache = llm.new_cache(2, 10, torch.tensor([1, 0]))
    x = torch.randn(2, 3, llm.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prompt = llm.hidden_states(x, cache, 0)
        step = llm.hidden_states(prompt[:, -1:], cache, 3)
    assert captures.count == 1 and step.shape == (2, 1, llm.hidden_size)
