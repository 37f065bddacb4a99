"""Built-in plugin: attention backends that need nothing beyond torch (SDPA, and eager math as a reference)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


class NoOptions(BaseModel):
    """These backends take no options."""

    model_config = ConfigDict(extra="forbid")


def end_aligned_causal_mask(tq: int, tk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Additive mask letting query i (the (tk - tq + i)-th position) see keys 0..tk - tq + i."""
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)
    return torch.zeros(tq, tk, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))


class SDPAAttention:
    """torch.nn.functional.scaled_dot_product_attention: picks flash / memory-efficient / math kernels itself."""

    name = "sdpa"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs wherever torch runs."""

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, mask: Tensor | None = None, scale: float | None = None
    ) -> Tensor:
        tq, tk = q.shape[-2], k.shape[-2]
        if causal and tq != tk:
            causal_mask = end_aligned_causal_mask(tq, tk, q.device, q.dtype)
            mask = causal_mask if mask is None else mask + causal_mask
            causal = False
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


class EagerAttention:
    """softmax(q k^T * scale + mask) v written out: slow, but the plainest statement of the math."""

    name = "eager"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs wherever torch runs."""

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, mask: Tensor | None = None, scale: float | None = None
    ) -> Tensor:
        scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
        if causal:
            scores = scores + end_aligned_causal_mask(q.shape[-2], k.shape[-2], q.device, scores.dtype)
        if mask is not None:
            scores = scores + mask
        return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


@hookimpl
def register_attention_backends(register: Register) -> None:
    def sdpa(_: NoOptions, __: BuildContext) -> SDPAAttention:
        """torch scaled_dot_product_attention (default)."""
        return SDPAAttention()

    def eager(_: NoOptions, __: BuildContext) -> EagerAttention:
        """Plain matmul-softmax-matmul (reference math)."""
        return EagerAttention()

    register("sdpa", sdpa, config=NoOptions, aliases=("torch",))
    register("eager", eager, config=NoOptions, aliases=("math",))
