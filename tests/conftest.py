"""Shared fixtures: paths of the janus-tiny fixture, a fresh plugin host, the example plugin installed."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from janus_sdk.plugins import PluginHost

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
EXAMPLE_PLUGIN = REPO / "plugins" / "example-encoder"
EXAMPLE_DISTRIBUTION = "janus-example-encoder"


@pytest.fixture
def isolated_host() -> PluginHost:
    """A PluginHost with no plugin at all (entry points are not loaded): register test plugins on it."""
    return PluginHost()


@pytest.fixture(scope="session")
def example_plugin() -> Path:
    """The example plugin distribution, pip-installed (editable) into the running environment.

    Installed once; a session that finds it installed from this checkout already reuses it. Code that must
    see it through its entry point runs in a fresh interpreter (an install made by this process is not on
    its sys.path).
    """
    if not _installed_from(EXAMPLE_PLUGIN):
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e"]
        result = subprocess.run([*command, str(EXAMPLE_PLUGIN)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (
            f"pip could not install {EXAMPLE_PLUGIN}:\n{result.stdout}{result.stderr}"
        )
    assert _installed_from(EXAMPLE_PLUGIN), f"{EXAMPLE_DISTRIBUTION} is not installed from {EXAMPLE_PLUGIN}"
    return EXAMPLE_PLUGIN


def _installed_from(source: Path) -> bool:
    try:
        dist = metadata.distribution(EXAMPLE_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    return bool(direct_url.get("url") == source.as_uri() and direct_url.get("dir_info", {}).get("editable"))
