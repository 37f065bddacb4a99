"""The web page in a real headless browser (Debian's chromium + chromedriver, driven by Selenium), end to end
against the tiny model: the model's name and test-model note, chat (upload, ask, streamed answer, Stop), image
generation (a progress bar per image, the gallery, downloads, Stop) and errors shown where they happen.

Runs that must be caught mid-way are held at a fixed step (`Pause`, tests/helpers.py), so what the page
shows then does not depend on the machine's speed. Screenshots go to test-artifacts/web/ (ignored by git). The
browser talks to 127.0.0.1 only."""

from __future__ import annotations

import base64
import io
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from helpers import Pause
from janus_adapters.server import ServerSettings, create_app, serve_in_thread
from janus_sdk.errors import GenerationCancelled
from janus_sdk.pipeline.janus import JanusPipeline

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "janus-tiny"
INPUT_PNG = FIXTURE / "golden" / "input.png"
ARTIFACTS = REPO / "test-artifacts" / "web"
"""Where the screenshots go, for people and CI to look at."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
KEY = "web-test-key"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver",
)

# Keep the browser off the network: no proxy lookups, updates, sync, translation or other background traffic.
BROWSER_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
    "--no-proxy-server",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
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
    return JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cpu")


@pytest.fixture(scope="module")
def base_url(pipeline: JanusPipeline) -> Iterator[str]:
    """The server as `janus serve` sets it up by default: the model named after its checkpoint."""
    # one image per forward pass: the page's per-image progress bars then move one after the other
    with serve_in_thread(create_app(pipeline, ServerSettings(image_batch=1))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: WebDriver, url: str) -> WebDriverWait[WebDriver]:
    """Load the page and wait until it has read /health; returns the wait used for everything after."""
    driver.get(f"{url}/")
    wait: WebDriverWait[WebDriver] = WebDriverWait(driver, 60, poll_frequency=0.05)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    return wait


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def counters(url: str) -> dict[str, Any]:
    """The server's queue counters."""
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        return json.loads(response.read())["queue"]  # type: ignore[no-any-return]


def element(driver: WebDriver, css: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, css)


def text_of(node: WebElement) -> str:
    return str(node.get_property("textContent"))


# -- the page ----------------------------------------------------------------------------------------------
def test_the_page_fills_the_window_names_the_model_and_says_it_is_a_test_model(
    browser: WebDriver, base_url: str
) -> None:
    driver = browser
    open_page(driver, base_url)
    assert element(driver, "#model-name").text == "checkpoint"  # the fixture's folder: no other name given
    note = element(driver, "#test-note")
    assert note.is_displayed()
    assert "6.1 million parameters" in note.text and "random" in note.text
    geometry = driver.execute_script(
        "const c = document.getElementById('chat-form').getBoundingClientRect();"
        "return [innerHeight, c.bottom, document.documentElement.scrollHeight];"
    )
    height, composer_bottom, page_height = geometry
    assert abs(composer_bottom - height) <= 1, "the message box should sit at the bottom of the window"
    assert page_height <= height, "the page itself should not scroll: the conversation scrolls inside it"
    screenshot(driver, "empty")


