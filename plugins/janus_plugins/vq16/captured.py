"""The VQ decoder of one image as a CUDA graph, captured on first use and replayed for every image.

A 384x384 decode is a few hundred kernels (convolutions, GroupNorms, swish, adds, upsampling) whose
launches from Python took longer than their GPU work for one image (11-14 ms against 6-9 ms on H100 and H200
GPUs). Replayed, the host launches one graph. Images are decoded one at a time (`VQ16.decode_latent`), so
that an image's pixels do not depend on the batch it came in; a batched eager decode would be a little
faster (4 images: 21 ms against 27 ms as four replays, H100), a fraction of a millisecond per image against
the seconds its tokens take to generate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from janus_sdk.cuda_graphs import capture


@dataclass
class _Capture:
    key: tuple[object, ...]
    graph: torch.cuda.CUDAGraph
    latent: Tensor  # the graph's input, refilled before each replay
    image: Tensor  # the graph's output, rewritten by each replay


class CapturedDecoder:
    """Decodes a one-image latent [1, ...] through a captured `decoder`; captures anew when the latent's
    shape, dtype or device change, or the decoder's weights move to other storage (a dtype or device cast)."""

    def __init__(self, decoder: nn.Module) -> None:
        self.decoder = decoder
        self._capture: _Capture | None = None

    @torch.inference_mode()
    def __call__(self, latent: Tensor) -> Tensor:
        weights = tuple(p.data_ptr() for p in self.decoder.parameters())
        key = (latent.shape, latent.dtype, latent.device, weights)
        if self._capture is None or self._capture.key != key:
            self._capture = None  # the old graph's memory goes before the new one is taken
            static = latent.clone()
            graph, output = capture(lambda: self.decoder(static), latent.device)
            self._capture = _Capture(key, graph, static, output)
        self._capture.latent.copy_(latent)
        self._capture.graph.replay()
        return self._capture.image.clone()
