"""The VQ decoder's fast paths against torch's plain modules: NNPACK's Winograd 3x3 convolutions on the CPU
and GroupNorm statistics split over the device (checked here on the CPU; the CUDA routing and the captured
decoder are in tests/test_cuda.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

import janus_plugins.vq16.convolution as convolution
from helpers import Pin
from janus_plugins.vq16 import VQ16
from janus_plugins.vq16.convolution import Conv3x3, nnpack_usable
from janus_plugins.vq16.normalization import GroupNorm, split_group_norm
from janus_sdk import JanusPipeline, tuning

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny"
needs_nnpack = pytest.mark.skipif(not nnpack_usable(), reason="this torch build has no usable NNPACK")


def tiny_vq(**params: bool) -> VQ16:
    """The fixture's VQ-16 in float32 on the CPU, loaded by the SDK, with image-tokenizer `params` set."""
    pipe = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cpu", dtype="float32")
    if params:
        config = pipe.config.model_copy(deep=True)
        config.image_tokenizer.params.update(params)
        config.checkpoint = str(FIXTURE / "checkpoint")
        pipe = JanusPipeline.from_config(config)
    vq = pipe.model.gen_vision_model
    assert isinstance(vq, VQ16)
    return vq


def counting_nnpack(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Records the input shape of every NNPACK convolution from here on."""
    calls: list[tuple[int, ...]] = []
    real = torch._nnpack_spatial_convolution

    def spy(x: Tensor, *args: object) -> Tensor:
        calls.append(tuple(x.shape))
        return real(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", spy)
    return calls


def plain_conv(conv: Conv3x3, x: Tensor) -> Tensor:
    return F.conv2d(x, conv.weight, conv.bias, padding=1)


@needs_nnpack
def test_float32_cpu_convolutions_go_through_nnpack_within_1e5(
    monkeypatch: pytest.MonkeyPatch, pinned: Pin
) -> None:
    pinned("vq-winograd=winograd")  # as measured on the CPUs here; no probe among the calls counted
    calls = counting_nnpack(monkeypatch)
    torch.manual_seed(0)
    conv = Conv3x3(48, 40)
    x = torch.randn(2, 48, 30, 30)
    with torch.inference_mode():
        out, expected = conv(x), plain_conv(conv, x)
    assert calls == [(2, 48, 30, 30)]
    assert out.shape == expected.shape == (2, 40, 30, 30)
    assert float((out - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    assert not torch.equal(out, expected)  # it is another algorithm, not torch's convolution again


@needs_nnpack
def test_other_dtypes_and_the_flag_off_keep_torchs_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_nnpack(monkeypatch)
    torch.manual_seed(0)
    conv = Conv3x3(16, 8)
    x = torch.randn(1, 16, 12, 12)
    with torch.inference_mode():
        as_bf16 = conv.to(torch.bfloat16)(x.bfloat16())
        assert torch.equal(as_bf16, plain_conv(conv, x.bfloat16()))
        conv.float().winograd = False
        assert torch.equal(conv(x), plain_conv(conv, x))
    assert calls == []


def test_a_failing_nnpack_call_falls_back_to_torch_for_good(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, pinned: Pin
) -> None:
    pinned("vq-winograd=winograd")  # NNPACK won where it ran, and then fails
    calls: list[int] = []

    def failing(*args: object) -> Tensor:
        calls.append(1)
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", failing)
    monkeypatch.setattr(convolution, "nnpack_usable", lambda: True)
    monkeypatch.setattr(Conv3x3, "nnpack_failed", False)
    torch.manual_seed(0)
    first, second = Conv3x3(8, 8), Conv3x3(8, 4)
    x = torch.randn(1, 8, 10, 10)
    with torch.inference_mode(), caplog.at_level("WARNING"):
        assert torch.equal(first(x), plain_conv(first, x))
        assert torch.equal(second(x), plain_conv(second, x))
    assert calls == [1]  # tried once in the process, then torch's convolution everywhere
    assert "using torch's convolutions from now on" in caplog.text


@needs_nnpack
def test_decode_with_winograd_matches_the_golden_and_the_direct_decode(
    monkeypatch: pytest.MonkeyPatch, pinned: Pin
) -> None:
    pinned("vq-winograd=winograd")
    golden = load_file(str(FIXTURE / "golden" / "golden.safetensors"))
    fast, direct = tiny_vq(), tiny_vq(winograd=False)
    calls = counting_nnpack(monkeypatch)
    with torch.inference_mode():
        image = fast.decode(golden["vq_code_grid"])
        per_image = sum(isinstance(m, Conv3x3) for m in fast.decoder.modules())
        assert calls == [(1, *shape[1:]) for shape in calls] and len(calls) == per_image * len(image)
        calls.clear()
        reference = direct.decode(golden["vq_code_grid"])
    assert calls == []
    torch.testing.assert_close(image, golden["vq_decode_out"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reference, golden["vq_decode_out"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 64, 40, 40), (1, 32, 300), (3, 96, 7, 5)])
def test_split_statistics_equal_group_norm_in_float32(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 20  # an offset mean: sums of squares must not lose the variance
    norm = GroupNorm(32, shape[1], eps=1e-6)
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    torch.nn.init.normal_(norm.bias, 0.0, 0.2)
    with torch.inference_mode():
        split = split_group_norm(x, 32, norm.weight, norm.bias, norm.eps)
        native = F.group_norm(x, 32, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(split, native, atol=2e-5, rtol=0)
        assert torch.equal(norm(x), native)  # on the CPU the module is torch's own


def test_split_statistics_in_bfloat16_round_like_group_norm() -> None:
    torch.manual_seed(0)
    x = (torch.randn(1, 64, 48, 48) * 2 + 1).bfloat16()
    weight, bias = torch.rand(64).bfloat16() + 0.5, torch.randn(64).bfloat16()
    split = split_group_norm(x, 32, weight, bias, 1e-6)
    native = F.group_norm(x, 32, weight, bias, 1e-6)
    assert split.dtype == torch.bfloat16
    # equal but where the float32 math rounds the other way, and there by at most one bfloat16 step
    assert float((split != native).float().mean()) < 0.02
    torch.testing.assert_close(split.float(), native.float(), rtol=2**-7, atol=1e-5)


def conv_layouts(vq: VQ16) -> list[str]:
    """Records the memory format each 3x3 convolution of `vq`'s decoder receives from here on."""
    seen: list[str] = []

    def record(_: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
        nchw, channels_last = (
            args[0].is_contiguous(),
            args[0].is_contiguous(memory_format=torch.channels_last),
        )
        seen.append("nchw" if nchw else "channels-last" if channels_last else "other")

    for module in vq.decoder.modules():
        if isinstance(module, Conv3x3):
            module.register_forward_pre_hook(record)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_activations_decode_the_nchw_image(dtype: torch.dtype, pinned: Pin) -> None:
    """Where oneDNN computes the convolutions (here: Winograd off), activations held channels-last give the
    image NCHW activations give, returned NCHW: in float32 up to the order of the sums, in bfloat16 as close
    to the float32 image as NCHW's."""
    codes = load_file(str(FIXTURE / "golden" / "golden.safetensors"))["vq_code_grid"]
    images = {}
    for layout, computed in (("torch", torch.float32), ("channels-last", dtype), ("torch", dtype)):
        pinned(f"vq-layout={layout},vq-dtype={str(computed).removeprefix('torch.')}")
        vq = tiny_vq(winograd=False).to(computed)
        seen = conv_layouts(vq)
        with torch.inference_mode():
            image = vq.decode(codes)
        assert set(seen) == {"nchw" if layout == "torch" else "channels-last"}
        assert image.is_contiguous() and image.dtype == computed
        images[layout, computed] = image.float()
    exact = images["torch", torch.float32]
    if dtype == torch.float32:
        torch.testing.assert_close(images["channels-last", dtype], exact, atol=1e-4, rtol=1e-4)
    else:
        nchw_error = (images["torch", dtype] - exact).abs().mean()
        assert (images["channels-last", dtype] - exact).abs().mean() <= 1.25 * nchw_error


@pytest.mark.parametrize(
    ("faster", "layout"), [("channels-last", torch.channels_last), ("torch", torch.contiguous_format)]
)
def test_the_layout_is_the_one_measured_faster_and_nnpack_keeps_nchw(
    faster: str, layout: torch.memory_format, tmp_path: Path
) -> None:
    timed: list[str] = []

    def timer(candidate: str, run: Callable[[], object], limit: float) -> float:
        run()
        timed.append(candidate)
        return 1.0 if candidate == faster else 2.0

    with tuning.use_tuner(tuning.Tuner(tmp_path / "t.json", timer=timer, pins="vq-winograd=winograd")):
        cpu = torch.device("cpu")
        assert convolution.coder_layout(torch.bfloat16, cpu, winograd=True) == layout
        assert timed == ["torch", "channels-last"]
        assert convolution.coder_layout(torch.float32, cpu, winograd=False) == layout
        if nnpack_usable():  # NNPACK computes float32 in NCHW: nothing to measure
            assert convolution.coder_layout(torch.float32, cpu, winograd=True) == torch.contiguous_format
        assert timed == ["torch", "channels-last"] * 2
        assert (
            convolution.coder_layout(torch.bfloat16, torch.device("meta"), winograd=True)
            == torch.contiguous_format
        )
