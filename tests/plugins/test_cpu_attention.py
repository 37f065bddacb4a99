"""The kernel attention backends (`avx2` on x86, `neon` on ARM64: one source over the architecture's vector
lanes): one query position over a cache, as the reference math computes it; many query positions through the
AVX512-BF16 prompt kernel where the CPU has it, as close to the exact math as SDPA."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

from helpers import Pin, fake_timer, kernel_attention_here
from janus_plugins.attention import SDPAAttention, end_aligned_causal_mask, math_attention
from janus_plugins.attention import cpu as cpu_attention
from janus_plugins.attention.cpu import KernelAttention
from janus_plugins.cpu_kernels import AVX2, AVX512, NEON, kernel_isas, load_kernels
from janus_plugins.deepseek_llm import DeepSeekLLM, DeepSeekLLMConfig
from janus_sdk import tuning
from janus_sdk.errors import BackendUnavailableError


@pytest.fixture(scope="module")
def backend() -> KernelAttention:
    """This machine's build: avx2 on x86, neon on ARM64."""
    return kernel_attention_here()


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """The reference math in float64 (softmax in float32); where causal, query i sees keys 0..L - T + i."""
    group = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(group, dim=1) for t in (k, v))
    tq, tk = q.shape[-2], k.shape[-2]
    mask = end_aligned_causal_mask(tq, tk, q.device, torch.float64) if causal else None
    return math_attention(q.double(), k, v, mask, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "length"), [(2, 4, 4, 1), (2, 4, 4, 37), (3, 8, 2, 600)]
)
def test_decode_step_matches_the_reference_math_over_a_cache_view(
    backend: KernelAttention,
    pinned: Pin,
    dtype: torch.dtype,
    rows: int,
    heads: int,
    kv_heads: int,
    length: int,
) -> None:
    pinned("decode-attention=kernel")  # the kernel, whatever this run measures (SDPA takes no grouped heads)
    torch.manual_seed(length)
    cache_k = torch.randn(rows, kv_heads, length + 9, 64).to(dtype)  # a longer cache, read up to `length`
    cache_v = torch.randn(rows, kv_heads, length + 9, 64).to(dtype)
    k, v = cache_k[:, :, :length], cache_v[:, :, :length]
    q = torch.randn(rows, heads, 1, 64).to(dtype)
    out = backend.attend(q, k, v, causal=False)
    assert out.shape == q.shape and out.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bfloat16 rounds the output
    torch.testing.assert_close(out.double(), _reference(q, k, v), atol=tolerance, rtol=tolerance)


def test_other_calls_go_to_sdpa(backend: KernelAttention) -> None:
    q, k, v = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(backend.attend(q, k, v, causal=True), expected)
    mask = torch.zeros(1, 1, 1, 5)
    mask[..., 3:] = float("-inf")
    masked = backend.attend(q[:, :, :1], k, v, causal=False, mask=mask)
    torch.testing.assert_close(masked, _reference(q[:, :, :1], k[:, :, :3], v[:, :, :3]).float())


def test_refuses_other_devices_and_dtypes() -> None:
    with pytest.raises(BackendUnavailableError, match=r"not on meta.*use attention 'sdpa'"):
        KernelAttention().check(torch.device("meta"), torch.float32)
    with pytest.raises(BackendUnavailableError, match="not on cpu in float16"):
        KernelAttention().check(torch.device("cpu"), torch.float16)
    assert cpu_attention.choose_attention_backend(torch.device("cpu"), torch.float16) is None


def test_the_other_architectures_build_is_refused_naming_what_it_needs(backend: KernelAttention) -> None:
    other = KernelAttention(NEON, NEON) if backend.isa == AVX2 else KernelAttention(AVX2, AVX2)
    with pytest.raises(BackendUnavailableError, match=rf"'{other.name}' needs an .*here: '{backend.name}'"):
        other.check(torch.device("cpu"), torch.float32)


# -- many query positions: the AVX512-BF16 prompt kernel ----------------------------------------------------


@pytest.fixture(scope="module")
def prompt_kernel(backend: KernelAttention) -> ModuleType:
    """The kernels' module, where this CPU runs the prompt kernel (x86 with AVX512-BF16)."""
    if AVX512 not in kernel_isas():
        pytest.skip("the prompt kernel needs an x86 CPU with AVX512-BF16")
    return load_kernels()


def _sdpa_error(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, exact: torch.Tensor
) -> float:
    group = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(group, dim=1) for t in (k, v))
    return float((SDPAAttention().attend(q, k, v, causal=causal).double() - exact).abs().max())


@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "queries", "keys", "dim", "causal"),
    [
        (1, 4, 4, 77, 77, 128, True),  # a prompt from position 0, a length that is no multiple of 16
        (2, 4, 2, 33, 50, 64, True),  # a prompt continuing a cache of 17 positions, grouped-query heads
        (1, 2, 2, 5, 5, 64, True),  # fewer rows than a register tile
        (1, 3, 3, 144, 144, 64, False),  # SigLIP-like: every position sees every other
        (2, 1, 1, 40, 40, 192, False),  # the VQ decoder's one wide head, a size that is not a power of two
    ],
)
def test_prompt_kernel_is_as_close_to_the_exact_math_as_sdpa(
    prompt_kernel: ModuleType,
    rows: int,
    heads: int,
    kv_heads: int,
    queries: int,
    keys: int,
    dim: int,
    causal: bool,
) -> None:
    torch.manual_seed(queries * dim)
    # q as the decoder layer hands it over (a transposed view); keys and values as views of a longer cache
    q = torch.randn(rows, queries, heads, dim).to(torch.bfloat16).transpose(1, 2)
    cache_k, cache_v = (torch.randn(rows, kv_heads, keys + 7, dim).to(torch.bfloat16) for _ in range(2))
    k, v = cache_k[:, :, :keys], cache_v[:, :, :keys]
    out = prompt_kernel.prompt_attention(q, k, v, dim**-0.5, causal)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    exact = _reference(q, k, v, causal)
    error = float((out.double() - exact).abs().max())
    # both round the probabilities and the output to bfloat16: the same size of error, not the same bits
    assert error <= 1.5 * _sdpa_error(q, k, v, causal, exact) + 1e-3, error


