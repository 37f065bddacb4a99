"""Built-in plugin: the `avx2` and `neon` attention backends, for decode steps on x86 (AVX2) and ARM64 CPUs,
and for prompts on x86 CPUs with AVX512-BF16.

A decode step attends one query position over the whole cache. torch's CPU kernels do that in bfloat16 at a
small fraction of memory speed (about 4 ms per layer over 600 cached positions of 2 rows on an AVX2 EPYC, a
third of a 1B step at the end of an image). The kernel in `janus_plugins/cpu_kernels/attention.cpp` (one
source over the architecture's vector lanes: AVX2 or NEON) reads each cached key and value once, in float32
registers. Whether it does so faster than torch is measured per shape
on first use (`janus_sdk.tuning`, family "decode-attention"): rows, heads, head size and the cache length
rounded up to a power of two.

Many query positions in bfloat16 without a mask (a prompt's prefill, SigLIP, the VQ decoder) go through
`prompt_attention.cpp` where the CPU has AVX512-BF16 and it measured faster than SDPA for the shape (family
"prompt-attention": rows, heads, head size, query and key lengths rounded up to powers of two, causal or
not): on a Zen 4 it took 7.8 ms per 1B layer over a 631-position prompt where SDPA took 20. Every other call
(masks, float32, other CPUs and devices) is SDPA's.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from janus_plugins.attention import SDPAAttention, math_attention
from janus_plugins.cpu_kernels import (
    AVX2,
    AVX512,
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
    """SDPA, except on the CPU a single query position, which the kernel's `isa` build attends, and many
    unmasked bfloat16 ones where the CPU has AVX512-BF16, which the prompt kernel attends; each where it
    measured faster than SDPA."""

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
        if mask is None and q.device.type == "cpu":
            scale = scale or q.shape[-1] ** -0.5
            if q.shape[-2] == 1 and q.shape[-1] % 8 == 0 and kernel_wins(q, k):
                out: Tensor = load_kernels().decode_attention(q, k, v, scale)
                return out
            if q.shape[-2] > 1 and prompt_kernel_serves(q, k, v) and prompt_kernel_wins(q, k, causal):
                out = load_kernels().prompt_attention(q, k, v, scale, causal)
                return out
        return super().attend(q, k, v, causal=causal, mask=mask, scale=scale)

    def decodes_with_kernel(self, dtype: torch.dtype, rows: int, heads: int, dim: int, length: int) -> bool:
        """Whether `attend` of one query position (CPU, no mask) over `length` positions is the kernels'
        `decode_attention` (`interfaces.KernelDecodeAttention`); never for a subclass attending otherwise."""
        if type(self).attend is not KernelAttention.attend:
            return False
        return dim % 8 == 0 and decode_kernel_wins(dtype, rows, heads, dim, length)


def kernel_wins(q: Tensor, k: Tensor) -> bool:
    """Whether the kernel measured faster than SDPA's decode step here, for q's shape and dtype and k's
    length (`decode_kernel_wins`)."""
    batch, heads, _, dim = q.shape
    return decode_kernel_wins(q.dtype, batch, heads, dim, k.shape[-2])


def decode_kernel_wins(dtype: torch.dtype, batch: int, heads: int, dim: int, length: int) -> bool:
    """Whether the kernel measured faster than SDPA's decode step for this shape, the cache length rounded up
    to a power of two (measured on first use, then a dictionary look-up)."""
    length = _power_of_two(length)
    key = ("decode-attention", dtype, batch, heads, dim, length, torch.get_num_threads())
    return tuning.remembered(key, lambda: _measure(dtype, batch, heads, dim, length))


def _power_of_two(n: int) -> int:
    """n rounded up to a power of two: shapes that share a measurement."""
    return 1 << max(n - 1, 0).bit_length()


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


PROMPT_DIM_MULTIPLE = 64
"""Head sizes the prompt kernel takes (its register tiles cover 64 dimensions at a time)."""
PROMPT_MAX_KEY_STRIDE = 1 << 26
"""Elements between two keys the prompt kernel takes (it gathers 16 keys through 32-bit byte offsets)."""


def prompt_kernel_serves(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether the prompt kernel can compute this call: bfloat16, head size a multiple of 64, unit stride
    along it, keys and values laid out alike (not absurdly far apart), and a CPU that runs the kernels'
    AVX-512 build."""
    return (
        q.dtype == k.dtype == v.dtype == torch.bfloat16
        and q.shape[-1] % PROMPT_DIM_MULTIPLE == 0
        and q.stride(-1) == 1
        and k.stride(-1) == 1
        and k.stride() == v.stride()
        and k.stride(-2) < PROMPT_MAX_KEY_STRIDE
        and AVX512 in kernel_isas()
    )


def prompt_kernel_wins(q: Tensor, k: Tensor, causal: bool) -> bool:
    """Whether the prompt kernel measured faster than SDPA here for this shape, its query and key lengths
    rounded up to powers of two (measured on first use, then a dictionary look-up)."""
    batch, heads, queries, dim = q.shape
    lengths = (_power_of_two(queries), _power_of_two(k.shape[-2]))
    key = ("prompt-attention", batch, heads, k.shape[1], dim, lengths, causal, torch.get_num_threads())
    return tuning.remembered(key, lambda: _measure_prompt(batch, heads, k.shape[1], dim, lengths, causal))


def _measure_prompt(
    batch: int, heads: int, kv_heads: int, dim: int, lengths: tuple[int, int], causal: bool
) -> bool:
    kernels = load_kernels()
    generator = tuning.probe_generator()
    queries, keys = lengths
    q = torch.randn(batch, heads, queries, dim, generator=generator).to(torch.bfloat16)
    k, v = (torch.randn(batch, kv_heads, keys, dim, generator=generator).to(torch.bfloat16) for _ in range(2))
    sdpa = SDPAAttention()
    candidates = {
        "torch": lambda: sdpa.attend(q, k, v, causal=causal),
        "kernel": lambda: kernels.prompt_attention(q, k, v, dim**-0.5, causal),
    }
    shape = f"rows={batch}/heads={heads}/kv-heads={kv_heads}/dim={dim}/queries={queries}/keys={keys}"
    key = f"bfloat16/{shape}/causal={causal}/threads={torch.get_num_threads()}/kernels={source_key()}"
    return tuning.choose("prompt-attention", key, candidates, baseline="torch") == "kernel"


@hookimpl
def register_attention_backends(register: Register) -> None:
    def avx2(_: NoOptions, __: BuildContext) -> KernelAttention:
        """SDPA, with decode steps on AVX2 CPUs through a kernel reading the cache once (and prompts through
        an AVX512-BF16 kernel where the CPU has it)."""
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
