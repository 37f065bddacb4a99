"""Built-in plugin: the `avx2` attention backend, for decode steps on AVX2 CPUs.

A decode step attends one query position over the whole cache. torch's CPU kernels do that in bfloat16 at a
small fraction of memory speed (about 4 ms per layer over 600 cached positions of 2 rows on an AVX2 EPYC, a
third of a 1B step at the end of an image). The kernel in `janus_plugins/linear/avx2_kernels.cpp` reads each
cached key and value once, in float32 registers. Every other call (prefill, masks, other devices) is SDPA's.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from janus_plugins.attention import NoOptions, SDPAAttention
from janus_plugins.linear import KERNEL_DTYPES
from janus_plugins.linear.kernels import avx2_kernels, cpu_has_avx2
from janus_sdk.errors import BackendUnavailableError
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register

log = logging.getLogger(__name__)


class AVX2Attention(SDPAAttention):
    """SDPA, except a single query position on the CPU, which the AVX2 kernel attends."""

    name = "avx2"

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        if device.type != "cpu" or dtype not in KERNEL_DTYPES:
            raise BackendUnavailableError(
                f"attention backend 'avx2' runs on the CPU in float32 or bfloat16, not on {device.type} in "
                f"{str(dtype).removeprefix('torch.')}; use attention 'sdpa'"
            )
        avx2_kernels()

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
    if device.type != "cpu" or dtype not in KERNEL_DTYPES or not cpu_has_avx2():
        return None
    try:
        avx2_kernels()
    except BackendUnavailableError as exc:
        log.warning("attention 'auto' uses SDPA: %s", exc)
        return None
    return "avx2"
