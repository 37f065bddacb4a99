"""Broken third-party plugins installed beside the built-ins: one that fails to import, one whose hooks raise,
one whose components do not satisfy their interface. Each problem is reported naming the plugin and what it
broke, and the rest of the SDK keeps working: a pipeline still loads and answers with the built-in components.
(tests/test_plugins.py covers the host on its own; these go through the pipeline.)"""

from __future__ import annotations

import json
import textwrap
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from janus_plugins.attention import cpu as cpu_attention
from janus_sdk import PluginError, PluginWarning, hookimpl, plugins
from janus_sdk.plugins import ENTRY_POINT_GROUP, ENV_DISABLE_AUTOLOAD, ENV_ONLY, PluginHost
from janus_sdk.registry import BuildContext, Register
from small_pipeline import CHECKPOINT, INPUT_PNG, fast_pipeline, model_must_not_run

MANIFEST = json.loads((CHECKPOINT.parent / "golden" / "manifest.json").read_text())["info"]
QUESTION = "What is shown in this image?"

BROKEN_PLUGINS = {
    "needs_gpu_driver": "raise ImportError('libcudart.so.99: cannot open shared object file')",
    "raising_hooks": """
        from janus_sdk.hookspecs import hookimpl

        @hookimpl
        def register_samplers(register):
            raise RuntimeError("sampler table is corrupt")

        @hookimpl
        def choose_attention_backend(device, dtype):
            raise ValueError("cannot query the device")
    """,
    "hollow_components": """
        from pydantic import BaseModel
        from janus_sdk.hookspecs import hookimpl

        class NoOptions(BaseModel):
            pass

        def hollow(config, context):
            return object()

        def exploding(config, context):
            raise MemoryError("asked for 1 TB")

        @hookimpl
        def register_visual_encoders(register):
            register("hollow", hollow, config=NoOptions)
            register("exploding", exploding, config=NoOptions)
    """,
}


class FakeEntryPoint:
    """An installed `janus_sdk` entry point of a third-party distribution, backed by a module in tmp_path."""

    def __init__(self, name: str) -> None:
        self.name, self.value, self.group = name, f"hardening_{name}", ENTRY_POINT_GROUP
        self.dist = SimpleNamespace(name=f"{name.replace('_', '-')}-dist", version="0.1")

    def load(self) -> Any:
        return metadata.EntryPoint(self.name, self.value, self.group).load()


@pytest.fixture
def broken_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real entry points (the built-ins) plus the broken plugins, seen by a fresh process-wide host."""
    real = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    fakes = [FakeEntryPoint(name) for name in BROKEN_PLUGINS]
    for fake in fakes:
        (tmp_path / f"{fake.value}.py").write_text(
            textwrap.dedent(BROKEN_PLUGINS[fake.name]), encoding="utf-8"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_ONLY, raising=False)
    monkeypatch.setattr(
        metadata, "entry_points", lambda group: [*real, *fakes] if group == ENTRY_POINT_GROUP else []
    )
    monkeypatch.setattr(plugins, "_default_host", None)  # the next get_plugin_host() loads them


def test_the_built_ins_still_load_and_answer_beside_broken_plugins(broken_install: None) -> None:
    with pytest.warns(PluginWarning) as record:
        pipe = fast_pipeline(attention={"name": "auto"})  # "auto" asks every plugin, the raising one too
        answer = pipe.chat(QUESTION, images=[INPUT_PNG], max_new_tokens=16)
    assert answer == MANIFEST["greedy_text"]
    # what the built-ins choose on this machine (the AVX2 kernel where it builds), despite the broken plugins
    assert pipe.attention.name == (cpu_attention.choose_attention_backend(pipe.device, pipe.dtype) or "sdpa")
    messages = [str(w.message) for w in record]

    def reported(*fragments: str) -> bool:
        return any(all(f in m for f in fragments) for m in messages)

    assert reported("'needs_gpu_driver'", "needs-gpu-driver-dist", "ImportError", "libcudart.so.99")
    assert reported("'raising_hooks'", "register_samplers", "RuntimeError: sampler table is corrupt")
    assert reported("'raising_hooks'", "choose_attention_backend", "ValueError: cannot query the device")
    infos = {info.name: info for info in plugins.get_plugin_host().plugins()}
    assert infos["needs_gpu_driver"].errors and infos["raising_hooks"].errors
    assert ("visual_encoder", "siglip") in infos["siglip"].components  # the built-ins are all there


@pytest.mark.parametrize(
    ("encoder", "fragments"),
    [
        (
            "hollow",
            (
                "'hollow_components'",
                "hollow-components-dist",
                "visual_encoder 'hollow'",
                "object",
                "does not satisfy VisualEncoder",
                "image_size",
            ),
        ),
        (
            "exploding",
            (
                "'hollow_components'",
                "failed to build visual_encoder 'exploding'",
                "MemoryError",
                "asked for 1 TB",
            ),
        ),
    ],
)
def test_choosing_a_broken_component_names_the_plugin_and_what_it_broke(
    broken_install: None, encoder: str, fragments: tuple[str, ...]
) -> None:
    with pytest.warns(PluginWarning), pytest.raises(PluginError) as info:
        fast_pipeline(visual_encoder={"name": encoder})
    for fragment in fragments:
        assert fragment in str(info.value)
    assert isinstance(fast_pipeline().chat("hi", max_new_tokens=1), str)  # the next load is unaffected


class LooksLikeAnEncoder:
    """Has every member of the VisualEncoder protocol, but is no torch module: it cannot hold weights."""

    image_size, num_tokens, feature_dim = 384, 576, 32

    def __call__(self, pixel_values: Any) -> Any:
        return pixel_values


class NotAModulePlugin:
    @hookimpl
    def register_visual_encoders(self, register: Register) -> None:
        register("duck", lambda config, context: LooksLikeAnEncoder(), config=Options)


class Options(BaseModel):
    pass


def test_a_component_that_is_not_a_torch_module_is_a_plugin_error() -> None:
    host = PluginHost()
    host.load_entry_points()
    host.register(NotAModulePlugin(), "duck_plugin", "duck-dist")
    with pytest.raises(PluginError) as info:
        fast_pipeline(plugins=host, visual_encoder={"name": "duck"})
    assert "duck_plugin" in str(info.value) and "nn.Module" in str(info.value)


class GarbageGreedy:
    """Replaces the built-in greedy sampler with something that is not a sampler at all."""

    @hookimpl
    def register_samplers(self, register: Register) -> None:
        def build(config: Options, context: BuildContext) -> object:
            return "not a sampler"

        register("greedy", build, config=Options, override=True)


def test_a_broken_override_fails_where_it_is_used_and_names_itself() -> None:
    host = PluginHost()
    host.load_entry_points()
    host.register(GarbageGreedy(), "garbage", "garbage-dist")
    pipe = fast_pipeline(plugins=host)  # loading does not need a sampler
    with model_must_not_run(pipe), pytest.raises(PluginError) as info:
        pipe.chat("hi", max_new_tokens=3)  # greedy decoding: the broken override
    assert "'garbage' (garbage-dist)" in str(info.value) and "does not satisfy Sampler" in str(info.value)
    assert pipe.chat("hi", max_new_tokens=3, do_sample=True, seed=0)  # the built-in "sample" still works
    assert pipe.generate_image_codes("a cube", cfg_weight=1.0, seed=0).shape == (1, 16)
