"""One linear layer at a decode step's few rows: torch's nn.Linear against the AVX2 kernel (float and int8),
side by side, over distinct weights so that they stream from memory as in a decode step (one weight alone
would sit in a large L3 cache), and what `auto` picks for each row count on this machine.

The weights are Janus-Pro-1B's MLP shapes (2048 -> 5632 and 5632 -> 2048); rows 1, 2 and 8 are one image with
classifier-free guidance, and four. Printed per (dtype, shape, rows): ms per pass over the weights (best of
`--repeats`), the GB/s at which their bytes stream, torch/kernel, and the measured choice (janus_sdk.tuning,
from the cache when this machine already has it). Run: `python bench/linear_kernels.py [--threads N]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import nn

from janus_plugins.linear import AVX2Linear, Int8Linear, KernelOptions
from janus_plugins.linear.packed import PackedLinear
from janus_sdk.tuning import machine

SHAPES = ((2048, 5632), (5632, 2048))  # (in, out): up/gate projection, down projection
ROWS = (1, 2, 4, 8, 16, 32)
PASS_BYTES = 192 << 20  # bytes of bfloat16 weights per timed pass: past the last-level cache


def best_ms(layers: Sequence[nn.Module], x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for layer in layers:
            layer(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for layer in layers:
                layer(x)
            times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated: bfloat16, float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = machine()
    print(
        f"{facts['cpu']} ({facts['arch']}, torch capability {facts['capability']}), torch {facts['torch']}, "
        f"{args.threads} threads"
    )
    print("| dtype | in -> out | rows | torch ms (GB/s) | kernel ms (GB/s) | torch/kernel | int8 kernel ms "
          "| auto |")
    print("|---|---|---|---|---|---|---|---|")
    always = KernelOptions(measured=False)
    for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
        int8 = Int8Linear(always)
        int8.check(torch.device("cpu"), dtype)
        for in_features, out_features in SHAPES:
            count = max(1, PASS_BYTES // (in_features * out_features * 2))
            plain = [nn.Linear(in_features, out_features, bias=False).to(dtype).eval() for _ in range(count)]
            kernel = [AVX2Linear(always).convert(layer) for layer in plain]
            quantized = [int8.convert(layer) for layer in plain]
            measured = AVX2Linear().convert(plain[0])
            assert isinstance(measured, PackedLinear)
            nbytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in plain)
            for rows in ROWS:
                x = torch.randn(rows, in_features).to(dtype)
                base = best_ms(plain, x, args.repeats)
                ours = best_ms(kernel, x, args.repeats)
                small = best_ms(quantized, x, args.repeats)
                pick = "kernel" if measured.kernel_wins(rows, dtype) else "torch"
                print(
                    f"| {str(dtype).removeprefix('torch.')} | {in_features} -> {out_features} | {rows} | "
                    f"{base:.2f} ({nbytes / base / 1e6:.1f}) | {ours:.2f} ({nbytes / ours / 1e6:.1f}) | "
                    f"{base / ours:.2f}x | {small:.2f} | {pick} |"
                )


if __name__ == "__main__":
    main()
