"""The elementwise parts of a decoder layer (RMSNorm, rotary embedding with the cache write, the SwiGLU
product), as one strategy object per step: torch's ops; on x86 (AVX2) and ARM64 CPUs one kernel call each; on
CUDA each compiled by torch.compile into fused kernels.

Around the ~170 weight-streaming matmuls of a 1B decode step sit ~1,300 small torch ops (a LLaMA RMSNorm is
8 of them, the rotary embedding 14). On a CPU they cost tens of microseconds each: about 30 ms of a bfloat16
step of 190 ms (measured on a 2-core EPYC). On a GPU each is a kernel of its own, most of a captured step's
kernels; compiled, an H200 step went from 3.2 to 2.0 ms (bench/RESULTS.md). The CPU
kernels round where the modules of `blocks` round, so bfloat16 results equal torch's bit for bit (float32
within the order of a sum); the compiled ops compile the very functions those modules run.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from janus_plugins.cpu_kernels import kernels_usable, load_kernels, source_key
from janus_plugins.deepseek_llm.blocks import MLP, RMSNorm, rms_norm, rotate, silu_mul
from janus_sdk import tuning

log = logging.getLogger(__name__)

PROBE_HIDDEN = 2048
"""Width of the decode-step rows (two: one image's guidance pair) on which the CPU kernels are timed."""

Position = int | Tensor
"""Where a block of positions starts: an int, or a one-element int64 tensor for the single position of a
captured decode step (the cache is then written with index_copy_ and read whole, masked beyond it)."""


def add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    total = x + delta
    return total, rms_norm(total, weight, eps)


class TorchLayerOps:
    """The LLaMA modules of `blocks`, run as they are: every device, every dtype."""

    def rms_norm(self, x: Tensor, norm: RMSNorm) -> Tensor:
        return norm(x)  # type: ignore[no-any-return]

    def add_rms_norm(self, x: Tensor, delta: Tensor, norm: RMSNorm) -> tuple[Tensor, Tensor]:
        """The residual add and the next norm: (x + delta, norm(x + delta))."""
        total = x + delta
        return total, self.rms_norm(total, norm)

    def rotary_into_cache(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: tuple[Tensor, Tensor],
        keys: Tensor,
        values: Tensor,
        start: Position,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rotates q and k ([B, T, heads, D]) and writes k, v into the layer's caches ([B, heads, L, D]) at
        start..; returns q as [B, heads, T, D] and the keys and values to attend over."""
        q, k = self.rotate(q, k, *rope)
        v = v.transpose(1, 2)
        if isinstance(start, Tensor):  # one position, at a place known only on the device
            keys.index_copy_(2, start, k)
            values.index_copy_(2, start, v)
            return q, keys, values
        end = start + q.shape[2]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return q, keys[:, :, :end], values[:, :, :end]

    def rotate(self, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        return rotate(q, k, cos, sin)

    def swiglu(self, mlp: MLP, x: Tensor) -> Tensor:
        return mlp(x)  # type: ignore[no-any-return]


class KernelLayerOps(TorchLayerOps):
    """The same results from the CPU kernels (AVX2 or NEON; float32/bfloat16, integer start positions)."""

    def __init__(self, kernels: ModuleType) -> None:
        self.kernels = kernels

    def rms_norm(self, x: Tensor, norm: RMSNorm) -> Tensor:
        if norm.weight.dtype != x.dtype:  # the kernel takes one dtype
            return super().rms_norm(x, norm)
        out: Tensor = self.kernels.rms_norm(x.contiguous(), norm.weight, norm.eps)
        return out

    def add_rms_norm(self, x: Tensor, delta: Tensor, norm: RMSNorm) -> tuple[Tensor, Tensor]:
        if not x.dtype == delta.dtype == norm.weight.dtype:
            return super().add_rms_norm(x, delta, norm)
        total, normed = self.kernels.add_rms_norm(x.contiguous(), delta.contiguous(), norm.weight, norm.eps)
        return total, normed

    def rotary_into_cache(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: tuple[Tensor, Tensor],
        keys: Tensor,
        values: Tensor,
        start: Position,
    ) -> tuple[Tensor, Tensor, Tensor]:
        if isinstance(start, Tensor) or rope[0].shape[0] != 1:  # the kernel takes one table for all rows
            return super().rotary_into_cache(q, k, v, rope, keys, values, start)
        q = q.contiguous()
        cos, sin = rope
        self.kernels.rotary_into_cache(
            q, k.contiguous(), v.contiguous(), cos.contiguous(), sin.contiguous(), keys, values, start
        )
        end = start + q.shape[1]
        return q.transpose(1, 2), keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def swiglu(self, mlp: MLP, x: Tensor) -> Tensor:
        product = self.kernels.silu_mul(*mlp.gate_and_up(x))
        return mlp.down_proj(product)  # type: ignore[no-any-return]


class CompiledLayerOps(TorchLayerOps):
    """The same ops as functions of tensors, compiled by torch.compile (Triton kernels on CUDA): each part
    becomes one or two kernels where torch launches 5 to 15; a captured 1B step 3.2 -> 2.0 ms on an H200.

    For the captured decode step only, where every call is alike (one position, inference mode, a batch fixed
    per cache): each function compiles once per dtype and batch of one or more, on first use in a process.
    A prefill, a new length per prompt, stays on torch's ops. Past dynamo's recompile limit a call runs
    eagerly (not fullgraph), with the same results.
    """

    def __init__(self) -> None:
        compile_ = functools.partial(torch.compile, dynamic=True)
        self._rms_norm = compile_(rms_norm)
        self._add_rms_norm = compile_(add_rms_norm)
        self._rotate = compile_(rotate)
        self._silu_mul = compile_(silu_mul)

    def rms_norm(self, x: Tensor, norm: RMSNorm) -> Tensor:
        out: Tensor = self._rms_norm(x, norm.weight, norm.eps)
        return out

    def add_rms_norm(self, x: Tensor, delta: Tensor, norm: RMSNorm) -> tuple[Tensor, Tensor]:
        total, normed = self._add_rms_norm(x, delta, norm.weight, norm.eps)
        return total, normed

    def rotate(self, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        rotated_q, rotated_k = self._rotate(q, k, cos, sin)
        return rotated_q, rotated_k

    def swiglu(self, mlp: MLP, x: Tensor) -> Tensor:
        return mlp.down_proj(self._silu_mul(*mlp.gate_and_up(x)))  # type: ignore[no-any-return]


TORCH_OPS = TorchLayerOps()


def layer_ops(device: torch.device, dtype: torch.dtype, *, captured: bool) -> TorchLayerOps:
    """The fused ops for hidden states on `device` in `dtype`: the CPU kernels on CPUs that run them where
    they measured faster than torch's ops (a failure to compile them is logged once); torch.compile's in a
    captured CUDA decode step where torch has a GPU compiler (Triton); else torch's ops."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return tuning.remembered(
            ("layer-ops", dtype, threads), lambda: _cpu_layer_ops(device, dtype, threads)
        )
    return _gpu_layer_ops(device, captured)


def _cpu_layer_ops(device: torch.device, dtype: torch.dtype, threads: int) -> TorchLayerOps:
    if not kernels_usable(device, dtype, "decoder layers use torch ops"):
        return TORCH_OPS
    fused = KernelLayerOps(load_kernels())
    norm = RMSNorm(PROBE_HIDDEN, eps=1e-6).to(dtype)
    generator = tuning.probe_generator()
    x, delta = (torch.randn(2, 1, PROBE_HIDDEN, dtype=dtype, generator=generator) for _ in range(2))

    def norms(ops: TorchLayerOps) -> Callable[[], object]:
        return lambda: (ops.rms_norm(x, norm), ops.add_rms_norm(x, delta, norm))

    name = str(dtype).removeprefix("torch.")
    key = f"{name}/hidden={PROBE_HIDDEN}/threads={threads}/kernels={source_key()}"
    winner = tuning.choose(
        "layer-ops", key, {"torch": norms(TORCH_OPS), "kernel": norms(fused)}, baseline="torch"
    )
    return fused if winner == "kernel" else TORCH_OPS


@functools.cache
def _gpu_layer_ops(device: torch.device, captured: bool) -> TorchLayerOps:
    if device.type == "cuda" and captured and importlib.util.find_spec("triton") is not None:
        log.info("janus-sdk: decoder layers' elementwise parts compile with torch.compile on first use")
        return CompiledLayerOps()
    return TORCH_OPS
