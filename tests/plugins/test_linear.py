"""Linear backends: the kernel (its AVX2, AVX-512 and NEON builds) and weight-only int8 compute what nn.Linear
computes, and are chosen, refused and reported as documented."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import Pin
from janus_plugins import cpu_kernels as kernel_module
from janus_plugins import linear as linear_plugin
from janus_plugins.cpu_kernels import AVX2, AVX512
from janus_plugins.linear import Int8Linear, KernelLinear, KernelOptions, TorchLinear, quantize_rows
from janus_plugins.linear import packed as packed_module
from janus_plugins.linear.packed import (
    KERNEL_MAX_ROWS,
    PACK_BYTES,
    PACK_ROWS,
    PANEL_ROWS,
    PackedLinear,
    pack_int8,
    pack_panels,
    unpack_int8,
    unpack_panels,
)
from janus_plugins.mlp import VisionHead
from janus_sdk import tuning
from janus_sdk.errors import BackendUnavailableError

ALWAYS = KernelOptions(measured=False)  # the kernel at every call of up to KERNEL_MAX_ROWS rows


def avx2(options: KernelOptions | None = None) -> KernelLinear:
    return KernelLinear("avx2", (AVX2,), options)


def base_build(options: KernelOptions | None = None) -> KernelLinear:
    """The kernel's build every CPU of this architecture runs: avx2 on x86, neon on ARM64."""
    here = kernel_module.target()
    if here is None:
        pytest.skip("the kernels have no build for this CPU")
    return KernelLinear(here.isa, (here.isa,), options)


def avx512(options: KernelOptions | None = None) -> KernelLinear:
    return KernelLinear("avx512", (AVX2, AVX512), options)


def _kernel_or_skip() -> None:
    try:
        kernel_module.load_kernels()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def _avx512_or_skip() -> None:
    _kernel_or_skip()
    if AVX512 not in kernel_module.kernel_isas():
        pytest.skip(f"this CPU lacks {kernel_module.AVX512_FEATURES}")


def _linear(in_features: int, out_features: int, dtype: torch.dtype, *, bias: bool = True) -> nn.Linear:
    torch.manual_seed(in_features * 1000 + out_features)
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        if layer.bias is not None:
            layer.bias.normal_(0, 0.05)
    return layer.to(dtype).eval()


