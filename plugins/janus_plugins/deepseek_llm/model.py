"""DeepSeek-LLM (LLaMA architecture) driven by input embeddings, with a preallocated (static) KV cache.

Norms, MLP and rotary tables are the modules of `blocks` (transformers' LLaMA arithmetic, our code); the
attention block and the cache are written so that every step writes keys/values in place (no concatenation,
no per-step allocation) and attention goes through the pipeline's AttentionBackend. The elementwise parts of
a layer go through `layer_ops` (torch's ops, the AVX2 kernels on the CPU, compiled ones in a captured CUDA
step). How steps run is chosen once per device and dtype (`DeepSeekLLM.prepare`), captured CUDA steps
included, which the model keeps between calls (`captured`), and CPU decode steps whose every part is a kernel
as one call of them (`native_step`). Parameter names equal the official
`language_model.*` checkpoint keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
from torch import Tensor, nn

from janus_plugins.deepseek_llm.blocks import MLP, RMSNorm, RotaryEmbedding
from janus_plugins.deepseek_llm.cache import StaticKVCache
from janus_plugins.deepseek_llm.captured import Capture, DecodeGraphs
from janus_plugins.deepseek_llm.config import DeepSeekLLMConfig
from janus_plugins.deepseek_llm.layer_ops import TORCH_OPS, Position, TorchLayerOps, layer_ops
from janus_plugins.deepseek_llm.native_step import NativeLayers, native_layers
from janus_sdk import cuda_graphs
from janus_sdk.errors import InputError
from janus_sdk.interfaces import AttentionBackend
from janus_sdk.projections import project

__all__ = ["DecodePlan", "DeepSeekLLM", "StaticKVCache"]


@dataclass(frozen=True)
class DecodePlan:
    """How the backbone's steps run on one device in one dtype, chosen once (`DeepSeekLLM.prepare`): the
    elementwise ops of prompts and eager steps, those of captured steps, the kept captured steps, and the
    layers as one kernel call for the CPU decode steps that allows (`native_step`)."""

    device: torch.device
    dtype: torch.dtype
    ops: TorchLayerOps
    step_ops: TorchLayerOps
    graphs: DecodeGraphs | None
    native: NativeLayers | None


class Attention(nn.Module):
    """Multi-head (grouped-query capable) self-attention writing into a StaticKVCache."""

    def __init__(self, cfg: DeepSeekLLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=cfg.attention_bias)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        cache: StaticKVCache,
        start: Position,
        attention: AttentionBackend,
        mask: Tensor | None,
        ops: TorchLayerOps,
    ) -> Tensor:
        """`mask` (with a Tensor `start` only): the additive mask over the whole cache, see `visible_mask`."""
        b, t, _ = x.shape
        q, k, v = project(x, (self.q_proj, self.k_proj, self.v_proj))
        q = q.view(b, t, self.n_heads, self.head_dim)
        k = k.view(b, t, self.n_kv, self.head_dim)
        v = v.view(b, t, self.n_kv, self.head_dim)
        layer_keys, layer_values = cache.keys[self.layer_idx], cache.values[self.layer_idx]
        q, keys, values = ops.rotary_into_cache(q, k, v, rope, layer_keys, layer_values, start)
        if self.n_kv != self.n_heads:
            keys = keys.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            values = values.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        out = attention.attend(q, keys, values, causal=t > 1, mask=mask)
        projected: Tensor = self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
        return projected


class DecoderLayer(nn.Module):
    """Pre-norm LLaMA block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: DeepSeekLLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        cache: StaticKVCache,
        start: Position,
        attention: AttentionBackend,
        mask: Tensor | None,
        ops: TorchLayerOps,
    ) -> Tensor:
        normed = ops.rms_norm(x, self.input_layernorm)
        attended = self.self_attn(normed, rope, cache, start, attention, mask, ops)
        x, normed = ops.add_rms_norm(x, attended, self.post_attention_layernorm)
        return x + ops.swiglu(self.mlp, normed)


