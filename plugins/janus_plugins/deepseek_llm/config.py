"""Typed config of the DeepSeek-LLM backbone: the official `language_config` keys, transformers' LlamaConfig
defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DeepSeekLLMConfig(BaseModel):
    """Sizes of the LLaMA-architecture backbone.

    Defaults are transformers' `LlamaConfig` defaults on purpose: the official Janus-Pro-7B config.json omits
    hidden_size, intermediate_size and the head counts and relies on them (4096 / 11008 / 32).
    """

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(4096, gt=0, description="Width of the residual stream.")
    intermediate_size: int = Field(11008, gt=0, description="Width of the SwiGLU MLP.")
    num_hidden_layers: int = Field(32, gt=0, description="Number of decoder layers.")
    num_attention_heads: int = Field(32, gt=0, description="Query heads per layer.")
    num_key_value_heads: int | None = Field(
        None, gt=0, description="Key/value heads (grouped-query attention); None means num_attention_heads."
    )
    vocab_size: int = Field(32000, gt=0, description="Rows of the token embedding and the LM head.")
    max_position_embeddings: int = Field(
        2048,
        gt=0,
        description="The rotary length the official config states (Janus-Pro: 16384); default RoPE computes "
        "every position, so the SDK's limit is max_context.",
    )
    max_context: int = Field(
        4096,
        gt=0,
        description="Longest prompt + answer the SDK accepts: the context DeepSeek-LLM was trained with.",
    )
    rms_norm_eps: float = Field(1e-6, gt=0, description="Epsilon of the RMSNorm layers.")
    rope_theta: float = Field(10000.0, gt=0, description="Base of the rotary position embedding.")
    hidden_act: Literal["silu"] = Field(
        "silu", description="MLP activation: silu, the SwiGLU of LLaMA (stated in official configs)."
    )
    attention_bias: bool = Field(False, description="Whether q/k/v/o projections have a bias.")
    mlp_bias: bool = Field(False, description="Whether the MLP projections have a bias.")
    cuda_graphs: bool = Field(
        True,
        description="On CUDA, capture the decode step as a CUDA graph and replay it: a step's few hundred "
        "kernel launches otherwise cost more host time than their GPU work. The captured steps are kept with "
        "the model, one per batch bucket (see kept_decode_graphs), and reused by later calls.",
    )
    kept_decode_graphs: int = Field(
        4,
        ge=0,
        description="With cuda_graphs: how many captured decode steps the model keeps between calls, each "
        "with the KV cache it writes (one per bucket: rows rounded up to a power of two, cache length up to "
        "a multiple of 256); the least recently used is dropped first. Each holds its cache's GPU memory "
        "while kept. 0 keeps none: every call captures its own.",
    )
    fused_layer_ops: bool = Field(
        True,
        description="Run each decoder layer's RMSNorms, rotary embedding and SwiGLU product fused: as "
        "AVX2 or NEON kernels on the CPU (one call each where torch takes 5 to 15 ops; bfloat16 results "
        "bit-equal), "
        "compiled by torch.compile on CUDA (fewer kernels per step; compiled on first use in a process). "
        "False keeps torch's ops everywhere.",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> DeepSeekLLMConfig:
        kv = self.num_key_value_heads or self.num_attention_heads
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % kv:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {kv}"
            )
        return self
