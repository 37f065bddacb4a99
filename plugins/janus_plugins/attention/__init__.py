"""Built-in plugin: attention backends needing nothing beyond torch (SDPA; eager math as reference), and the
masks and math the family's other backends share: `cpu` (the `avx2` decode kernel) and `xformers`, plugins of
their own (entry points `cpu_attention`, `xformers`) in this package."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from janus_sdk.config import NoOptions
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


def end_aligned_causal_mask(tq: int, tk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Additive mask letting query i (the (tk - tq + i)-th position) see keys 0..tk - tq + i."""
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)
    return torch.zeros(tq, tk, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))


def math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None) -> Tensor:
    """softmax(q k^T * scale + mask) v, the softmax in float32."""
    scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


PROMPT_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""SDPA kernels for causal prompts on CUDA: not cuDNN's, which torch tries first on Hopper GPUs and which
builds an execution plan for every new shape, i.e. every new prompt length: a 1B model's prefill of ~600
positions took 59-64 ms at each new length with it, 14-17 ms without, on an H100 (bench/RESULTS.md)."""


class SDPAAttention:
    """torch.nn.functional.scaled_dot_product_attention: picks flash / memory-efficient / math kernels itself.

    Two exceptions: a single-query decode step on the CPU uses plain matmul-softmax-matmul, which torch's
    CPU SDPA kernels are several times slower than there (measured in bf16 at 8 rows over 600 positions); a
    causal prompt on CUDA is kept off cuDNN's kernel (`PROMPT_BACKENDS`)."""

    name = "sdpa"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs wherever torch runs."""

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
        tq, tk = q.shape[-2], k.shape[-2]
        if tq == 1 and q.device.type == "cpu":
            return math_attention(q, k, v, mask, scale)  # one query sees every key: causal needs no mask
        prompt_on_cuda = causal and tq > 1 and q.is_cuda
        if causal and (tq != tk or mask is not None):  # SDPA takes is_causal or a mask, not both
            causal_mask = end_aligned_causal_mask(tq, tk, q.device, q.dtype)
            mask = causal_mask if mask is None else mask + causal_mask
            causal = False
        with sdpa_kernel(PROMPT_BACKENDS) if prompt_on_cuda else contextlib.nullcontext():
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal, scale=scale
            )


class EagerAttention:
    """softmax(q k^T * scale + mask) v written out: slow, but the plainest statement of the math."""

    name = "eager"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Runs wherever torch runs."""

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
        if causal:
            causal_mask = end_aligned_causal_mask(q.shape[-2], k.shape[-2], q.device, q.dtype)
            mask = causal_mask if mask is None else mask + causal_mask
        return math_attention(q, k, v, mask, scale)


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
