"""A CPU decode step's decoder layers as one call into the kernels, where every part of every layer would be
one of those kernels anyway.

In such a step each layer makes ~8 kernel calls (norms, three grouped projections calls, rotary and cache
write, attention, SiLU product) and Python spends ~100 us around them: the modules' calls, views, route
look-ups, torch's dispatch. `decoder_step.cpp` makes the same calls in the same order with the same arguments,
so its hidden states are the Python path's bit for bit, without that overhead (~2.3 ms of a 1B step on a
Zen 4, about 4-7% of the step). It serves only where the Python path would call exactly those kernels:
the fused layer ops chosen, an attention backend whose decode step at this cache length is the kernel
(`interfaces.KernelDecodeAttention`), every projection a kernel call (`interfaces.KernelLinearModule`)
routed to one build at these rows, one position of integer start, no padding mask. Anything else, and any step
it declines, runs the Python layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from janus_plugins.cpu_kernels import WIDE_ISAS
from janus_plugins.deepseek_llm.cache import StaticKVCache
from janus_plugins.deepseek_llm.layer_ops import KernelLayerOps, Position, TorchLayerOps
from janus_sdk.interfaces import AttentionBackend, KernelDecodeAttention, KernelLinearModule

if TYPE_CHECKING:
    from janus_plugins.deepseek_llm.model import DecoderLayer


class NativeLayers:
    """The decoder layers of one backbone held by the kernels' `DecoderStack` (the same tensors, no copy)."""

    def __init__(
        self,
        stack: Any,
        attention: KernelDecodeAttention,
        layers: list[list[KernelLinearModule]],
        heads: int,
        dim: int,
    ) -> None:
        self.stack, self.attention, self.layers = stack, attention, layers
        self.heads, self.dim = heads, dim
        self.builds: dict[tuple[int, torch.dtype], str | None] = {}  # every layer's, checked once per rows

    def run(
        self,
        x: Tensor,
        cache: StaticKVCache,
        start: Position,
        mask: Tensor | None,
        rope: tuple[Tensor, Tensor],
    ) -> Tensor | None:
        """x [B, 1, hidden] at `start` through every layer (the cache written), or None where this step is not
        one the Python layers would compute with the kernels alone."""
        if not isinstance(start, int) or x.shape[1] != 1 or mask is not None or rope[0].shape[0] != 1:
            return None
        rows = x.shape[0]
        build = self._build(rows, x.dtype)
        if build is None or not self.attention.decodes_with_kernel(
            x.dtype, rows, self.heads, self.dim, start + 1
        ):
            return None
        cos, sin = (table.contiguous() for table in rope)
        out: Tensor = self.stack.run(
            x, cache.keys, cache.values, cos, sin, start, self.dim**-0.5, build in WIDE_ISAS
        )
        return out

    def _build(self, rows: int, dtype: torch.dtype) -> str | None:
        """The one kernel build every projection routes `rows` rows to, or None. Every layer is checked the
        first time; later steps check the first layer's (the routes are measured choices that may change)."""
        first = {p.route(rows, dtype) for p in self.layers[0]}
        if len(first) != 1:
            return None
        key = (rows, dtype)
        if key not in self.builds or first != {self.builds[key]}:
            each = {p.route(rows, dtype) for layer in self.layers for p in layer}
            self.builds[key] = first.pop() if len(each) == 1 else None
        return self.builds[key]


def native_layers(
    layers: Sequence[DecoderLayer],
    ops: TorchLayerOps,
    attention: AttentionBackend,
    dtype: torch.dtype,
    *,
    heads: int,
    kv_heads: int,
) -> NativeLayers | None:
    """The layers as one kernel call where each of their parts is a kernel (see the module), else None."""
    if not layers or not isinstance(ops, KernelLayerOps) or not isinstance(attention, KernelDecodeAttention):
        return None
    projections = [_projections(layer) for layer in layers]
    if not all(projections) or not _one_kind_each(projections):
        return None
    norms = [(layer.input_layernorm, layer.post_attention_layernorm) for layer in layers]
    if any(norm.weight.dtype != dtype for pair in norms for norm in pair):
        return None
    operands = [[p.kernel_operands() for p in ps] for ps in projections]
    weights = [
        [pair[0].weight, pair[1].weight, *(weight for weight, _, _ in layer)]
        for pair, layer in zip(norms, operands, strict=True)
    ]
    stack = ops.kernels.DecoderStack(
        weights,
        [[_or_empty(scale) for _, scale, _ in layer] for layer in operands],
        [[_or_empty(bias) for _, _, bias in layer] for layer in operands],
        [norm.eps for pair in norms for norm in pair],
        heads,
        kv_heads,
    )
    hidden = layers[0].self_attn.q_proj.in_features
    return NativeLayers(stack, attention, projections, heads, hidden // heads)


def _projections(layer: DecoderLayer) -> list[KernelLinearModule]:
    """q, k, v, o, gate, up, down of a decoder layer where each can be a kernel call, else []."""
    attn, mlp = layer.self_attn, layer.mlp
    modules: list[nn.Module] = [
        attn.q_proj,
        attn.k_proj,
        attn.v_proj,
        attn.o_proj,
        mlp.gate_proj,
        mlp.up_proj,
        mlp.down_proj,
    ]
    kernels: list[KernelLinearModule] = [m for m in modules if isinstance(m, KernelLinearModule)]
    return kernels if len(kernels) == len(modules) else []


def _one_kind_each(projections: list[list[KernelLinearModule]]) -> bool:
    """Whether each layer's weights are of one kind (dtype, layout, scaled or not): the kernel's grouped calls
    take one."""
    for layer in projections:
        operands = (p.kernel_operands() for p in layer)
        kinds = {(weight.dtype, weight.dim(), scale is None) for weight, scale, _ in operands}
        if len(kinds) != 1:
            return False
    return True


def _or_empty(tensor: Tensor | None) -> Tensor:
    return torch.empty(0) if tensor is None else tensor
