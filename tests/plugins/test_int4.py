"""The int4 linear backend: group-wise codes within half a step of the weights, torch's int4 kernel computing
what the dequantized weights compute, layers it cannot take kept, other devices refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from janus_plugins.linear.int4 import Int4Backend, Int4Linear, Int4Options, quantize_groups
from janus_plugins.mlp import VisionHead
from janus_sdk import JanusPipeline
from janus_sdk.errors import BackendUnavailableError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "janus-tiny"


def _linear(in_features: int, out_features: int, dtype: torch.dtype) -> nn.Linear:
    torch.manual_seed(in_features + out_features)
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        layer.bias.normal_(0, 0.05)
    return layer.to(dtype).eval()


@pytest.mark.parametrize("group_size", [32, 128])
def test_codes_are_within_half_a_step_of_each_groups_weights(group_size: int) -> None:
    weight = _linear(256, 24, torch.float32).weight.detach()
    with torch.no_grad():
        weight[3, :group_size] *= 50  # one loud group must not coarsen the others
    codes, scale, zero = quantize_groups(weight, group_size)
    assert codes.dtype == torch.int32 and int(codes.min()) == 0 and int(codes.max()) == 15
    steps = scale.repeat_interleave(group_size, dim=1)
    restored = (codes - 8) * steps + zero.repeat_interleave(group_size, dim=1)
    assert bool(((restored - weight).abs() <= steps / 2 + 1e-6).all())
    assert float(scale[4, 0]) < float(scale[3, 0]) / 10


@pytest.mark.parametrize("rows", [1, 2, 8, 40])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_torchs_kernel_computes_the_dequantized_layer(rows: int, dtype: torch.dtype) -> None:
    layer = _linear(256, 48, dtype)
    quantized = Int4Backend(Int4Options(group_size=64)).convert(layer)
    assert isinstance(quantized, Int4Linear)
    codes, scale, zero = quantize_groups(layer.weight.detach(), 64)
    # the kernel takes the scales in the activations' dtype: dequantize from the same rounded values
    scale, zero = scale.to(dtype).double(), zero.to(dtype).double()
    weight = (codes.double() - 8) * scale.repeat_interleave(64, 1) + zero.repeat_interleave(64, 1)
    x = torch.randn(3, rows, 256).to(dtype)
    with torch.inference_mode():
        out = quantized(x)
    expected = nn.functional.linear(x.double(), weight, layer.bias.double())
    assert out.shape == (3, rows, 48) and out.dtype == dtype
    atol, rtol = (2e-2, 2**-7) if dtype == torch.bfloat16 else (1e-4, 1e-4)
    torch.testing.assert_close(out.double(), expected, atol=atol, rtol=rtol)


def test_layers_the_kernel_cannot_take_are_kept_and_other_devices_refused() -> None:
    backend = Int4Backend(Int4Options(group_size=64))
    layer = _linear(96, 8, torch.bfloat16)  # 96 is not a multiple of the group size
    assert backend.convert(layer) is layer
    with pytest.raises(BackendUnavailableError, match=r"'int4'.*not on meta.*use linear 'int8' or 'torch'"):
        backend.check(torch.device("meta"), torch.bfloat16)
    with pytest.raises(BackendUnavailableError, match="not on cpu in float16"):
        backend.check(torch.device("cpu"), torch.float16)


def test_int4_pipeline_stays_near_the_reference() -> None:
    """The tiny checkpoint with int4 layers: the prompt logits move several times further than int8's (random
    weights are int4's hard case; bench/quality.py: mean error 0.31 against 0.025, logit std 2.0) but stay
    well within their spread, the top token mostly holds, and an image still comes out."""
    golden = load_file(FIXTURE / "golden" / "golden.safetensors")
    pipe = JanusPipeline.from_pretrained(
        FIXTURE / "checkpoint", device="cpu", dtype="bfloat16", linear="int4"
    )
    head = pipe.model.gen_head
    assert isinstance(head, VisionHead) and isinstance(head.vision_head, Int4Linear)
    llm = pipe.model.language_model
    embeds = golden["und_inputs_embeds"].to(torch.bfloat16)
    with torch.inference_mode():
        logits = llm.text_logits(llm.hidden_states(embeds, llm.new_cache(1, embeds.shape[1]), 0)).float()
    reference = golden["und_prompt_logits"]
    assert 0.05 < float((logits - reference).abs().mean()) < 0.25 * float(reference.std())
    assert float((logits.argmax(-1) == reference.argmax(-1)).float().mean()) > 0.6
    assert len(pipe.generate_image_codes("a red cube", n=1, seed=0)[0]) == 576
