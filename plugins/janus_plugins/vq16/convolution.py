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

Neither wins everywhere: on a Zen 4 oneDNN's bfloat16 convolution beats both float32 paths, and NNPACK loses
to oneDNN's float32 at small images. So the coder's dtype and NNPACK are measured choices (`janus_sdk.tuning`,
families "vq-winograd" and "vq-dtype"), timed on a 128-channel convolution of `PROBE_SIZE`.

oneDNN computes in channels-last blocks: an NCHW activation is reordered into them and back around every
convolution, which on a Zen 4 made a 384x384 128-channel bfloat16 convolution take 150 ms instead of 110 ms
on the same tensor held channels-last. Where oneDNN computes the convolutions, the coder's activations are
held channels-last if that measured faster (family "vq-layout", timed at `LAYOUT_PROBE_SIZE`, where the
reorders show); NNPACK takes NCHW.
"""

from __future__ import annotations

import functools
import logging
from typing import ClassVar

import torch
from torch import Tensor, nn

from janus_sdk import tuning
from janus_sdk.compute import compute_dtype, like_input

log = logging.getLogger(__name__)

PROBE_CHANNELS, PROBE_SIZE = 128, 48
"""The convolution the choices are timed on: the decoder's widest blocks, at a size taking milliseconds."""
LAYOUT_PROBE_SIZE = 96
"""The layout's probe is larger: the reorders it decides on grow with the image (4% of a 48x48 bfloat16
convolution on a Zen 4, 7% at 96x96, 26% at 384x384)."""


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
        on_cpu = x.device.type == "cpu" and x.ndim == 4 and x.is_contiguous() and x.dtype == weight.dtype
        if on_cpu and nnpack_computes(x.dtype, self.winograd):
            try:
                out: Tensor = torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
                return out
            except RuntimeError as exc:
                log.warning("NNPACK's convolution failed (%s); using torch's convolutions from now on", exc)
                Conv3x3.nnpack_failed = True
        return super().convolve(x, weight, bias)


def nnpack_computes(dtype: torch.dtype, winograd: bool) -> bool:
    """Whether NNPACK computes the 3x3 convolutions of `dtype` CPU tensors (NCHW): float32 with `winograd`,
    where torch has a working NNPACK and it measured faster than torch's convolution."""
    usable = winograd and dtype == torch.float32 and not Conv3x3.nnpack_failed and nnpack_usable()
    return usable and winograd_wins()


def winograd_wins() -> bool:
    """Whether NNPACK's Winograd convolution measured faster than torch's in float32 on this CPU."""
    threads = torch.get_num_threads()
    return tuning.remembered(("vq-winograd", threads), lambda: _winograd_wins(threads))


def _winograd_wins(threads: int) -> bool:
    conv, x = _probe(torch.float32)
    candidates = {
        "torch": lambda: nn.functional.conv2d(x, conv.weight, conv.bias, padding=1),
        "winograd": lambda: torch._nnpack_spatial_convolution(x, conv.weight, conv.bias, [1, 1]),
    }
    key = f"float32/{PROBE_CHANNELS}ch/{PROBE_SIZE}px/threads={threads}"
    try:
        return tuning.choose("vq-winograd", key, candidates, baseline="torch") == "winograd"
    except RuntimeError as exc:  # NNPACK refused the probe: torch's convolutions it is
        log.warning("NNPACK's convolution failed (%s); using torch's convolutions", exc)
        return False


def coder_dtype(dtype: torch.dtype, device: torch.device, winograd: bool) -> torch.dtype:
    """The dtype a VQ coder with `dtype` weights computes in: for bfloat16 on the CPU whichever of bfloat16
    and float32 (with `winograd` as configured) measured faster; `dtype` elsewhere. Where bfloat16 GEMMs
    already measured slower than float32 (a CPU that emulates it), bfloat16 convolutions are not timed:
    they are reference loops there, seconds each."""
    if dtype != torch.bfloat16 or device.type != "cpu" or compute_dtype(dtype, device) != torch.bfloat16:
        return compute_dtype(dtype, device)
    threads = torch.get_num_threads()
    return tuning.remembered(("vq-dtype", winograd, threads), lambda: _cpu_coder_dtype(winograd, threads))


def _cpu_coder_dtype(winograd: bool, threads: int) -> torch.dtype:
    conv, x = _probe(torch.bfloat16)
    conv.winograd = winograd
    candidates = {"float32": lambda: conv(x.float()).to(torch.bfloat16), "bfloat16": lambda: conv(x)}
    key = f"bfloat16/{PROBE_CHANNELS}ch/{PROBE_SIZE}px/winograd={winograd}/threads={threads}"
    winner = tuning.choose("vq-dtype", key, candidates, baseline="bfloat16")
    return torch.bfloat16 if winner == "bfloat16" else torch.float32


def coder_layout(dtype: torch.dtype, device: torch.device, winograd: bool) -> torch.memory_format:
    """The memory format a coder computing in `dtype` holds its activations in: on the CPU channels-last
    where oneDNN computes the 3x3 convolutions and measured faster so; NCHW where NNPACK computes them
    (float32 with `winograd`, where it won) and off the CPU."""
    if device.type != "cpu" or nnpack_computes(dtype, winograd):
        return torch.contiguous_format
    threads = torch.get_num_threads()
    return tuning.remembered(("vq-layout", dtype, threads), lambda: _cpu_coder_layout(dtype, threads))


def _cpu_coder_layout(dtype: torch.dtype, threads: int) -> torch.memory_format:
    conv, x = _probe(dtype, LAYOUT_PROBE_SIZE)
    conv.winograd = False
    channels_last = x.contiguous(memory_format=torch.channels_last)
    candidates = {"torch": lambda: conv(x), "channels-last": lambda: conv(channels_last)}
    name = str(dtype).removeprefix("torch.")
    key = f"{name}/{PROBE_CHANNELS}ch/{LAYOUT_PROBE_SIZE}px/threads={threads}"
    winner = tuning.choose("vq-layout", key, candidates, baseline="torch")
    return torch.channels_last if winner == "channels-last" else torch.contiguous_format


def _probe(dtype: torch.dtype, size: int = PROBE_SIZE) -> tuple[Conv3x3, Tensor]:
    generator = tuning.probe_generator()
    with torch.device("meta"):  # nn.Conv2d's initialisation would draw from the global RNG
        conv = Conv3x3(PROBE_CHANNELS, PROBE_CHANNELS)
    conv = conv.to_empty(device="cpu")
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.03)
        conv.bias.zero_()  # type: ignore[union-attr]
    x = torch.randn(1, PROBE_CHANNELS, size, size, generator=generator)
    return conv.to(dtype), x.to(dtype)
