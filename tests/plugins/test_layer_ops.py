"""A decoder layer's elementwise parts: the AVX2 kernels give torch's results (bfloat16 to the bit where
rounding allows), and the backbone picks them only where they run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from janus_plugins.attention import SDPAAttention
from janus_plugins.deepseek_llm import DeepSeekLLM, DeepSeekLLMConfig
from janus_plugins.deepseek_llm.blocks import MLP, RMSNorm
from janus_plugins.deepseek_llm.layer_ops import (
    TORCH_OPS,
    CompiledLayerOps,
    KernelLayerOps,
    add_rms_norm,
    layer_ops,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "janus-tiny"
DTYPES = [torch.float32, torch.bfloat16]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def kernels() -> KernelLayerOps:
    ops = layer_ops(CPU, torch.float32, captured=False)
    if not isinstance(ops, KernelLayerOps):
        pytest.skip("the AVX2 kernels cannot run here")
    return ops


def assert_within_one_ulp(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to one unit in the last place (a sum or an exp done in another order)."""
    rtol = 2**-8 if expected.dtype == torch.bfloat16 else 2e-6
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1, 2048), (1, 5, 64)])
def test_rms_norm_and_residual_add(
    kernels: KernelLayerOps, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    x, delta = (torch.randn(shape).to(dtype) for _ in range(2))
    norm = RMSNorm(shape[-1], eps=1e-6)
    norm.weight.data = torch.randn(shape[-1])
    norm = norm.to(dtype)
    assert_within_one_ulp(kernels.rms_norm(x, norm), TORCH_OPS.rms_norm(x, norm))
    total, normed = kernels.add_rms_norm(x, delta, norm)
    expected_total, expected_normed = TORCH_OPS.add_rms_norm(x, delta, norm)
    assert torch.equal(total, expected_total)
    assert_within_one_ulp(normed, expected_normed)


def test_norm_weights_of_another_dtype_go_to_torch(kernels: KernelLayerOps) -> None:
    norm = RMSNorm(64, eps=1e-6)  # float32 weights
    x = torch.randn(2, 1, 64).to(torch.bfloat16)
    assert torch.equal(kernels.rms_norm(x, norm), TORCH_OPS.rms_norm(x, norm))
    expected = TORCH_OPS.add_rms_norm(x, x, norm)
    for ours, theirs in zip(kernels.add_rms_norm(x, x, norm), expected, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tokens", "start", "heads", "kv_heads"), [(1, 7, 4, 4), (3, 0, 4, 2), (5, 2, 2, 1)])
def test_rotary_writes_the_cache_as_torch_does(
    kernels: KernelLayerOps, dtype: torch.dtype, tokens: int, start: int, heads: int, kv_heads: int
) -> None:
    torch.manual_seed(tokens)
    rows, head_dim, length = 2, 32, 12
    q = torch.randn(rows, tokens, heads, head_dim).to(dtype)
    k, v = (torch.randn(rows, tokens, kv_heads, head_dim).to(dtype) for _ in range(2))
    angles = torch.randn(1, tokens, head_dim // 2) * 50
    cos, sin = (f(torch.cat([angles, angles], -1)).to(dtype) for f in (torch.cos, torch.sin))
    keys, values = (torch.randn(rows, kv_heads, length, head_dim).to(dtype) for _ in range(2))
    caches, expected_caches = (keys, values), (keys.clone(), values.clone())
    got = kernels.rotary_into_cache(q.clone(), k, v, (cos, sin), keys, values, start)
    expected = TORCH_OPS.rotary_into_cache(q.clone(), k, v, (cos, sin), *expected_caches, start)
    for ours, theirs in zip(got, expected, strict=True):  # q, and the keys and values up to start + tokens
        assert ours.shape == theirs.shape and torch.equal(ours, theirs)
    for ours, theirs in zip(caches, expected_caches, strict=True):  # positions after them left alone
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu(kernels: KernelLayerOps, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    mlp = MLP(64, 176, bias=False).to(dtype)
    for p in mlp.parameters():
        p.data.normal_(0, 0.3)  # gates from about -10 to 10: both tails of the sigmoid
    x = torch.randn(3, 1, 64).to(dtype)
    assert_within_one_ulp(kernels.swiglu(mlp, x), TORCH_OPS.swiglu(mlp, x))


def tiny_config(**overrides: object) -> DeepSeekLLMConfig:
    params = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())["language_config"]
    params = {k: v for k, v in params.items() if k not in ("model_type", "torch_dtype")}
    return DeepSeekLLMConfig(**{**params, **overrides})


def tiny_llm(**overrides: object) -> DeepSeekLLM:
    weights = load_file(FIXTURE / "checkpoint" / "model.safetensors")
    state = {k.removeprefix("language_model."): v.float() for k, v in weights.items()}
    model = DeepSeekLLM(tiny_config(**overrides), SDPAAttention())
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=True)
    return model.eval()


@pytest.mark.parametrize("dtype", DTYPES)
def test_backbone_steps_agree_with_and_without_kernels(kernels: KernelLayerOps, dtype: torch.dtype) -> None:
    fast, plain = tiny_llm().to(dtype), tiny_llm(fused_layer_ops=False).to(dtype)
    prompt = torch.randn(2, 9, fast.hidden_size).to(dtype)
    assert isinstance(fast.plan_for(prompt).ops, KernelLayerOps) and plain.plan_for(prompt).ops is TORCH_OPS
    caches = [fast.new_cache(2, 16), plain.new_cache(2, 16)]
    tolerance = 0.02 if dtype == torch.bfloat16 else 1e-5
    with torch.inference_mode():
        x = prompt
        for start in (0, 9, 10, 11):  # a prefill, then decode steps
            ours, theirs = (m.hidden_states(x, c, start) for m, c in zip((fast, plain), caches, strict=True))
            torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)
            x = theirs[:, -1:]
    written = [cache.keys[:, :, :, :12] for cache in caches]  # 9 prompt positions and 3 steps
    torch.testing.assert_close(written[0], written[1], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rms_norm_is_the_residual_add_then_the_norm(dtype: torch.dtype) -> None:
    """What CompiledLayerOps compiles for the residual add: the norm module's own bits before compiling."""
    torch.manual_seed(2)
    norm = RMSNorm(64, eps=1e-5)
    norm.weight.data = torch.randn(64)
    norm = norm.to(dtype)
    x, delta = torch.randn(2, 3, 64).to(dtype), torch.randn(2, 3, 64).to(dtype)
    total, normed = add_rms_norm(x, delta, norm.weight, norm.eps)
    assert torch.equal(total, x + delta) and torch.equal(normed, norm(x + delta))


HAS_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_ops_step_as_torch_ops_do() -> None:
    """CompiledLayerOps (CUDA's choice) through torch.compile's CPU backend: a prefill and decode steps."""
    fast, plain = tiny_llm(), tiny_llm(fused_layer_ops=False)
    compiled = CompiledLayerOps()
    fast.plan = dataclasses.replace(fast.prepare(CPU, torch.float32), ops=compiled, step_ops=compiled)
    caches = [fast.new_cache(2, 16), plain.new_cache(2, 16)]
    x = torch.randn(2, 9, fast.hidden_size)
    with torch.inference_mode():
        for start in (0, 9, 10):
            ours = fast.hidden_states(x, caches[0], start)
            theirs = plain.hidden_states(x, caches[1], start)
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
            x = theirs[:, -1:]


def test_torch_ops_where_the_kernels_do_not_run() -> None:
    assert layer_ops(torch.device("meta"), torch.float32, captured=False) is TORCH_OPS
    assert layer_ops(CPU, torch.float16, captured=False) is TORCH_OPS
    assert layer_ops(torch.device("cuda"), torch.bfloat16, captured=False) is TORCH_OPS  # a CUDA prefill
    with torch.device("meta"):
        assert DeepSeekLLM(tiny_config(), SDPAAttention()).fuse_layer_ops
        assert not DeepSeekLLM(tiny_config(num_attention_heads=8), SDPAAttention()).fuse_layer_ops  # D=8
        assert not DeepSeekLLM(tiny_config(intermediate_size=100), SDPAAttention()).fuse_layer_ops
