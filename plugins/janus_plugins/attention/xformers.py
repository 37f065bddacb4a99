"""Built-in plugin: xformers' memory-efficient attention (install with `pip install janus-sdk[xformers]`).

It runs only on CUDA; asked for elsewhere, or without xformers installed, it raises BackendUnavailableError
saying
so and naming the alternative ("sdpa")."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import Tensor

from janus_plugins.attention import end_aligned_causal_mask
from janus_sdk.config import NoOptions
from janus_sdk.errors import BackendUnavailableError
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


def _xformers_ops() -> Any:
    if importlib.util.find_spec("xformers") is None:
        raise BackendUnavailableError(
            "attention backend 'xformers' needs the xformers package: pip install 'janus-sdk[xformers]' "
            "(or use attention 'sdpa')"
        )
    import xformers.ops

    return xformers.ops


class XFormersAttention:
    """xformers.ops.memory_efficient_attention on [B, T, H, Dh] tensors."""

    name = "xformers"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"attention backend 'xformers' runs only on CUDA, not on {device.type!r}; "
                "use attention 'sdpa'"
            )
        _xformers_ops()

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool,
        mask: Tensor | None = None,
        scale: float | None = None,
    ) -> Tensor:
        ops = _xformers_ops()
        tq, tk = q.shape[-2], k.shape[-2]
        bias: Any = mask
        if causal:
            causal_mask = end_aligned_causal_mask(tq, tk, q.device, q.dtype)
            bias = causal_mask if mask is None else mask + causal_mask
        if bias is not None:
            bias = bias.expand(q.shape[0], q.shape[1], tq, tk)
        out = ops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, scale=scale
        )
        return out.transpose(1, 2)  # type: ignore[no-any-return]


@hookimpl
def register_attention_backends(register: Register) -> None:
    def xformers(_: NoOptions, context: BuildContext) -> XFormersAttention:
        """xformers memory-efficient attention (CUDA only, optional extra)."""
        backend = XFormersAttention()
        backend.check(context.device, context.dtype)
        return backend

    register("xformers", xformers, config=NoOptions, aliases=("memory_efficient",))
