"""The plugin host: entry-point discovery, the environment switches, and what happens when a plugin is broken
(fails to import, raises in a hook, registers something invalid): a PluginWarning naming the plugin and its
distribution, the other plugins still load and the host keeps working."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from janus_sdk.errors import PluginError
from janus_sdk.hookspecs import hookimpl
from janus_sdk.plugins import (
    BUILTIN_DISTRIBUTION,
    ENTRY_POINT_GROUP,
    ENV_DISABLE_AUTOLOAD,
    ENV_ONLY,
    PluginHost,
    PluginWarning,
    get_component,
)
from janus_sdk.registry import BuildContext, Register
from toy_plugins import (
    EncoderPlugin,
    FakeEntryPoint,
    RaisingPlugin,
    ToyConfig,
    build_toy,
    entry_point,
    plugged,
)

# -- fake entry points ---------------------------------------------------------------------------------

GOOD_PLUGIN = """
from pydantic import BaseModel

from janus_sdk.hookspecs import hookimpl


class NoOptions(BaseModel):
    pass


def build(config, context):
    return object()


@hookimpl
def register_visual_encoders(register):
    register("{component}", build, config=NoOptions)
"""


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[FakeEntryPoint]]:
    """The `janus_sdk` entry points the host sees: fill the list with `entry_point(...)` before loading."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_ONLY, raising=False)
    eps: list[FakeEntryPoint] = []
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep for ep in eps if ep.group == group])
    yield eps


def plugin_names(host: PluginHost) -> set[str]:
    return {info.name for info in host.plugins()}


# -- discovery -----------------------------------------------------------------------------------------


def test_entry_points_are_loaded_with_their_distribution(
    tmp_path: Path, fake_entry_points: list[FakeEntryPoint]
) -> None:
    fake_entry_points.append(entry_point(tmp_path, "good", GOOD_PLUGIN.format(component="toy")))
    host = PluginHost()
    host.load_entry_points()
    reg = host.registry.get("visual_encoder", "toy")
    assert (reg.plugin, reg.distribution) == ("good", "third-party")
    [info] = host.plugins()
    assert (info.name, info.distribution, info.version, info.module) == (
        "good",
        "third-party",
        "2.0",
        "fake_plugin_good",
    )
    assert info.components == [("visual_encoder", "toy")] and info.errors == []


def test_loading_twice_does_not_register_twice(
    tmp_path: Path, fake_entry_points: list[FakeEntryPoint]
) -> None:
    fake_entry_points.append(entry_point(tmp_path, "good", GOOD_PLUGIN.format(component="toy")))
    host = PluginHost()
    host.load_entry_points()
    host.load_entry_points()
    assert [r.name for r in host.registry.all()] == ["toy"]


def test_plugin_that_fails_to_import_is_reported_and_skipped(
    tmp_path: Path, fake_entry_points: list[FakeEntryPoint]
) -> None:
    fake_entry_points.extend(
        [
            entry_point(tmp_path, "broken", "raise RuntimeError('needs a GPU driver')", dist="broken-dist"),
            entry_point(tmp_path, "missing_dep", "import janus_no_such_module", dist="other-dist"),
            entry_point(tmp_path, "good", GOOD_PLUGIN.format(component="toy")),
        ]
    )
    host = PluginHost()
    with pytest.warns(PluginWarning) as record:
        host.load_entry_points()
    messages = [str(w.message) for w in record]
    assert any("'broken'" in m and "broken-dist" in m and "needs a GPU driver" in m for m in messages)
    assert any("'missing_dep'" in m and "other-dist" in m and "ModuleNotFoundError" in m for m in messages)
    # The rest works: the good plugin's component, and the host itself.
    assert host.registry.get("visual_encoder", "toy").plugin == "good"
    infos = {info.name: info for info in host.plugins()}
    assert set(infos) == {"broken", "missing_dep", "good"}
    assert infos["broken"].components == [] and "needs a GPU driver" in infos["broken"].errors[0]
    assert infos["broken"].distribution == "broken-dist" and infos["good"].errors == []


def test_hookimpl_with_a_wrong_signature_is_reported(
    tmp_path: Path, fake_entry_points: list[FakeEntryPoint]
) -> None:
    source = """
    from janus_sdk.hookspecs import hookimpl

    @hookimpl
    def register_visual_encoders(registrar):
        pass
    """
    fake_entry_points.extend(
        [
            entry_point(tmp_path, "bad_signature", source),
            entry_point(tmp_path, "good", GOOD_PLUGIN.format(component="toy")),
        ]
    )
    host = PluginHost()
    with pytest.warns(PluginWarning, match="(?s)'bad_signature'.*registrar"):
        host.load_entry_points()
    assert host.registry.get("visual_encoder", "toy").plugin == "good"
    assert {i.name: bool(i.errors) for i in host.plugins()} == {"bad_signature": True, "good": False}


# -- the environment switches --------------------------------------------------------------------------


