"""Built-in plugin: the `avx2` and `neon` attention backends, for decode steps on x86 (AVX2) and ARM64 CPUs.

A decode step attends one query position over the whole cache. torch's CPU kernels do that in bfloat16 at a
small fraction of memory speed (about 4 ms per layer over 600 cached positions of 2 rows on an AVX2 EPYC, a
third of a 1B step at the end of an image). The kernel in `janus_plugins/cpu_kernels/attention.cpp` (one
source over the architecture's vector lanes: AVX2 or NEON) reads each cached key and value once, in float32
registers. Whether it does so faster than torch is measured per shape
on first use (`janus_sdk.tuning`, family "decode-attention"): rows, heads, head size and the cache length
rounded up to a power of two. Every other call (prefill, masks, other devices) is SDPA's.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from janus_plugins.attention import SDPAAttention, math_attention
from janus_plugins.cpu_kernels import (
    AVX2,
    NEON,
    kernel_isas,
    kernels_usable,
    load_kernels,
    require_kernels,
    source_key,
)
from janus_sdk import tuning
from janus_sdk.config import NoOptions
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import BuildContext, Register


class KernelAttention(SDPAAttention):
    """SDPA, except a single query position on the CPU, which the kernel's `isa` build attends."""

    def __init__(self, name: str = AVX2, isa: str = AVX2) -> None:
        self.name = name
        self.isa = isa

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        auto = functools.partial(choose_attention_backend, device, dtype)
        require_kernels(device, dtype, "attention", self.name, (self.isa,), auto, "sdpa")

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
        single = q.shape[-2] == 1 and mask is None and q.device.type == "cpu" and q.shape[-1] % 8 == 0
        if single and kernel_wins(q, k):
            out: Tensor = load_kernels().decode_attention(q, k, v, scale or q.shape[-1] ** -0.5)
            return out
        return super().attend(q, k, v, causal=causal, mask=mask, scale=scale)


def kernel_wins(q: Tensor, k: Tensor) -> bool:
    """Whether the kernel measured faster than SDPA's decode step here, for q's shape and dtype and k's
    length rounded up to a power of two (measured on first use, then a dictionary look-up)."""
    batch, heads, _, dim = q.shape
    length = 1 << max(k.shape[-2] - 1, 0).bit_length()
    key = ("decode-attention", q.dtype, batch, heads, dim, length, torch.get_num_threads())
    return tuning.remembered(key, lambda: _measure(q.dtype, batch, heads, dim, length))


def _measure(dtype: torch.dtype, batch: int, heads: int, dim: int, length: int) -> bool:
    kernels = load_kernels()
    generator = tuning.probe_generator()
    q = torch.randn(batch, heads, 1, dim, dtype=dtype, generator=generator)
    k, v = (torch.randn(batch, heads, length, dim, dtype=dtype, generator=generator) for _ in range(2))
    candidates = {
        "torch": lambda: math_attention(q, k, v, None, None),
        "kernel": lambda: kernels.decode_attention(q, k, v, dim**-0.5),
    }
    name = str(dtype).removeprefix("torch.")
    shape = f"rows={batch}/heads={heads}/dim={dim}/length={length}"
    key = f"{name}/{shape}/threads={torch.get_num_threads()}/kernels={source_key()}"
    return tuning.choose("decode-attention", key, candidates, baseline="torch") == "kernel"


@hookimpl
def register_attention_backends(register: Register) -> None:
    def avx2(_: NoOptions, __: BuildContext) -> KernelAttention:
        """SDPA, with decode steps on AVX2 CPUs through a kernel reading the cache once."""
        return KernelAttention(AVX2, AVX2)

    def neon(_: NoOptions, __: BuildContext) -> KernelAttention:
        """SDPA, with decode steps on ARM64 CPUs through a kernel reading the cache once."""
        return KernelAttention(NEON, NEON)

    register("avx2", avx2, config=NoOptions)
    register("neon", neon, config=NoOptions)


@hookimpl
def choose_attention_backend(device: torch.device, dtype: torch.dtype) -> str | None:
    """The kernel of this CPU's architecture (`avx2` or `neon`) where it can serve, else SDPA's."""
    if not kernels_usable(device, dtype, "attention 'auto' picks sdpa"):
        return None
    return kernel_isas()[0]  # the architecture's build: attention has no wider one
