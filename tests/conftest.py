"""Shared fixtures: paths of the janus-tiny fixture, a fresh plugin host, the example plugin installed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from janus_sdk import tuning
from janus_sdk.plugins import PluginHost

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
EXAMPLE_PLUGIN = REPO / "plugins" / "example-encoder"
EXAMPLE_DISTRIBUTION = "janus-example-encoder"


USER_CACHE = tuning.cache_dir()


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A janus-sdk cache folder of this test session: measured choices are taken afresh (and never written
    into the user's cache), nothing pinned; the compiled kernels are the user's (a build takes a minute)."""
    root = tmp_path_factory.mktemp("janus-cache")
    (USER_CACHE / "kernels").mkdir(parents=True, exist_ok=True)
    (root / "kernels").symlink_to(USER_CACHE / "kernels", target_is_directory=True)
    patch = pytest.MonkeyPatch()
    patch.setenv(tuning.CACHE_ENV, str(root))  # also for the CLI run in subprocesses
    patch.delenv(tuning.PIN_ENV, raising=False)
    with tuning.use_tuner(tuning.Tuner()):
        yield root
    patch.undo()


Pin = Callable[[str], tuning.Tuner]


@pytest.fixture
def pinned(tmp_path: Path) -> Iterator[Pin]:
    """`pinned("matmul-dtype=float32,linear=kernel")`: the process-wide tuner takes those choices (as
    JANUS_SDK_TUNE would) until the test ends; other choices are measured into a cache of the test's own."""
    with contextlib.ExitStack() as stack:
        yield lambda pins: stack.enter_context(
            tuning.use_tuner(tuning.Tuner(tmp_path / "tuning.json", pins=pins))
        )


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
