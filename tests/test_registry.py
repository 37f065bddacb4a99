"""The component registry: lookup by name or alias, built-ins found through entry points, conflicts and
overrides (in both registration orders), unknown names, and the interface check when a component is built."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch

from janus_sdk.errors import ConfigError, InputError, PluginError, UnknownComponentError
from janus_sdk.interfaces import VisualEncoder
from janus_sdk.kinds import ComponentKind
from janus_sdk.plugins import (
    BUILTIN_DISTRIBUTION,
    ENTRY_POINT_GROUP,
    PluginHost,
    get_plugin_host,
    get_registry,
)
from janus_sdk.registry import BuildContext
from toy_plugins import EncoderPlugin, ToyConfig, ToyEncoder, plugged

# -- built-ins: aliases and entry points ---------------------------------------------------------------

# The official checkpoints name their classes (config.json `cls`, language_config.model_type,
# tokenizer_class, processor sft_format); each must select a built-in component.
CHECKPOINT_NAMES = [
    (ComponentKind.VISUAL_ENCODER, "CLIPVisionTower", "siglip"),
    (ComponentKind.IMAGE_TOKENIZER, "VQ-16", "vq16"),
    (ComponentKind.ALIGNER, "MlpProjector", "mlp"),
    (ComponentKind.GENERATION_HEAD, "vision_head", "vision_head"),
    (ComponentKind.LLM_BACKBONE, "llama", "deepseek-llm"),
    (ComponentKind.TEXT_TOKENIZER, "LlamaTokenizer", "hf-tokenizer"),
    (ComponentKind.CHAT_TEMPLATE, "deepseek", "deepseek"),
]


@pytest.mark.parametrize(("kind", "alias", "canonical"), CHECKPOINT_NAMES)
def test_checkpoint_class_names_resolve_to_builtins(kind: ComponentKind, alias: str, canonical: str) -> None:
    reg = get_registry().get(kind, alias)
    assert (reg.kind, reg.name) == (kind, canonical)
    assert reg.distribution == BUILTIN_DISTRIBUTION
    assert get_registry().get(kind.value, alias) is reg  # the kind may be given by its config name


def test_builtins_are_found_through_janus_sdk_entry_points() -> None:
    builtin_eps = {
        ep.name: ep
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION
    }
    assert {"siglip", "mlp", "vq16", "deepseek_llm", "deepseek_chat"} <= set(builtin_eps)
    infos = {info.name: info for info in get_plugin_host().plugins()}
    version = metadata.version(BUILTIN_DISTRIBUTION)
    for name, ep in builtin_eps.items():
        assert (infos[name].distribution, infos[name].version, infos[name].module) == (
            BUILTIN_DISTRIBUTION,
            version,
            ep.value,
        )
        assert infos[name].errors == []
    builtin_components = {
        (r.kind, r.name) for r in get_registry().all() if r.distribution == BUILTIN_DISTRIBUTION
    }
    assert {(kind, canonical) for kind, _, canonical in CHECKPOINT_NAMES} <= builtin_components
    assert all(
        r.plugin in builtin_eps for r in get_registry().all() if r.distribution == BUILTIN_DISTRIBUTION
    )


def test_a_host_without_entry_points_has_no_components(isolated_host: PluginHost) -> None:
    """Nothing is hard-wired: without the entry points there is not even a built-in."""
    assert isolated_host.registry.all() == []
    with pytest.raises(UnknownComponentError, match="none"):
        isolated_host.registry.get("visual_encoder", "siglip")


# -- lookups -------------------------------------------------------------------------------------------


def test_in_process_plugin_is_found_by_name_and_alias(isolated_host: PluginHost) -> None:
    with plugged(isolated_host, ("toyplug", EncoderPlugin(aliases=("ToyTower",)))) as host:
        by_name = host.registry.get(ComponentKind.VISUAL_ENCODER, "toy")
        assert host.registry.get("visual_encoder", "ToyTower") is by_name
        assert (by_name.plugin, by_name.distribution, by_name.aliases) == (
            "toyplug",
            "toyplug-dist",
            ("ToyTower",),
        )
        assert by_name.description == "A toy encoder."  # the factory's docstring when none is given
        assert host.registry.all(ComponentKind.VISUAL_ENCODER) == [by_name]
    assert isolated_host.registry.all() == []  # unregistered: gone


def test_unknown_name_lists_kind_name_and_every_available_component(isolated_host: PluginHost) -> None:
    with (
        plugged(
            isolated_host, ("p1", EncoderPlugin("alpha", ("Alpha",))), ("p2", EncoderPlugin("beta"))
        ) as host,
        pytest.raises(UnknownComponentError) as info,
    ):
        host.registry.get("visual_encoder", "gamma")
    message = str(info.value)
    assert "visual_encoder" in message and "'gamma'" in message
    assert "alpha (also Alpha; plugin p1)" in message and "beta (plugin p2)" in message


def test_unknown_builtin_name_lists_the_builtins() -> None:
    with pytest.raises(
        UnknownComponentError, match=r"no visual_encoder called 'sigclip'.*siglip.*plugin siglip"
    ):
        get_registry().get(ComponentKind.VISUAL_ENCODER, "sigclip")


def test_a_name_of_another_kind_is_unknown() -> None:
    with pytest.raises(UnknownComponentError, match="no aligner called 'siglip'"):
        get_registry().get(ComponentKind.ALIGNER, "siglip")


def test_unknown_kind_is_named_with_the_valid_kinds() -> None:
    with pytest.raises(UnknownComponentError, match=r"no component kind 'visual_encoders'.*visual_encoder"):
        get_registry().get("visual_encoders", "siglip")


# -- conflicts and overrides ---------------------------------------------------------------------------

ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["builtin-first", "replacement-first"])


def _in_order(pairs: list[tuple[str, object]], reverse: bool) -> list[tuple[str, object]]:
    return pairs[::-1] if reverse else pairs


@ORDERS
def test_two_plugins_with_one_name_is_an_error_naming_both(isolated_host: PluginHost, reverse: bool) -> None:
    pairs = _in_order([("first", EncoderPlugin("toy")), ("second", EncoderPlugin("toy"))], reverse)
    with plugged(isolated_host, *pairs) as host, pytest.raises(PluginError) as info:
        host.registry  # noqa: B018
    message = str(info.value)
    assert "'toy'" in message and "registered twice" in message
    assert "plugin 'first' (first-dist)" in message and "plugin 'second' (second-dist)" in message


@ORDERS
def test_an_alias_clashing_with_a_name_is_an_error(isolated_host: PluginHost, reverse: bool) -> None:
    pairs = _in_order(
        [("first", EncoderPlugin("toy")), ("second", EncoderPlugin("other", ("toy",)))], reverse
    )
    with (
        plugged(isolated_host, *pairs) as host,
        pytest.raises(PluginError, match="'toy' is registered twice"),
    ):
        host.registry  # noqa: B018


@ORDERS
def test_override_replaces_whatever_the_order(isolated_host: PluginHost, reverse: bool) -> None:
    def build_replacement(config: ToyConfig, context: BuildContext) -> ToyEncoder:
        return ToyEncoder(config.width * 2)

    pairs = _in_order(
        [
            ("builtin", EncoderPlugin("toy", ("ToyTower",))),
            ("third_party", EncoderPlugin("toy", override=True, factory=build_replacement)),
        ],
        reverse,
    )
    with plugged(isolated_host, *pairs) as host:
        reg = host.registry.get("visual_encoder", "toy")
        assert (reg.plugin, reg.override) == ("third_party", True)
        # The replacement takes over the replaced one's aliases (a checkpoint's class name keeps working).
        assert host.registry.get("visual_encoder", "ToyTower") is reg
        assert reg.build({"width": 3}, BuildContext()).feature_dim == 6
        assert [r.plugin for r in host.registry.replaced()] == ["builtin"]
        infos = {i.name: i for i in host.plugins()}
        assert infos["third_party"].components == [("visual_encoder", "toy")]
        assert infos["builtin"].components == []


@ORDERS
def test_override_under_another_name_takes_over_the_replaced_names(
    isolated_host: PluginHost, reverse: bool
) -> None:
    pairs = _in_order(
        [
            ("builtin", EncoderPlugin("toy", ("ToyTower",))),
            ("third_party", EncoderPlugin("fancy", ("toy",), override=True)),
        ],
        reverse,
    )
    with plugged(isolated_host, *pairs) as host:
        reg = host.registry.get("visual_encoder", "fancy")
        assert host.registry.get("visual_encoder", "toy") is reg
        assert host.registry.get("visual_encoder", "ToyTower") is reg
        assert set(reg.aliases) == {"toy", "ToyTower"}


@ORDERS
def test_two_overrides_are_an_error_naming_both(isolated_host: PluginHost, reverse: bool) -> None:
    pairs = _in_order(
        [
            ("builtin", EncoderPlugin("toy")),
            ("one", EncoderPlugin("toy", override=True)),
            ("two", EncoderPlugin("toy", override=True)),
        ],
        reverse,
    )
    with plugged(isolated_host, *pairs) as host, pytest.raises(PluginError) as info:
        host.registry  # noqa: B018
    message = str(info.value)
    assert "plugin 'one' (one-dist)" in message and "plugin 'two' (two-dist)" in message
    assert "override=True" in message


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_a_clash_stays_an_error_when_an_override_replaces_both(
    isolated_host: PluginHost, order: tuple[int, ...]
) -> None:
    plugins = [
        ("a", EncoderPlugin("toy")),
        ("b", EncoderPlugin("toy")),
        ("c", EncoderPlugin("toy", override=True)),
    ]
    with (
        plugged(isolated_host, *[plugins[i] for i in order]) as host,
        pytest.raises(PluginError, match=r"plugin 'a' .*plugin 'b'|plugin 'b' .*plugin 'a'"),
    ):
        host.registry  # noqa: B018


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_two_overrides_of_parts_of_one_component_are_an_error(
    isolated_host: PluginHost, order: tuple[int, ...]
) -> None:
    plugins = [
        ("builtin", EncoderPlugin("toy", ("ToyTower",))),
        ("one", EncoderPlugin("one", ("toy",), override=True)),
        ("two", EncoderPlugin("two", ("ToyTower",), override=True)),
    ]
    with (
        plugged(isolated_host, *[plugins[i] for i in order]) as host,
        pytest.raises(PluginError, match="override=True"),
    ):
        host.registry  # noqa: B018


# -- building: params and the interface check ----------------------------------------------------------


def test_build_validates_params_and_checks_the_interface(isolated_host: PluginHost) -> None:
    with plugged(isolated_host, ("toyplug", EncoderPlugin())) as host:
        reg = host.registry.get("visual_encoder", "toy")
        encoder = reg.build({"width": 5}, BuildContext())
        assert isinstance(encoder, VisualEncoder) and encoder.feature_dim == 5
        assert reg.build(ToyConfig(width=7), BuildContext()).feature_dim == 7
        with pytest.raises(ConfigError, match=r"params\.width: Input should be greater than 0"):
            reg.build({"width": 0}, BuildContext())
        with pytest.raises(ConfigError, match=r"params\.widht: unknown key \(allowed: width\)"):
            reg.validate_params({"widht": 3})


class MissingFeatureDim:
    image_size = 32
    num_tokens = 4

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values


class NotCallable:
    image_size = 32
    num_tokens = 4
    feature_dim = 8


@pytest.mark.parametrize(
    ("component", "missing"),
    [
        (MissingFeatureDim(), "missing feature_dim"),
        (NotCallable(), "missing __call__ (not callable)"),
        (object(), "missing __call__ (not callable), feature_dim, image_size, num_tokens"),
    ],
)
def test_factory_result_not_satisfying_the_interface_is_a_plugin_error(
    isolated_host: PluginHost, component: object, missing: str
) -> None:
    def factory(config: ToyConfig, context: BuildContext) -> object:
        return component

    with (
        plugged(isolated_host, ("sloppy", EncoderPlugin(factory=factory))) as host,
        pytest.raises(PluginError) as info,
    ):
        host.registry.get("visual_encoder", "toy").build({}, BuildContext())
    message = str(info.value)
    assert "plugin 'sloppy' (sloppy-dist)" in message and "VisualEncoder" in message
    assert missing in message


def test_factory_that_raises_is_a_plugin_error_naming_the_plugin(isolated_host: PluginHost) -> None:
    def broken(config: ToyConfig, context: BuildContext) -> ToyEncoder:
        raise RuntimeError("out of cheese")

    def strict(config: ToyConfig, context: BuildContext) -> ToyEncoder:
        raise InputError("the factory's own, user-facing error")

    with plugged(
        isolated_host,
        ("broken", EncoderPlugin("a", factory=broken)),
        ("strict", EncoderPlugin("b", factory=strict)),
    ) as host:
        with pytest.raises(PluginError, match=r"plugin 'broken' .*RuntimeError: out of cheese"):
            host.registry.get("visual_encoder", "a").build({}, BuildContext())
        with pytest.raises(InputError, match="user-facing"):  # JanusErrors pass through unchanged
            host.registry.get("visual_encoder", "b").build({}, BuildContext())
