"""One linear layer at a decode step's few rows: torch against each build of our kernel (AVX2; AVX-512 with
BF16/VNNI where the CPU has them), for the weights as loaded and for weight-only int8, side by side, over
distinct weights so that they stream from memory as in a decode step (one weight alone would sit in a large L3
cache), with the memory's read floor measured in the same run and what `auto` picks per row count.

The weights are Janus-Pro-1B's MLP shapes (2048 -> 5632 and 5632 -> 2048); rows 2 and 8 are one image with
classifier-free guidance, and four. Printed per (dtype, shape, rows): GB/s at which each system streams the
weights' bytes (best of `--repeats` passes), each over the floor's GB/s (1.0 = at the floor), and the measured
choice (janus_sdk.tuning, from the cache when this machine already has it), taken before the timings, so that
the AVX-512 bfloat16 column runs the two-row loop this machine measured faster (`two-row-loop`). int8's peer
is `torch._weight_int8pack_mm`, torch's own weight-only int8 CPU kernel (what gpt-fast and torchao call on
CPU); int4 (the `int4` backend: torch's int4 kernel, groups of 64) is counted with its scales and offsets.
Run: `python bench/linear_kernels.py [--threads N] [--dtypes bfloat16] [--resident]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from floor import measure_bandwidth
from janus_plugins.cpu_kernels import kernel_isas
from janus_plugins.linear import Int8Linear, KernelLinear, KernelOptions
from janus_plugins.linear.int4 import Int4Backend, Int4Options
from janus_plugins.linear.packed import PackedLinear
from janus_sdk.tuning import machine

SHAPES = ((2048, 5632), (5632, 2048))  # (in, out): up/gate projection, down projection
ROWS = (1, 2, 4, 8, 16, 32)
PASS_BYTES = 192 << 20  # bytes of bfloat16 weights per timed pass: past the last-level cache

Layer = Callable[[torch.Tensor], torch.Tensor]


def best_seconds(layers: Sequence[Layer], x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for layer in layers:
            layer(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for layer in layers:
                layer(x)
            times.append(time.perf_counter() - start)
    return min(times)


def torch_int8(layer: PackedLinear) -> Layer:
    """torch's weight-only int8 kernel on the same int8 weights and scales."""
    assert layer.scale is not None
    weight, scale = layer.plain_weight(), layer.scale
    return lambda x: torch._weight_int8pack_mm(x, weight, scale.to(x.dtype))


def systems(plain: list[nn.Linear], dtype: torch.dtype) -> dict[str, tuple[list[Layer], int]]:
    """name -> (layers, bytes a pass reads) for every system compared at this shape."""
    always = KernelOptions(measured=False)
    isas = kernel_isas()
    found: dict[str, tuple[list[Layer], int]] = {}
    nbytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in plain)
    found["torch"] = (list(plain), nbytes)
    for n, isa in enumerate(isas):
        found[isa] = ([KernelLinear(isa, isas[: n + 1], always).convert(layer) for layer in plain], nbytes)
    int8 = Int8Linear(always)
    int8.check(torch.device("cpu"), dtype)
    quantized = [layer for layer in map(int8.convert, plain) if isinstance(layer, PackedLinear)]
    int8_bytes = sum(layer.weight.numel() for layer in plain)
    found["int8 torch"] = ([torch_int8(layer) for layer in quantized], int8_bytes)
    int4 = [Int4Backend().convert(layer) for layer in plain]
    group_bytes = 2 * 2 * (plain[0].in_features // Int4Options().group_size) * plain[0].out_features
    found["int4 torch"] = (list[Layer](int4), int8_bytes // 2 + group_bytes * len(plain))
    for n, isa in enumerate(isas):
        builds = isas[: n + 1]
        layers = [PackedLinear(q.weight, None, q.scale, isas=builds, measured=False) for q in quantized]
        found[f"int8 {isa}"] = (list(layers), int8_bytes)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated: bfloat16, float32")
    parser.add_argument(
        "--resident",
        action="store_true",
        help="call one weight of each system again and again (it stays in the last-level cache): the speed "
        "the arithmetic allows, which the memory's floor does not bound; where it is close to the streamed "
        "speed, the arithmetic, not the memory, is the limit",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = machine()
    floor = measure_bandwidth(torch.device("cpu"))["floor_gbps"]
    print(
        f"{facts['cpu']} ({facts['arch']}, torch capability {facts['capability']}), torch {facts['torch']}, "
        f"{args.threads} threads; read floor {floor:.1f} GB/s; GB/s per system (floor/time = GB/s / floor)"
        + ("; each system's first weight only, cache-resident" if args.resident else "")
    )
    header_done = False
    for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
        for in_features, out_features in SHAPES:
            count = max(1, PASS_BYTES // (in_features * out_features * 2))
            plain = [nn.Linear(in_features, out_features, bias=False).to(dtype).eval() for _ in range(count)]
            compared = systems(plain, dtype)
            measured = KernelLinear("auto", kernel_isas()).convert(plain[0])
            assert isinstance(measured, PackedLinear)
            measured.path(ROWS[0], dtype)  # auto's choices, the AVX-512 tile's two-row loop among them, first
            if not header_done:
                print("| dtype | in -> out | rows | " + " | ".join(compared) + " | auto |")
                print("|---" * (len(compared) + 4) + "|")
                header_done = True
            for rows in ROWS:
                x = torch.randn(rows, in_features).to(dtype)
                cells = []
                for layers, nbytes in compared.values():
                    calls = [layers[0]] * len(layers) if args.resident else layers
                    gbps = nbytes / best_seconds(calls, x, args.repeats) / 1e9
                    cells.append(f"{gbps:.1f} ({gbps / floor:.2f})")
                print(
                    f"| {str(dtype).removeprefix('torch.')} | {in_features} -> {out_features} | {rows} | "
                    + " | ".join(cells)
                    + f" | {measured.path(rows, dtype)} |"
                )


if __name__ == "__main__":
    main()
