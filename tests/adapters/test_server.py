"""The server end to end: the real `openai` client against uvicorn on 127.0.0.1 serving janus-tiny.

Answers are compared with the library's own (greedy decoding and seeded sampling are deterministic), errors
with OpenAI's error shape; a bounded load test and a disconnect test check the queue. All traffic stays on
loopback.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import http.server
import io
import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import openai
import pytest
from PIL import Image
from pydantic import SecretStr

from helpers import Pause
from janus_adapters.server import ServerSettings, create_app, serve_in_thread
from janus_adapters.server.worker import Job
from janus_sdk.pipeline.janus import JanusPipeline

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
INPUT_PNG = FIXTURE / "golden" / "input.png"
MODEL = "janus-tiny"
KEY = "test-key-123"
SETTINGS = ServerSettings(
    model_name=MODEL,
    max_queue=4,
    max_n=2,
    max_tokens=64,
    max_chat_images=2,
    max_body_bytes=1024 * 1024,
    max_image_pixels=1000 * 1000,
)


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(scope="module", autouse=True)
def direct_connections() -> Iterator[None]:
    """No proxy settings: every request of these tests goes straight to 127.0.0.1."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in PROXY_VARIABLES:
            patch.delenv(variable, raising=False)
        yield


@pytest.fixture(scope="module")
def pipeline() -> JanusPipeline:
    return JanusPipeline.from_pretrained(CHECKPOINT, device="cpu")


@pytest.fixture(scope="module")
def base_url(pipeline: JanusPipeline) -> Iterator[str]:
    with serve_in_thread(create_app(pipeline, SETTINGS)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def image_uri(path: Path = INPUT_PNG) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def post(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, Any, Any]:
    """Raw POST: (status, parsed JSON or text, headers)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw, status, got = response.read().decode(), response.status, response.headers
    except urllib.error.HTTPError as error:
        raw, status, got = error.read().decode(), error.code, error.headers
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw, got


def health(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/health", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# -- discovery ---------------------------------------------------------------------------------------------
def test_models_health_and_openapi(client: openai.OpenAI, base_url: str, pipeline: JanusPipeline) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    status = health(base_url)
    assert status["status"] == "ok" and status["model"] == MODEL and status["auth"] is False
    assert status["parameters"] == sum(pipeline.model.parameter_counts().values())
    assert status["test_model"] is True  # janus-tiny: 6 million random parameters
    assert status["limits"] == {"max_n": 2, "max_tokens": 64, "default_max_tokens": 512, "max_chat_images": 2}
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as response:
        paths = json.loads(response.read())["paths"]
    assert {"/v1/chat/completions", "/v1/images/generations", "/v1/models", "/health"} <= set(paths)


def test_the_model_is_named_after_its_checkpoint_unless_the_operator_names_it(
    pipeline: JanusPipeline,
) -> None:
    """janus-tiny's folder gives no other name (no Hub id, model card or _name_or_path): its folder's name."""
    with serve_in_thread(create_app(pipeline)) as url:
        served = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in served.models.list()] == ["checkpoint"]
        reply = served.chat.completions.create(
            model="checkpoint", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.model == "checkpoint"
        with pytest.raises(openai.NotFoundError, match="this server serves 'checkpoint'"):
            served.models.retrieve(MODEL)


def test_a_model_loaded_by_hub_id_is_served_under_that_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the Hub's cache (offline): the pipeline's files sit in a snapshot folder named by commit."""
    repo = tmp_path / "hub" / "models--janus-tests--janus-tiny"
    shutil.copytree(CHECKPOINT, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipeline = JanusPipeline.from_pretrained("janus-tests/janus-tiny", device="cpu")
    assert create_app(pipeline).state.janus.model.name == "janus-tests/janus-tiny"


# -- chat --------------------------------------------------------------------------------------------------
def test_chat_equals_the_library_answer(client: openai.OpenAI, pipeline: JanusPipeline) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=8
    )
    expected = pipeline.chat("Hello there", max_new_tokens=8)
    assert reply.choices[0].message.content == expected and expected
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "length"  # 8 tokens, no EOS from random weights
    assert reply.model == MODEL and reply.object == "chat.completion"


def test_streamed_chat_with_an_image_equals_the_library_answer(
    client: openai.OpenAI, pipeline: JanusPipeline
) -> None:
    content: list[Any] = [
        {"type": "image_url", "image_url": {"url": image_uri()}},
        {"type": "text", "text": "What is this?"},
    ]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=10,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == pipeline.chat("What is this?", images=[INPUT_PNG], max_new_tokens=10)


def test_stream_wire_format_ends_with_done(base_url: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True}
    status, raw, headers = post(f"{base_url}/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_usage_counts_the_prompt_and_answer_tokens(client: openai.OpenAI, pipeline: JanusPipeline) -> None:
    """`usage` in the answer; with stream_options.include_usage a last chunk (no choices) carrying it, and
    usage null on every other chunk, as OpenAI's API does."""
    messages: Any = [{"role": "user", "content": "Hello there"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6)
    stream = pipeline.stream_chat("Hello there", max_new_tokens=6)
    assert "".join(stream) == reply.choices[0].message.content
    assert reply.usage is not None and reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (stream.usage.prompt_tokens, 6)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == reply.usage
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason == "length"
    plain = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, stream=True))
    assert all(c.choices for c in plain)  # no usage chunk unless asked for


def test_seeded_sampling_is_reproducible(client: openai.OpenAI, pipeline: JanusPipeline) -> None:
    def ask() -> str | None:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me"}],
            max_tokens=12,
            temperature=0.9,
            top_p=0.95,
            seed=11,
        )
        return reply.choices[0].message.content

    first = ask()
    assert first == ask()
    assert first == pipeline.chat(
        "Tell me", max_new_tokens=12, do_sample=True, temperature=0.9, top_p=0.95, seed=11
    )


