"""Our LLaMA blocks compute what transformers' LLaMA modules compute, bit for bit, and hold the same
parameters: the port of `janus_plugins.deepseek_llm.blocks`, on random inputs and weights. Any transformers
release the project supports must agree (`nox -s transformers_range`)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from janus_plugins.deepseek_llm import DeepSeekLLMConfig
from janus_plugins.deepseek_llm.blocks import MLP, RMSNorm, RotaryEmbedding, rotate

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def randomised(module: nn.Module, seed: int, dtype: torch.dtype) -> nn.Module:
    """`module` in `dtype` with every parameter drawn afresh (a norm's ones would hide its scaling)."""
    generator = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=generator) * 0.3
    return module.to(dtype)


def same_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copies our parameters into theirs by name: equal state-dict keys are what lets checkpoints load."""
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_dtype", [None, torch.float32], ids=["weights-as-input", "float32-weights"])
def test_rms_norm_is_llama_rms_norm(dtype: torch.dtype, weight_dtype: torch.dtype | None) -> None:
    ours = randomised(RMSNorm(96, eps=1e-5), 0, weight_dtype or dtype)
    theirs = LlamaRMSNorm(96, eps=1e-5).to(weight_dtype or dtype)
    same_weights(ours, theirs)
    x = (torch.randn(3, 7, 96, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    out = ours(x)
    assert out.dtype == theirs(x).dtype and torch.equal(out, theirs(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_is_llama_mlp(dtype: torch.dtype, bias: bool) -> None:
    ours = randomised(MLP(64, 176, bias=bias), 2, dtype)
    config = LlamaConfig(hidden_size=64, intermediate_size=176, hidden_act="silu", mlp_bias=bias)
    theirs = LlamaMLP(config).to(dtype)  # type: ignore[no-untyped-call]
    same_weights(ours, theirs)
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert torch.equal(ours(x), theirs(x))


def llama_rotary(head_dim: int, theta: float) -> LlamaRotaryEmbedding:
    """transformers' table; `rope_theta` as a keyword, which every supported release takes."""
    fields: dict[str, Any] = {"hidden_size": head_dim * 4, "num_attention_heads": 4, "rope_theta": theta}
    return LlamaRotaryEmbedding(LlamaConfig(**fields))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("module_dtype", [None, torch.bfloat16], ids=["float32-table", "module-cast"])
def test_rotary_tables_are_llamas(dtype: torch.dtype, theta: float, module_dtype: torch.dtype | None) -> None:
    """Positions as the backbone feeds them: per row, after left padding (negative for blanks), up to
    Janus-Pro's 16384; also after a whole-model `.to(dtype)`, which casts the frequency buffer."""
    ours, theirs = RotaryEmbedding(32, theta), llama_rotary(32, theta)
    if module_dtype is not None:
        ours, theirs = ours.to(module_dtype), theirs.to(module_dtype)
    assert ours.inv_freq.dtype == theirs.inv_freq.dtype and torch.equal(ours.inv_freq, theirs.inv_freq)
    positions = torch.stack([torch.arange(-3, 9), torch.arange(16372, 16384)])
    x = torch.zeros(2, 12, 128, dtype=dtype)
    for table, expected in zip(ours(x, positions), theirs(x, positions), strict=True):
        assert table.dtype == dtype and torch.equal(table, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotate_is_apply_rotary_pos_emb(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(2, 5, 4, 32, generator=generator).to(dtype)  # [B, T, heads, D], as projected
    k = torch.randn(2, 5, 2, 32, generator=generator).to(dtype)
    cos, sin = RotaryEmbedding(32, 10000.0)(q, torch.arange(5).expand(2, 5) * 97)
    theirs: tuple[Any, Any] = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    for ours, expected in zip(rotate(q, k, cos, sin), theirs, strict=True):
        assert ours.shape == expected.shape and torch.equal(ours, expected)


def test_config_defaults_are_llama_configs() -> None:
    """The official 7B language_config leaves these out and relies on transformers' LlamaConfig defaults."""
    defaults, llama = DeepSeekLLMConfig(), LlamaConfig()
    rope = getattr(llama, "rope_parameters", None) or {"rope_theta": llama.rope_theta}
    assert defaults.rope_theta == rope["rope_theta"]
    for name in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
        "rms_norm_eps",
        "hidden_act",
        "attention_bias",
        "mlp_bias",
    ):
        assert getattr(defaults, name) == getattr(llama, name), name
