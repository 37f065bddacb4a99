"""MLP aligners and the image-token head: numerics against the janus-tiny goldens, official key names, real
sizes, config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

import janus_plugins.mlp as mlp_plugin
from janus_plugins.mlp import MlpProjector, MlpProjectorConfig, VisionHead
from janus_sdk.errors import ConfigError
from janus_sdk.interfaces import Aligner, GenerationHead
from janus_sdk.plugins import PluginHost
from janus_sdk.registry import BuildContext, Registry

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"


@pytest.fixture(scope="module")
def registry() -> Registry:
    host = PluginHost()
    host.register(mlp_plugin, "mlp")
    return host.registry


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, Tensor]:
    return {k: v.float() for k, v in load_file(FIXTURE / "checkpoint" / "model.safetensors").items()}


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(FIXTURE / "golden" / "golden.safetensors")


def from_checkpoint(
    registry: Registry, kind: str, config: dict[str, Any], checkpoint: dict[str, Tensor], prefix: str
) -> Any:
    """Build the component from its official `<prefix>_config` (cls + params), load its slice strictly."""
    section = config[f"{prefix}_config"]
    module = registry.get(kind, section["cls"]).build(section["params"], BuildContext())
    module.load_state_dict(
        {k.removeprefix(f"{prefix}."): v for k, v in checkpoint.items() if k.startswith(f"{prefix}.")},
        strict=True,
    )
    return module.eval()


def test_registered_under_official_names(registry: Registry) -> None:
    for name in ("mlp", "MlpProjector", "mlp_gelu"):
        assert registry.get("aligner", name).factory is mlp_plugin.build_mlp_projector
    for name in ("vision_head", "VisionHead"):
        assert registry.get("generation_head", name).factory is mlp_plugin.build_vision_head


def test_aligner_matches_golden(
    registry: Registry, config: dict[str, Any], checkpoint: dict[str, Tensor], golden: dict[str, Tensor]
) -> None:
    aligner = from_checkpoint(registry, "aligner", config, checkpoint, "aligner")
    assert isinstance(aligner, Aligner)
    assert (aligner.input_dim, aligner.output_dim) == (32, 64)
    with torch.no_grad():
        torch.testing.assert_close(aligner(golden["siglip_out"]), golden["aligner_out"], atol=1e-4, rtol=1e-4)


def test_gen_aligner_loads_its_slice(
    registry: Registry, config: dict[str, Any], checkpoint: dict[str, Tensor]
) -> None:
    gen_aligner = from_checkpoint(registry, "aligner", config, checkpoint, "gen_aligner")
    assert (gen_aligner.input_dim, gen_aligner.output_dim) == (8, 64)
    with torch.no_grad():
        assert gen_aligner(torch.zeros(4, 1, 8)).shape == (4, 1, 64)


def test_gen_head_matches_golden(
    registry: Registry, config: dict[str, Any], checkpoint: dict[str, Tensor], golden: dict[str, Tensor]
) -> None:
    head = from_checkpoint(registry, "generation_head", config, checkpoint, "gen_head")
    assert isinstance(head, GenerationHead)
    assert head.codebook_size == 16384
    with torch.no_grad():
        logits = head(golden["gen_step0_last_hidden"])
    torch.testing.assert_close(logits, golden["gen_step0_raw_logits"], atol=2e-4, rtol=0)


def linear_keys(*prefixes: str) -> set[str]:
    return {f"{p}.{n}" for p in prefixes for n in ("weight", "bias")}


@pytest.mark.parametrize(
    ("params", "keys"),
    [
        ({"projector_type": "identity", "input_dim": 16, "n_embed": 16}, set()),
        ({"projector_type": "linear", "input_dim": 16, "n_embed": 24}, linear_keys("layers")),
        ({"projector_type": "mlp_gelu", "input_dim": 16, "n_embed": 24, "depth": 1}, linear_keys("layers.0")),
        (
            {"projector_type": "mlp_gelu", "input_dim": 16, "n_embed": 24, "depth": 3},
            linear_keys("layers.0", "layers.2", "layers.4"),
        ),
    ],
)
def test_projector_types_use_upstream_layouts(
    registry: Registry, params: dict[str, Any], keys: set[str]
) -> None:
    projector = registry.get("aligner", "MlpProjector").build(params, BuildContext())
    assert set(projector.state_dict()) == keys
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        y = projector(x)
    assert y.shape == (2, 5, params["n_embed"])
    if params["projector_type"] == "identity":
        assert y is x


def test_mlp_gelu_is_linear_exact_gelu_linear() -> None:
    projector = MlpProjector(MlpProjectorConfig.model_validate({"input_dim": 4, "n_embed": 6, "depth": 2}))
    assert isinstance(projector.layers, torch.nn.Sequential)
    first, second = projector.layers[0], projector.layers[2]
    x = torch.randn(3, 4)
    expected = second(torch.nn.functional.gelu(first(x), approximate="none"))
    torch.testing.assert_close(projector(x), expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kind", "params", "numel"),
    [
        # Janus-Pro-1B aligner / gen_aligner, Janus-Pro-7B aligner, 1B / 7B gen_head (official params).
        (
            "aligner",
            {"depth": 2, "input_dim": 1024, "n_embed": 2048, "projector_type": "mlp_gelu"},
            1024 * 2048 + 2048 + 2048 * 2048 + 2048,
        ),
        (
            "aligner",
            {"depth": 2, "input_dim": 8, "n_embed": 2048, "projector_type": "mlp_gelu"},
            8 * 2048 + 2048 + 2048 * 2048 + 2048,
        ),
        (
            "aligner",
            {"depth": 2, "input_dim": 1024, "n_embed": 4096, "projector_type": "mlp_gelu"},
            1024 * 4096 + 4096 + 4096 * 4096 + 4096,
        ),
        (
            "generation_head",
            {"image_token_embed": 2048, "image_token_size": 16384, "n_embed": 2048},
            2048 * 2048 + 2048 + 2048 * 16384 + 16384,
        ),
        (
            "generation_head",
            {"image_token_embed": 4096, "image_token_size": 16384, "n_embed": 4096},
            4096 * 4096 + 4096 + 4096 * 16384 + 16384,
        ),
    ],
)
def test_real_sizes_on_meta_device(registry: Registry, kind: str, params: dict[str, Any], numel: int) -> None:
    name = "mlp" if kind == "aligner" else "vision_head"
    with torch.device("meta"):
        module = registry.get(kind, name).build(params, BuildContext())
    assert sum(p.numel() for p in module.parameters()) == numel
    if isinstance(module, VisionHead):
        assert module.vision_head.weight.shape == (16384, params["image_token_embed"])
    else:
        assert module.state_dict()["layers.2.weight"].shape == (params["n_embed"], params["n_embed"])


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("aligner", {"projector_type": "low_high_hybrid_split_mlp_gelu"}, "'mlp_gelu'"),
        ("aligner", {"projector_type": "identity", "input_dim": 8, "n_embed": 16}, "cannot map input_dim 8"),
        ("aligner", {"depth": 0}, "params.depth"),
        ("aligner", {"input_dim": 0}, "params.input_dim"),
        ("aligner", {"hidden_act": "gelu"}, "hidden_act: unknown key"),
        ("generation_head", {"image_token_size": 0}, "params.image_token_size"),
        ("generation_head", {"n_embd": 64}, "n_embd: unknown key"),
    ],
)
def test_bad_configs_raise_config_error(
    registry: Registry, kind: str, params: dict[str, Any], message: str
) -> None:
    name = "mlp" if kind == "aligner" else "vision_head"
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry.get(kind, name).build(params, BuildContext())