@pytest.fixture
def mixed_entry_points(tmp_path: Path, fake_entry_points: list[FakeEntryPoint]) -> list[FakeEntryPoint]:
    """Two built-in and two third-party entry points; importing a third-party one fails the test."""
    fake_entry_points.extend(
        [
            entry_point(tmp_path, "core_a", GOOD_PLUGIN.format(component="a"), dist=BUILTIN_DISTRIBUTION),
            entry_point(tmp_path, "core_b", GOOD_PLUGIN.format(component="b"), dist=BUILTIN_DISTRIBUTION),
            entry_point(tmp_path, "extra_c", GOOD_PLUGIN.format(component="c")),
            entry_point(tmp_path, "extra_d", GOOD_PLUGIN.format(component="d")),
        ]
    )
    return fake_entry_points


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_disable_autoload_loads_only_janus_sdk_plugins(
    mixed_entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, value)
    host = PluginHost()
    host.load_entry_points()
    assert plugin_names(host) == {"core_a", "core_b"}
    assert [r.name for r in host.registry.all()] == ["a", "b"]


def test_autoload_is_on_unless_disabled(
    mixed_entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "0")
    host = PluginHost()
    host.load_entry_points()
    assert plugin_names(host) == {"core_a", "core_b", "extra_c", "extra_d"}


def test_plugins_variable_loads_only_the_named_plugins(
    mixed_entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ONLY, " core_b, extra_c ")
    host = PluginHost()
    host.load_entry_points()
    assert plugin_names(host) == {"core_b", "extra_c"}


def test_plugins_variable_warns_about_unknown_names(
    mixed_entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ONLY, "core_a,extra_cc")
    host = PluginHost()
    with pytest.warns(PluginWarning, match="extra_cc.*installed: core_a, core_b, extra_c, extra_d"):
        host.load_entry_points()
    assert plugin_names(host) == {"core_a"}