def test_named_sampler_and_penalties_as_extra_body_fields(
    client: openai.OpenAI, pipeline: JanusPipeline
) -> None:
    sampler = {"name": "min-p", "params": {"p": 0.05}}
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me"}],
        max_tokens=8,
        temperature=0.8,
        seed=4,
        presence_penalty=0.5,
        extra_body={"sampler": sampler},
    )
    expected = pipeline.chat(
        "Tell me", max_new_tokens=8, sampler=sampler, temperature=0.8, presence_penalty=0.5, seed=4
    )
    assert reply.choices[0].message.content == expected
    with pytest.raises(openai.BadRequestError, match="no sampler called 'top-a'; available: greedy"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"sampler": "top-a"}
        )
    with pytest.raises(openai.BadRequestError, match=r"sampler\.params\.p: Input should be"):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"sampler": {"name": "min-p", "params": {"p": 5}}},
        )


def test_multi_turn_conversation_with_system_prompt(client: openai.OpenAI, pipeline: JanusPipeline) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"},
        {"role": "user", "content": "Three"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6)
    assert reply.choices[0].message.content == pipeline.chat(messages=messages, max_new_tokens=6)


def test_langchain_chat_openai_streamed_and_not_with_usage(
    base_url: str, pipeline: JanusPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second real client: LangChain's ChatOpenAI, with an image, whole and streamed, usage included."""
    from langchain_core.messages import AIMessageChunk, HumanMessage
    from langchain_openai import ChatOpenAI

    for variable in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):  # no traces sent anywhere
        monkeypatch.delenv(variable, raising=False)

    llm = ChatOpenAI(
        model=MODEL,
        base_url=f"{base_url}/v1",
        api_key=SecretStr("unused"),
        temperature=0,
        max_completion_tokens=6,
        max_retries=0,
        timeout=120,
        stream_usage=True,
    )
    question = HumanMessage(
        content=[
            {"type": "image_url", "image_url": {"url": image_uri()}},
            {"type": "text", "text": "What is this?"},
        ]
    )
    stream = pipeline.stream_chat("What is this?", images=[INPUT_PNG], max_new_tokens=6)
    expected = "".join(stream)
    usage = {
        "input_tokens": stream.usage.prompt_tokens,
        "output_tokens": 6,
        "total_tokens": stream.usage.prompt_tokens + 6,
    }

    reply = llm.invoke([question])
    assert reply.content == expected and expected
    assert reply.usage_metadata is not None and dict(reply.usage_metadata).items() >= usage.items()
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.response_metadata["model_name"] == MODEL

    chunks = list(llm.stream([question]))
    assert len(chunks) > 2  # streamed: the role, pieces of text, the finish and the usage
    whole = AIMessageChunk(content="")
    for chunk in chunks:
        whole += chunk
    assert whole.content == expected
    assert whole.usage_metadata is not None and dict(whole.usage_metadata).items() >= usage.items()

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        llm.model_copy(update={"model_name": "gpt-4o"}).invoke("hi")


