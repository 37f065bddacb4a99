"""Built-in plugin: the `avx2` attention backend, for decode steps on AVX2 CPUs.

A decode step attends one query position over the whole cache. torch's CPU kernels do that in bfloat16 at a
small fraction of memory speed (about 4 ms per layer over 600 cached positions of 2 rows on an AVX2 EPYC, a
third of a 1B step at the end of an image). The kernel in `janus_plugins/linear/avx2_kernels.cpp` reads each
cached key and value once, in float32 registers. Every other call (prefill, masks, other devices) is SDPA's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from janus_plugins.attention import NoOptions, SDPAAttention
from janus_plugins.linear.kernels import avx2_kernels, kernels_usable, require_kernels
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


class AVX2Attention(SDPAAttention):
    """SDPA, except a single query position on the CPU, which the AVX2 kernel attends."""

    name = "avx2"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        require_kernels(device, dtype, "attention", "sdpa")

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
        if q.shape[-2] == 1 and mask is None and q.device.type == "cpu" and q.shape[-1] % 8 == 0:
            out: Tensor = avx2_kernels().decode_attention(q, k, v, scale or q.shape[-1] ** -0.5)
            return out
        return super().attend(q, k, v, causal=causal, mask=mask, scale=scale)


@hookimpl
def register_attention_backends(register: Register) -> None:
    def avx2(_: NoOptions, __: BuildContext) -> AVX2Attention:
        """SDPA, with decode steps on AVX2 CPUs through a kernel reading the cache once."""
        return AVX2Attention()

    register("avx2", avx2, config=NoOptions)


@hookimpl
def choose_attention_backend(device: torch.device, dtype: torch.dtype) -> str | None:
    return "avx2" if kernels_usable(device, dtype, "attention 'auto' picks sdpa") else None
