"""One pipeline shared by several threads: chat and image generation mixed across threads give exactly the
serial results; a stream may be finished (or abandoned) on another thread; a generation cancelled through its
progress callback, or whose callback raises, leaves the pipeline usable and its later results unchanged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import torch

from janus_sdk import GenerationCancelled, JanusPipeline
from janus_sdk.pipeline.decoding import Progress
from small_pipeline import INPUT_PNG, fast_pipeline

T = TypeVar("T")
QUESTION = "What is shown in this image?"
TIMEOUT_S = 120  # a deadlock fails the test instead of hanging the run


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    pipe: JanusPipeline = fast_pipeline()
    return pipe


TASKS: list[tuple[str, int]] = [
    ("chat", 0),
    ("codes", 1),
    ("chat-image", 2),
    ("codes-cfg", 3),
    ("chat", 4),
    ("images", 5),
]


def run(pipe: JanusPipeline, task: tuple[str, int], **extra: Any) -> Any:
    """One unit of work; the result in a form that compares with ==."""
    kind, seed = task
    if kind == "chat":
        return pipe.chat("Tell me a story.", max_new_tokens=8, do_sample=True, seed=seed, **extra)
    if kind == "chat-image":
        return pipe.chat(
            QUESTION,
            images=[INPUT_PNG],
            max_new_tokens=8,
            do_sample=True,
            temperature=0.8,
            top_p=0.9,
            seed=seed,
            **extra,
        )
    if kind == "codes":
        return pipe.generate_image_codes("a red cube", cfg_weight=1.0, seed=seed, **extra).tolist()
    if kind == "codes-cfg":
        return pipe.generate_image_codes(
            "a blue ball", n=2, cfg_weight=3.0, top_k=100, seed=seed, **extra
        ).tolist()
    return [
        image.tobytes() for image in pipe.generate_images("a green tree", cfg_weight=1.0, seed=seed, **extra)
    ]


def in_thread(work: Callable[[], T]) -> T:
    """Run `work` on another thread; fail (rather than hang) if it does not finish in time."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed back to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the call never finished: the pipeline stayed locked"
    if errors:
        raise errors[0]
    return result[0]


@pytest.fixture(scope="module")
def serial(pipe: JanusPipeline) -> list[Any]:
    return [run(pipe, task) for task in TASKS]


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_mixed_calls_from_many_threads_give_the_serial_results(
    pipe: JanusPipeline, serial: list[Any], order: str
) -> None:
    indices = list(range(len(TASKS)))[:: 1 if order == "forward" else -1]
    start = threading.Barrier(len(indices))

    def work(i: int) -> Any:
        start.wait(TIMEOUT_S)  # every thread calls the pipeline at the same moment
        return run(pipe, TASKS[i])

    with ThreadPoolExecutor(max_workers=len(indices)) as pool:
        futures = {i: pool.submit(work, i) for i in indices}
        results = [futures[i].result(TIMEOUT_S) for i in range(len(TASKS))]
    assert results == serial


def test_calls_from_other_threads_wait_for_a_stream_and_then_run(
    pipe: JanusPipeline, serial: list[Any]
) -> None:
    expected_text = pipe.chat("Tell me a story.", max_new_tokens=8)
    pieces = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for piece in pipe.stream_chat("Tell me a story.", max_new_tokens=8):
            pieces.append(piece)
            if len(pieces) == 1:
                other = pool.submit(run, pipe, TASKS[1])  # generation requested mid-stream
        assert other.result(TIMEOUT_S) == serial[1]
    assert "".join(pieces) == expected_text


def test_a_stream_can_be_finished_on_another_thread() -> None:
    """What a web framework does with a sync iterator: each next() may run on a different worker thread."""
    own = fast_pipeline()  # not the shared one: if its lock were left held, only this test would be affected
    expected = own.chat("Tell me a story.", max_new_tokens=6)
    stream = own.stream_chat("Tell me a story.", max_new_tokens=6)
    first = next(stream)
    rest = in_thread(lambda: "".join(stream))
    assert first + rest == expected
    assert in_thread(lambda: own.chat("Tell me a story.", max_new_tokens=6)) == expected  # no lock left held


@pytest.mark.parametrize("how", ["close", "drop"])
def test_an_abandoned_stream_releases_the_pipeline(how: str) -> None:
    own = fast_pipeline()
    expected = own.chat("hi", max_new_tokens=4)
    stream = own.stream_chat("Tell me a story.", max_new_tokens=50)
    next(stream)
    if how == "close":
        stream.close()
    else:
        del stream  # garbage-collected: the generator is closed
    assert in_thread(lambda: own.chat("hi", max_new_tokens=4)) == expected


def stop_at(step: int) -> Callable[[Progress], bool]:
    return lambda progress: progress.step < step


def test_a_cancelled_chat_leaves_the_pipeline_usable(pipe: JanusPipeline, serial: list[Any]) -> None:
    with pytest.raises(GenerationCancelled, match="step 3"):
        run(pipe, TASKS[2], on_step=stop_at(3))
    with pytest.raises(GenerationCancelled, match="step 1"):
        run(pipe, TASKS[3], on_step=stop_at(1))
    assert [run(pipe, TASKS[i]) for i in (2, 3, 0)] == [serial[i] for i in (2, 3, 0)]


def test_a_callback_that_raises_leaves_the_pipeline_usable(pipe: JanusPipeline, serial: list[Any]) -> None:
    def explode(progress: Progress) -> None:
        if progress.step == 2:
            raise KeyError("user code failed")

    for i in (0, 1):
        with pytest.raises(KeyError, match="user code failed"):
            run(pipe, TASKS[i], on_step=explode)
    assert [run(pipe, task) for task in TASKS[:2]] == serial[:2]


def test_cancelling_in_one_thread_does_not_disturb_the_others(pipe: JanusPipeline, serial: list[Any]) -> None:
    cancelled = 0

    def cancelling(task: tuple[str, int]) -> None:
        nonlocal cancelled
        with pytest.raises(GenerationCancelled):
            run(pipe, task, on_step=stop_at(2))
        cancelled += 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        cancels = [pool.submit(cancelling, TASKS[i]) for i in (1, 2)]
        normal = {i: pool.submit(run, pipe, TASKS[i]) for i in (0, 3)}
        for future in cancels:
            future.result(TIMEOUT_S)
        assert {i: f.result(TIMEOUT_S) for i, f in normal.items()} == {0: serial[0], 3: serial[3]}
    assert cancelled == 2
    assert torch.equal(torch.tensor(run(pipe, TASKS[1])), torch.tensor(serial[1]))
