"""`PackedLinear`: a linear layer whose few-row calls (decode steps) may go through our kernels.

Weights are float32, bfloat16, or int8 with one float32 scale per output feature (weight-only int8:
y = (x @ w_int8.T) * scale + bias). A call goes to one of the kernel's builds for this CPU (`ISAS`: AVX2, and
AVX-512 with BF16/VNNI where the CPU has them) or to torch's GEMM (in `janus_sdk.compute.compute_dtype`) by
its number of rows:

- above `KERNEL_MAX_ROWS` (a prefill) always torch's GEMM: the work is arithmetic, where oneDNN/MKL win;
- otherwise by what this machine measured for the layer's shape and the row count rounded up to a power of two
  (`janus_sdk.tuning`, family "linear"): the kernels stream the weights faster than torch at one or two rows
  on every x86 CPU measured so far, but at eight rows the AVX2 one is FMA-bound and oneDNN's AVX-512/AMX GEMM
  wins on a Xeon. The first call at a new (shape, rows) times every candidate over distinct weights of that
  shape (past the caches, as a decode step reads them); every later call reads the choice from a dictionary.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from janus_plugins.cpu_kernels import AVX512, NEON_BF16, WIDE_ISAS, load_kernels, source_key
from janus_sdk import tuning
from janus_sdk.compute import compute_dtype

KERNEL_MAX_ROWS = 32
"""Above this many rows a call goes to torch's GEMM (measured on an AVX2 EPYC, 2048 -> 5632 in float32: the
kernel 15 ms vs MKL's 30 ms at 32 rows, even at 48; 32 keeps the kernel where it can win)."""
ROW_BUCKETS = (1, 2, 4, 8, 16, 32)
"""The row counts a layer's choice is measured at; a call's rows are rounded up to the next of them."""
PROBE_BYTES = 192 << 20
"""Weights a row-count probe streams per call: past the last-level cache of current server CPUs."""
PROBE_MAX_COPIES = 64
WIDEN_BYTES = 4 << 20
"""Weights torch's path widens at a time (bfloat16 -> float32 where bfloat16 GEMMs measured slower; int8 ->
float), so that each slab is multiplied while it is in cache. A whole widened MLP weight (46 MB in float32) is
fresh memory from the OS at every call, page faults included: on a Zen 3, 16 MLP weights of a 1B at 68 rows
took 670 ms that way and 253 ms in slabs of 4 MB (at 631 rows 2096 against 1816 ms)."""
PACK_ROWS, PACK_BYTES = 4, 64
"""int8 weights for the kernel are packed: each group of PACK_ROWS rows as chunks of PACK_BYTES, chunk c of
every row before chunk c + 1 (the kernel's `packed_at`): a tile of rows streams as one contiguous run."""
PANEL_ROWS, PANEL_TILE = 8, 32
"""bfloat16 weights for the kernel's AVX2 build are stored as panels ([out / PANEL_ROWS, in / 2,
2 * PANEL_ROWS], `pack_panels`; out a multiple of PANEL_TILE): each PANEL_ROWS output rows with the weights of
each pair of inputs side by side, so that the kernel multiplies 8 outputs at a time against x broadcast
(linear.h): on a Zen 3, 8 rows (four images) 1.1-1.4x as fast as from rows, 1-2 rows as fast or faster."""
SLAB_ROWS = 8
"""Slabs of `weight_slabs` start at multiples of this: whole groups of packed int8 rows and whole panels."""

_EMPTY = torch.empty(0)


