"""The CPU kernels' build: once per machine, keyed by what the binary depends on, shared by clones, one build
for concurrent processes, robust to a build killed midway (janus_plugins.cpu_kernels)."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from janus_plugins import cpu_kernels as kernel_module
from janus_sdk import tuning


def test_the_build_folder_is_keyed_by_what_the_binary_depends_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another clone of the same code (the sources at another path) shares the build; a change to any source,
    torch or compiler flags gets a folder of its own, beside it."""
    here = _target_or_skip()
    key = kernel_module.build_key()
    assert kernel_module.build_dir().name.endswith(key)
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in here.sources:
        (clone / name).write_bytes((kernel_module.HERE / name).read_bytes())
    monkeypatch.setattr(kernel_module, "HERE", clone)
    assert kernel_module.build_key() == key
    for name in here.sources:
        original = (clone / name).read_bytes()
        (clone / name).write_bytes(original + b"\n// changed\n")
        assert kernel_module.build_key() != key, f"a change to {name} must change the key"
        (clone / name).write_bytes(original)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert kernel_module.build_key() != key
    monkeypatch.undo()
    other_flags = dataclasses.replace(here, cflags=(*here.cflags, "-DOTHER"))
    monkeypatch.setattr(kernel_module, "target", lambda: other_flags)
    assert kernel_module.build_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "another-venv"))
    assert kernel_module.build_key() != key, "another environment's include paths are another build"


def test_the_build_folder_is_the_same_through_any_path_to_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ninja records the paths it compiled through: a cache folder reached through a link (as each test
    session's is) must give the real folder's path, or every new path rebuilds (a minute on 2 cores)."""
    real = tmp_path / "cache"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setenv(tuning.CACHE_ENV, str(real))
    direct = kernel_module.build_dir()
    monkeypatch.setenv(tuning.CACHE_ENV, str(link))
    assert kernel_module.build_dir() == direct == real.resolve() / "kernels" / direct.name


def test_a_process_waits_for_anothers_build_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from filelock import FileLock

    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(kernel_module, "cpu_has_avx2", lambda: True)
    monkeypatch.setattr(kernel_module, "_module", None)  # restored after: build() sets it
    monkeypatch.setattr(kernel_module, "_failure", None)
    events: list[str] = []

    def compiling(name: str, folder: Path, here: kernel_module.Target) -> object:
        events.append("compiled")
        return object()

    monkeypatch.setattr(kernel_module, "_compile", compiling)
    folder = kernel_module.build_dir()
    folder.mkdir(parents=True)
    other = FileLock(str(folder / "janus.lock"))
    other.acquire()  # another process is building
    thread = threading.Thread(target=kernel_module.build)
    with caplog.at_level(logging.WARNING):
        thread.start()
        deadline = time.monotonic() + 30
        while "waiting for another process" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "waiting for another process building the CPU kernels" in caplog.text
        assert events == []  # nothing built while the other build holds the lock
        events.append("released")
        other.release()
        thread.join(30)
    assert events == ["released", "compiled"]


def test_a_build_killed_midway_does_not_block_later_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """torch's own build lock, left by a killed build, would make every later load wait forever: it goes
    once our lock is held."""
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(kernel_module, "cpu_has_avx2", lambda: True)
    folder = kernel_module.build_dir()
    folder.mkdir(parents=True)
    (folder / kernel_module.TORCH_BATON).touch()
    seen: list[bool] = []

    def compile_(name: str, where: Path, here: kernel_module.Target) -> object:
        seen.append((where / kernel_module.TORCH_BATON).exists())
        return object()

    monkeypatch.setattr(kernel_module, "_compile", compile_)
    monkeypatch.setattr(kernel_module, "_module", None)
    kernel_module.build()
    assert seen == [False]


def test_the_build_compiles_a_copy_of_the_source_inside_its_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ninja rebuilds when a source's path changes: compiling each clone's own file made two clones used in
    turn rebuild each other, although their build folder (keyed by content) is the same."""
    from torch.utils import cpp_extension

    compiled: list[list[str]] = []
    monkeypatch.setattr(cpp_extension, "load", lambda name, sources, **options: compiled.append(sources))
    for here in (kernel_module.X86, kernel_module.ARM64):
        compiled.clear()
        kernel_module._compile("janus_test", tmp_path, here)
        kernel_module._compile("janus_test", tmp_path, here)
        compiled_sources = [str(tmp_path / name) for name in here.sources if name.endswith(".cpp")]
        assert compiled == [compiled_sources, compiled_sources]
    for name in {
        *kernel_module.X86.sources,
        *kernel_module.ARM64.sources,
    }:  # the header too: the sources include it from beside them
        assert (tmp_path / name).read_bytes() == (kernel_module.HERE / name).read_bytes()


def test_kernel_builds_wherever_they_have_a_target_and_a_compiler() -> None:
    """Guards the skips above: on an AVX2 or ARM64 machine with a C++ compiler the kernel must build."""
    import shutil

    if kernel_module.target() is None or shutil.which("c++") is None:
        pytest.skip("no AVX2 or ARM64 CPU, or no C++ compiler here")
    kernel_module.build()  # tried even where an earlier build failed: the skips must not hide a break


def test_the_source_key_changes_with_any_kernel_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It keys every measured choice between a kernel and torch's path (linear, attention, layer ops)."""
    here = _target_or_skip()
    for name in here.sources:
        (tmp_path / name).write_bytes((kernel_module.HERE / name).read_bytes())
    monkeypatch.setattr(kernel_module, "HERE", tmp_path)
    kernel_module.source_key.cache_clear()
    try:
        before = kernel_module.source_key()
        with (tmp_path / "linear.h").open("a") as source:
            source.write("// a changed tile\n")
        kernel_module.source_key.cache_clear()
        assert kernel_module.source_key() != before
    finally:
        kernel_module.source_key.cache_clear()


def _target_or_skip() -> kernel_module.Target:
    here = kernel_module.target()
    if here is None:
        pytest.skip("the kernels have no build for this CPU")
    return here
