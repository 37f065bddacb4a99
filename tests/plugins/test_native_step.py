"""A CPU decode step's decoder layers as one kernel call (`native_step`): the Python layers' hidden states and
cache bit for bit where it serves, and the Python layers wherever one of its parts would not be a kernel."""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from typing import Any, cast

import pytest
import torch
from torch import Tensor

from helpers import Pin, kernel_attention_here
from janus_plugins.attention import SDPAAttention
from janus_plugins.attention.cpu import KernelAttention
from janus_plugins.cpu_kernels import kernel_isas, target
from janus_plugins.deepseek_llm import DeepSeekLLM, DeepSeekLLMConfig
from janus_plugins.deepseek_llm.model import DecoderLayer
from janus_plugins.deepseek_llm.native_step import NativeLayers
from janus_plugins.linear import Int8Linear, KernelLinear, KernelOptions
from janus_plugins.linear.packed import PackedLinear

CPU = torch.device("cpu")
PINS = "decode-attention=kernel,layer-ops=kernel"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def attention() -> KernelAttention:
    return kernel_attention_here()


class Recorder:
    """Stands in for the kernels' DecoderStack: counts the steps it ran."""

    def __init__(self, stack: Any) -> None:
        self.stack, self.calls = stack, 0

    def run(self, *args: Any) -> Tensor:
        self.calls += 1
        out: Tensor = self.stack.run(*args)
        return out


def backbone(
    attention: KernelAttention, dtype: torch.dtype, *, int8: bool = False, kv_heads: int = 2
) -> DeepSeekLLM:
    """Two layers of 64-wide heads (what every build's tiles take), projections for the kernel builds."""
    config = DeepSeekLLMConfig(
        hidden_size=128,
        intermediate_size=256,
        num_attention_heads=2,
        num_key_value_heads=kv_heads,
        num_hidden_layers=2,
        vocab_size=64,
    )
    torch.manual_seed(0)
    llm = DeepSeekLLM(config, attention).to(dtype).eval()
    options = KernelOptions(measured=False)  # the widest build this CPU runs that applies, at every row count
    linear: Int8Linear | KernelLinear = (
        Int8Linear(options) if int8 else KernelLinear("kernel", kernel_isas(), options)
    )
    linear.check(CPU, dtype)
    for layer in llm.model.layers:
        for parent, names in ((layer.self_attn, ATTENTION), (layer.mlp, MLP)):
            for name in names:
                setattr(parent, name, linear.convert(getattr(parent, name)))
    llm.prepare(CPU, dtype)
    return llm


def decode(
    llm: DeepSeekLLM, native: NativeLayers | None, rows: int, padding: Tensor | None = None
) -> list[Tensor]:
    """A 5-position prefill, then 6 decode steps fed their own last hidden state; the cache's 11 written
    positions at the end (the rest is unwritten memory)."""
    assert llm.plan is not None
    llm.plan = dataclasses.replace(llm.plan, native=native)
    torch.manual_seed(1)
    dtype = llm.model.embed_tokens.weight.dtype
    x = (torch.randn(rows, 5, 128) * 0.5).to(dtype)
    cache = llm.new_cache(rows, 16, padding)
    out = [llm.hidden_states(x, cache, 0)]
    for start in range(5, 11):
        out.append(llm.hidden_states(out[-1][:, -1:], cache, start))
    return [*out, cache.keys[:, :, :, :11], cache.values[:, :, :, :11]]


@pytest.mark.parametrize(
    ("dtype", "int8", "kv_heads", "rows"),
    [
        (torch.bfloat16, False, 2, 2),  # AVX-512 tiles where the CPU has them
        (torch.float32, False, 2, 1),  # the AVX2 (or NEON) tiles
        (torch.bfloat16, True, 2, 2),  # int8 weights
        (torch.bfloat16, False, 1, 3),  # grouped-query heads: the kernel reads each key head once for both
    ],
)
def test_the_native_step_is_the_python_layers_bit_for_bit(
    attention: KernelAttention, pinned: Pin, dtype: torch.dtype, int8: bool, kv_heads: int, rows: int
) -> None:
    pinned(PINS)
    llm = backbone(attention, dtype, int8=int8, kv_heads=kv_heads)
    assert llm.plan is not None and llm.plan.native is not None
    native = llm.plan.native
    native.stack = recorder = Recorder(native.stack)
    with torch.inference_mode():
        ours, python = decode(llm, native, rows), decode(llm, None, rows)
    assert recorder.calls == 6  # every decode step, not the prefill
    for got, expected in zip(ours, python, strict=True):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_python_layers_serve_the_steps_the_kernels_would_not_compute_alone(
    attention: KernelAttention, pinned: Pin
) -> None:
    dtype = torch.bfloat16
    pinned(PINS)
    llm = backbone(attention, dtype)
    assert llm.plan is not None and llm.plan.native is not None
    native = llm.plan.native
    native.stack = recorder = Recorder(native.stack)
    with torch.inference_mode():
        decode(llm, native, 2, padding=torch.tensor([0, 2]))  # left-padded rows: a mask
        assert recorder.calls == 0
        pinned("decode-attention=torch,layer-ops=kernel")  # SDPA measured faster for the step's attention
        decode(llm, native, 2)
        assert recorder.calls == 0
        pinned(PINS)
        x = torch.randn(2, 1, 128).to(dtype)
        per_row = (torch.ones(2, 1, 64, dtype=dtype), torch.zeros(2, 1, 64, dtype=dtype))  # a table per row
        assert native.run(x, llm.new_cache(2, 16), 5, None, per_row) is None
        assert native.run(x, llm.new_cache(2, 16), torch.tensor([5]), None, per_row[:1] * 2) is None
        decode(llm, native, 2)
    assert recorder.calls == 6  # the same steps, now served


