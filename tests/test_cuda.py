"""CUDA checks (run where a GPU is present; skipped elsewhere, so CI never runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from janus_plugins.deepseek_llm.layer_ops import CompiledLayerOps, TorchLayerOps
from janus_plugins.deepseek_llm.model import DeepSeekLLM, StaticKVCache
from janus_sdk import BackendUnavailableError, JanusPipeline

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


def default_and_without(param: str) -> tuple[JanusPipeline, JanusPipeline]:
    """The fixture's float32 CUDA pipeline as configured, and the same with backbone `param` off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    checkpoint = FIXTURE / "checkpoint"
    default = JanusPipeline.from_pretrained(checkpoint, device="cuda", dtype="float32")
    config = default.config.model_copy(deep=True)
    config.llm_backbone.params[param] = False
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
    assert cache.decode_graph is not None and eager_cache.decode_graph is None
    torch.testing.assert_close(captured, launched, atol=1e-4, rtol=1e-4)


def test_compiled_layer_ops_match_torch_ops() -> None:
    """On CUDA the layers' elementwise parts are compiled (the default) inside the captured step and give
    torch's results; a prefill keeps torch's ops."""
    fused, plain = default_and_without("fused_layer_ops")
    llm = backbone(fused)
    x = torch.zeros(1, 1, llm.hidden_size, device="cuda")
    assert type(llm.layer_ops(x, captured=True)) is CompiledLayerOps
    assert type(llm.layer_ops(x)) is TorchLayerOps  # a prefill
    assert type(backbone(plain).layer_ops(x, captured=True)) is TorchLayerOps
    steps = torch.randn(4, 2, 1, llm.hidden_size, device="cuda")
    (compiled, _), (torch_ops, _) = (prefill_then_steps(p, steps) for p in (fused, plain))
    torch.testing.assert_close(compiled, torch_ops, atol=1e-4, rtol=1e-4)