def test_the_prompt_kernel_serves_a_decoder_prefill_when_it_measures_faster(
    prompt_kernel: ModuleType, backend: KernelAttention, monkeypatch: pytest.MonkeyPatch, pinned: Pin
) -> None:
    """A two-layer backbone with 64-dimension heads: its prefill, in one call and as two chunks (the second
    attending over the cache the first wrote), through the kernel, against the same model on SDPA."""
    config = DeepSeekLLMConfig(
        hidden_size=128, intermediate_size=256, num_attention_heads=2, num_hidden_layers=2, vocab_size=64
    )
    torch.manual_seed(0)
    ours = DeepSeekLLM(config, backend).to(torch.bfloat16).eval()
    sdpa = DeepSeekLLM(config, SDPAAttention()).to(torch.bfloat16).eval()
    sdpa.load_state_dict(ours.state_dict())
    calls: list[tuple[int, int, bool]] = []
    kernel = prompt_kernel.prompt_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
        calls.append((q.shape[-2], k.shape[-2], causal))
        out: torch.Tensor = kernel(q, k, v, scale, causal)
        return out

    monkeypatch.setattr(prompt_kernel, "prompt_attention", spy)
    pinned("prompt-attention=kernel,layer-ops=torch,linear=torch")
    embeds = (torch.randn(1, 45, 128) * 0.5).to(torch.bfloat16)
    with torch.inference_mode():
        expected = sdpa.hidden_states(embeds, sdpa.new_cache(1, 45), 0)
        whole = ours.hidden_states(embeds, ours.new_cache(1, 45), 0)
        cache = ours.new_cache(1, 45)
        first = ours.hidden_states(embeds[:, :30], cache, 0)
        rest = ours.hidden_states(embeds[:, 30:], cache, 30)
    assert calls == [(45, 45, True)] * 2 + [(30, 30, True)] * 2 + [(15, 45, True)] * 2
    torch.testing.assert_close(whole.float(), expected.float(), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(torch.cat([first, rest], dim=1).float(), whole.float(), atol=3e-2, rtol=3e-2)


def test_sdpa_serves_the_prompts_the_kernel_does_not_take_or_lost_to(
    prompt_kernel: ModuleType, backend: KernelAttention, monkeypatch: pytest.MonkeyPatch, pinned: Pin
) -> None:
    monkeypatch.setattr(prompt_kernel, "prompt_attention", _never_called)
    q, k, v = (torch.randn(1, 2, 20, 64).to(torch.bfloat16) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    pinned("prompt-attention=torch")  # measured slower than SDPA
    assert torch.equal(backend.attend(q, k, v, causal=True), expected)
    pinned("prompt-attention=kernel")
    mask = torch.zeros(1, 1, 20, 20).masked_fill(torch.ones(20, 20, dtype=torch.bool).triu(1), float("-inf"))
    others = [
        (q.float(), k.float(), v.float(), None),  # float32
        (q[..., :32], k[..., :32], v[..., :32], None),  # a head size the tiles do not cover
        (q, k, v, mask.to(torch.bfloat16)),  # a mask (left-padded batches)
    ]
    far = torch.empty_strided((1, 2, 20, 64), (64, 64, 1 << 26, 1), dtype=torch.bfloat16, device="meta")
    assert not cpu_attention.prompt_kernel_serves(q, far, far)  # beyond the gather's 32-bit offsets
    for q_, k_, v_, mask_ in others:
        expected = torch.nn.functional.scaled_dot_product_attention(
            q_, k_, v_, attn_mask=mask_, is_causal=mask_ is None
        )
        torch.testing.assert_close(backend.attend(q_, k_, v_, causal=True, mask=mask_), expected)


def _never_called(*args: object) -> torch.Tensor:
    raise AssertionError("the prompt kernel was called")


def test_prompt_attention_is_measured_against_sdpa_per_shape(
    prompt_kernel: ModuleType, backend: KernelAttention, tmp_path: Path
) -> None:
    timed: list[str] = []
    tuner = tuning.Tuner(tmp_path / "t.json", timer=fake_timer({"torch": 1.0, "kernel": 0.5}, timed), pins="")
    q, k, v = (torch.randn(1, 2, 20, 64).to(torch.bfloat16) for _ in range(3))
    with tuning.use_tuner(tuner):
        backend.attend(q, k, v, causal=True)
        # the same lengths rounded up to a power of two: no second measurement
        backend.attend(q[:, :, :17], k[:, :, :17], v[:, :, :17], causal=True)
    assert timed == ["torch", "kernel"]
    (name,) = tuner.decisions()
    assert name.startswith("prompt-attention/bfloat16/rows=1/heads=2/kv-heads=2/dim=64/queries=32/keys=32/")
