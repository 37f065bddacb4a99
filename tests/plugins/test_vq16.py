"""VQ-16 tokenizer vs the official implementation's golden tensors (janus-tiny), plus its contracts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

import janus_plugins.vq16
from helpers import Pin
from janus_plugins.attention import SDPAAttention
from janus_plugins.vq16 import VQ16, VQ16Config, build_vq16
from janus_sdk.errors import InputError
from janus_sdk.images import to_pil, to_uint8
from janus_sdk.interfaces import ImageTokenizer
from janus_sdk.kinds import ComponentKind
from janus_sdk.plugins import PluginHost
from janus_sdk.registry import BuildContext

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"
PREFIX = "gen_vision_model."
ATOL = RTOL = 1e-4
# parameters + buffers of the real VQ-16 (= the README's Janus-Pro-1B and -7B totals minus every other part)
REAL_VQ16_NUMEL = 71_948_939


def tiny_config() -> VQ16Config:
    params = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())["gen_vision_config"]["params"]
    return VQ16Config.model_validate(params)


def open_checkpoint() -> Any:
    return safe_open(str(FIXTURE / "checkpoint" / "model.safetensors"), "pt")


def vq_names(checkpoint: Any) -> list[str]:
    """The checkpoint's `gen_vision_model.*` tensor names (safe_open handles are not iterable)."""
    names: list[str] = checkpoint.keys()
    return [name for name in names if name.startswith(PREFIX)]


def checkpoint_slice() -> dict[str, Tensor]:
    with open_checkpoint() as f:
        return {k.removeprefix(PREFIX): f.get_tensor(k).float() for k in vq_names(f)}


def build_on_meta(config: VQ16Config, context: BuildContext | None = None) -> VQ16:
    with torch.device("meta"):
        return build_vq16(config, context or BuildContext())


def load_tiny(context: BuildContext | None = None) -> VQ16:
    """The way the SDK's loader does it: build on meta, then assign the upcast checkpoint tensors."""
    model = build_on_meta(tiny_config(), context)
    model.load_state_dict(checkpoint_slice(), strict=True, assign=True)
    return model.eval()


def assert_close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


def assert_uint8_close(actual: Tensor, expected: Tensor) -> None:
    """README criterion for uint8 images: |diff| <= 1 everywhere and >= 99.9 % exactly equal."""
    assert actual.dtype == torch.uint8 and actual.shape == expected.shape
    diff = (actual.int() - expected.int()).abs()
    assert int(diff.max()) <= 1
    assert (diff == 0).float().mean().item() >= 0.999


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(str(FIXTURE / "golden" / "golden.safetensors"))


@pytest.fixture(scope="module")
def vq() -> VQ16:
    return load_tiny()


@pytest.fixture(autouse=True)
def _inference() -> Iterator[None]:
    with torch.inference_mode():
        yield


