"""VQ-16's convolutions: computed in their input's dtype, and 3x3 ones through NNPACK's Winograd transform
on the CPU.

A bfloat16 model on a CPU without bfloat16 arithmetic decodes in float32 (`janus_sdk.compute`); each layer
casts its own weights as it runs, so the decoder never holds a float32 copy of all its weights (0.17 GB at
Janus-Pro's size), and the results are the same as with such a copy.

The VQ decoder is ~280 G multiply-adds of 3x3 convolutions at one 384x384 image, 93% of its CPU time.
torch's CPU convolutions (oneDNN) compute them directly, near the peak of an AVX2 core; NNPACK, which torch
ships, computes them in the Winograd domain with several times fewer multiplications: a 384x384,
128-channel convolution takes 0.23 s instead of 0.67 s on a 2-core EPYC, a whole float32 decode 3.7-4.8 s
instead of 9.4-9.7 s. torch only picks NNPACK for batches of 16 or more, so it is called here directly.
Results differ from direct convolution by about 1e-5 relative (bench/RESULTS.md). torch keeps NNPACK's
workspace once allocated: ~0.27 GB more resident memory after a 384x384 decode.
"""

from __future__ import annotations

import functools
import logging
from typing import ClassVar

import torch
from torch import Tensor, nn

from janus_sdk.compute import like_input

log = logging.getLogger(__name__)


@functools.cache
def nnpack_usable() -> bool:
    """Whether torch was built with NNPACK and it runs here (the check also initialises it: every NNPACK
    call before it fails)."""
    return bool(torch._nnpack_available())


class Conv2d(nn.Conv2d):
    """nn.Conv2d computed in the dtype of its input."""

    def forward(self, x: Tensor) -> Tensor:
        return self.convolve(x, like_input(self.weight, x), like_input(self.bias, x))

    def convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution itself, with the weights already in x's dtype."""
        out: Tensor = self._conv_forward(x, weight, bias)
        return out


class Conv3x3(Conv2d):
    """A 3x3 convolution, stride 1, zero padding 1 (same size out), in its input's dtype.

    With `winograd` (VQ16Config.winograd, on by default) float32 CPU inputs go through NNPACK where torch
    has it; everything else through nn.Conv2d's convolution.
    """

    winograd = True
    nnpack_failed: ClassVar[bool] = False
    """Set for the whole process when an NNPACK call fails: torch's convolution computes the same thing."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, kernel_size=3, padding=1)

    def convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.winograd and not Conv3x3.nnpack_failed and nnpack_fits(x, weight):
            try:
                out: Tensor = torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
                return out
            except RuntimeError as exc:
                log.warning("NNPACK's convolution failed (%s); using torch's convolutions from now on", exc)
                Conv3x3.nnpack_failed = True
        return super().convolve(x, weight, bias)


def nnpack_fits(x: Tensor, weight: Tensor) -> bool:
    """NNPACK takes float32 CPU tensors [B, C, H, W]."""
    on_cpu = x.device.type == "cpu" and x.ndim == 4
    return on_cpu and x.dtype == weight.dtype == torch.float32 and nnpack_usable()
