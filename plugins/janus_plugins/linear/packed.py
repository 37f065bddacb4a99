"""`PackedLinear`: a linear layer whose few-row calls (decode steps) may go through the AVX2 kernel.

Weights are float32, bfloat16, or int8 with one float32 scale per output feature (weight-only int8:
y = (x @ w_int8.T) * scale + bias). A call goes to the kernel or to torch's GEMM (in
`janus_sdk.compute.compute_dtype`) by its number of rows:

- above `KERNEL_MAX_ROWS` (a prefill) always torch's GEMM: the work is arithmetic, where oneDNN/MKL win;
- otherwise by what this machine measured for the layer's shape and the row count rounded up to a power of two
  (`janus_sdk.tuning`, family "linear"): the kernel streams the weights faster than torch at one or two rows
  on every x86 CPU measured so far, but at eight rows it is FMA-bound and oneDNN's AVX-512/AMX GEMM wins on a
  Xeon. The first call at a new (shape, rows) times both over distinct weights of that shape (past the caches,
  as a decode step reads them) and every later call reads the choice from a dictionary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from janus_plugins.linear.kernels import avx2_kernels
from janus_sdk import tuning
from janus_sdk.compute import compute_dtype

KERNEL_MAX_ROWS = 32
"""Above this many rows a call goes to torch's GEMM (measured on an AVX2 EPYC, 2048 -> 5632 in float32: the
kernel 15 ms vs MKL's 30 ms at 32 rows, even at 48; 32 keeps the kernel where it can win)."""
PROBE_BYTES = 192 << 20
"""Weights a row-count probe streams per call: past the last-level cache of current server CPUs."""
PROBE_MAX_COPIES = 64

_EMPTY = torch.empty(0)


class PackedLinear(nn.Module):
    """Computes like the nn.Linear it replaces, from `weight` [out, in] (float or int8) and `scale` (int8).

    `use_kernel`: whether the kernel may serve few-row calls (it needs AVX2 and in_features % 16 == 0);
    `measured`: whether that is decided per row count by measurement (`auto`) rather than always."""

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        scale: Tensor | None,
        *,
        use_kernel: bool,
        measured: bool = True,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.scale = None if scale is None else nn.Parameter(scale, requires_grad=False)
        self.use_kernel = use_kernel
        self.measured = measured

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        if (
            self.use_kernel
            and rows <= KERNEL_MAX_ROWS
            and (not self.measured or self.kernel_wins(rows, x.dtype))
        ):
            return self.kernel(x)
        return self.gemm(x)

    def kernel(self, x: Tensor) -> Tensor:
        """The AVX2 kernel: reads each weight once for all rows."""
        rows = x.numel() // self.in_features
        y: Tensor = avx2_kernels().linear(
            x.reshape(rows, self.in_features),
            self.weight,
            _EMPTY if self.scale is None else self.scale,
            _EMPTY if self.bias is None else self.bias,
        )
        return y.view(*x.shape[:-1], self.out_features)

    def gemm(self, x: Tensor) -> Tensor:
        """torch's own path: nn.functional.linear in the compute dtype (a dequantizing one for int8)."""
        dtype = compute_dtype(x.dtype, x.device)
        y = nn.functional.linear(x.to(dtype), self.weight.to(dtype))
        if self.scale is not None:
            y = y * self.scale.to(dtype)
        if self.bias is not None:
            y = y + self.bias.to(dtype)
        return y.to(x.dtype)

    def kernel_wins(self, rows: int, dtype: torch.dtype) -> bool:
        """Whether the kernel measured faster than `gemm` here for this layer's shape and kind at `rows`
        (rounded up to a power of two) of `dtype` inputs; measured on first use."""
        bucket = 1 << max(rows - 1, 0).bit_length()
        key = (
            "linear",
            self.weight.dtype,
            dtype,
            self.in_features,
            self.out_features,
            bucket,
            torch.get_num_threads(),
        )
        return tuning.remembered(key, lambda: self._measure(bucket, dtype))

    def _measure(self, rows: int, dtype: torch.dtype) -> bool:
        avx2_kernels()  # built or loaded before anything is timed
        copies = _probe_copies(self)
        x = torch.randn(rows, self.in_features, dtype=dtype, generator=tuning.probe_generator())

        def each(path: Callable[[PackedLinear, Tensor], Tensor]) -> Callable[[], None]:
            def run() -> None:
                for layer in copies:
                    path(layer, x)

            return run

        weights = "int8" if self.scale is not None else str(self.weight.dtype).removeprefix("torch.")
        inputs = str(dtype).removeprefix("torch.")
        key = (
            f"{weights}-weights/{inputs}/{self.in_features}x{self.out_features}/rows={rows}/"
            f"threads={torch.get_num_threads()}"
        )
        candidates = {"torch": each(PackedLinear.gemm), "kernel": each(PackedLinear.kernel)}
        return tuning.choose("linear", key, candidates, baseline="torch") == "kernel"

    def extra_repr(self) -> str:
        kind = "int8 + scale" if self.scale is not None else str(self.weight.dtype).removeprefix("torch.")
        return f"in={self.in_features}, out={self.out_features}, weight={kind}, kernel={self.use_kernel}"


def _probe_copies(layer: PackedLinear) -> list[PackedLinear]:
    """Distinct random layers of `layer`'s shape and kind, together about PROBE_BYTES, so that a probe reads
    its weights from memory as a decode step does, not from a cache."""
    nbytes = layer.weight.numel() * layer.weight.element_size()
    count = max(1, min(PROBE_MAX_COPIES, math.ceil(PROBE_BYTES / nbytes)))
    copies, generator = [], tuning.probe_generator()
    for _ in range(count):
        if layer.scale is None:
            weight = torch.randn(layer.weight.shape, dtype=layer.weight.dtype, generator=generator)
        else:
            weight = torch.randint(-127, 128, layer.weight.shape, dtype=torch.int8, generator=generator)
        scale = None if layer.scale is None else torch.rand(layer.out_features, generator=generator) * 1e-2
        bias = None if layer.bias is None else torch.zeros_like(layer.bias)
        copies.append(PackedLinear(weight, bias, scale, use_kernel=True, measured=False))
    return copies
