"""Shared fixtures: a cache folder of the session, pinned tuning choices, a fresh plugin host, the example
plugin pip-installed into a folder of the session (what they share with tests lives in helpers.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLE_PLUGIN, Pin, env_seeing
from janus_sdk import tuning
from janus_sdk.plugins import PluginHost

USER_CACHE = tuning.cache_dir()


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> Generator[None, int, int]:
    """`-n auto` (pyproject.toml's addopts) starts no more pytest-xdist workers than the command line names
    test files (`--dist loadfile` gives each file to one worker): `python -m pytest tests/test_x.py::test_y`
    runs in this process, as quick to start as without workers; a folder or no argument gets one per core."""
    cores = yield
    named = {config.invocation_params.dir / arg.split("::")[0] for arg in config.args}
    if not all(path.is_file() for path in named):
        return cores
    return min(cores, len(named)) if len(named) > 1 else 0


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (pyproject.toml's addopts) each worker runs torch on one thread, and so do the
    processes its tests start (tests compare their results with this process's bit for bit, and the CPU's
    results depend on the thread count): two workers on two cores, each spreading over both, slow each other
    down."""
    if hasattr(config, "workerinput"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


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
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this session where pip installed the example plugin distribution (never into the running
    environment, so `janus plugins` there is unchanged after the tests).

    On a fresh interpreter's PYTHONPATH (`example_plugin_env`) or on `sys.path`, the distribution is found
    through its entry point like any installed one. pip builds from a copy of the source, so no build folder
    is left in the checkout.
    """
    root = tmp_path_factory.mktemp("example-plugin")
    source, target = root / "source", root / "site-packages"
    shutil.copytree(
        EXAMPLE_PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*command, "--target", str(target), str(source)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"pip could not install {EXAMPLE_PLUGIN}:\n{result.stdout}{result.stderr}"
    return target


@pytest.fixture
def example_plugin_env(example_plugin: Path) -> dict[str, str]:
    """The environment of a subprocess that sees the example plugin installed (its folder on PYTHONPATH)."""
    return env_seeing(example_plugin)
