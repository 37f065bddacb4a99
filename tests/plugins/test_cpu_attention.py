"""The kernel attention backends (`avx2` on x86, `neon` on ARM64: one source over the architecture's vector
lanes): one query position over a cache, as the reference math computes it."""

from __future__ import annotations

import pytest
import torch

from janus_plugins.attention import cpu as cpu_attention
from janus_plugins.attention import math_attention
from janus_plugins.attention.cpu import KernelAttention
from janus_plugins.cpu_kernels import AVX2, NEON, target
from janus_sdk.errors import BackendUnavailableError


@pytest.fixture(scope="module")
def backend() -> KernelAttention:
    """This machine's build: avx2 on x86, neon on ARM64."""
    here = target()
    if here is None:
        pytest.skip("the kernels have no build for this CPU")
    attention = KernelAttention(here.isa, here.isa)
    try:
        attention.check(torch.device("cpu"), torch.float32)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    return attention


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    group = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(group, dim=1) for t in (k, v))
    return math_attention(q.double(), k, v, None, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "length"), [(2, 4, 4, 1), (2, 4, 4, 37), (3, 8, 2, 600)]
)
def test_decode_step_matches_the_reference_math_over_a_cache_view(
    backend: KernelAttention, dtype: torch.dtype, rows: int, heads: int, kv_heads: int, length: int
) -> None:
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
