"""SigLIP understanding encoder: numerics against the janus-tiny goldens, real-size shapes, config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

import janus_plugins.siglip as siglip_plugin
from helpers import Pin
from janus_plugins.siglip import SigLIPConfig, SigLIPVisionEncoder
from janus_plugins.siglip.model import Block
from janus_sdk.errors import ConfigError, InputError
from janus_sdk.interfaces import VisualEncoder
from janus_sdk.plugins import PluginHost
from janus_sdk.registry import BuildContext, Registration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"
ATOL = RTOL = 1e-4  # the README tolerance for siglip_* activations
# vision_config.params of the official Janus-Pro-1B and -7B config.json (no sizes: they come from the preset).
OFFICIAL_PARAMS = {
    "image_size": 384,
    "model_name": "siglip_large_patch16_384",
    "select_feature": "same",
    "select_layer": -1,
}


@pytest.fixture(scope="module")
def registration() -> Registration:
    host = PluginHost()
    host.register(siglip_plugin, "siglip")
    return host.registry.get("visual_encoder", "siglip")


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    config = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())
    vision: dict[str, Any] = config["vision_config"]["params"]
    return vision


@pytest.fixture(scope="module")
def weights() -> dict[str, Tensor]:
    """The `vision_model.` slice of the tiny checkpoint, prefix stripped, bf16 upcast to float32 (exact)."""
    state = load_file(FIXTURE / "checkpoint" / "model.safetensors")
    prefix = "vision_model."
    return {k.removeprefix(prefix): v.float() for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(FIXTURE / "golden" / "golden.safetensors")


@pytest.fixture(scope="module")
def pixels(golden: dict[str, Tensor]) -> Tensor:
    return golden["und_pixel_values"].view(-1, 3, 384, 384)


def build(
    registration: Registration, params: dict[str, Any], context: BuildContext | None = None, **overrides: Any
) -> SigLIPVisionEncoder:
    encoder = registration.build({**params, **overrides}, context or BuildContext())
    assert isinstance(encoder, SigLIPVisionEncoder)
    return encoder.eval()


def loaded(encoder: SigLIPVisionEncoder, weights: dict[str, Tensor]) -> SigLIPVisionEncoder:
    """Load the checkpoint slice strictly, dropping the blocks a select_layer truncation did not build."""
    kept = len(encoder.vision_tower.blocks)
    state = {
        k: v
        for k, v in weights.items()
        if not (m := re.match(r"vision_tower\.blocks\.(\d+)\.", k)) or int(m.group(1)) < kept
    }
    encoder.load_state_dict(state, strict=True)
    return encoder


def key_patterns(keys: Any) -> set[str]:
    return {re.sub(r"\.blocks\.\d+\.", ".blocks.N.", k) for k in keys}


def test_registered_under_official_names(registration: Registration) -> None:
    host = PluginHost()
    host.register(siglip_plugin, "siglip")
    for name in ("siglip", "CLIPVisionTower", "siglip_large_patch16_384"):
        assert host.registry.get("visual_encoder", name).factory is siglip_plugin.build_siglip
    assert registration.config is SigLIPConfig


def test_matches_golden_activations(
    registration: Registration,
    params: dict[str, Any],
    weights: dict[str, Tensor],
    golden: dict[str, Tensor],
    pixels: Tensor,
) -> None:
    encoder = loaded(build(registration, params), weights)
    assert isinstance(encoder, VisualEncoder)
    assert (encoder.image_size, encoder.num_tokens, encoder.feature_dim) == (384, 576, 32)
    seen: dict[str, Tensor] = {}
    tower = encoder.vision_tower
    tower.patch_embed.register_forward_hook(lambda _m, _i, out: seen.__setitem__("siglip_patch_embed", out))
    tower.blocks[0].register_forward_pre_hook(lambda _m, args: seen.__setitem__("siglip_embed_pos", args[0]))
    for i, block in enumerate(tower.blocks):
        block.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(f"siglip_block{i}_out", out))
    with torch.no_grad():
        seen["siglip_out"] = encoder(pixels)
    assert sorted(seen) == sorted(k for k in golden if k.startswith("siglip_"))
    for name, value in seen.items():

        def label(message: str, name: str = name) -> str:
            return f"{name}: {message}"

        torch.testing.assert_close(value, golden[name], atol=ATOL, rtol=RTOL, msg=label)


def test_bfloat16_weights_run_block_by_block_in_float32_where_the_cpu_emulates_bfloat16(
    pinned: Pin,
    registration: Registration,
    params: dict[str, Any],
    weights: dict[str, Tensor],
    golden: dict[str, Tensor],
    pixels: Tensor,
) -> None:
    pinned("matmul-dtype=float32")
    encoder = loaded(build(registration, params), weights).to(torch.bfloat16)
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    for block in encoder.vision_tower.blocks:
        assert isinstance(block, Block)
        block.mlp.fc1.register_forward_pre_hook(lambda m, args: seen.append((args[0].dtype, m.weight.dtype)))
    with torch.no_grad():
        out = encoder(pixels.to(torch.bfloat16))
    assert seen == [(torch.float32, torch.float32)] * len(encoder.vision_tower.blocks)
    assert out.dtype == torch.bfloat16
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(out.float(), golden["siglip_out"], atol=0.04, rtol=0.02)


class RecordingAttention:
    """A stand-in attention backend that records how it is called."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs anywhere."""

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool,
        mask: Tensor | None = None,
        scale: float | None = None,
    ) -> Tensor:
        self.calls.append((tuple(q.shape), causal))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def test_attends_through_the_context_backend(
    registration: Registration,
    params: dict[str, Any],
    weights: dict[str, Tensor],
    golden: dict[str, Tensor],
    pixels: Tensor,
) -> None:
    backend = RecordingAttention()
    encoder = loaded(build(registration, params, BuildContext(attention=backend)), weights)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), golden["siglip_out"], atol=ATOL, rtol=RTOL)
    assert backend.calls == [((1, 2, 576, 16), False)] * 2  # one non-causal call per block, [B, H, T, Dh]