class PackedLinear(nn.Module):
    """Computes like the nn.Linear it replaces, from `weight` [out, in] (float or int8) and `scale` (int8).

    `isas`: the kernel builds that may serve few-row calls here, narrowest first ("avx2", "avx512"; none:
    torch's GEMM only); `measured`: whether the path is chosen per row count by measurement (`auto`) rather
    than always the widest build that applies. int8 weights for the kernel come packed (`pack_int8`)."""

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        scale: Tensor | None,
        *,
        isas: tuple[str, ...] = (),
        measured: bool = True,
    ) -> None:
        super().__init__()
        panels = weight.dim() == 3
        self.out_features = weight.shape[0] * PANEL_ROWS if panels else weight.shape[0]
        self.in_features = weight.shape[1] * 2 if panels else weight.shape[1]
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.scale = None if scale is None else nn.Parameter(scale, requires_grad=False)
        self.isas = isas
        self.measured = measured

    def forward(self, x: Tensor) -> Tensor:
        build = self.route(x.numel() // self.in_features, x.dtype)
        return self.gemm(x) if build is None else self.kernel(x, build)

    def project_with(self, x: Tensor, others: Sequence[nn.Module]) -> list[Tensor] | None:
        """[self(x), *(other(x) for other in others)] as one kernel call (`janus_sdk.projections`), where the
        same build serves every one of them at x's rows: PackedLinear layers of this one's width and weight
        kind. Else None (each computes alone). The values are those of separate calls: each weight row meets
        the same rows of x in the same tiles."""
        rows = x.numel() // self.in_features
        build = self.route(rows, x.dtype)
        if build is None:
            return None
        layers = [self]
        for other in others:
            if not (
                isinstance(other, PackedLinear)
                and other.in_features == self.in_features
                and other.kind() == self.kind()
                and other.route(rows, x.dtype) == build
            ):
                return None
            layers.append(other)
        return _stream(x, layers, build)

    def route(self, rows: int, dtype: torch.dtype) -> str | None:
        """The kernel build that computes `rows` rows of `dtype` here, or None for torch's GEMM."""
        if not self.isas or rows > KERNEL_MAX_ROWS:
            return None
        path = self.path(rows, dtype) if self.measured else self.builds(dtype)[-1]
        return None if path == "torch" else path

    def builds(self, dtype: torch.dtype) -> tuple[str, ...]:
        """The kernel builds that compute differently for `dtype` inputs: the AVX-512 tiles take bfloat16 x
        against bfloat16 weights and int8 weights, with in_features a multiple of 64 (else the kernel runs its
        AVX2 tiles); the BFDOT tiles bfloat16 x against bfloat16 weights (else the NEON tiles)."""
        bfloat16 = self.weight.dtype == dtype == torch.bfloat16
        avx512 = (self.scale is not None or bfloat16) and self.in_features % 64 == 0
        serves = {AVX512: avx512, NEON_BF16: bfloat16}
        return tuple(isa for isa in self.isas if serves.get(isa, True))

    def kernel_operands(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """What `kernel` hands the kernel for this layer: weight (int8 packed), scale, bias."""
        return self.weight, self.scale, self.bias

    def kernel(self, x: Tensor, isa: str) -> Tensor:
        """The kernel's `isa` build: reads each weight once for all rows."""
        return _stream(x, [self], isa)[0]

    def gemm(self, x: Tensor) -> Tensor:
        """torch's own path: a GEMM in the compute dtype (a dequantizing one for int8) against the weight one
        slab at a time (`weight_slabs`), on x as rows: torch 2.13's bfloat16 linear takes ~500x as long on a
        non-contiguous [B, 1, in] input (a slice of the last position) as on the same rows contiguous (14.8 s
        against 0.03 s for 8 rows through a 2048 x 102400 head)."""
        dtype = compute_dtype(x.dtype, x.device)
        rows = x.reshape(-1, self.in_features).contiguous().to(dtype)
        y = torch.empty(rows.shape[0], self.out_features, dtype=dtype, device=x.device)
        for start, slab in self.weight_slabs(dtype):
            torch.mm(rows, slab.t(), out=y[:, start : start + slab.shape[0]])
        if self.scale is not None:
            y.mul_(self.scale.to(dtype))
        if self.bias is not None:
            y.add_(self.bias.to(dtype))
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def weight_slabs(self, dtype: torch.dtype) -> Iterator[tuple[int, Tensor]]:
        """(first output feature, [rows, in] weight rows in `dtype`): the whole weight where it is stored as
        rows in `dtype`, else on a CPU slabs of about WIDEN_BYTES, each widened (int8, panels: unpacked) just
        before its use (elsewhere the whole weight widened at once: a GPU's caching allocator reuses the
        memory, and each slab would be kernel launches of its own)."""
        if self.weight.dtype == dtype and self.weight.dim() == 2:
            yield 0, self.weight
            return
        step = max(1, WIDEN_BYTES // (self.in_features * dtype.itemsize) // SLAB_ROWS) * SLAB_ROWS
        if self.weight.device.type != "cpu":
            step = self.out_features
        for start in range(0, self.out_features, step):
            yield start, self.plain_rows(start, min(start + step, self.out_features)).to(dtype)

    def checkpoint_tensor(self, name: str) -> Tensor | None:
        """The weight as the checkpoint holds it, where it is stored as panels (the same values: int8 weights
        are other values, which a checkpoint has no place for)."""
        panels = name == "weight" and self.weight.dim() == 3
        return unpack_panels(self.weight).contiguous() if panels else None

    def plain_weight(self) -> Tensor:
        """The weight as [out, in] rows (int8 weights and panels unpacked)."""
        return self.plain_rows(0, self.out_features)

    def plain_rows(self, start: int, stop: int) -> Tensor:
        """Output rows start..stop of the weight as [rows, in] (start a multiple of SLAB_ROWS)."""
        if self.weight.dim() == 3:
            return unpack_panels(self.weight[start // PANEL_ROWS : -(-stop // PANEL_ROWS)])
        rows = self.weight[start:stop]
        return unpack_int8(rows) if self.weight.dtype == torch.int8 and self.isas else rows

    def path(self, rows: int, dtype: torch.dtype) -> str:
        """What measured fastest here for this layer's shape and kind at `rows` (rounded up to a power of two)
        of `dtype` inputs: "torch" or the widest kernel build that computes it. All row counts of a shape are
        measured together, on its first call, over one set of probe weights.

        One build for every row count, not the fastest build per row count: a build's rows do not depend on
        each other, so an image or answer computed alone and in a batch of any size are the same, which two
        builds (float32 FMAs against bfloat16 dot products) would not make them. Where torch's GEMM wins at
        some row counts only (oneDNN on AMX at many rows), a batch's rows round as torch's do."""
        bucket = 1 << max(rows - 1, 0).bit_length()
        shape = (self.kind(), dtype, self.in_features, self.out_features, torch.get_num_threads())
        plan = tuning.remembered(("linear", *shape, self.isas), lambda: self._measure(dtype))
        return plan[bucket]

    def _measure(self, dtype: torch.dtype) -> dict[int, str]:
        """Row-count bucket -> the fastest path, over distinct weights of this layer's shape (made only when
        some bucket is not in the tuning cache yet)."""
        load_kernels()  # built or loaded before anything is timed
        copies = functools.cache(lambda: _probe_copies(self))
        x = torch.randn(KERNEL_MAX_ROWS, self.in_features, dtype=dtype, generator=tuning.probe_generator())
        inputs = str(dtype).removeprefix("torch.")
        shape = f"{self.kind()}-weights/{inputs}/{self.in_features}x{self.out_features}"

        def each(path: str, rows: int) -> Callable[[], None]:
            def run() -> None:
                for layer in copies():
                    if path == "torch":
                        layer.gemm(x[:rows])
                    else:
                        layer.kernel(x[:rows], path)

            return run

        build = self.builds(dtype)[-1]  # one build at every row count: see `path`
        if build == AVX512 and self.kind() == "bfloat16":
            _choose_two_row_loop(each(build, 2))
        plan = {}
        for rows in ROW_BUCKETS:
            candidates = {path: each(path, rows) for path in ("torch", build)}
            key = f"{shape}/rows={rows}/threads={torch.get_num_threads()}/kernels={source_key()}"
            plan[rows] = tuning.choose("linear", key, candidates, baseline="torch")
        return plan

    def kind(self) -> str:
        """What the weight holds (its dtype and layout): "int8", "bfloat16-panels", "bfloat16"... Measured
        choices are named by it, and one kernel call takes weights of one kind."""
        if self.scale is not None:
            return "int8"
        dtype = str(self.weight.dtype).removeprefix("torch.")
        return f"{dtype}-panels" if self.weight.dim() == 3 else dtype

    def extra_repr(self) -> str:
        builds = "+".join(self.isas) or "none"
        return f"in={self.in_features}, out={self.out_features}, weight={self.kind()}, kernels={builds}"


def _choose_two_row_loop(two_rows: Callable[[], None]) -> None:
    """Sets the form in which this machine computes two rows with the AVX-512 bfloat16 tile, timed on
    `two_rows` (a layer's probe weights at two rows through that tile): a loop kept rolled (the baseline:
    streamed 10-27% faster on a Zen 4) or unrolled (1.2-1.28x as fast on a Zen 5). One decision per machine,
    taken by the first layer that asks; the same values either way."""
    kernels = load_kernels()

    def form(rolled: bool) -> Callable[[], None]:
        def run() -> None:
            kernels.set_two_row_loop(rolled)
            two_rows()

        return run

    key = f"bfloat16-weights/threads={torch.get_num_threads()}/kernels={source_key()}"
    forms = {"rolled": form(True), "unrolled": form(False)}
    kernels.set_two_row_loop(tuning.choose("two-row-loop", key, forms, baseline="rolled") == "rolled")


def _stream(x: Tensor, layers: Sequence[PackedLinear], isa: str) -> list[Tensor]:
    """x through each of `layers` (x's width, one weight kind) in one call of the kernel's `isa` build."""
    rows = x.numel() // layers[0].in_features
    ys: list[Tensor] = load_kernels().linear_many(
        x.reshape(rows, layers[0].in_features),
        [layer.weight for layer in layers],
        [_EMPTY if layer.scale is None else layer.scale for layer in layers],
        [_EMPTY if layer.bias is None else layer.bias for layer in layers],
        isa in WIDE_ISAS,
    )
    return [y.view(*x.shape[:-1], layer.out_features) for y, layer in zip(ys, layers, strict=True)]


def _groups(weight: Tensor) -> tuple[int, int]:
    rows, features = weight.shape
    if features % PACK_BYTES:
        raise ValueError(f"int8 weights pack in chunks of {PACK_BYTES} features; this one has {features}")
    return rows - rows % PACK_ROWS, features // PACK_BYTES


def pack_int8(weight: Tensor) -> Tensor:
    """[out, in] int8 rows in the kernel's layout (PACK_ROWS); in a multiple of PACK_BYTES."""
    full, chunks = _groups(weight)
    groups = weight[:full].reshape(full // PACK_ROWS, PACK_ROWS, chunks, PACK_BYTES).transpose(1, 2)
    return torch.cat([groups.reshape(full, weight.shape[1]), weight[full:]])


def unpack_int8(weight: Tensor) -> Tensor:
    """The inverse of pack_int8."""
    full, chunks = _groups(weight)
    groups = weight[:full].reshape(full // PACK_ROWS, chunks, PACK_ROWS, PACK_BYTES).transpose(1, 2)
    return torch.cat([groups.reshape(full, weight.shape[1]), weight[full:]])


def pack_panels(weight: Tensor) -> Tensor:
    """[out, in] bfloat16 rows as the kernel's panels (PANEL_ROWS); out a multiple of PANEL_TILE, in even."""
    out_features, in_features = weight.shape
    if out_features % PANEL_TILE or in_features % 2:
        raise ValueError(
            f"panels take out-features in multiples of {PANEL_TILE} and even in-features; "
            f"this weight is {out_features} x {in_features}"
        )
    pairs = weight.reshape(out_features // PANEL_ROWS, PANEL_ROWS, in_features // 2, 2).transpose(1, 2)
    return pairs.reshape(out_features // PANEL_ROWS, in_features // 2, 2 * PANEL_ROWS).contiguous()


def unpack_panels(panels: Tensor) -> Tensor:
    """The inverse of pack_panels (for whole panels: any run of them)."""
    groups, pairs, _ = panels.shape
    rows = panels.reshape(groups, pairs, PANEL_ROWS, 2).transpose(1, 2)
    return rows.reshape(groups * PANEL_ROWS, pairs * 2)


def _probe_copies(layer: PackedLinear) -> list[PackedLinear]:
    """Distinct layers of `layer`'s shape and kind, together about PROBE_BYTES, so that a probe reads its
    weights from memory as a decode step does, not from a cache. One random layer, the rest copies of it:
    copying runs at memory speed, drawing random numbers does not."""
    nbytes = layer.weight.numel() * layer.weight.element_size()
    count = max(1, min(PROBE_MAX_COPIES, math.ceil(PROBE_BYTES / nbytes)))
    generator = tuning.probe_generator()
    if layer.scale is None:
        weight = torch.randn(layer.weight.shape, dtype=layer.weight.dtype, generator=generator)
        scale = None
    else:
        weight = torch.randint(-127, 128, layer.weight.shape, dtype=torch.int8, generator=generator)
        scale = torch.rand(layer.out_features, generator=generator) * 1e-2
    bias = None if layer.bias is None else torch.zeros_like(layer.bias)
    first = PackedLinear(weight, bias, scale, isas=layer.isas, measured=False)
    return [first] + [copy.deepcopy(first) for _ in range(count - 1)]
