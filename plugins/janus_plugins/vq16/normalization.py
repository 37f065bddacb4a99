"""GroupNorm in its input's dtype (weights cast per call, as VQ-16's convolutions), whose statistics on CUDA
come from full-device reductions when one image's groups are few.

torch's CUDA GroupNorm reduces each (image, group) in one thread block: 32 blocks for one image, while a
group of a 384x384, 128-channel activation holds 590k values. For one image on an H100 that statistics kernel
was 4.2 of a VQ decode's 8.7 ms of GPU time (bench/RESULTS.md). Such groups are summed here by torch's
ordinary reductions, which split a long reduction over every SM, then normalised with a per-channel scale and
shift in float32. From 4 images on (128 blocks) torch's kernel was as fast, with fewer launches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from janus_sdk.compute import like_input

SPLIT_FROM = 1 << 16
"""Values per group from which the statistics are split over the device: below it one block per group is not
the bottleneck, and torch's two kernels launch fewer than the ~ten of the split form."""
SPLIT_BELOW_BLOCKS = 64
"""(image, group) pairs below which torch's kernel leaves most of a GPU idle: 32 for one image (split: 2.4 ms
less GPU time per decode on an H100), 128 for four (torch's was 4% faster)."""


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters, same results up to float32 rounding) computed in its input's dtype, with
    split statistics for a few large groups on CUDA."""

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = like_input(self.weight, x), like_input(self.bias, x)
        blocks = x.shape[0] * self.num_groups
        if x.is_cuda and blocks < SPLIT_BELOW_BLOCKS and x.numel() // blocks >= SPLIT_FROM:
            return split_group_norm(x, self.num_groups, weight, bias, self.eps)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def split_group_norm(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """F.group_norm of x [B, C, ...] from per-group reductions, computed in float32, returned in x's dtype."""
    b, c = x.shape[:2]
    variance, mean = group_moments(x.reshape(b, groups, -1))
    per_channel = c // groups
    scale = torch.rsqrt(variance + eps).repeat_interleave(per_channel, dim=1) * weight.float()  # [B, C]
    shift = bias.float() - mean.repeat_interleave(per_channel, dim=1) * scale
    spatial = (1,) * (x.ndim - 2)
    # computed in float32, written in x's dtype by the same kernel
    return torch.addcmul(shift.view(b, c, *spatial), x, scale.view(b, c, *spatial), out=torch.empty_like(x))


def group_moments(grouped: Tensor) -> tuple[Tensor, Tensor]:
    """Biased variance and mean over the last dim, in float32.

    float32 or wider input: Welford (torch.var_mean), exact however far the mean sits from zero. Narrower
    input: a float32 sum and sum of squares, read straight from the input without a float32 copy; their
    cancellation (~1e-6 relative at a mean 7 standard deviations out) is far below the input's own rounding.
    """
    if torch.finfo(grouped.dtype).bits >= 32:
        variance, mean = torch.var_mean(grouped, dim=-1, correction=0)
        return variance, mean
    count = grouped.shape[-1]
    mean = grouped.sum(-1, dtype=torch.float32) / count
    mean_square = torch.linalg.vector_norm(grouped, dim=-1, dtype=torch.float32).square() / count
    return (mean_square - mean.square()).clamp_min(0), mean
