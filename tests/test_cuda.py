"""CUDA checks (run where a GPU is present; skipped elsewhere, so CI never runs them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import janus_plugins.vq16.captured as vq_captured
import janus_plugins.vq16.normalization as normalization
from janus_plugins.attention import SDPAAttention, end_aligned_causal_mask, math_attention
from janus_plugins.deepseek_llm.layer_ops import CompiledLayerOps, TorchLayerOps
from janus_plugins.deepseek_llm.model import DeepSeekLLM, StaticKVCache
from janus_plugins.vq16 import VQ16
from janus_sdk import BackendUnavailableError, JanusPipeline, cuda_graphs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
MANIFEST = json.loads((FIXTURE / "golden" / "manifest.json").read_text())["info"]


@pytest.fixture(scope="module")
def fp32() -> JanusPipeline:
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions move the fp32 goldens by ~1e-2
    torch.backends.cuda.matmul.allow_tf32 = False
    return JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cuda", dtype="float32")


def test_auto_dtype_on_cuda_is_bfloat16() -> None:
    pipe = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cuda")
    assert pipe.dtype == torch.bfloat16 and pipe.device.type == "cuda"
    image = Image.open(FIXTURE / "golden" / "input.png")
    assert isinstance(pipe.chat("What is shown?", images=[image], max_new_tokens=8), str)
    images = pipe.generate_images("a red cube", n=2, seed=0)
    assert len(images) == 2 and images[0].size == (384, 384)


def test_fp32_cuda_reproduces_the_reference_greedy_answer(fp32: JanusPipeline) -> None:
    image = Image.open(FIXTURE / "golden" / "input.png")
    assert (
        fp32.chat("What is shown in this image?", images=[image], max_new_tokens=16)
        == MANIFEST["greedy_text"]
    )


def test_fp32_cuda_vq_decode_matches_reference(fp32: JanusPipeline) -> None:
    golden = load_file(FIXTURE / "golden" / "golden.safetensors")
    ours = fp32.decode_images(golden["vq_code_grid"].long())
    diff = (ours.int() - golden["vq_decode_uint8"].int()).abs()
    assert int(diff.max()) <= 1 and float((diff == 0).float().mean()) >= 0.999


def test_seeded_cuda_generation_is_repeatable(fp32: JanusPipeline) -> None:
    a = fp32.generate_image_codes("a red cube", n=2, seed=5)
    b = fp32.generate_image_codes("a red cube", n=2, seed=5)
    assert torch.equal(a, b) and a.device.type == "cuda"


def test_xformers_backend_is_usable_or_says_why() -> None:
    try:
        pipe = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cuda", attention="xformers")
    except BackendUnavailableError as exc:
        assert "pip install 'janus-sdk[xformers]'" in str(exc)
        return
    reference = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cuda", dtype="bfloat16")
    prompt = "What is shown in this image?"
    image = Image.open(FIXTURE / "golden" / "input.png")
    assert pipe.chat(prompt, images=[image], max_new_tokens=4) == reference.chat(
        prompt, images=[image], max_new_tokens=4
    )


def test_linear_backends_on_cuda() -> None:
    """auto keeps torch's kernels on CUDA, the CPU kernel is refused, int8 runs and stays close to bf16."""
    checkpoint = FIXTURE / "checkpoint"
    plain = JanusPipeline.from_pretrained(checkpoint, device="cuda", dtype="bfloat16")
    assert plain.linear is not None and plain.linear.name == "torch"
    with pytest.raises(BackendUnavailableError, match="use linear 'torch'"):
        JanusPipeline.from_pretrained(checkpoint, device="cuda", dtype="bfloat16", linear="avx2")
    int8 = JanusPipeline.from_pretrained(checkpoint, device="cuda", dtype="bfloat16", linear="int8")
    golden = load_file(FIXTURE / "golden" / "golden.safetensors")
    embeds = golden["und_inputs_embeds"].to("cuda", torch.bfloat16)
    logits = {}
    for name, pipe in (("bf16", plain), ("int8", int8)):
        llm = pipe.model.language_model
        with torch.inference_mode():
            hidden = llm.hidden_states(embeds, llm.new_cache(1, embeds.shape[1]), 0)
            logits[name] = llm.text_logits(hidden).float().cpu()
    reference = golden["und_prompt_logits"]
    assert float((logits["int8"] - reference).abs().mean()) < 4 * float(
        (logits["bf16"] - reference).abs().mean()
    )
    assert len(int8.generate_images("a red cube", n=2, seed=0)) == 2