class LlamaStack(nn.Module):
    """Embedding, decoder layers and final norm (the official `language_model.model`)."""

    def __init__(self, cfg: DeepSeekLLMConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        with torch.device("cpu"):  # computed, not loaded: must exist even when the weights are built on meta
            self.rotary_emb = RotaryEmbedding(cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta)


class DeepSeekLLM(nn.Module):
    """The LLMBackbone: `model.*` and `lm_head.*` exactly as in the official `language_model.*` keys."""

    def __init__(self, cfg: DeepSeekLLMConfig, attention: AttentionBackend) -> None:
        super().__init__()
        self.config = cfg
        self.attention = attention
        self.hidden_size = cfg.hidden_size
        self.vocab_size = cfg.vocab_size
        self.max_context = cfg.max_context
        self.model = LlamaStack(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        fits = cfg.intermediate_size % 8 == 0 and head_dim % 16 == 0
        self.fuse_layer_ops = cfg.fused_layer_ops and fits  # what the kernels are written for
        self.plan: DecodePlan | None = None

    def prepare(
        self, device: torch.device, dtype: torch.dtype, *, capture: Capture | None = None
    ) -> DecodePlan:
        """Choose how steps run on `device` in `dtype`, once: the elementwise ops (measured on the CPU, see
        `layer_ops`) and, on CUDA with `cuda_graphs`, a pool of captured decode steps kept with the model and
        replayed by later calls (`captured.DecodeGraphs`). The pipeline calls it when it has loaded the
        weights; hidden states of another device or dtype choose again. `capture` captures decode steps
        elsewhere than on CUDA (the tests emulate a graph on the CPU with it). Modules replaced later (another
        linear backend) need a new prepare: the plan holds the layers' weights for the one-call CPU step."""
        cfg = self.config
        kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
        fused = self.fuse_layer_ops
        ops = layer_ops(device, dtype, captured=False) if fused else TORCH_OPS
        if capture is None and device.type == "cuda" and self.config.cuda_graphs:
            capture = cuda_graphs.capture
        graphs = None
        step_ops = ops
        if capture is not None:
            step_ops = layer_ops(device, dtype, captured=True) if fused else TORCH_OPS

            def step(embeds: Tensor, cache: StaticKVCache, position: Tensor) -> Tensor:
                return self.run_layers(embeds, cache, position, step_ops)

            graphs = DecodeGraphs(
                partial(self._allocate, zeroed=True),
                step,
                hidden_size=self.hidden_size,
                keep=self.config.kept_decode_graphs,
                capture=capture,
            )
        layers = [cast(DecoderLayer, layer) for layer in self.model.layers]
        native = native_layers(
            layers, ops, self.attention, dtype, heads=cfg.num_attention_heads, kv_heads=kv_heads
        )
        self.plan = DecodePlan(device, dtype, ops, step_ops, graphs, native)
        return self.plan

    def plan_for(self, x: Tensor) -> DecodePlan:
        """The plan for tensors like x: the prepared one, or a new one for another device or dtype."""
        plan = self.plan
        if plan is None or plan.device != x.device or plan.dtype != x.dtype:
            plan = self.prepare(x.device, x.dtype)
        return plan

    def text_logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden)  # type: ignore[no-any-return]

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)  # type: ignore[no-any-return]

    def new_cache(self, batch_size: int, max_length: int, padding: Tensor | None = None) -> StaticKVCache:
        if padding is not None and (padding.shape != (batch_size,) or not int(padding.min()) >= 0):
            raise InputError(f"padding must be [{batch_size}] counts >= 0, got {padding.tolist()}")
        # the embedding table sets dtype and device: linear layers may hold packed or quantized weights
        graphs = self.plan_for(self.model.embed_tokens.weight).graphs
        if graphs is not None:
            return graphs.lease(batch_size, max_length, padding)
        cache = self._allocate(batch_size, max_length)
        cache.padding = None if padding is None else padding.to(cache.keys.device, torch.long)
        return cache

    def _allocate(self, batch_size: int, max_length: int, *, zeroed: bool = False) -> StaticKVCache:
        """A cache left unwritten unless `zeroed`: a step reads only the positions written before it, except
        a captured one, which reads the whole cache under a mask (0 * NaN of unwritten memory would be NaN).
        Zeroing four images' cache took 0.3 s on a Zen 3 (memory the OS hands out is zeroed as it is
        touched; torch.zeros touches it all, then writes it again)."""
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        kv = cfg.num_key_value_heads or cfg.num_attention_heads
        table = self.model.embed_tokens.weight
        shape = (cfg.num_hidden_layers, batch_size, kv, max_length, head_dim)
        make = torch.zeros if zeroed else torch.empty
        return StaticKVCache(
            make(shape, dtype=table.dtype, device=table.device),
            make(shape, dtype=table.dtype, device=table.device),
        )

    def hidden_states(self, inputs_embeds: Tensor, cache: StaticKVCache, start: int) -> Tensor:
        t = inputs_embeds.shape[1]
        if start + t > cache.max_length:
            raise InputError(
                f"sequence of {start + t} positions does not fit the KV cache of {cache.max_length}; "
                f"shorten the prompt or lower max_new_tokens"
            )
        if t == 1 and cache.captured is not None and start < cache.max_length - 1:
            return cache.captured(inputs_embeds, start)
        ops = self.plan_for(inputs_embeds).ops
        repeats = distinct_rows(inputs_embeds, cache.padding) if start == 0 and t > 1 else None
        if repeats is None:
            return self.run_layers(inputs_embeds, cache, start, ops)
        return self._prompt_once(inputs_embeds, cache, ops, *repeats)

    def _prompt_once(
        self, inputs_embeds: Tensor, cache: StaticKVCache, ops: TorchLayerOps, first: Tensor, copy: Tensor
    ) -> Tensor:
        """A prompt whose rows repeat (n images of one prompt: n conditional and n unconditional rows alike)
        through the layers once per distinct row (rows `first`), its keys and values then copied to every row
        (row i from distinct row copy[i]): the prompt's arithmetic divided by n."""
        t = inputs_embeds.shape[1]
        once = self._allocate(len(first), t)
        once.padding = None if cache.padding is None else cache.padding[first]
        hidden = self.run_layers(inputs_embeds[first], once, 0, ops)
        cache.keys[:, :, :, :t].copy_(once.keys[:, copy])
        cache.values[:, :, :, :t].copy_(once.values[:, copy])
        return hidden[copy]

    def run_layers(
        self, inputs_embeds: Tensor, cache: StaticKVCache, start: Position, ops: TorchLayerOps = TORCH_OPS
    ) -> Tensor:
        """Positions start.. of every row through the decoder layers and the final norm, writing the cache,
        with the layers' elementwise parts from `ops`."""
        t = inputs_embeds.shape[1]
        mask = None
        if isinstance(start, Tensor):
            positions = start.view(1, 1)
            mask = visible_mask(start, cache.max_length, inputs_embeds.dtype)
        else:
            positions = torch.arange(start, start + t, device=inputs_embeds.device).unsqueeze(0)
        if cache.padding is not None:  # each row's blanks hidden, its positions counted from its first token
            length = cache.max_length if isinstance(start, Tensor) else start + t
            blanks = blank_mask(cache.padding, positions, length, inputs_embeds.dtype)
            mask = blanks if mask is None else mask + blanks
            positions = positions - cache.padding.unsqueeze(1)
        rope = self.model.rotary_emb(inputs_embeds, positions)
        native = self.plan.native if self.plan is not None and ops is self.plan.ops else None
        x = None if native is None else native.run(inputs_embeds, cache, start, mask, rope)
        if x is None:
            x = inputs_embeds
            for layer in self.model.layers:
                x = layer(x, rope, cache, start, self.attention, mask, ops)
        return ops.rms_norm(x, self.model.norm)


