"""The server's parts without a server: the model's name, request mapping, image inputs, the bind rule and the
job queue."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

from janus_adapters.server.chat import _Reply, generation_settings, to_janus_messages
from janus_adapters.server.errors import APIError, field_path, from_exception
from janus_adapters.server.identity import TEST_MODEL_PARAMETERS, ServedModel, checkpoint_name
from janus_adapters.server.inputs import load_image_url
from janus_adapters.server.schemas import ChatCompletionRequest
from janus_adapters.server.security import check_bind, is_loopback
from janus_adapters.server.settings import ServerSettings
from janus_adapters.server.worker import Batch, Done, Failed, Job, Outcome, QueueFull, Text, Worker
from janus_sdk.errors import ConfigError, GenerationCancelled, InputError
from janus_sdk.pipeline.decoding import Progress

TAG = "<image_placeholder>"


def png_uri(width: int = 8, height: int = 6) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


# -- the model's name --------------------------------------------------------------------------------------
def checkpoint(root: Path, name: str = "weights", readme: str | None = None, config: Any = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if readme is not None:
        (folder / "README.md").write_text(readme, encoding="utf-8")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_hub_id_names_the_model_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert checkpoint_name("deepseek-ai/Janus-Pro-1B") == "deepseek-ai/Janus-Pro-1B"


def test_a_snapshot_of_the_hub_cache_is_named_by_its_repo(tmp_path: Path) -> None:
    snapshot = checkpoint(tmp_path, "hub/models--deepseek-ai--Janus-Pro-1B/snapshots/0123abcd")
    assert checkpoint_name(snapshot) == "deepseek-ai/Janus-Pro-1B"
    assert checkpoint_name(checkpoint(tmp_path, "models--solo/snapshots/abc")) == "solo"


@pytest.mark.parametrize(
    ("readme", "expected"),
    [
        ("---\nlicense: mit\nmodel_name: my-janus\n---\n# Card\n", "my-janus"),
        ("---\nmodel-index:\n- name: janus-ft\n  results: []\n---\n", "janus-ft"),
        ("---\r\nmodel_name: crlf-card\r\n---\r\n", "crlf-card"),
        ("---\nlicense: mit\n---\n", "weights"),  # metadata without a name
        ("# A card without metadata\nmodel_name: not-metadata\n", "weights"),
        ("---\nmodel_name: [unclosed\n---\n", "weights"),  # broken YAML is no name
        ("---\nmodel_name: '  '\n---\n", "weights"),
    ],
)
def test_a_model_card_names_the_model(tmp_path: Path, readme: str, expected: str) -> None:
    assert checkpoint_name(checkpoint(tmp_path, readme=readme)) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"_name_or_path": "deepseek-ai/Janus-Pro-7B"}, "deepseek-ai/Janus-Pro-7B"),
        ({"_name_or_path": "/home/me/models/janus"}, "weights"),  # a local path says nothing
        ({"_name_or_path": "./janus"}, "weights"),
        ({"_name_or_path": "org--x/name"}, "weights"),  # not a repo id
        ({"_name_or_path": ""}, "weights"),
        ({"model_type": "multi_modality"}, "weights"),
        (["not", "an", "object"], "weights"),
    ],
)
def test_config_names_the_hub_repo_it_came_from(tmp_path: Path, config: Any, expected: str) -> None:
    assert checkpoint_name(checkpoint(tmp_path, config=config)) == expected


def test_the_card_comes_before_the_config_and_the_folder_name_is_last(tmp_path: Path) -> None:
    both = checkpoint(
        tmp_path, readme="---\nmodel_name: card-name\n---\n", config={"_name_or_path": "org/config-name"}
    )
    assert checkpoint_name(both) == "card-name"
    assert checkpoint_name(f"{checkpoint(tmp_path, 'Janus-Pro-1B')}/") == "Janus-Pro-1B"


def test_a_test_model_is_one_smaller_than_any_trained_janus() -> None:
    assert ServedModel("tiny", 6_080_011).test_model
    assert ServedModel("tiny", TEST_MODEL_PARAMETERS - 1).test_model
    assert not ServedModel("pro-1b", 2_000_000_000).test_model


# -- request mapping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_new_tokens": 512}),
        ({"temperature": 0, "top_p": 0.5}, {"max_new_tokens": 512}),
        (
            {"temperature": 0.7, "max_tokens": 9},
            {"max_new_tokens": 9, "do_sample": True, "temperature": 0.7, "top_p": None, "top_k": None},
        ),
        (
            {"top_p": 0.9, "max_completion_tokens": 5},
            {"max_new_tokens": 5, "do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": None},
        ),
        (
            {"top_k": 3},
            {"max_new_tokens": 512, "do_sample": True, "temperature": 1.0, "top_p": None, "top_k": 3},
        ),
        (
            {"presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.2},
            {
                "max_new_tokens": 512,
                "presence_penalty": 0.5,
                "frequency_penalty": -0.5,
                "repetition_penalty": 1.2,
            },
        ),
        (
            {"sampler": "min-p", "temperature": 0.7},
            {
                "max_new_tokens": 512,
                "sampler": {"name": "min-p", "params": {}},
                "temperature": 0.7,
                "top_p": None,
                "top_k": None,
            },
        ),
    ],
)
def test_sampling_fields_map_to_generation_settings(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert generation_settings(request(**fields), ServerSettings()) == expected


def test_max_tokens_limit_and_default_cap() -> None:
    with pytest.raises(APIError) as info:
        generation_settings(request(max_tokens=65), ServerSettings(max_tokens=64))
    assert (info.value.status, info.value.param, info.value.code) == (400, "max_tokens", "limit_exceeded")
    assert generation_settings(request(), ServerSettings(max_tokens=64))["max_new_tokens"] == 64


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"n": 2}, "n"),
        ({"stop": ["x"]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": []}, "tools"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"sampler": {"name": "min-p", "parms": {}}}, "sampler"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_unsupported_fields_are_refused(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError, match=where):
        request(**fields)


def test_image_tags_official_layout_when_images_come_first() -> None:
    uri = png_uri()
    message = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "What?"}],
    }
    [converted] = to_janus_messages(request(messages=[message]).messages, ServerSettings(), TAG)
    assert converted["content"] == "What?"  # the pipeline puts the tag in front, as the official script does
    assert [im.size for im in converted["images"]] == [(8, 6)]


def test_image_tags_stay_where_they_stand_between_texts() -> None:
    uri = png_uri()
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": uri}},
                {"type": "text", "text": "with"},
                {"type": "image_url", "image_url": {"url": uri}},
            ],
        },
    ]
    system, user = to_janus_messages(request(messages=messages).messages, ServerSettings(), TAG)
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == f"Compare\n{TAG}\nwith\n{TAG}"
    assert len(user["images"]) == 2


def test_image_count_limit_and_assistant_images_refused() -> None:
    uri = png_uri()
    part = {"type": "image_url", "image_url": {"url": uri}}
    with pytest.raises(APIError, match="limit of 1"):
        to_janus_messages(
            request(messages=[{"role": "user", "content": [part, part]}]).messages,
            ServerSettings(max_chat_images=1),
            TAG,
        )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [part]}]
    with pytest.raises(APIError, match="only user messages"):
        to_janus_messages(request(messages=messages).messages, ServerSettings(), TAG)


# -- image inputs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,@@@", "invalid_image_url"),
        ("data:image/png,rawdata", "invalid_image_url"),
        ("data:text/plain;base64,aGVsbG8=", "invalid_image_url"),
        ("data:image/png;base64,aGVsbG8=", "invalid_image"),
        ("https://example.com/cat.png", "remote_images_disabled"),
        ("file:///etc/passwd", "invalid_image_url"),
    ],
)
def test_bad_image_urls_are_400_naming_the_part(url: str, code: str) -> None:
    with pytest.raises(APIError) as info:
        load_image_url(url, ServerSettings(), "messages[0].content[1].image_url")
    assert (info.value.status, info.value.code, info.value.param) == (
        400,
        code,
        "messages[0].content[1].image_url",
    )


def test_pixel_limit_is_checked_and_the_fix_is_worded_for_a_client() -> None:
    """The library's advice (pass a larger max_pixels) means nothing to a client of the server."""
    with pytest.raises(APIError) as refused:
        load_image_url(png_uri(100, 100), ServerSettings(max_image_pixels=5000), "p")
    assert refused.value.code == "image_too_large"
    assert "100x100 = 10,000 pixels, more than this server accepts (5,000)" in str(refused.value)
    assert "--max-image-pixels" in str(refused.value) and "max_pixels" not in str(refused.value)
    assert load_image_url(png_uri(50, 100), ServerSettings(max_image_pixels=5000), "p").size == (50, 100)


