"""One linear layer at a decode step's few rows: torch's nn.Linear against each linear backend, side by side.

The weights are Janus-Pro-1B's MLP shapes (2048 -> 5632 and 5632 -> 2048); rows 1, 2 and 8 are one image with
classifier-free guidance, and four. Printed per (dtype, rows): ms per call (median of `--repeats`), the GB/s
at which the weight bytes stream, and torch/backend. Run: `python bench/linear_kernels.py [--threads N]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from janus_plugins.linear import AVX2Linear, Int8Linear
from janus_sdk.interfaces import LinearBackend

SHAPES = ((2048, 5632), (5632, 2048))  # (in, out): up/gate projection, down projection
ROWS = (1, 2, 8)


def median_ms(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    int8 = Int8Linear()
    int8.check(torch.device("cpu"), torch.float32)
    backends: dict[str, LinearBackend] = {"avx2": AVX2Linear(), "int8": int8}
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    columns = " | ".join(f"{b} ms (GB/s), torch/{b}" for b in backends)
    print(f"| dtype | rows | in -> out | torch ms (GB/s) | {columns} |")
    print("|---|---|---|---|" + "---|" * len(backends))
    for dtype in (torch.bfloat16, torch.float32):
        for in_features, out_features in SHAPES:
            layer = nn.Linear(in_features, out_features, bias=False).to(dtype).eval()
            converted = {name: backend.convert(layer) for name, backend in backends.items()}
            for rows in ROWS:
                x = torch.randn(rows, in_features).to(dtype)
                base = median_ms(layer, x, args.repeats)
                cells = [f"{base:.2f} ({_gbps(layer, base):.1f})"]
                for module in converted.values():
                    ms = median_ms(module, x, args.repeats)
                    cells.append(f"{ms:.2f} ({_gbps(module, ms):.1f}), {base / ms:.2f}x")
                print(f"| {str(dtype).removeprefix('torch.')} | {rows} | {in_features} -> {out_features} | "
                      + " | ".join(cells) + " |")


def _gbps(module: nn.Module, ms: float) -> float:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.numel() * weight.element_size() / (ms * 1e-3) / 1e9


if __name__ == "__main__":
    main()