@pytest.mark.parametrize(
    "change", ["layer ops", "attention", "linear", "norm dtype", "one layer's weight kind"]
)
def test_no_native_step_unless_every_part_is_a_kernel(
    attention: KernelAttention, pinned: Pin, change: str
) -> None:
    pinned(PINS)
    llm = backbone(attention, torch.bfloat16)

    class Other(KernelAttention):
        def attend(self, q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> Tensor:
            return SDPAAttention().attend(q, k, v, **kwargs)

    layer = cast(DecoderLayer, llm.model.layers[1])
    if change == "layer ops":
        llm.fuse_layer_ops = False
    elif change == "attention":
        llm.attention = Other(attention.name, attention.isa)
    elif change == "linear":
        layer.mlp.up_proj = torch.nn.Linear(128, 256).to(torch.bfloat16)
    elif change == "norm dtype":
        layer.input_layernorm.float()
    else:
        unpacked_int8 = Int8Linear(KernelOptions(measured=False)).convert(torch.nn.Linear(128, 128))
        setattr(layer.self_attn, "k_proj", unpacked_int8)  # noqa: B010 (typed nn.Linear)
    native = llm.prepare(CPU, torch.bfloat16).native
    if change != "attention":
        assert native is None
        return
    assert native is not None  # the backend is asked at each step, and declines
    native.stack = recorder = Recorder(native.stack)
    with torch.inference_mode():
        decode(llm, native, 2)
    assert recorder.calls == 0


def test_a_layer_routed_to_another_build_keeps_the_python_layers(
    attention: KernelAttention, pinned: Pin
) -> None:
    here = target()
    if here is None or here.wide is None or here.wide not in kernel_isas():
        pytest.skip("one build only on this CPU")
    pinned(PINS)
    llm = backbone(attention, torch.bfloat16)
    mlp = cast(DecoderLayer, llm.model.layers[1]).mlp
    down = cast(PackedLinear, mlp.down_proj)
    setattr(mlp, "down_proj", PackedLinear(down.weight, None, None, isas=(here.isa,), measured=False))  # noqa: B010
    native = llm.prepare(CPU, torch.bfloat16).native
    assert native is not None
    native.stack = recorder = Recorder(native.stack)
    with torch.inference_mode():
        decode(llm, native, 2)
    assert recorder.calls == 0  # layer 0 through the wide tiles (AVX-512, BFDOT), layer 1's down_proj not


def test_the_step_lets_other_python_threads_run(attention: KernelAttention, pinned: Pin) -> None:
    """A server's event loop keeps answering during a step: the call holds no GIL while it computes."""
    pinned(PINS)
    llm = backbone(attention, torch.float32)
    assert llm.plan is not None and llm.plan.native is not None
    native = llm.plan.native
    calls: list[tuple[float, float]] = []
    run = native.stack.run

    class Timed:
        def run(self, *args: Any) -> Tensor:
            start = time.perf_counter()
            out: Tensor = run(*args)
            calls.append((start, time.perf_counter()))
            return out

    native.stack = Timed()
    ticks: list[float] = []
    worker = threading.Thread(target=lambda: [decode(llm, native, 4) for _ in range(20)])
    with torch.inference_mode():
        worker.start()
        while worker.is_alive():
            time.sleep(0)  # the GIL to the worker's Python between the calls
            ticks.append(time.perf_counter())
    worker.join()
    assert len(calls) == 120
    # calls are one after another: a tick is inside one where it follows a call's start and precedes its end
    starts = [a for a, _ in calls]
    inside = {i for t in ticks if (i := bisect.bisect(starts, t) - 1) >= 0 and t < calls[i][1]}
    assert len(inside) > len(calls) // 4, (len(inside), len(ticks))  # 79-89 of 120 here; none holding the GIL