# -- errors, binding ---------------------------------------------------------------------------------------
def test_error_mapping() -> None:
    assert (
        field_path(("body", "messages", 0, "content", 2, "image_url")) == "messages[0].content[2].image_url"
    )
    assert from_exception(InputError("bad")).status == 400
    assert from_exception(GenerationCancelled("x")).code == "cancelled"
    internal = from_exception(RuntimeError("secret detail"))
    assert internal.status == 500 and "secret" not in internal.message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None, allow_unauthenticated=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.com"])
def test_public_hosts_need_a_key_or_the_explicit_flag(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="--api-key"):
        check_bind(host, None, allow_unauthenticated=False)
    check_bind(host, SecretStr("k"), allow_unauthenticated=False)
    check_bind(host, None, allow_unauthenticated=True)


def test_a_failure_mid_stream_ends_the_stream_with_an_error_event() -> None:
    reply = _Reply("m")
    lines = [*reply.chunks(Text("a")), *reply.chunks(Failed(InputError("the prompt is too long")))]
    assert json.loads(lines[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert json.loads(lines[1][6:])["choices"][0]["delta"] == {"content": "a"}
    assert json.loads(lines[2][6:]) == {
        "error": {
            "message": "the prompt is too long",
            "type": "invalid_request_error",
            "param": None,
            "code": "InputError",
        }
    }
    assert len(lines) == 3  # no [DONE] after an error


# -- the job queue -----------------------------------------------------------------------------------------
class Gate:
    """A job body that blocks until released, reporting progress so it can be cancelled."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, job: Job) -> str:
        self.started.set()
        step = 0
        while not self.release.wait(0.01):
            step += 1
            if not job.on_step(Progress(step, 10**6, 1, 0.0)):
                raise GenerationCancelled("stopped")
        job.emit(Text("piece"))
        return "result"


async def drain(job: Job) -> list[Any]:
    events = [await job.next_event()]
    while not isinstance(events[-1], Done | Failed):
        events.append(await job.next_event())
    return events


def test_worker_bounds_the_queue_runs_in_order_and_answers_each_job_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker(max_queue=2)
        worker.start()
        gate = Gate()
        running = Job(gate, loop)
        worker.submit(running)
        await loop.run_in_executor(None, gate.started.wait, 5)
        order: list[int] = []

        def record(i: int) -> Callable[[Job], int]:
            def work(job: Job) -> int:
                order.append(i)
                return i

            return work

        queued = [Job(record(i), loop) for i in range(2)]
        for job in queued:
            worker.submit(job)
        with pytest.raises(QueueFull) as info:
            worker.submit(Job(lambda job: None, loop))
        assert info.value.retry_after >= 1
        gate.release.set()
        assert [type(e) for e in await drain(running)] == [Text, Done]
        assert [(await drain(job))[-1].result for job in queued] == [0, 1] == order
        status = worker.status()
        assert (status["accepted"], status["rejected"], status["completed"], status["waiting"]) == (
            3,
            1,
            3,
            0,
        )
        worker.close()

    asyncio.run(scenario())


def test_cancel_stops_a_running_job_and_skips_a_queued_one() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker(max_queue=4)
        worker.start()
        gate = Gate()
        running, queued = Job(gate, loop), Job(lambda job: pytest.fail("a cancelled job must not run"), loop)
        worker.submit(running)
        worker.submit(queued)
        await loop.run_in_executor(None, gate.started.wait, 5)
        queued.cancel()
        running.cancel()
        for job in (running, queued):
            [event] = await drain(job)
            assert isinstance(event, Failed) and isinstance(event.error, GenerationCancelled)
        assert worker.status()["cancelled"] == 2
        after = Job(lambda job: "free", loop)
        worker.submit(after)
        assert (await drain(after))[-1].result == "free"
        worker.close()

    asyncio.run(scenario())


def test_close_answers_every_queued_job() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker(max_queue=4)
        worker.start()
        gate = Gate()
        jobs = [Job(gate, loop), Job(lambda job: time.sleep(0), loop), Job(lambda job: None, loop)]
        for job in jobs:
            worker.submit(job)
        await loop.run_in_executor(None, gate.started.wait, 5)
        await loop.run_in_executor(None, worker.close)
        for job in jobs:
            [event] = await drain(job)
            assert isinstance(event, Failed) and isinstance(event.error, GenerationCancelled)
        with pytest.raises(QueueFull):
            worker.submit(Job(lambda job: None, loop))

    asyncio.run(scenario())


class Grouped:
    """A Batch's run that records each group it is given and answers each job with its item (or raises
    InputError for a group holding the item "bad")."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []

    def __call__(self, jobs: list[Job]) -> list[Outcome]:
        items = [job.work.item for job in jobs if isinstance(job.work, Batch)]
        self.groups.append(items)
        if "bad" in items:
            raise InputError("bad input")
        return [Done(item) for item in items]

    def job(self, loop: asyncio.AbstractEventLoop, item: str, key: str = "k", rows: int = 1) -> Job:
        return Job(Batch(key=key, rows=rows, budget=4, item=item, run=self), loop)


async def busy_worker(loop: asyncio.AbstractEventLoop) -> tuple[Worker, Gate, Grouped]:
    """A started worker held by a running job (until the gate is released), so that the jobs submitted next
    wait in its queue together; and a Grouped run for them."""
    worker = Worker(max_queue=8)
    worker.start()
    gate = Gate()
    worker.submit(Job(gate, loop))
    await loop.run_in_executor(None, gate.started.wait, 5)
    return worker, gate, Grouped()


def test_queued_jobs_of_one_key_run_as_one_group_within_the_row_budget() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker, gate, run = await busy_worker(loop)
        jobs = [
            run.job(loop, "a", rows=2),
            run.job(loop, "b"),
            run.job(loop, "other", key="other"),
            run.job(loop, "d", rows=2),  # would make 5 rows with a, b: waits for the next group
            run.job(loop, "e"),
        ]
        for job in jobs:
            worker.submit(job)
        gate.release.set()
        results = [(await drain(job))[-1] for job in jobs]
        assert [r.result for r in results] == ["a", "b", "other", "d", "e"]
        assert run.groups == [["a", "b", "e"], ["other"], ["d"]]
        assert worker.status()["completed"] == 6
        worker.close()

    asyncio.run(scenario())


def test_a_bad_input_fails_only_its_own_job_of_a_group() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker, gate, run = await busy_worker(loop)
        jobs = [run.job(loop, item) for item in ("a", "bad", "c")]
        for job in jobs:
            worker.submit(job)
        gate.release.set()
        good, bad, other = [(await drain(job))[-1] for job in jobs]
        assert (good.result, other.result) == ("a", "c")
        assert isinstance(bad, Failed) and isinstance(bad.error, InputError)
        assert run.groups == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]  # together, then each alone
        worker.close()

    asyncio.run(scenario())


def test_a_job_cancelled_while_queued_is_left_out_of_its_group() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker, gate, run = await busy_worker(loop)
        kept, dropped = run.job(loop, "kept"), run.job(loop, "dropped")
        worker.submit(kept)
        worker.submit(dropped)
        dropped.cancel()
        gate.release.set()
        assert (await drain(kept))[-1].result == "kept"
        [event] = await drain(dropped)
        assert isinstance(event, Failed) and isinstance(event.error, GenerationCancelled)
        assert run.groups == [["kept"]]
        worker.close()

    asyncio.run(scenario())


def test_a_job_arriving_within_the_window_joins_the_waiting_one() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker(max_queue=8, window_s=30)  # the budget filling up ends the wait, not the window
        worker.start()
        run = Grouped()
        first = Job(Batch(key="k", rows=1, budget=2, item="first", run=run), loop)
        worker.submit(first)
        await asyncio.sleep(0.2)
        assert worker.status()["running"] == 1 and run.groups == []  # taken, waiting for company
        worker.submit(Job(Batch(key="k", rows=1, budget=2, item="second", run=run), loop))
        assert (await drain(first))[-1].result == "first"
        assert run.groups == [["first", "second"]]
        worker.close()

    asyncio.run(scenario())