def distinct_rows(inputs_embeds: Tensor, padding: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """(first, copy) where some rows of a prompt [B, T, hidden] equal others, embeddings and padding alike:
    the first row of each distinct kind, and for every row the index in `first` of its kind; None where every
    row differs."""
    if len(inputs_embeds) == 1:
        return None
    kinds, copy = torch.unique(inputs_embeds.flatten(1), dim=0, return_inverse=True)
    if len(kinds) == len(inputs_embeds):
        return None
    rows = torch.arange(len(inputs_embeds), device=copy.device)
    first = torch.full((len(kinds),), len(inputs_embeds), device=copy.device).scatter_reduce(
        0, copy, rows, reduce="amin"
    )
    if padding is not None and not torch.equal(padding[first][copy], padding):
        return None
    return first, copy


def visible_mask(position: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """Additive attention mask [1, 1, 1, length] of one query at `position` over a whole cache: 0 up to and
    including it, -inf beyond. Built once per step and shared by every layer."""
    visible = torch.arange(length, device=position.device) <= position
    mask = torch.zeros(length, dtype=dtype, device=position.device).masked_fill(~visible, float("-inf"))
    return mask.view(1, 1, 1, length)


def blank_mask(padding: Tensor, positions: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """Additive mask [B, 1, T, length] hiding row b's first padding[b] positions (left padding) from the
    row's queries at `positions` [1, T]. A blank still sees itself, so that its softmax is finite (its
    values are never read: nothing else attends to it)."""
    keys = torch.arange(length, device=padding.device)
    hidden = (keys < padding[:, None]).unsqueeze(1) & (keys != positions.view(-1, 1))
    mask = torch.zeros(hidden.shape, dtype=dtype, device=padding.device).masked_fill(hidden, float("-inf"))
    return mask.unsqueeze(1)
