"""Which dtype compute-bound work runs in, apart from the dtype the weights are stored in.

bfloat16 weights halve the memory of float32, but a CPU without bfloat16 arithmetic only emulates it: torch's
bfloat16 GEMM and convolutions there are reference loops, measured on an AVX2 EPYC at 5x (a SigLIP block) to
550x (a 3x3 convolution at 384x384) slower than float32, while on CPUs with AVX512-BF16 or AMX the bfloat16
GEMM is the fastest path (a 631-token 1B prefill 4.5 s against 13.0 s in float32 on a Zen 4). Feature flags do
not tell the two apart reliably (torch reports a Zen 4 with AVX512-BF16 as plain "AVX512"), so the choice is
measured (`janus_sdk.tuning`, family "matmul-dtype"): a GEMM of a prefill's size in bfloat16 against the same
in float32 with the casts it needs. Work whose cost is arithmetic, not reading the weights (a prefill, the
vision encoder), then runs in float32 from transient float32 copies of the weights at hand (a block's:
`run_in_compute_dtype`), so the model stays bfloat16 in memory.
"""

from __future__ import annotations

import itertools
from typing import overload

import torch
from torch import Tensor, nn
from torch.func import functional_call

from janus_sdk import tuning

PROBE_SHAPE = (128, 2048, 2048)
"""(rows, in, out) of the GEMM that decides the compute dtype: a slice of a 1B prefill, ms in float32."""


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype GEMM-bound work on `dtype` weights runs in: float32 for bfloat16 on a CPU where bfloat16
    measured slower than float32 (with the casts); `dtype` everywhere else."""
    if dtype == torch.bfloat16 and device.type == "cpu":
        threads = torch.get_num_threads()
        return tuning.remembered(("matmul-dtype", threads), lambda: _cpu_bfloat16_compute_dtype(threads))
    return dtype


def _cpu_bfloat16_compute_dtype(threads: int) -> torch.dtype:
    rows, in_features, out_features = PROBE_SHAPE
    generator = tuning.probe_generator()
    x = torch.randn(rows, in_features, generator=generator).to(torch.bfloat16)
    weight = torch.randn(out_features, in_features, generator=generator) * in_features**-0.5
    weight = weight.to(torch.bfloat16)

    def native() -> Tensor:
        return nn.functional.linear(x, weight)

    def widened() -> Tensor:
        return nn.functional.linear(x.float(), weight.float()).to(torch.bfloat16)

    key = f"bfloat16/{rows}x{in_features}x{out_features}/threads={threads}"
    winner = tuning.choose("matmul-dtype", key, {"bfloat16": native, "float32": widened}, baseline="bfloat16")
    return torch.bfloat16 if winner == "bfloat16" else torch.float32


def run_in_compute_dtype(module: nn.Module, *inputs: Tensor) -> Tensor:
    """`module(*inputs)` computed in the compute dtype of its weights, returned in the weights' dtype.

    When that differs from the stored dtype, the module's floating parameters and buffers are cast for this
    call only (one module's worth of float32 at a time: call it per block, not on a whole model) and so are
    the floating inputs. A module without weights is simply called.
    """
    weight = next(itertools.chain(module.parameters(), module.buffers()), None)
    if weight is None or (target := compute_dtype(weight.dtype, weight.device)) == weight.dtype:
        out: Tensor = module(*inputs)
        return out
    tensors = itertools.chain(module.named_parameters(), module.named_buffers())
    cast = {name: t.to(target) if t.is_floating_point() else t for name, t in tensors}
    args = tuple(x.to(target) if x.is_floating_point() else x for x in inputs)
    result: Tensor = functional_call(module, cast, args)
    return result.to(weight.dtype)


@overload
def like_input(weight: Tensor, x: Tensor) -> Tensor: ...
@overload
def like_input(weight: None, x: Tensor) -> None: ...
def like_input(weight: Tensor | None, x: Tensor) -> Tensor | None:
    """`weight` in the dtype of the input `x` (itself when it already is), for layers that compute in their
    input's dtype: each casts its own weights as it runs, so one layer's copy exists at a time."""
    return None if weight is None else weight.to(x.dtype)