# -- chat --------------------------------------------------------------------------------------------------
def test_chat_upload_ask_and_read_the_streamed_answer_then_stop_one(
    browser: WebDriver, base_url: str, pipeline: JanusPipeline
) -> None:
    driver = browser
    wait = open_page(driver, base_url)

    element(driver, "#chat-image").send_keys(str(INPUT_PNG))
    wait.until(lambda d: element(d, "#chat-preview").is_displayed())
    assert element(driver, "#chat-image-name").text == INPUT_PNG.name
    tokens = element(driver, "#chat-max-tokens")
    tokens.clear()
    tokens.send_keys("12")
    element(driver, "#chat-input").send_keys("What is shown in this image?")
    element(driver, "#chat-send").click()
    answer = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='true']"))[0]
    expected = pipeline.chat("What is shown in this image?", images=[INPUT_PNG], max_new_tokens=12)
    assert text_of(answer.find_element(By.CLASS_NAME, "text")) == expected and expected
    assert text_of(answer.find_element(By.CLASS_NAME, "meta")).startswith("12 tokens")
    question = element(driver, ".msg.user")
    assert "What is shown in this image?" in question.text
    assert str(question.find_element(By.TAG_NAME, "img").get_attribute("src")).startswith("data:image/png")
    assert not element(driver, "#chat-attachment").is_displayed()  # the image went with the question
    assert not driver.find_elements(By.CSS_SELECTOR, ".msg.error")
    screenshot(driver, "chat")

    # a new chat, held at its 5th token: the page shows what came so far; Stop keeps it and cancels the rest
    element(driver, "#chat-reset").click()
    assert not driver.find_elements(By.CSS_SELECTOR, ".msg")
    prompt = "Tell me a story"
    partial = "".join(first_tokens(pipeline, prompt, 5))
    cancelled = counters(base_url)["cancelled"]
    with Pause(pipeline, "stream_chat_batch", at=5) as held:
        element(driver, "#chat-input").send_keys(prompt)
        element(driver, "#chat-send").click()
        held.wait_reached()
        reply = element(driver, ".msg.assistant")
        wait.until(lambda d: text_of(reply.find_element(By.CLASS_NAME, "text")) == partial)
        assert reply.get_attribute("data-done") == "false"
        element(driver, "#chat-stop").click()
        wait.until(lambda d: reply.get_attribute("data-done") == "true")
        wait.until(lambda d: held.cancelled_by_server())
    wait.until(lambda d: counters(base_url)["cancelled"] == cancelled + 1)
    assert text_of(reply.find_element(By.CLASS_NAME, "meta")).startswith("stopped")
    history = driver.execute_script("return state.messages")
    assert history == [{"role": "user", "content": prompt}, {"role": "assistant", "content": partial}]
    assert element(driver, "#chat-send").is_displayed() and not element(driver, "#chat-stop").is_displayed()


def first_tokens(pipeline: JanusPipeline, prompt: str, count: int) -> list[str]:
    """The text pieces the library streams before its progress callback sees token `count`."""
    pieces: list[str] = []
    with pytest.raises(GenerationCancelled):
        for piece in pipeline.stream_chat(prompt, on_step=lambda progress: progress.step < count):
            pieces.append(piece)
    return pieces


# -- image generation --------------------------------------------------------------------------------------
def progress_of(card: WebElement) -> float:
    return float(card.find_element(By.TAG_NAME, "progress").get_property("value"))  # type: ignore[arg-type]


def png_behind(driver: WebDriver, link: WebElement) -> Image.Image:
    """The PNG a gallery link points at (a blob: URL), fetched by the page."""
    encoded = driver.execute_async_script(
        "const [href, done] = arguments;"
        "fetch(href).then(r => r.arrayBuffer()).then(b => {"
        "  let s = ''; for (const x of new Uint8Array(b)) s += String.fromCharCode(x); done(btoa(s)); });",
        link.get_attribute("href"),
    )
    return Image.open(io.BytesIO(base64.b64decode(encoded)))


