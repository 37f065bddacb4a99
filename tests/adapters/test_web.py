"""The web page in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): upload an
image and ask about it, then generate an image and watch the progress bar. The browser talks to 127.0.0.1
only."""

from __future__ import annotations

import base64
import io
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from janus_adapters.server import ServerSettings, create_app, serve_in_thread
from janus_sdk.pipeline.janus import JanusPipeline

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"
INPUT_PNG = FIXTURE / "golden" / "input.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

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
    "--window-size=1200,1000",
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
    with serve_in_thread(create_app(pipeline, ServerSettings(model_name="janus-tiny"))) as url:
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


def health(base_url: str) -> dict[str, Any]:
    """The server's queue counters."""
    with urllib.request.urlopen(f"{base_url}/health", timeout=10) as response:
        return json.loads(response.read())["queue"]  # type: ignore[no-any-return]


def progress(driver: WebDriver) -> float:
    """The generation progress bar's value, 0..1."""
    return float(driver.execute_script("return document.getElementById('gen-progress').value"))


def test_chat_with_an_uploaded_image_then_generate(
    browser: WebDriver, base_url: str, pipeline: JanusPipeline, tmp_path: Path
) -> None:
    driver = browser
    wait = WebDriverWait(driver, 120, poll_frequency=0.05)
    driver.get(f"{base_url}/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    assert "janus-tiny" in driver.find_element(By.ID, "model-name").text

    # chat: attach the image, ask, read the streamed answer
    driver.find_element(By.ID, "chat-image").send_keys(str(INPUT_PNG))
    wait.until(lambda d: d.find_element(By.ID, "chat-preview").is_displayed())
    tokens = driver.find_element(By.ID, "chat-max-tokens")
    tokens.clear()
    tokens.send_keys("12")
    driver.find_element(By.ID, "chat-input").send_keys("What is shown in this image?")
    driver.find_element(By.ID, "chat-send").click()
    answer = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='true']"))[0]
    assert not driver.find_element(By.ID, "error").is_displayed()
    user = driver.find_element(By.CSS_SELECTOR, ".msg.user")
    assert "What is shown in this image?" in user.text
    assert str(user.find_element(By.TAG_NAME, "img").get_attribute("src")).startswith(
        "data:image/png;base64,"
    )
    expected = pipeline.chat("What is shown in this image?", images=[INPUT_PNG], max_new_tokens=12)
    assert answer.get_property("textContent") == expected and expected
    driver.save_screenshot(str(tmp_path / "chat.png"))

    # generation: Stop cancels the work on the server
    driver.find_element(By.ID, "tab-generate").click()
    assert driver.find_element(By.ID, "panel-generate").is_displayed()
    driver.find_element(By.ID, "gen-prompt").send_keys("a red fox in the snow")
    driver.find_element(By.ID, "gen-seed").send_keys("5")
    cancelled = health(base_url)["cancelled"]
    driver.find_element(By.ID, "gen-run").click()
    wait.until(lambda d: progress(d) > 0)
    driver.find_element(By.ID, "gen-stop").click()
    wait.until(lambda d: d.find_element(By.ID, "gen-status").text == "stopped")
    wait.until(lambda d: health(base_url)["cancelled"] == cancelled + 1)
    assert not driver.find_elements(By.CSS_SELECTOR, "#gen-images img")

    # generation: one image, progress shown while it runs
    driver.find_element(By.ID, "gen-run").click()
    seen: set[float] = set()

    def finished(d: WebDriver) -> bool:
        seen.add(progress(d))
        return bool(d.find_elements(By.CSS_SELECTOR, "#gen-images img"))

    wait.until(finished)
    image = driver.find_element(By.CSS_SELECTOR, "#gen-images img")
    wait.until(lambda d: image.get_property("naturalWidth") == 384)
    assert any(0 < value < 1 for value in seen), f"no intermediate progress was shown: {sorted(seen)}"
    wait.until(lambda d: d.find_element(By.ID, "gen-status").text.startswith("done"))
    assert progress(driver) == 1
    shown = Image.open(io.BytesIO(base64.b64decode(str(image.get_attribute("src")).split(",", 1)[1])))
    assert (shown.format, shown.size) == ("PNG", (384, 384))
    driver.save_screenshot(str(tmp_path / "generate.png"))