def default_and_without(
    param: str, component: str = "llm_backbone", dtype: str = "float32"
) -> tuple[JanusPipeline, JanusPipeline]:
    """The fixture's CUDA pipeline as configured, and the same with `param` of `component` off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    checkpoint = FIXTURE / "checkpoint"
    default = JanusPipeline.from_pretrained(checkpoint, device="cuda", dtype=dtype)
    config = default.config.model_copy(deep=True)
    getattr(config, component).params[param] = False
    config.checkpoint = str(checkpoint)
    return default, JanusPipeline.from_config(config)


def backbone(pipe: JanusPipeline) -> DeepSeekLLM:
    llm = pipe.model.language_model
    assert isinstance(llm, DeepSeekLLM)
    return llm


def prefill_then_steps(pipe: JanusPipeline, steps: torch.Tensor) -> tuple[torch.Tensor, StaticKVCache]:
    """The golden understanding prompt on each row, then decode steps [n, rows, 1, hidden]: hidden states
    [rows, 1 + n, hidden] (the prompt's last position, then every step) and the cache they wrote."""
    llm = backbone(pipe)
    embeds = load_file(FIXTURE / "golden" / "golden.safetensors")["und_inputs_embeds"].cuda()
    rows, length = steps.shape[1], embeds.shape[1]
    cache = llm.new_cache(rows, length + steps.shape[0] + 2)
    with torch.inference_mode():
        prefill = llm.hidden_states(embeds.expand(rows, -1, -1), cache, 0)
        decoded = [llm.hidden_states(step, cache, length + i) for i, step in enumerate(steps)]
    return torch.cat([prefill[:, -1:], *decoded], dim=1), cache


def test_cuda_graph_decode_steps_match_eager_steps() -> None:
    """The captured decode step (default on CUDA) against the same steps launched one kernel at a time."""
    graphs, eager = default_and_without("cuda_graphs")
    steps = torch.randn(6, 1, 1, backbone(graphs).hidden_size, device="cuda")
    (captured, cache), (launched, eager_cache) = (prefill_then_steps(p, steps) for p in (graphs, eager))
    assert cache.captured is not None and eager_cache.captured is None
    torch.testing.assert_close(captured, launched, atol=1e-4, rtol=1e-4)


def test_captured_decode_steps_are_kept_with_the_model_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """One capture per batch bucket and process: a second generation of the same size replays the graph the
    first captured, with the same codes; another size captures its own."""
    captures: list[torch.Size] = []

    def counting(run: Callable[[], torch.Tensor], device: torch.device) -> object:
        graph, output = cuda_graphs.capture(run, device)
        captures.append(output.shape)
        return graph, output

    monkeypatch.setattr(cuda_graphs, "capture", counting)  # the backbone's; the VQ decoder imports its own
    pipe = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cuda", dtype="float32")
    hidden = backbone(pipe).hidden_size
    first = pipe.generate_image_codes("a red cube", seed=0)
    assert captures == [torch.Size([2, 1, hidden])]
    assert torch.equal(pipe.generate_image_codes("a red cube", seed=0), first)
    assert len(captures) == 1
    pipe.generate_image_codes("a red cube", n=2, seed=0)
    assert captures == [torch.Size([2, 1, hidden]), torch.Size([4, 1, hidden])]


def test_compiled_layer_ops_match_torch_ops() -> None:
    """On CUDA the layers' elementwise parts are compiled (the default) inside the captured step and give
    torch's results; a prefill keeps torch's ops."""
    fused, plain = default_and_without("fused_layer_ops")
    llm = backbone(fused)
    x = torch.zeros(1, 1, llm.hidden_size, device="cuda")
    assert type(llm.plan_for(x).step_ops) is CompiledLayerOps
    assert type(llm.plan_for(x).ops) is TorchLayerOps  # a prefill
    assert type(backbone(plain).plan_for(x).step_ops) is TorchLayerOps
    steps = torch.randn(4, 2, 1, llm.hidden_size, device="cuda")
    (compiled, _), (torch_ops, _) = (prefill_then_steps(p, steps) for p in (fused, plain))
    torch.testing.assert_close(compiled, torch_ops, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_captured_vq_decode_matches_eager_decode(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """A single image decodes through one captured graph (the default on CUDA), equal to the eager decode;
    a batch decodes image by image through the same graph; a cast of the weights captures anew."""
    captures: list[torch.Size] = []

    def counting(run: Callable[[], torch.Tensor], device: torch.device) -> object:
        graph, output = cuda_graphs.capture(run, device)
        captures.append(output.shape)
        return graph, output

    monkeypatch.setattr(vq_captured, "capture", counting)
    graphs, eager = default_and_without("cuda_graphs", "image_tokenizer", dtype)
    golden = load_file(FIXTURE / "golden" / "golden.safetensors")
    codes = torch.cat([golden["vq_code_grid"], golden["gen_sampled_tokens"]]).long().cuda()
    vq, plain = graphs.model.gen_vision_model, eager.model.gen_vision_model
    assert isinstance(vq, VQ16)
    with torch.inference_mode():
        singles = [vq.decode(one[None]) for one in codes]
        assert captures == [torch.Size([1, 3, 384, 384])]
        for one, image in zip(codes, singles, strict=True):
            torch.testing.assert_close(image, plain.decode(one[None]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vq.decode(codes), plain.decode(codes), atol=1e-5, rtol=1e-5)
        assert len(captures) == 1
        assert vq.double().decode(codes[:1]).dtype == torch.float64 and len(captures) == 2


def cudnn_attention_enabled() -> bool:
    return bool(torch.backends.cuda.cudnn_sdp_enabled())  # type: ignore[no-untyped-call]


def test_causal_prompts_on_cuda_stay_off_cudnn_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuDNN's SDPA builds a plan for every new prompt length: causal prompts go to torch's other kernels;
    decode steps and non-causal attention keep torch's own choice; the flags are as before afterwards."""
    cudnn_allowed: list[bool] = []
    real = F.scaled_dot_product_attention

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        cudnn_allowed.append(cudnn_attention_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    before = cudnn_attention_enabled()
    q, k, v = torch.randn(3, 1, 4, 37, 64, device="cuda", dtype=torch.bfloat16)
    backend = SDPAAttention()
    prompt = backend.attend(q, k, v, causal=True)
    backend.attend(q, k, v, causal=False)
    backend.attend(q[:, :, -1:], k, v, causal=True)
    assert cudnn_allowed == [False, before, before]
    assert cudnn_attention_enabled() == before
    expected = math_attention(
        q.float(), k.float(), v.float(), end_aligned_causal_mask(37, 37, q.device, torch.float32), None
    )
    torch.testing.assert_close(prompt.float(), expected, atol=2e-2, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_splits_one_images_large_groups_on_cuda(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    split: list[tuple[int, ...]] = []
    real = normalization.split_group_norm

    def recording(x: torch.Tensor, *args: Any) -> torch.Tensor:
        split.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(normalization, "split_group_norm", recording)
    torch.manual_seed(0)
    norm = normalization.GroupNorm(32, 128, eps=1e-6).cuda()
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    torch.nn.init.normal_(norm.bias, 0.0, 0.2)
    norm = norm.to(dtype)
    one_large = torch.randn(1, 128, 192, 192, device="cuda") * 2 + 3
    inputs = [one_large, one_large.expand(4, -1, -1, -1), torch.randn(1, 128, 24, 24, device="cuda")]
    with torch.inference_mode():
        outputs = [norm(x.to(dtype)) for x in inputs]
        expected = [F.group_norm(x, 32, norm.weight.float(), norm.bias.float(), 1e-6) for x in inputs]
    assert split == [(1, 128, 192, 192)]  # not 4 images (128 blocks), not small groups
    tolerance = {"atol": 2e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2**-7}
    for out, reference in zip(outputs, expected, strict=True):
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), reference, **tolerance)  # type: ignore[arg-type]