# -- images ------------------------------------------------------------------------------------------------
def test_image_generation_equals_the_library_images(client: openai.OpenAI, pipeline: JanusPipeline) -> None:
    result = client.images.generate(
        model=MODEL,
        prompt="a red fox",
        n=1,
        response_format="b64_json",
        extra_body={"seed": 3, "cfg_weight": 4.0, "temperature": 0.9},
    )
    assert result.data is not None and len(result.data) == 1 and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert (image.format, image.size) == ("PNG", (384, 384))
    [expected] = pipeline.generate_images("a red fox", n=1, seed=3, cfg_weight=4.0, temperature=0.9)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))


def test_image_guidance_and_sampler_as_extra_body_fields(
    client: openai.OpenAI, pipeline: JanusPipeline
) -> None:
    extra = {"seed": 5, "guidance": {"name": "cfg", "params": {"schedule": "linear"}}, "sampler": "min-p"}
    result = client.images.generate(
        model=MODEL, prompt="a red fox", n=1, extra_body={**extra, "cfg_weight": 3}
    )
    assert result.data is not None and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    [expected] = pipeline.generate_images("a red fox", n=1, cfg_weight=3, **extra)  # type: ignore[arg-type]
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))


# -- errors ------------------------------------------------------------------------------------------------
def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}


def with_image(url: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}],
        }
    ]


def big_png_uri(side: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        (
            "chat/completions",
            chat_body(messages=with_image("data:image/png;base64,bm90IGFuIGltYWdl")),
            400,
            "messages[0].content[0].image_url",
            "invalid_image",
        ),
        (
            "chat/completions",
            chat_body(messages=with_image("data:image/png;base64,???")),
            400,
            "messages[0].content[0].image_url",
            "invalid_image_url",
        ),
        (
            "chat/completions",
            chat_body(messages=with_image("http://127.0.0.1:9/cat.png")),
            400,
            "messages[0].content[0].image_url",
            "remote_images_disabled",
        ),
        (
            "chat/completions",
            chat_body(messages=with_image(big_png_uri(1001))),
            400,
            "messages[0].content[0].image_url",
            "image_too_large",
        ),
        ("chat/completions", chat_body(max_tokens=65), 400, "max_tokens", "limit_exceeded"),
        ("chat/completions", chat_body(model="gpt-4o"), 404, "model", "model_not_found"),
        ("chat/completions", chat_body(tools=[{"type": "function"}]), 400, "tools", "invalid_value"),
        ("chat/completions", chat_body(messages=[]), 400, "messages", "invalid_value"),
        (
            "chat/completions",
            chat_body(messages=[{"role": "assistant", "content": "x"}]),
            400,
            None,
            "InputError",
        ),
        ("images/generations", {"prompt": "x", "n": 3}, 400, "n", "limit_exceeded"),
        (
            "images/generations",
            {"prompt": "x", "response_format": "url"},
            400,
            "response_format",
            "unsupported_value",
        ),
        ("images/generations", {"prompt": "x", "size": "1024x1024"}, 400, "size", "unsupported_value"),
        ("images/generations", {"prompt": "x", "model": "dall-e-3"}, 404, "model", "model_not_found"),
        ("images/generations", {"prompt": ""}, 400, "prompt", "invalid_value"),
    ],
)
def test_client_errors_use_the_openai_error_shape(
    base_url: str, path: str, body: dict[str, Any], status: int, param: str | None, code: str
) -> None:
    got, answer, _ = post(f"{base_url}/v1/{path}", body)
    assert got == status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, code)
    assert answer["error"]["message"]


