"""`janus serve`: flags -> settings, refusing a public address without a key, and a real server process."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from janus_adapters.server import command as serve_cmd
from janus_adapters.server.settings import ServerSettings
from janus_sdk.cli.main import main
from janus_sdk.errors import ConfigError

CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny" / "checkpoint"

# The command as `janus serve` runs it, through its own parser (the adapter's plugin adds the same one).
LAUNCHER = """
import argparse, sys
from janus_adapters.server import command as serve_cmd
parser = argparse.ArgumentParser(prog="janus")
serve_cmd.add_commands(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(scope="module", autouse=True)
def direct_connections() -> Iterator[None]:
    """No proxy settings: every request of these tests goes straight to 127.0.0.1."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in PROXY_VARIABLES:
            patch.delenv(variable, raising=False)
        yield


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="janus")
    serve_cmd.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def api_key(*argv: str) -> str | None:
    key = serve_cmd.settings_from_args(parse("--model", "m", *argv)).api_key
    return None if key is None else key.get_secret_value()


def test_flags_map_onto_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(serve_cmd.API_KEY_ENV, raising=False)
    argv = ["--max-queue", "3", "--max-n", "2", "--max-tokens", "100", "--allow-remote-images", "--no-web"]
    settings = serve_cmd.settings_from_args(parse("--model", "models/Janus-Pro-1B/", *argv))
    assert settings.model_name is None  # the server names the model after its checkpoint once loaded
    assert (settings.max_queue, settings.max_n, settings.max_tokens) == (3, 2, 100)
    assert settings.allow_remote_images and not settings.web_ui and settings.api_key is None
    assert serve_cmd.settings_from_args(parse("--model", "m", "--model-name", "pro")).model_name == "pro"
    served = parse("--model", "m", "--served-model-name", "janus-pro")  # vLLM's name for it
    assert serve_cmd.settings_from_args(served).model_name == "janus-pro"
    monkeypatch.setenv(serve_cmd.API_KEY_ENV, "from-env")
    assert api_key() == "from-env"
    assert api_key("--api-key", "flag") == "flag"


def test_help_shows_the_settings_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-queue" in text and f"(default {ServerSettings().max_queue})" in text


def test_invalid_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_queue"):
        serve_cmd.settings_from_args(parse("--model", "m", "--max-queue", "0"))


def test_public_host_without_key_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(serve_cmd.API_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match="without an API key"):
        serve_cmd.run_serve(parse("--model", "/nonexistent/model", "--host", "0.0.0.0", "--port", "0"))


@pytest.mark.slow
def test_janus_serve_process_serves_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, serve_cmd.API_KEY_ENV: "cli-key"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            "serve",
            "--model",
            str(CHECKPOINT),
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model-name",
            "tiny",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        assert match, f"no address in {line!r} (exit code {process.poll()})"
        url = match.group(1)
        assert process.stdout.readline().startswith("note: 'tiny' is a test model (6,080,011 parameters")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    assert json.loads(response.read())["auth"] is True
                break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered /health"
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="cli-key", max_retries=0, timeout=60)
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.content is not None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_busy_port_is_one_line_naming_the_port_and_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(CHECKPOINT), "--port", str(port)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in err and "--port 0" in err


def test_model_options_and_config_are_checked_before_the_port(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A mistake in --config (or another model option) is reported first, even on a taken port: the port and
    the model load come after every check that needs neither."""
    config = tmp_path / "pipeline.yaml"
    config.write_text("dtype: float64\n", encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--config", str(config), "--port", str(port)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert str(config) in err and "dtype" in err and "port is in use" not in err
