"""Which dtype compute-bound work runs in, apart from the dtype the weights are stored in.

bfloat16 weights halve the memory of float32, but a CPU without native bfloat16 arithmetic (no AVX512_BF16
or AMX) only emulates it: torch's bfloat16 GEMM and convolutions there are reference loops, measured on an
AVX2 EPYC at 5x (a SigLIP block) to 550x (a 3x3 convolution at 384x384) slower than float32. Work whose cost
is arithmetic, not reading the weights (a prefill, the vision encoder, the VQ decoder), runs in float32 on
such CPUs from transient float32 copies of the weights at hand (a block's, or a layer's: `like_input`), so
the model stays bfloat16 in memory.
"""

from __future__ import annotations

import itertools
from typing import overload

import torch
from torch import Tensor, nn
from torch.func import functional_call

NATIVE_BF16_CPUS = frozenset({"AVX512_BF16", "AMX"})
"""Values of `torch.backends.cpu.get_cpu_capability()` on CPUs with bfloat16 arithmetic in hardware."""


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """float32 for bfloat16 on a CPU that emulates bfloat16 arithmetic; `dtype` everywhere else."""
    emulated = torch.backends.cpu.get_cpu_capability() not in NATIVE_BF16_CPUS
    if dtype == torch.bfloat16 and device.type == "cpu" and emulated:
        return torch.float32
    return dtype


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