def test_generate_shows_a_progress_bar_per_image_then_the_images_to_download(
    browser: WebDriver, base_url: str, pipeline: JanusPipeline
) -> None:
    driver = browser
    wait = open_page(driver, base_url)
    element(driver, "#tab-generate").click()
    assert element(driver, "#panel-generate").is_displayed()
    assert not element(driver, "#panel-chat").is_displayed()
    assert driver.execute_script("return location.hash") == "#generate"
    element(driver, "#gen-prompt").send_keys("a red fox in the snow")
    count = element(driver, "#gen-n")
    count.clear()
    count.send_keys("2")
    element(driver, "#gen-seed").send_keys("5")

    # held at token 40 of the first image: its bar is part-way, the second image's has not moved
    with Pause(pipeline, "generate_images", at=40) as held:
        element(driver, "#gen-run").click()
        held.wait_reached()
        first, second = driver.find_elements(By.CSS_SELECTOR, ".run .card")
        wait.until(lambda d: progress_of(first) > 0)
        assert 0 < progress_of(first) < 1 and first.get_attribute("data-state") == "running"
        assert progress_of(second) == 0 and second.get_attribute("data-state") == "waiting"
        assert element(driver, "#gen-status").text.startswith("drawing image 1 of 2: token ")
        screenshot(driver, "generating")
    wait.until(lambda d: element(d, "#gen-status").text.startswith("done: 2 images"))

    expected = [  # image i of a request with seed s has seed s + i
        image
        for i in range(2)
        for image in pipeline.generate_images(
            "a red fox in the snow", n=1, seed=5 + i, cfg_weight=5.0, temperature=1.0
        )
    ]
    for index, (card, image) in enumerate(zip((first, second), expected, strict=True)):
        assert card.get_attribute("data-state") == "done"
        link = card.find_element(By.CSS_SELECTOR, "a.download")
        assert link.get_attribute("download") == f"janus-a-red-fox-in-the-snow-5-{index + 1}.png"
        shown = png_behind(driver, link)
        assert (shown.format, shown.size) == ("PNG", (384, 384))
        np.testing.assert_array_equal(np.asarray(shown.convert("RGB")), np.asarray(image))
    shows = [c.find_element(By.TAG_NAME, "img") for c in (first, second)]
    wait.until(
        lambda d: all(img.get_property("naturalWidth") == 384 for img in shows)
    )  # and the page shows them
    assert not element(driver, "#gen-error").is_displayed()
    screenshot(driver, "generated")

    # Stop while the next run is held: its cards say so, the server cancels it, the earlier images stay
    cancelled = counters(base_url)["cancelled"]
    with Pause(pipeline, "generate_images", at=10) as held:
        element(driver, "#gen-run").click()
        held.wait_reached()
        element(driver, "#gen-stop").click()
        wait.until(lambda d: element(d, "#gen-status").text == "stopped")
        wait.until(lambda d: held.cancelled_by_server())
    wait.until(lambda d: counters(base_url)["cancelled"] == cancelled + 1)
    latest, earlier = driver.find_elements(By.CSS_SELECTOR, ".run")
    assert [c.get_attribute("data-state") for c in latest.find_elements(By.CLASS_NAME, "card")] == [
        "stopped",
        "stopped",
    ]
    assert len(earlier.find_elements(By.CSS_SELECTOR, ".card img")) == 2
    assert not element(driver, "#gen-error").is_displayed()


# -- errors ------------------------------------------------------------------------------------------------
def test_errors_are_shown_where_they_happen(
    browser: WebDriver, pipeline: JanusPipeline, tmp_path: Path
) -> None:
    """A server with an API key and a small image limit: the missing key is reported in the generation panel,
    an image over the limit in the conversation, and the question comes back to the message box."""
    settings = ServerSettings(model_name="janus-tiny", api_key=SecretStr(KEY), max_image_pixels=100_000)
    with serve_in_thread(create_app(pipeline, settings)) as url:
        driver = browser
        wait = open_page(driver, url)
        assert element(driver, "#model-name").text == "janus-tiny"
        assert element(driver, "#api-key-box").is_displayed()

        element(driver, "#tab-generate").click()
        element(driver, "#gen-prompt").send_keys("a lighthouse")
        element(driver, "#gen-run").click()
        error = element(driver, "#gen-error")
        wait.until(lambda d: error.is_displayed())
        assert "missing API key" in error.text and "enter this server's API key" in error.text
        assert element(driver, "#gen-status").text == "failed"
        assert element(driver, ".run .card").get_attribute("data-state") == "failed"

        element(driver, "#api-key").send_keys(KEY)
        element(driver, "#tab-chat").click()
        big = tmp_path / "big.png"
        Image.new("RGB", (400, 400), "teal").save(big)
        element(driver, "#chat-image").send_keys(str(big))
        wait.until(lambda d: element(d, "#chat-preview").is_displayed())
        element(driver, "#chat-input").send_keys("What colour is this?")
        element(driver, "#chat-send").click()
        problem = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chat-log .msg.error"))[0]
        assert "400x400 = 160,000 pixels, more than this server accepts (100,000)" in problem.text
        assert "failed" in str(element(driver, ".msg.user").get_attribute("class"))
        assert not driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        assert element(driver, "#chat-input").get_property("value") == "What colour is this?"
        assert element(driver, "#chat-preview").is_displayed()  # the image is back, ready to swap
        assert driver.execute_script("return state.messages") == []
        screenshot(driver, "errors")