def test_openai_client_raises_the_matching_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="limit of 2 images"):
        client.images.generate(model=MODEL, prompt="x", n=5, response_format="b64_json")
    with pytest.raises(openai.BadRequestError, match="data URI"):
        client.chat.completions.create(model=MODEL, messages=with_image("https://127.0.0.1/cat.png"))  # type: ignore[arg-type]


def test_oversized_body_is_413_and_unknown_route_404(base_url: str) -> None:
    # The server answers as soon as the declared length is too large, before the body: send only headers
    # (a client still streaming a megabyte would race the early answer and see a broken pipe).
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(1024 * 1024 + 2))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()
    status, answer, _ = post(f"{base_url}/v1/chat/completions", b'{"model": ')
    assert (status, answer["error"]["code"], answer["error"]["param"]) == (400, "invalid_json", None)
    status, answer, _ = post(f"{base_url}/v1/nothing", {})
    assert status == 404 and answer["error"]["type"] == "not_found_error"
    assert health(base_url)["status"] == "ok"


def test_api_key_is_required_on_v1_only(pipeline: JanusPipeline) -> None:
    settings = ServerSettings(model_name=MODEL, api_key=SecretStr(KEY))
    with serve_in_thread(create_app(pipeline, settings)) as url:
        for key in ("wrong", ""):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            status, answer, got = post(f"{url}/v1/chat/completions", chat_body(), headers)
            assert status == 401 and answer["error"]["code"] == "invalid_api_key"
            assert got["www-authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        authorised = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in authorised.models.list()] == [MODEL]
        assert (
            authorised.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            .choices[0]
            .message.content
            is not None
        )
        assert health(url)["auth"] is True  # /health and the page stay open
        with urllib.request.urlopen(f"{url}/", timeout=10) as response:
            assert b"<title>Janus</title>" in response.read()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_remote_image_urls_when_the_operator_allows_them(pipeline: JanusPipeline) -> None:
    files = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(QuietFiles, directory=str(INPUT_PNG.parent))
    )
    threading.Thread(target=files.serve_forever, daemon=True).start()
    settings = ServerSettings(model_name=MODEL, allow_remote_images=True)
    try:
        with serve_in_thread(create_app(pipeline, settings)) as url:
            image_url = f"http://127.0.0.1:{files.server_address[1]}/{INPUT_PNG.name}"
            status, answer, _ = post(f"{url}/v1/chat/completions", chat_body(messages=with_image(image_url)))
            assert status == 200, answer
            expected = pipeline.chat("What?", images=[INPUT_PNG], max_new_tokens=2)
            assert answer["choices"][0]["message"]["content"] == expected
            status, answer, _ = post(
                f"{url}/v1/chat/completions", chat_body(messages=with_image(image_url + "x"))
            )
            assert (status, answer["error"]["code"]) == (400, "image_fetch_failed")
    finally:
        files.shutdown()
        files.server_close()