def _reference(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The layer's function computed in float64."""
    bias = None if layer.bias is None else layer.bias.double()
    return nn.functional.linear(x.double(), layer.weight.double(), bias)


# Rows 1-9 cover every group size of the kernel (3 rows per pass, then 2/1; 4 and 7 rows end in two passes of
# 2); 37 and 61 out-features leave tails of 1 and 1 rows after the 4-row tiles; KERNEL_MAX_ROWS + 3 goes to
# torch's GEMM instead.
ROWS = [1, 2, 3, 4, 5, 7, 8, 9, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 3]


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("in_features", "out_features"), [(64, 37), (128, 61), (32, 16)])
def test_kernel_float32_matches_nn_linear(rows: int, in_features: int, out_features: int) -> None:
    _kernel_or_skip()
    layer = _linear(in_features, out_features, torch.float32)
    packed = base_build(ALWAYS).convert(layer)
    assert isinstance(packed, PackedLinear)
    x = torch.randn(rows, in_features)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x).double(), _reference(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("out_features", [45, 64], ids=["rows", "panels-on-avx2"])
def test_kernel_bfloat16_matches_nn_linear_within_output_rounding(
    rows: int, out_features: int, pinned: Pin
) -> None:
    _kernel_or_skip()
    pinned("matmul-dtype=float32")  # beyond KERNEL_MAX_ROWS: torch's GEMM, in float32, one output rounding
    layer = _linear(96, out_features, torch.bfloat16)
    packed = base_build(ALWAYS).convert(layer)
    x = torch.randn(2, rows, 96).to(torch.bfloat16)  # leading dims are flattened and restored
    with torch.inference_mode():
        out = packed(x)
        reference = _reference(layer, x)
    assert out.shape == (2, rows, out_features) and out.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa: the result may differ by one rounding of the output
    torch.testing.assert_close(out.double(), reference, atol=1e-3, rtol=2**-8)


@pytest.mark.parametrize("weights", ["float32", "bfloat16", "int8", "bfloat16-panels"])
def test_a_rows_outputs_do_not_depend_on_the_rows_beside_it(weights: str) -> None:
    """Every build this CPU runs, 1-9 rows: each row's outputs equal what it gives alone, bit for bit, however
    the rows are split into passes over the weights (3 + 3 + 2, 2 + 2, ...; panels: 4 + 4 + 1, 3 + 2, ... with
    4 or 2 panels at a time): an image or an answer is the same alone and in a batch."""
    _kernel_or_skip()
    dtype = torch.float32 if weights == "float32" else torch.bfloat16
    layer = _linear(128, 64 if weights == "bfloat16-panels" else 37, dtype)
    builds = kernel_module.kernel_isas()
    bias: torch.Tensor | None
    if weights == "bfloat16-panels":
        if builds[0] != AVX2:
            pytest.skip("panels are the AVX2 build's layout")
        builds = builds[:1]
        weight, bias, scale = pack_panels(layer.weight.detach()), layer.bias.detach(), None
    elif weights == "int8":
        int8 = Int8Linear(ALWAYS)
        int8.check(torch.device("cpu"), dtype)
        converted = int8.convert(layer)
        assert isinstance(converted, PackedLinear)
        weight, scale, bias = converted.kernel_operands()
    else:
        weight, bias, scale = layer.weight.detach(), layer.bias.detach(), None
    x = torch.randn(9, 128).to(dtype)
    for n, isa in enumerate(builds):
        packed = PackedLinear(weight, bias, scale, isas=builds[: n + 1], measured=False)
        with torch.inference_mode():
            alone = torch.cat([packed.kernel(x[i : i + 1], isa) for i in range(9)])
            for rows in range(2, 10):
                assert torch.equal(packed.kernel(x[:rows], isa), alone[:rows]), (isa, rows)


@pytest.mark.parametrize("weights", ["float32", "int8", "bfloat16-panels"])
@pytest.mark.parametrize("rows", [1, 2, 8])
def test_outputs_do_not_depend_on_how_many_threads_share_the_tiles(weights: str, rows: int) -> None:
    """The threads take runs of tiles as they finish one (common.h): 1, 2 and 3 threads give the same outputs,
    bit for bit, for three weights in one call, tiles of 4 rows with a tail of 1 (float32, int8) or panels."""
    _kernel_or_skip()
    if weights == "bfloat16-panels" and kernel_module.kernel_isas()[0] != AVX2:
        pytest.skip("panels are the AVX2 build's layout")
    dtype = torch.float32 if weights == "float32" else torch.bfloat16
    width = 640 if weights == "bfloat16-panels" else 613
    layers = [_linear(128, width + extra, dtype) for extra in (0, 64, 128)]
    isa = kernel_module.kernel_isas()[0]
    packed: list[PackedLinear] = []
    int8 = Int8Linear(ALWAYS)
    int8.check(torch.device("cpu"), dtype)
    for layer in layers:
        if weights == "int8":
            converted = int8.convert(layer)
            assert isinstance(converted, PackedLinear)
            packed.append(converted)
        else:
            weight = layer.weight.detach()
            weight = pack_panels(weight) if weights == "bfloat16-panels" else weight
            packed.append(PackedLinear(weight, layer.bias.detach(), None, isas=(isa,), measured=False))
    x = torch.randn(rows, 128).to(dtype)
    before = torch.get_num_threads()
    outputs = []
    try:
        for threads in (3, 2, 1):  # one thread last: its outputs cannot be left in memory for the others
            torch.set_num_threads(threads)
            with torch.inference_mode():
                together = packed[0].project_with(x, packed[1:])
                assert together is not None  # one kernel call for the three
                outputs.append(together)
    finally:
        torch.set_num_threads(before)
    tolerance = 0.05 if weights == "int8" else 2e-3  # int8: the weights' own rounding
    for got in outputs:
        for out, layer in zip(got, layers, strict=True):  # every tile computed
            torch.testing.assert_close(out.double(), _reference(layer, x), atol=tolerance, rtol=2**-7)
        assert all(torch.equal(a, b) for a, b in zip(got, outputs[-1], strict=True))


def _spy_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths PackedLinear calls take from now on: "torch" or the kernel build's name."""
    paths: list[str] = []
    kernel, gemm = PackedLinear.kernel, PackedLinear.gemm

    def spy_kernel(self: PackedLinear, x: torch.Tensor, isa: str) -> torch.Tensor:
        paths.append(isa)
        return kernel(self, x, isa)

    def spy_gemm(self: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        paths.append("torch")
        return gemm(self, x)

    monkeypatch.setattr(PackedLinear, "kernel", spy_kernel)
    monkeypatch.setattr(PackedLinear, "gemm", spy_gemm)
    return paths


# 4 rows of x per pass (then 3/2/1), 4-row weight tiles with tails of 1; rows of 2 and 9 blocks of 64
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9, KERNEL_MAX_ROWS])
@pytest.mark.parametrize(("in_features", "out_features"), [(128, 61), (576, 37)])
def test_avx512_bfloat16_matches_nn_linear_within_output_rounding(
    rows: int, in_features: int, out_features: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vdpbf16ps multiplies bfloat16 pairs exactly and sums in float32, as the AVX2 tiles do."""
    _avx512_or_skip()
    layer = _linear(in_features, out_features, torch.bfloat16)
    packed = avx512(ALWAYS).convert(layer)
    paths = _spy_paths(monkeypatch)
    x = torch.randn(rows, in_features).to(torch.bfloat16)
    with torch.inference_mode():
        out = packed(x)
    assert paths == ["avx512"]
    torch.testing.assert_close(out.double(), _reference(layer, x), atol=1e-3, rtol=2**-8)


def test_avx512_tiles_serve_only_what_they_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 x against bfloat16 weights, float32 weights, or rows not a multiple of 64: the AVX2 tiles."""
    _avx512_or_skip()
    paths = _spy_paths(monkeypatch)
    with torch.inference_mode():
        avx512(ALWAYS).convert(_linear(128, 8, torch.bfloat16))(torch.randn(2, 128))
        avx512(ALWAYS).convert(_linear(128, 8, torch.float32))(torch.randn(2, 128))
        avx512(ALWAYS).convert(_linear(96, 8, torch.bfloat16))(torch.randn(2, 96).to(torch.bfloat16))
    assert paths == ["avx2"] * 3


def test_each_row_count_takes_the_path_measured_fastest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """torch's GEMM and the widest build that computes this layer are the candidates (one build at every row
    count: a row's result does not depend on the batch); the choice is per row count."""
    _avx512_or_skip()
    offered: dict[int, set[str]] = {}
    fastest = {8: "torch"}

    class Scripted(tuning.Tuner):
        def choose(
            self, family: str, key: str, candidates: Mapping[str, Callable[[], object]], baseline: str
        ) -> str:
            if family != "linear":
                return baseline
            rows = int(key.split("/rows=")[1].split("/")[0])
            assert key.endswith(f"/kernels={kernel_module.source_key()}")  # a changed kernel is measured anew
            offered[rows] = set(candidates)
            return fastest.get(rows, "avx512")

    packed = avx512().convert(_linear(128, 8, torch.bfloat16))
    paths = _spy_paths(monkeypatch)
    with tuning.use_tuner(Scripted(tmp_path / "t.json", pins="")), torch.inference_mode():
        for rows in (1, 2, 4, 8):
            packed(torch.randn(rows, 128).to(torch.bfloat16))
    assert offered == {rows: {"torch", "avx512"} for rows in (1, 2, 4, 8, 16, 32)}
    assert paths == ["avx512", "avx512", "avx512", "torch"]  # the scripted choices run nothing themselves


def test_avx512_two_row_loop_forms_compute_the_same_values() -> None:
    """The AVX-512 bfloat16 tile's rolled and unrolled loops for two rows of x (whichever this machine
    measured faster) make the same sums in the same order: every row count gives the same bits either way."""
    _avx512_or_skip()
    kernels = kernel_module.load_kernels()
    packed = avx512(ALWAYS).convert(_linear(192, 61, torch.bfloat16))
    before = kernels.two_row_loop_rolled()
    try:
        for rows in (1, 2, 3, 5, 6, 9):
            x = torch.randn(rows, 192).to(torch.bfloat16)
            outs = []
            for rolled in (True, False):
                kernels.set_two_row_loop(rolled)
                with torch.inference_mode():
                    outs.append(packed(x))
            assert torch.equal(outs[0], outs[1]), rows
    finally:
        kernels.set_two_row_loop(before)


@pytest.mark.parametrize(("unrolled_seconds", "rolled"), [(0.5, False), (0.99, True), (2.0, True)])
def test_the_two_row_loop_choice_times_each_form_and_sets_the_winner(
    unrolled_seconds: float, rolled: bool, tmp_path: Path
) -> None:
    """The choice itself, on any CPU the kernels build for: each candidate runs the probe in its own form,
    and the winner (the rolled baseline unless the unrolled form is 3% faster) is set and remembered."""
    _kernel_or_skip()
    kernels = kernel_module.load_kernels()
    probe_forms: list[bool] = []
    times = {"rolled": 1.0, "unrolled": unrolled_seconds}

    def timer(name: str, run: Callable[[], object], limit: float) -> float:
        run()
        return times[name]

    before = kernels.two_row_loop_rolled()
    try:
        kernels.set_two_row_loop(not rolled)
        with tuning.use_tuner(tuning.Tuner(tmp_path / "t.json", timer=timer, pins="")) as tuner:
            packed_module._choose_two_row_loop(lambda: probe_forms.append(kernels.two_row_loop_rolled()))
            (decision,) = tuner.decisions().values()
        assert probe_forms == [True, False]
        assert decision.winner == ("rolled" if rolled else "unrolled")
        assert kernels.two_row_loop_rolled() is rolled
    finally:
        kernels.set_two_row_loop(before)


@pytest.mark.parametrize(("unrolled_seconds", "rolled"), [(0.5, False), (0.99, True)])
def test_the_two_row_loop_is_the_form_measured_faster(
    unrolled_seconds: float, rolled: bool, tmp_path: Path
) -> None:
    """A bfloat16 layer's first measurement also times the two forms of the AVX-512 tile's two-row loop (the
    rolled one the baseline) and sets the faster in the kernels; one within the margin leaves the rolled."""
    _avx512_or_skip()
    kernels = kernel_module.load_kernels()
    times = {"torch": 1.0, "avx512": 0.5, "rolled": 1.0, "unrolled": unrolled_seconds}
    timed: dict[str, bool] = {}

    def timer(name: str, run: Callable[[], object], limit: float) -> float:
        run()
        if name in ("rolled", "unrolled"):
            timed[name] = kernels.two_row_loop_rolled()  # the candidate ran in its own form
        return times.get(name, 1.0)  # the layer's other choices (torch's compute dtype) alike

    before = kernels.two_row_loop_rolled()
    try:
        kernels.set_two_row_loop(not rolled)
        packed = avx512().convert(_linear(128, 8, torch.bfloat16))
        with tuning.use_tuner(tuning.Tuner(tmp_path / "t.json", timer=timer, pins="")) as tuner:
            with torch.inference_mode():
                packed(torch.randn(2, 128).to(torch.bfloat16))
            decisions = {name.split("/")[0]: d.winner for name, d in tuner.decisions().items()}
        assert timed == {"rolled": True, "unrolled": False}
        assert decisions["two-row-loop"] == ("rolled" if rolled else "unrolled")
        assert kernels.two_row_loop_rolled() is rolled
    finally:
        kernels.set_two_row_loop(before)


def test_avx512_pinned_where_the_cpu_lacks_it_names_the_features_and_autos_pick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _kernel_or_skip()
    monkeypatch.setattr(kernel_module, "cpu_has_avx512", lambda: False)
    here = kernel_module.kernel_isas()  # avx2 on x86; neon (and neon-bf16 with BF16) on ARM64
    assert here[0] == base_build().name and kernel_module.AVX512 not in here
    cpu = torch.device("cpu")
    with pytest.raises(
        BackendUnavailableError,
        match=rf"'avx512' needs an x86 CPU with AVX-512.*BF16.*VNNI.*auto' \(here: '{here[-1]}'\)",
    ):
        avx512().check(cpu, torch.bfloat16)
    assert linear_plugin.choose_linear_backend(cpu, torch.bfloat16) == here[-1]
    int8 = Int8Linear()
    int8.check(cpu, torch.bfloat16)
    assert int8.isas == here


def test_bfloat16_panels_pack_and_unpack_exactly() -> None:
    """Each PANEL_ROWS output rows as [in / 2, PANEL_ROWS, 2]: a pair of inputs' weights side by side, 8 rows
    of them; unpacking a run of whole panels gives those rows back."""
    weight = torch.arange(64 * 6, dtype=torch.float32).view(64, 6).to(torch.bfloat16)
    panels = pack_panels(weight)
    assert panels.shape == (64 // PANEL_ROWS, 3, 2 * PANEL_ROWS)
    assert panels[0, 0].tolist() == [weight[r, k].item() for r in range(PANEL_ROWS) for k in (0, 1)]
    assert panels[1, 2, :2].tolist() == weight[PANEL_ROWS, 4:6].tolist()
    assert torch.equal(unpack_panels(panels), weight)
    assert torch.equal(unpack_panels(panels[2:5]), weight[2 * PANEL_ROWS : 5 * PANEL_ROWS])
    with pytest.raises(ValueError, match="multiples of 32 and even in-features; this weight is 40 x 6"):
        pack_panels(weight[:40])


def test_only_the_avx2_build_keeps_bfloat16_weights_as_panels() -> None:
    """Where whole tiles of PANEL_TILE rows fit, in bfloat16; the AVX-512 and NEON builds read rows."""
    panels = avx2().convert(_linear(64, 96, torch.bfloat16))
    assert isinstance(panels, PackedLinear) and panels.weight.shape == (96 // PANEL_ROWS, 32, 16)
    assert (panels.out_features, panels.in_features, panels.kind()) == (96, 64, "bfloat16-panels")
    for rows in (
        avx2().convert(_linear(64, 80, torch.bfloat16)),  # 80 is not a multiple of 32
        avx2().convert(_linear(64, 96, torch.float32)),
        avx512().convert(_linear(64, 96, torch.bfloat16)),
        KernelLinear("neon", ("neon",)).convert(_linear(64, 96, torch.bfloat16)),
    ):
        assert isinstance(rows, PackedLinear) and rows.weight.dim() == 2


def test_avx2_keeps_layers_whose_width_the_kernel_cannot_take() -> None:
    layer = _linear(40, 8, torch.float32)  # 40 is not a multiple of the kernel's 16-weight blocks
    assert avx2().convert(layer) is layer
    assert TorchLinear().convert(layer) is layer


def test_avx2_refuses_other_devices_and_dtypes() -> None:
    backend = avx2()
    with pytest.raises(BackendUnavailableError, match=r"runs on the CPU.*not on meta.*use linear 'torch'"):
        backend.check(torch.device("meta"), torch.float32)
    with pytest.raises(BackendUnavailableError, match="not on cpu in float16"):
        backend.check(torch.device("cpu"), torch.float16)


def test_a_kernel_that_cannot_be_compiled_is_reported_with_the_fix_and_never_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """One compile and one warning per failure, remembered on disk for later processes, until a build is asked
    for again (`janus kernels build`)."""
    from torch.utils import cpp_extension

    compiles: list[str] = []

    def broken_compiler(name: str, *args: object, **kwargs: object) -> None:
        compiles.append(name)
        raise RuntimeError("Error building extension 'janus_avx2_kernels'\nc++: command not found")

    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(kernel_module, "_module", None)
    monkeypatch.setattr(kernel_module, "_failure", None)
    monkeypatch.setattr(kernel_module, "_warned", False)
    monkeypatch.setattr(cpp_extension, "load", broken_compiler)
    monkeypatch.setattr(kernel_module, "cpu_has_avx2", lambda: True)
    with pytest.raises(BackendUnavailableError, match=r"pip install ninja.*command not found.*'torch'"):
        avx2().check(torch.device("cpu"), torch.float32)
    assert linear_plugin.choose_linear_backend(torch.device("cpu"), torch.float32) is None
    int8 = Int8Linear()
    int8.check(torch.device("cpu"), torch.float32)  # int8 still works, without the kernel
    assert not int8.isas
    assert kernel_module.kernels_usable(torch.device("cpu"), torch.bfloat16, "layer ops use torch's") is False
    assert len(compiles) == 1
    assert caplog.text.count("not using the CPU kernels") == 1
    assert "linear 'auto' picks torch" in caplog.text
    failed = kernel_module.build_dir() / kernel_module.FAILED
    assert "command not found" in failed.read_text()

    monkeypatch.setattr(kernel_module, "_failure", None)  # a new process: the FAILED file is enough
    with pytest.raises(BackendUnavailableError, match=r"failed to build earlier.*janus kernels build"):
        kernel_module.load_kernels()
    assert len(compiles) == 1
    with pytest.raises(BackendUnavailableError):
        kernel_module.build()  # asked for: tried again
    assert len(compiles) == 2


def test_auto_chooses_the_kernel_only_where_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    choose = linear_plugin.choose_linear_backend
    assert choose(torch.device("cpu"), torch.float16) is None
    assert choose(torch.device("meta"), torch.float32) is None
    monkeypatch.setattr(kernel_module, "target", lambda: None)  # a CPU the kernels have no build for
    assert choose(torch.device("cpu"), torch.float32) is None
    monkeypatch.undo()
    _kernel_or_skip()
    widest = kernel_module.kernel_isas()[-1]
    assert widest in {"avx512", "avx2", "neon", "neon-bf16"}
    assert choose(torch.device("cpu"), torch.bfloat16) == widest
    int8 = Int8Linear()
    int8.check(torch.device("meta"), torch.float32)  # the kernel only ever serves the CPU
    assert not int8.isas
    int8.check(torch.device("cpu"), torch.bfloat16)
    assert int8.isas


def test_int8_quantization_is_per_output_feature_and_round_to_nearest() -> None:
    layer = _linear(64, 24, torch.float32)
    with torch.no_grad():
        layer.weight[3] *= 100  # one loud row must not coarsen the others' scales
    packed = Int8Linear().convert(layer)
    assert isinstance(packed, PackedLinear) and packed.scale is not None
    assert packed.weight.dtype == torch.int8 and int(packed.weight.abs().max()) == 127
    torch.testing.assert_close(packed.scale, layer.weight.abs().amax(dim=1) / 127)
    error = (packed.weight.float() * packed.scale[:, None] - layer.weight).abs()
    assert bool((error <= packed.scale[:, None] / 2 + 1e-7).all())
    chunked = quantize_rows(layer.weight.detach(), chunk=5)  # rows in uneven chunks: the same result
    assert torch.equal(chunked[0], packed.weight) and torch.equal(chunked[1], packed.scale)


INT16_SCALE_BLOCK = 512  # the kernel's kScaleBlock: x gets one int16 scale per row and this many features


@pytest.mark.parametrize("rows", [1, 2, 7, KERNEL_MAX_ROWS + 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_features", [128, 2 * INT16_SCALE_BLOCK + 64])
@pytest.mark.parametrize("wide", [False, True], ids=["base-build", "wide-build"])
def test_int8_kernel_and_dequantizing_matmul_agree(
    rows: int, dtype: torch.dtype, in_features: int, wide: bool, pinned: Pin
) -> None:
    _avx512_or_skip() if wide else _kernel_or_skip()
    isa = kernel_module.kernel_isas()[-1 if wide else 0]
    pinned("matmul-dtype=float32")  # the dequantizing matmul computes in float32
    layer = _linear(in_features, 50, dtype)
    fast = Int8Linear(ALWAYS)
    fast.check(torch.device("cpu"), dtype)
    quantized = fast.convert(layer)
    assert isinstance(quantized, PackedLinear) and quantized.isas
    isas = kernel_module.kernel_isas()[: kernel_module.kernel_isas().index(isa) + 1]
    packed = PackedLinear(quantized.weight, quantized.bias, quantized.scale, isas=isas, measured=False)
    plain = PackedLinear(packed.plain_weight(), packed.bias, packed.scale, isas=())
    x = torch.randn(rows, in_features).to(dtype)
    x[0, INT16_SCALE_BLOCK:] = 0  # a block of zeros has no scale to divide by
    with torch.inference_mode():
        dequantized = nn.Linear(in_features, 50).double()
        assert packed.scale is not None and packed.bias is not None
        dequantized.weight.copy_(packed.plain_weight().double() * packed.scale.double()[:, None])
        dequantized.bias.copy_(packed.bias.double())
        expected = dequantized(x.double())
        atol, rtol = (1e-5, 1e-5) if dtype == torch.float32 else (1e-3, 2**-7)
        torch.testing.assert_close(plain(x).double(), expected, atol=atol, rtol=rtol)
        if rows > KERNEL_MAX_ROWS or dtype == torch.bfloat16:
            torch.testing.assert_close(packed(x).double(), expected, atol=atol, rtol=rtol)
        else:  # the kernel rounds x to int16 steps of max |x[block]| / 32767: at most half a step per feature
            bound = torch.full_like(expected, 1e-6)
            for block in torch.split(torch.arange(in_features), INT16_SCALE_BLOCK):
                half_step = x[:, block].double().abs().amax(dim=1, keepdim=True) / 32767 / 2
                bound += half_step * dequantized.weight[:, block].abs().sum(dim=1)
            assert bool(((packed(x).double() - expected).abs() <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_features", [128, 2 * INT16_SCALE_BLOCK + 64])
def test_int8_builds_give_the_same_bits(dtype: torch.dtype, in_features: int) -> None:
    """Every int8 tile sums each scale block exactly and adds the blocks up alike, so the AVX2 and AVX-512
    builds give the same outputs at every row count: which of them a CPU runs does not change an int8 model's
    results; 50 outputs: whole tiles of 4 weight rows and 2 left over."""
    _avx512_or_skip()
    quantized = Int8Linear(ALWAYS).convert(_linear(in_features, 50, dtype))
    assert isinstance(quantized, PackedLinear)
    operands = (quantized.weight, quantized.bias, quantized.scale)
    narrow = PackedLinear(*operands, isas=(AVX2,), measured=False)
    wide = PackedLinear(*operands, isas=(AVX2, AVX512), measured=False)
    assert (narrow.route(2, dtype), wide.route(2, dtype)) == (AVX2, AVX512)
    torch.manual_seed(0)
    with torch.inference_mode():
        for rows in range(1, 10):
            x = (torch.randn(rows, in_features) * 3).to(dtype)
            assert torch.equal(narrow(x), wide(x)), rows


@pytest.mark.parametrize("wide", [False, True], ids=["base-build", "wide-build"])
def test_int8_kernel_rounds_x_to_nearest_even(wide: bool) -> None:
    """x's int16 values are x * 32767 / max |x[block]| rounded half to even, as torch.round does: with a
    block whose largest value is 32767 the int16 values are x rounded, and one-hot int8 weights read them back
    (float32 x: bfloat16 has no 32767, nor ties at this scale)."""
    _avx512_or_skip() if wide else _kernel_or_skip()
    isa = kernel_module.kernel_isas()[-1 if wide else 0]
    ties = torch.tensor([2.5, 3.5, -2.5, -3.5, 0.5, -0.5, 1.5, 100.5, -7.25, 6.75])
    x = torch.zeros(2, 128)
    x[:, 0] = 32767.0  # this block's scale step is exactly 1
    x[0, 1 : 1 + ties.numel()] = ties
    x[1, 1 : 1 + ties.numel()] = -ties
    one_hot = torch.zeros(1 + ties.numel(), 128)
    one_hot[torch.arange(1 + ties.numel()), torch.arange(1 + ties.numel())] = 1.0
    layer = nn.Linear(128, 1 + ties.numel(), bias=False)
    with torch.no_grad():
        layer.weight.copy_(one_hot)
    int8 = Int8Linear(ALWAYS)
    int8.check(torch.device("cpu"), torch.float32)
    quantized = int8.convert(layer)
    assert isinstance(quantized, PackedLinear)
    isas = kernel_module.kernel_isas()[: kernel_module.kernel_isas().index(isa) + 1]
    packed = PackedLinear(quantized.weight, None, quantized.scale, isas=isas, measured=False)
    with torch.inference_mode():
        y = packed(x)
    assert torch.equal(y[:, 1:].round(), torch.round(x[:, 1 : 1 + ties.numel()]))  # 2.5 -> 2, 3.5 -> 4


@pytest.mark.parametrize("out_features", [3, 8, 11])
def test_int8_weights_pack_by_tiles_of_rows_and_unpack_exactly(out_features: int) -> None:
    """Rows in groups of PACK_ROWS, each as chunks of PACK_BYTES side by side; the rows past the last full
    group as they were."""
    weight = torch.arange(out_features * 128, dtype=torch.int32).remainder(251).sub(125).to(torch.int8)
    weight = weight.view(out_features, 128)
    packed = pack_int8(weight)
    full = out_features - out_features % PACK_ROWS
    if full:
        assert torch.equal(packed[0, :PACK_BYTES], weight[0, :PACK_BYTES])
        assert torch.equal(packed[0, PACK_BYTES:], weight[1, :PACK_BYTES])  # row 1's first chunk next
    assert torch.equal(packed[full:], weight[full:])
    assert torch.equal(unpack_int8(packed), weight)
    with pytest.raises(ValueError, match="chunks of 64 features; this one has 80"):
        pack_int8(torch.zeros(4, 80, dtype=torch.int8))


def test_int8_rows_the_kernel_cannot_pack_stay_on_torchs_path() -> None:
    _kernel_or_skip()
    layer = _linear(80, 8, torch.float32)
    backend = Int8Linear(ALWAYS)
    backend.check(torch.device("cpu"), torch.float32)
    packed = backend.convert(layer)
    assert isinstance(packed, PackedLinear) and not packed.isas
    x = torch.randn(2, 80)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x).double(), _reference(layer, x), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(("pin", "gemm_dtype"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_bfloat16_gemm_runs_in_the_compute_dtype(
    monkeypatch: pytest.MonkeyPatch, pinned: Pin, pin: str, gemm_dtype: torch.dtype
) -> None:
    """A prefill's GEMM runs in float32 where bfloat16 measured slower; the result stays bfloat16."""
    pinned(f"matmul-dtype={pin}")
    seen: list[torch.dtype] = []
    mm = torch.mm

    def recording(x: torch.Tensor, w: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        seen.append(w.dtype)
        return mm(x, w, out=out)

    monkeypatch.setattr(torch, "mm", recording)
    packed = PackedLinear(torch.randn(8, 16).to(torch.bfloat16), None, None, isas=())
    with torch.inference_mode():
        out = packed(torch.randn(KERNEL_MAX_ROWS + 1, 16).to(torch.bfloat16))
    assert seen == [gemm_dtype]
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["bfloat16", "int8"])
def test_torchs_path_widens_the_weight_in_slabs_that_add_up_to_the_layer(
    monkeypatch: pytest.MonkeyPatch, pinned: Pin, kind: str
) -> None:
    """Widened weights (bfloat16 computed in float32, int8 dequantized) are multiplied a slab of output rows
    at a time, so that no whole float32 copy is made per call; the slabs cover every row once, including the
    rows past the last full group of packed int8 rows, and carry the scale and bias of their rows."""
    pinned("matmul-dtype=float32")
    layer = _linear(128, 4 * 5 + 3, torch.bfloat16)
    if kind == "int8":
        _kernel_or_skip()
        backend = Int8Linear(ALWAYS)
        backend.check(torch.device("cpu"), torch.bfloat16)
        packed = backend.convert(layer)
        assert isinstance(packed, PackedLinear) and packed.isas  # packed by groups of PACK_ROWS rows
        assert packed.scale is not None
        expected_weight = packed.plain_weight().double() * packed.scale.double()[:, None]
    else:
        packed = PackedLinear(layer.weight.detach(), layer.bias.detach(), None, isas=())
        expected_weight = layer.weight.double()
    monkeypatch.setattr(linear_plugin.packed, "WIDEN_BYTES", 2 * 128 * 4)  # 2 rows -> slabs of SLAB_ROWS
    slabs = [(start, slab.shape[0]) for start, slab in packed.weight_slabs(torch.float32)]
    assert slabs == [(0, 8), (8, 8), (16, 7)]
    x = torch.randn(KERNEL_MAX_ROWS + 1, 128).to(torch.bfloat16)
    with torch.inference_mode():
        y = packed(x)
    expected = nn.functional.linear(x.double(), expected_weight, layer.bias.double())
    torch.testing.assert_close(y.double(), expected, atol=2e-2, rtol=2**-7)


def test_off_the_cpu_the_weight_widens_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU (here the meta device) a widened weight is one slab: the caching allocator reuses its memory,
    and slabs would each be kernel launches."""
    monkeypatch.setattr(linear_plugin.packed, "WIDEN_BYTES", 2 * 128 * 4)
    layer = PackedLinear(torch.empty(23, 128, dtype=torch.bfloat16, device="meta"), None, None)
    slabs = [(start, tuple(slab.shape), slab.dtype) for start, slab in layer.weight_slabs(torch.float32)]
    assert slabs == [(0, (23, 128), torch.float32)]


def test_int8_pipeline_stays_close_to_the_reference() -> None:
    """Weight-only int8 on the tiny checkpoint: the prompt logits move by about what bfloat16 moves them
    (bench/quality.py measures both: mean error 0.020 for int8, 0.011 for bfloat16, logit std 2.0)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from janus_sdk import JanusPipeline

    fixture = Path(__file__).parents[1] / "fixtures" / "janus-tiny"
    golden = load_file(fixture / "golden" / "golden.safetensors")
    pipe = JanusPipeline.from_pretrained(fixture / "checkpoint", device="cpu", dtype="float32", linear="int8")
    llm = pipe.model.language_model
    head = pipe.model.gen_head
    assert isinstance(head, VisionHead) and isinstance(head.vision_head, PackedLinear)
    assert head.vision_head.weight.dtype == torch.int8
    aligner = pipe.model.gen_aligner.layers  # embeds every sampled image token: per-token too
    assert isinstance(aligner, nn.Sequential) and isinstance(aligner[-1], PackedLinear)
    assert aligner[-1].weight.dtype == torch.int8
    embeds = golden["und_inputs_embeds"]
    with torch.inference_mode():
        logits = llm.text_logits(llm.hidden_states(embeds, llm.new_cache(1, embeds.shape[1]), 0))
    reference = golden["und_prompt_logits"]
    error = (logits - reference).abs()
    assert 1e-3 < float(error.mean()) < 0.05  # quantized (not float32-exact), yet close
    assert float((logits.argmax(-1) == reference.argmax(-1)).float().mean()) > 0.95
    assert len(pipe.generate_image_codes("a red cube", n=1, seed=0)[0]) == 576


def test_torch_path_computes_on_contiguous_rows(monkeypatch: pytest.MonkeyPatch, pinned: Pin) -> None:
    """A [B, 1, in] slice of the last position reaches torch's GEMM as contiguous [B, in] rows (torch's
    bfloat16 linear is a slow path on the strided 3-D form), and comes back in the input's shape."""
    pinned("matmul-dtype=bfloat16")
    seen: list[tuple[tuple[int, ...], bool]] = []
    linear, mm = nn.functional.linear, torch.mm

    def recording(x: torch.Tensor, w: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(x.shape), x.is_contiguous()))
        return mm(x, w, out=out)

    monkeypatch.setattr(torch, "mm", recording)
    layer = _linear(32, 24, torch.bfloat16, bias=False)
    packed = PackedLinear(layer.weight.detach(), None, None, isas=())
    hidden = torch.randn(3, 5, 32).to(torch.bfloat16)
    with torch.inference_mode():
        out = packed(hidden[:, -1:])
        expected = linear(hidden[:, -1:].contiguous(), layer.weight)
    assert seen[0] == ((3, 32), True)
    assert out.shape == (3, 1, 24)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