def test_disable_autoload_skips_the_installed_example_plugin(
    example_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a real third-party distribution installed, only janus-sdk's own plugins load."""
    monkeypatch.syspath_prepend(str(example_plugin))
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert any(ep.dist is not None and ep.dist.name == "janus-example-encoder" for ep in eps)
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    monkeypatch.delenv(ENV_ONLY, raising=False)
    host = PluginHost()
    host.load_entry_points()
    assert "example_encoder" not in plugin_names(host)
    assert {info.distribution for info in host.plugins()} == {BUILTIN_DISTRIBUTION}
    assert {"siglip", "mlp", "vq16"} <= plugin_names(host)


# -- broken hooks and invalid registrations ------------------------------------------------------------


def test_hook_that_raises_is_reported_and_the_rest_still_works(isolated_host: PluginHost) -> None:
    with plugged(isolated_host, ("raising", RaisingPlugin()), ("good", EncoderPlugin())) as host:
        with pytest.warns(
            PluginWarning,
            match=r"'raising' raised in register_visual_encoders: RuntimeError: "
            r"encoder table is corrupt \(distribution raising-dist\)",
        ):
            registry = host.registry
        assert registry.get("visual_encoder", "toy").plugin == "good"
        assert registry.get("sampler", "toy-sampler").plugin == "raising"  # its other hook still counts
        infos = {info.name: info for info in host.plugins()}
        assert infos["raising"].components == [("sampler", "toy-sampler")]
        assert len(infos["raising"].errors) == 1 and "encoder table is corrupt" in infos["raising"].errors[0]


def test_a_failure_is_reported_once_however_often_the_registry_is_rebuilt(isolated_host: PluginHost) -> None:
    with plugged(isolated_host, ("raising", RaisingPlugin())) as host:
        with pytest.warns(PluginWarning):
            host.registry  # noqa: B018
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with plugged(host, ("good", EncoderPlugin())):  # invalidates and rebuilds the registry
                host.registry  # noqa: B018
        assert len({i.name: i for i in host.plugins()}["raising"].errors) == 1


class NotAModel:
    pass


INVALID_REGISTRATIONS = [
    pytest.param({"name": ""}, "the name must be a non-empty string", id="empty-name"),
    pytest.param({"name": 42}, "the name must be a non-empty string, got 42", id="name-not-str"),
    pytest.param({"factory": "build_toy"}, "the factory of 'bad' is not callable", id="factory-not-callable"),
    pytest.param(
        {"config": dict}, "config= of 'bad' must be a pydantic BaseModel subclass", id="config-dict"
    ),
    pytest.param({"config": NotAModel}, "must be a pydantic BaseModel subclass", id="config-plain-class"),
    pytest.param({"config": ToyConfig()}, "must be a pydantic BaseModel subclass", id="config-instance"),
    pytest.param(
        {"aliases": "Bad"}, "aliases= of 'bad' must be a sequence of non-empty names", id="aliases-str"
    ),
    pytest.param({"aliases": ("",)}, "aliases= of 'bad' must be a sequence", id="alias-empty"),
]


@pytest.mark.parametrize(("change", "problem"), INVALID_REGISTRATIONS)
def test_invalid_registration_is_a_named_error(
    isolated_host: PluginHost, change: dict[str, Any], problem: str
) -> None:
    arguments: dict[str, Any] = {
        "name": "bad",
        "factory": build_toy,
        "config": ToyConfig,
        "aliases": (),
    } | change

    class InvalidPlugin:
        @hookimpl
        def register_visual_encoders(self, register: Register) -> None:
            register(
                arguments["name"],
                arguments["factory"],
                config=arguments["config"],
                aliases=arguments["aliases"],
            )

    with plugged(isolated_host, ("invalid", InvalidPlugin()), ("good", EncoderPlugin())) as host:
        with pytest.warns(PluginWarning) as record:
            registry = host.registry
        [message] = [str(w.message) for w in record]
        assert "plugin 'invalid' in register_visual_encoders" in message and problem in message
        assert "invalid-dist" in message
        assert [r.name for r in registry.all()] == ["toy"]
        assert problem in {i.name: i for i in host.plugins()}["invalid"].errors[0]


def test_misspelt_hook_is_reported(isolated_host: PluginHost) -> None:
    class Typo:
        @hookimpl
        def register_visual_encoder(self, register: Register) -> None:  # missing the final "s"
            register("never", build_toy, config=ToyConfig)

    with pytest.warns(PluginWarning, match="'register_visual_encoder', which is not a janus-sdk hook"):
        isolated_host.register(Typo(), "typo")
    try:
        assert isolated_host.registry.all() == []
        assert isolated_host.plugins()[0].errors
    finally:
        isolated_host.unregister("typo")


def test_plugin_names_are_unique(isolated_host: PluginHost) -> None:
    with (
        plugged(isolated_host, ("same", EncoderPlugin("a"))) as host,
        pytest.raises(PluginError, match="'same' is already registered"),
    ):
        host.register(EncoderPlugin("b"), "same")


def test_one_plugin_object_cannot_be_registered_twice(isolated_host: PluginHost) -> None:
    plugin = EncoderPlugin()
    with plugged(isolated_host, ("once", plugin)) as host, pytest.raises(PluginError, match="'twice'"):
        host.register(plugin, "twice")


# -- the attention-backend hook ------------------------------------------------------------------------


class PrefersEager:
    @hookimpl
    def choose_attention_backend(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return "eager" if device.type == "cpu" else None


class Crashes:
    @hookimpl
    def choose_attention_backend(self, device: torch.device, dtype: torch.dtype) -> str | None:
        raise RuntimeError("cannot probe the device")


def test_attention_choice(isolated_host: PluginHost) -> None:
    cpu = torch.device("cpu")
    assert isolated_host.choose_attention_backend(cpu, torch.float32) == "sdpa"
    with plugged(isolated_host, ("eager", PrefersEager())) as host:
        assert host.choose_attention_backend(cpu, torch.float32) == "eager"
        assert host.choose_attention_backend(torch.device("meta"), torch.float32) == "sdpa"
        with (
            plugged(host, ("crashes", Crashes())),
            pytest.warns(PluginWarning, match="'crashes' raised in choose_attention_backend"),
        ):
            assert host.choose_attention_backend(cpu, torch.float32) == "eager"


# -- the process-wide host -----------------------------------------------------------------------------


def test_get_component_uses_the_installed_plugins() -> None:
    reg = get_component("visual_encoder", "CLIPVisionTower")
    assert (reg.name, reg.distribution) == ("siglip", BUILTIN_DISTRIBUTION)
    assert issubclass(reg.config, BaseModel)
    encoder = reg.build({"width": 32, "layers": 1, "heads": 2}, BuildContext())
    assert (encoder.feature_dim, encoder.num_tokens) == (32, 576)


class CommandPlugin:
    """Adds `janus hello NAME` through the register_commands hook."""

    @hookimpl
    def register_commands(self, subcommands: Any) -> None:
        parser = subcommands.add_parser("hello", help="greet")
        parser.add_argument("name")
        parser.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)


class BrokenCommandPlugin:
    """Adds a command, then fails half-way."""

    @hookimpl
    def register_commands(self, subcommands: Any) -> None:
        subcommands.add_parser("half-done", help="never usable")
        raise RuntimeError("no terminal found")


def test_plugins_add_cli_commands_and_a_failing_one_is_reported_and_removed(
    isolated_host: PluginHost, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from janus_sdk import plugins as plugins_module
    from janus_sdk.cli.main import build_parser, main

    with plugged(isolated_host, ("greeter", CommandPlugin()), ("broken", BrokenCommandPlugin())) as host:
        monkeypatch.setattr(plugins_module, "_default_host", host)
        with pytest.warns(PluginWarning, match=r"plugin 'broken' raised in register_commands.*no terminal"):
            assert main(["hello", "world"]) == 0
        assert capsys.readouterr().out == "hello world\n"
        with pytest.raises(SystemExit), warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginWarning)
            main(["half-done"])  # removed: argparse's usage error
        assert "invalid choice: 'half-done'" in capsys.readouterr().err
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginWarning)
            listing = build_parser().format_help()
        assert "hello" in listing and "half-done" not in listing