# -- load and cancellation ---------------------------------------------------------------------------------
def test_bounded_load_every_request_gets_exactly_one_answer(base_url: str) -> None:
    """50 simultaneous mixed requests, queue of 4: each gets one answer, 200 or 429, and the server lives."""
    before = health(base_url)["queue"]
    count, barrier = 50, threading.Barrier(50, timeout=30)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)

    def one(i: int) -> tuple[str, int]:
        barrier.wait()
        messages: Any = [{"role": "user", "content": f"request {i}"}]
        try:
            if i % 10 == 9:
                client.models.list()
                return "models", 200
            if i % 3 == 0:
                stream = client.chat.completions.create(
                    model=MODEL, messages=messages, max_tokens=3, stream=True
                )
                assert [c for c in stream][-1].choices[0].finish_reason is not None
            else:
                reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
                assert reply.choices[0].finish_reason is not None
            return "chat", 200
        except openai.RateLimitError as error:
            assert int(error.response.headers["retry-after"]) >= 1
            assert error.body is not None and error.body["code"] == "queue_full"  # type: ignore[index]
            return "chat", 429

    with ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(one, range(count)))
    assert len(answers) == count
    statuses = [status for kind, status in answers if kind == "chat"]
    assert set(statuses) == {200, 429}, "expected both served and refused requests under this load"
    after = health(base_url)["queue"]
    assert after["accepted"] - before["accepted"] == statuses.count(200)
    assert after["rejected"] - before["rejected"] == statuses.count(429)
    assert after["completed"] - before["completed"] == statuses.count(200)
    assert (after["waiting"], after["running"]) == (0, False)


def test_disconnect_cancels_the_work_and_frees_the_worker(
    base_url: str, pipeline: JanusPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed 2-image generation, held at its 30th token, is dropped by its client: it stops there
    (counted as cancelled; run to its end it would count as completed), the request queued behind it is
    answered, and a client that gave up while queued has its job skipped."""
    cancelled: list[Job] = []
    cancel = Job.cancel

    def noting_cancel(job: Job) -> None:
        cancelled.append(job)
        cancel(job)

    monkeypatch.setattr(Job, "cancel", noting_cancel)
    before = health(base_url)["queue"]
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    with Pause(pipeline, "generate_images", at=30) as held:
        conn.request(
            "POST",
            "/v1/images/generations",
            json.dumps({"model": MODEL, "prompt": "a lighthouse", "n": 2, "stream": True}),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200
        steps: list[dict[str, Any]] = []
        while len(steps) < 3:
            line = response.readline().decode().strip()
            if line.startswith("data: "):
                steps.append(json.loads(line[6:]))
        assert all(e["type"] == "janus.progress" and (e["n"], e["finished"]) == (2, 0) for e in steps)
        held.wait_reached()

        # a client that gives up while queued behind the generation
        quitter = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            quitter.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "late"}], max_tokens=2
            )
        # the server sees it gone at its next disconnect poll (`disconnect_poll_s`), which must come before
        # the generation is let go and the worker takes the quitter's job
        wait_for(lambda: len(cancelled) == 1)
        # a patient one queued behind it
        answer: dict[str, Any] = {}
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        waiter = threading.Thread(
            target=lambda: answer.update(
                reply=client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "next"}], max_tokens=2
                )
            )
        )
        waiter.start()
        wait_for(lambda: health(base_url)["queue"]["waiting"] >= 2)  # the quitter's and this one

        response.close()
        conn.close()
        wait_for(held.cancelled_by_server)
    waiter.join(timeout=120)
    assert "reply" in answer
    after = health(base_url)["queue"]
    assert after["cancelled"] - before["cancelled"] == 2  # the generation and the quitter's queued chat
    assert after["completed"] - before["completed"] == 1  # the patient chat only
    assert (after["waiting"], after["running"]) == (0, False)


def test_body_limit_counts_a_body_sent_without_a_declared_length() -> None:
    """Chunked uploads carry no Content-Length: the limit is then enforced on the bytes as they arrive."""
    from janus_adapters.server.security import BodyLimit

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application must not see an oversized body")

    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(BodyLimit(app, max_bytes=1000)({"type": "http", "headers": []}, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"