@pytest.mark.parametrize("select_layer", [-2, 1])
def test_select_layer_keeps_leading_blocks_then_norms(
    registration: Registration,
    params: dict[str, Any],
    weights: dict[str, Tensor],
    golden: dict[str, Tensor],
    pixels: Tensor,
    select_layer: int,
) -> None:
    encoder = loaded(build(registration, params, select_layer=select_layer), weights)
    assert len(encoder.vision_tower.blocks) == 1
    norm = (weights["vision_tower.norm.weight"], weights["vision_tower.norm.bias"])
    expected = F.layer_norm(golden["siglip_block0_out"], (32,), *norm, eps=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("select_layer", "blocks"), [(-1, 2), (0, 2), (2, 2), (5, 2), (-3, 0)])
def test_select_layer_counts_blocks_like_upstream(select_layer: int, blocks: int) -> None:
    params = {"width": 32, "layers": 2, "heads": 2, "select_layer": select_layer}
    if blocks == 0:
        with pytest.raises(ValueError, match="keeps no block"):
            SigLIPConfig.model_validate(params)
    else:
        assert SigLIPConfig.model_validate(params).num_blocks == blocks


@pytest.mark.parametrize("select_feature", ["patch", "cls_patch"])
def test_every_select_feature_keeps_all_tokens(
    registration: Registration,
    params: dict[str, Any],
    weights: dict[str, Tensor],
    golden: dict[str, Tensor],
    pixels: Tensor,
    select_feature: str,
) -> None:
    encoder = loaded(build(registration, params, select_feature=select_feature), weights)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), golden["siglip_out"], atol=ATOL, rtol=RTOL)


def test_pixel_mean_std_normalise_the_input(
    registration: Registration,
    params: dict[str, Any],
    weights: dict[str, Tensor],
    golden: dict[str, Tensor],
    pixels: Tensor,
) -> None:
    encoder = loaded(build(registration, params, pixel_mean=[0.5] * 3, pixel_std=[0.5] * 3), weights)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels * 0.5 + 0.5), golden["siglip_out"], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (1, 1, 384, 384), (3, 384, 384)])
def test_wrong_pixel_shape_is_an_input_error(
    registration: Registration, params: dict[str, Any], shape: tuple[int, ...]
) -> None:
    encoder = build(registration, params)
    with pytest.raises(InputError, match=r"\[B, 3, 384, 384\]"):
        encoder(torch.zeros(shape))


def siglip_param_count(width: int, blocks: int, tokens: int, patch: int, hidden: int) -> int:
    """Parameters of timm's VisionTransformer as Janus builds it, head (AttentionPoolLatent) included."""

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    norm = 2 * width
    mlp = linear(width, hidden) + linear(hidden, width)
    block = norm + linear(width, 3 * width) + linear(width, width) + norm + mlp
    attn_pool = width + linear(width, width) + linear(width, 2 * width) + linear(width, width) + norm + mlp
    return 3 * patch * patch * width + width + tokens * width + blocks * block + norm + attn_pool


def test_real_size_on_meta_device(registration: Registration, weights: dict[str, Tensor]) -> None:
    with torch.device("meta"):
        encoder = registration.build(OFFICIAL_PARAMS, BuildContext())
    assert isinstance(encoder, SigLIPVisionEncoder)
    assert (encoder.image_size, encoder.num_tokens, encoder.feature_dim) == (384, 576, 1024)
    assert len(encoder.vision_tower.blocks) == 24
    state = encoder.state_dict()
    assert state["vision_tower.blocks.23.attn.qkv.weight"].shape == (3072, 1024)
    assert state["vision_tower.blocks.0.mlp.fc1.weight"].shape == (4096, 1024)
    assert state["vision_tower.pos_embed"].shape == (1, 576, 1024)
    assert state["vision_tower.attn_pool.latent"].shape == (1, 1, 1024)
    assert state["vision_tower.attn_pool.kv.weight"].shape == (2048, 1024)
    count = sum(p.numel() for p in encoder.parameters())
    assert count == siglip_param_count(1024, 24, 576, 16, 4096) == 316_283_904
    assert key_patterns(state) == key_patterns(weights)
    # timm's eps; 1e-5 would move the tiny model by less than the goldens' tolerance, so check it directly.
    assert {m.eps for m in encoder.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}


def test_preset_supplies_missing_sizes() -> None:
    config = SigLIPConfig.model_validate({"model_name": "siglip_so400m_patch14_384", "layers": 3})
    sizes = (config.width, config.layers, config.heads, config.patch_size, config.mlp_ratio)
    assert sizes == (1152, 3, 16, 14, 3.7362)
    assert config.grid_size == 27


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_name": "siglip_huge_patch14_224"}, "supported: siglip_large_patch16_384"),
        ({"select_feature": "cls"}, "select_feature"),
        ({"heads": 5}, "not divisible by heads"),
        ({"select_layer": -3}, "keeps no block"),
        ({"pixel_mean": [0.5, 0.5, 0.5]}, "together"),
        ({"global_pool": "avg"}, "global_pool"),
        ({"image_size": 8}, "smaller than patch_size"),
        ({"ignore_head": False}, "ignore_head: unknown key"),
    ],
)
def test_bad_configs_raise_config_error(
    registration: Registration, params: dict[str, Any], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        registration.build({**params, **overrides}, BuildContext())
