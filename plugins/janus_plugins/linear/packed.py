"""`PackedLinear`: a linear layer whose few-row calls (decode steps) go through the AVX2 kernel.

Weights are float32, bfloat16, or int8 with one float32 scale per output feature (weight-only int8:
y = (x @ w_int8.T) * scale + bias). Calls with more rows than `KERNEL_MAX_ROWS` (a prefill) are
compute-bound and go to torch's GEMM instead, in `janus_sdk.compute.compute_dtype` (float32 for bfloat16 on
CPUs without native bfloat16 arithmetic, where torch's bfloat16 GEMM is a slow reference path).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from janus_plugins.linear.kernels import avx2_kernels
from janus_sdk.compute import compute_dtype

KERNEL_MAX_ROWS = 32
"""Above this many rows a call goes to torch's GEMM (measured on an AVX2 EPYC, 2048 -> 5632 in float32: the
kernel 15 ms vs MKL's 30 ms at 32 rows, even at 48; 32 keeps the kernel where it clearly wins)."""

_EMPTY = torch.empty(0)


class PackedLinear(nn.Module):
    """Computes like the nn.Linear it replaces, from `weight` [out, in] (float or int8) and `scale` (int8)."""

    def __init__(
        self, weight: Tensor, bias: Tensor | None, scale: Tensor | None, *, use_kernel: bool
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.scale = None if scale is None else nn.Parameter(scale, requires_grad=False)
        self.use_kernel = use_kernel

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        if self.use_kernel and rows <= KERNEL_MAX_ROWS:
            y: Tensor = avx2_kernels().linear(
                x.reshape(rows, self.in_features),
                self.weight,
                _EMPTY if self.scale is None else self.scale,
                _EMPTY if self.bias is None else self.bias,
            )
            return y.view(*x.shape[:-1], self.out_features)
        dtype = compute_dtype(x.dtype, x.device)
        y = nn.functional.linear(x.to(dtype), self.weight.to(dtype))
        if self.scale is not None:
            y = y * self.scale.to(dtype)
        if self.bias is not None:
            y = y + self.bias.to(dtype)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        kind = "int8 + scale" if self.scale is not None else str(self.weight.dtype).removeprefix("torch.")
        return f"in={self.in_features}, out={self.out_features}, weight={kind}, kernel={self.use_kernel}"
