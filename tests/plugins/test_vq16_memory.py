"""What a VQ-16 decode keeps alive: one image on the CPU, one layer's cast weights at a time, and no
activation it no longer needs.

At Janus-Pro's size a float32 copy of the whole decoder is 0.17 GB and one 384x384 activation 75 MB per image,
so these decide whether decoding after a generation stays within the memory budget (bench/RESULTS.md).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

import janus_plugins.vq16.convolution as convolution
import janus_plugins.vq16.model as model
import janus_plugins.vq16.normalization as normalization
from helpers import Pin
from janus_plugins.vq16 import VQ16
from janus_plugins.vq16.model import DecoderLevel, ResBlock
from janus_sdk import JanusPipeline

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(str(FIXTURE / "golden" / "golden.safetensors"))


@pytest.fixture(scope="module")
def codes(golden: dict[str, Tensor]) -> Tensor:
    return golden["vq_code_grid"]


def tiny_vq(dtype: str) -> VQ16:
    pipe = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cpu", dtype=dtype)
    vq = pipe.model.gen_vision_model
    assert isinstance(vq, VQ16)
    return vq


@pytest.fixture
def emulated_bfloat16(pinned: Pin) -> None:
    """A CPU without bfloat16 arithmetic, where bfloat16 weights compute in float32."""
    pinned("matmul-dtype=float32")


@pytest.fixture(autouse=True)
def _inference() -> Iterator[None]:
    with torch.inference_mode():
        yield


@pytest.mark.usefixtures("emulated_bfloat16")
def test_bfloat16_decode_equals_a_decode_by_a_float32_copy_of_the_decoder(codes: Tensor) -> None:
    vq = tiny_vq("bfloat16")
    codes = codes[:1]
    features = vq.post_quant_conv(vq.codes_to_latent(codes))
    expected = copy.deepcopy(vq.decoder).float()(features.float()).to(torch.bfloat16)
    assert torch.equal(vq.decode(codes), expected)
    assert {p.dtype for p in vq.parameters()} == {torch.bfloat16}


@pytest.mark.usefixtures("emulated_bfloat16")
def test_a_bfloat16_decode_holds_one_layers_float32_weights_at_a_time(
    monkeypatch: pytest.MonkeyPatch, codes: Tensor
) -> None:
    copies: list[weakref.ref[Tensor]] = []
    most_alive = 0

    def spying(real: Callable[[Tensor | None, Tensor], Tensor | None]) -> Callable[..., Tensor | None]:
        def like_input(weight: Tensor | None, x: Tensor) -> Tensor | None:
            nonlocal most_alive
            most_alive = max(most_alive, sum(ref() is not None for ref in copies))
            cast = real(weight, x)
            if cast is not None and cast is not weight:
                copies.append(weakref.ref(cast))
            return cast

        return like_input

    for module in (convolution, normalization, model):
        monkeypatch.setattr(module, "like_input", spying(module.like_input))
    vq = tiny_vq("bfloat16")
    vq.decode(codes[:1])
    floating = [p for p in vq.decoder.parameters() if p.is_floating_point()]
    assert len(copies) == len(floating)  # every decoder weight was cast, once per image
    assert most_alive <= 1  # a layer's weight may still be alive while its bias is cast, nothing older


def test_inputs_no_longer_needed_are_freed_before_the_next_layer_allocates(codes: Tensor) -> None:
    """A level's input is not held while its later blocks run, nor a block's conv1 output during conv2."""
    vq = tiny_vq("float32")
    level = vq.decoder.conv_blocks[-1]
    assert isinstance(level, DecoderLevel) and len(level.res) > 1
    first, second = level.res[0], level.res[1]
    assert isinstance(first, ResBlock)
    held: dict[str, weakref.ref[Tensor]] = {}
    freed: dict[str, bool] = {}

    def keep(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(_: nn.Module, args: tuple[Tensor, ...]) -> None:
            held[name] = weakref.ref(args[0])

        return hook

    def check(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(_: nn.Module, __: tuple[Tensor, ...]) -> None:
            freed[name] = held[name]() is None

        return hook

    handles = [
        first.register_forward_pre_hook(keep("level input")),
        second.register_forward_pre_hook(check("level input")),
        first.norm2.register_forward_pre_hook(keep("conv1 output")),
        first.conv2.register_forward_pre_hook(check("conv1 output")),
    ]
    try:
        vq.decode(codes)
    finally:
        for handle in handles:
            handle.remove()
    assert freed == {"level input": True, "conv1 output": True}


def test_the_cpu_decodes_a_batch_one_image_at_a_time(codes: Tensor, golden: dict[str, Tensor]) -> None:
    """NNPACK computes a batch by a slower algorithm, and one image's activations are all a decode holds."""
    vq = tiny_vq("float32")
    batches: list[int] = []
    handle = vq.decoder.register_forward_pre_hook(lambda _, args: batches.append(args[0].shape[0]))
    try:
        images = vq.decode(codes)
    finally:
        handle.remove()
    assert len(codes) > 1 and batches == [1] * len(codes)
    torch.testing.assert_close(images, golden["vq_decode_out"], atol=1e-4, rtol=1e-4)


def test_the_cpu_encodes_a_batch_one_image_at_a_time(golden: dict[str, Tensor]) -> None:
    vq = tiny_vq("float32")
    pixels = golden["und_pixel_values"].view(-1, 3, 384, 384)
    batches: list[int] = []
    handle = vq.encoder.register_forward_pre_hook(lambda _, args: batches.append(args[0].shape[0]))
    try:
        codes = vq.encode(torch.cat([pixels, pixels.flip(-1)]))
    finally:
        handle.remove()
    assert batches == [1, 1]
    assert torch.equal(codes, torch.cat([vq.encode(pixels), vq.encode(pixels.flip(-1))]))