@contextmanager
def capturing(points: dict[str, tuple[torch.nn.Module, bool]]) -> Iterator[dict[str, Tensor]]:
    """Record, under each name, the input (flag True) or the output of a module during the block; calls on
    parts of a batch (the CPU decodes one image per call) are concatenated in order."""
    captured: dict[str, Tensor] = {}

    def keep(name: str, take_input: bool) -> Any:
        def hook(_: torch.nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            seen = inputs[0] if take_input else output
            captured[name] = torch.cat([captured[name], seen]) if name in captured else seen

        return hook

    handles = [module.register_forward_hook(keep(name, flag)) for name, (module, flag) in points.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def decoded(vq: VQ16, golden: dict[str, Tensor]) -> dict[str, Tensor]:
    """One decode of the golden code grid, with the intermediates the goldens record."""
    points = {
        "vq_decode_zq": (vq.post_quant_conv, True),
        "vq_decode_post_quant": (vq.post_quant_conv, False),
        "vq_decode_mid_out": (vq.decoder.mid, False),
    }
    with torch.inference_mode(), capturing(points) as captured:
        captured["vq_decode_out"] = vq.decode(golden["vq_code_grid"])
    return captured


# -- structure and config ------------------------------------------------------------------------------------


def test_state_dict_keys_and_shapes_equal_the_checkpoint() -> None:
    with open_checkpoint() as f:
        expected = {k.removeprefix(PREFIX): tuple(f.get_slice(k).get_shape()) for k in vq_names(f)}
    built = {k: tuple(v.shape) for k, v in build_on_meta(tiny_config()).state_dict().items()}
    assert built == expected
    assert expected["quantize.codebook_used"] == (65536,)


def test_real_defaults_give_the_real_shapes() -> None:
    model = build_on_meta(VQ16Config())
    state = model.state_dict()
    assert sum(t.numel() for t in state.values()) == REAL_VQ16_NUMEL
    assert state["decoder.conv_in.weight"].shape == (512, 256, 3, 3)
    assert state["encoder.conv_in.weight"].shape == (128, 3, 3, 3)
    assert state["quantize.embedding.weight"].shape == (16384, 8)
    assert (model.image_size, model.grid_size, model.codebook_size, model.code_dim) == (384, 24, 16384, 8)
    assert isinstance(model, ImageTokenizer)


def test_official_params_validate_as_is() -> None:
    real = VQ16Config.model_validate(
        {"image_token_size": 16384, "n_embed": 8}
    )  # Janus-Pro config.json params
    assert real == VQ16Config()
    assert tiny_config().ch == 32 and tiny_config().grid_size == 24


@pytest.mark.parametrize(
    "params",
    [
        {"image_token_size": 8192},  # disagrees with codebook_size
        {"n_embed": 16},  # disagrees with codebook_embed_dim
        {"ch": 48},  # GroupNorm(32) needs widths divisible by 32
        {"image_size": 300},  # not a multiple of 16
        {"ch_mult": [1, 0]},
        {"codebook_size_typo": 1},
    ],
)
def test_bad_params_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        VQ16Config.model_validate(params)


def test_registered_under_its_name_and_the_checkpoint_class_name() -> None:
    host = PluginHost()
    host.register(janus_plugins.vq16, "vq16")
    registration = host.registry.get(ComponentKind.IMAGE_TOKENIZER, "VQ-16")
    assert registration.name == "vq16" and registration.factory is build_vq16
    with torch.device("meta"):
        built = registration.build({"image_token_size": 16384, "n_embed": 8}, BuildContext())
    assert isinstance(built, VQ16)


# -- decoding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["vq_decode_zq", "vq_decode_post_quant", "vq_decode_mid_out", "vq_decode_out"]
)
def test_decode_matches_golden(decoded: dict[str, Tensor], golden: dict[str, Tensor], name: str) -> None:
    assert_close(decoded[name], golden[name])


def test_decode_to_uint8_matches_the_official_conversion(
    decoded: dict[str, Tensor], golden: dict[str, Tensor]
) -> None:
    assert_uint8_close(to_uint8(decoded["vq_decode_out"]), golden["vq_decode_uint8"])


def test_sampled_tokens_decode_to_the_official_images(vq: VQ16, golden: dict[str, Tensor]) -> None:
    expected = load_file(str(FIXTURE / "golden" / "sampled_images.safetensors"))["gen_sampled_images_uint8"]
    assert_uint8_close(to_uint8(vq.decode(golden["gen_sampled_tokens"])), expected)


def test_bfloat16_weights_decode_in_float32_where_the_cpu_emulates_bfloat16(
    pinned: Pin, golden: dict[str, Tensor]
) -> None:
    """There a bfloat16 convolution is a reference loop (a real-size decode would take over an hour): the
    decoder computes in float32 (each layer casting its own weights), the model stays bfloat16, the image is
    float32's up to bf16 error."""
    pinned("matmul-dtype=float32")
    model = load_tiny().to(torch.bfloat16)
    with capturing({"conv_out": (model.decoder.conv_out, True)}) as seen:
        images = model.decode(golden["vq_code_grid"])
    assert seen["conv_out"].dtype == torch.float32
    assert images.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(images.float(), golden["vq_decode_out"], atol=0.05, rtol=0)


def test_attention_goes_through_the_given_backend(golden: dict[str, Tensor]) -> None:
    calls: list[tuple[tuple[int, ...], bool]] = []

    class Recording(SDPAAttention):
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
            calls.append((tuple(q.shape), causal))
            return super().attend(q, k, v, causal=causal, mask=mask, scale=scale)

    decoder = load_tiny(BuildContext(attention=Recording())).decoder
    assert_close(decoder.mid(decoder.conv_in(golden["vq_decode_post_quant"])), golden["vq_decode_mid_out"])
    assert calls == [((2, 1, 576, 128), False)]


@pytest.mark.parametrize(
    "codes",
    [
        torch.full((1, 576), 16384),  # one past the codebook
        torch.full((1, 576), -1),
        torch.zeros(1, 575, dtype=torch.long),  # not a 24x24 grid
        torch.zeros(1, 24, 24, dtype=torch.long),  # grid not flattened
        torch.zeros(576, dtype=torch.long),  # no batch dimension
        torch.zeros(0, 576, dtype=torch.long),
        torch.zeros(1, 576),  # float
    ],
)
def test_bad_codes_raise_input_error(vq: VQ16, codes: Tensor) -> None:
    with pytest.raises(InputError):
        vq.decode(codes)


# -- encoding ------------------------------------------------------------------------------------------------


def test_encode_matches_golden(vq: VQ16, golden: dict[str, Tensor]) -> None:
    points = {"vq_encoder_out": (vq.encoder, False), "vq_encode_h": (vq.quant_conv, False)}
    with capturing(points) as captured:
        codes = vq.encode(golden["und_pixel_values"].view(-1, 3, 384, 384))
    assert_close(captured["vq_encoder_out"], golden["vq_encoder_out"])
    assert_close(captured["vq_encode_h"], golden["vq_encode_h"])
    quant, requantized = vq.quantize_latent(captured["vq_encode_h"])
    assert_close(quant, golden["vq_encode_quant"])
    assert torch.equal(requantized, codes)
    assert codes.dtype == torch.int64 and codes.shape == (1, 576)
    unambiguous = golden["vq_encode_dist_gap"] >= 1e-4
    assert torch.equal(codes.view(-1)[unambiguous], golden["vq_encode_indices"][unambiguous])


@pytest.mark.parametrize("shape", [(1, 3, 256, 256), (3, 384, 384), (1, 1, 384, 384)])
def test_bad_pixels_raise_input_error(vq: VQ16, shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError):
        vq.encode(torch.zeros(shape))


# -- uint8 / PIL conversion ----------------------------------------------------------------------------------


def test_to_uint8_truncates_clips_and_returns_nhwc() -> None:
    # (x + 1) / 2 * 255 = 254.9 -> 254 (truncation), -2 -> 0, 3 -> 255, -1 -> 0, 1 -> 255, 0 -> 127
    values = torch.tensor([254.9 / 255 * 2 - 1, -2.0, 3.0, -1.0, 1.0, 0.0])
    images = values.view(1, 1, 2, 3).expand(1, 3, 2, 3)
    out = to_uint8(images)
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 3, 3)
    assert out[0, :, :, 0].flatten().tolist() == [254, 0, 255, 0, 255, 127]


def test_to_pil_gives_one_rgb_image_per_row(golden: dict[str, Tensor]) -> None:
    images = to_pil(golden["vq_decode_uint8"])
    assert [(im.mode, im.size) for im in images] == [("RGB", (384, 384))] * 2
    assert torch.equal(torch.from_numpy(np.array(images[1])), golden["vq_decode_uint8"][1])


@pytest.mark.parametrize("bad", [torch.zeros(1, 384, 384, 3), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)])
def test_to_uint8_rejects_anything_but_float_nchw(bad: Tensor) -> None:
    with pytest.raises(InputError):
        to_uint8(bad)


@pytest.mark.parametrize("bad", [torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 8, 8, 3)])
def test_to_pil_rejects_anything_but_uint8_nhwc(bad: Tensor) -> None:
    with pytest.raises(InputError):
        to_pil(bad)
