"""The DeepSeek-LLM backbone against the reference: prompt logits, hidden states, cached greedy decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from janus_plugins.attention import EagerAttention, SDPAAttention, end_aligned_causal_mask
from janus_plugins.deepseek_llm import DeepSeekLLM, DeepSeekLLMConfig
from janus_sdk.errors import InputError

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "golden" / "golden.safetensors")


def tiny_llm(attention: object, **settings: object) -> DeepSeekLLM:
    params = json.loads((FIXTURE / "checkpoint" / "config.json").read_text())["language_config"]
    params = {k: v for k, v in params.items() if k not in ("model_type", "torch_dtype")} | settings
    config = DeepSeekLLMConfig(**params)
    weights = load_file(FIXTURE / "checkpoint" / "model.safetensors")
    prefix = "language_model."
    state = {k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)}
    with torch.device("meta"):
        model = DeepSeekLLM(config, attention)  # type: ignore[arg-type]
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


@pytest.mark.parametrize("attention", [SDPAAttention(), EagerAttention()], ids=["sdpa", "eager"])
def test_prompt_logits_and_final_hidden_match_reference(
    attention: object, golden: dict[str, torch.Tensor]
) -> None:
    llm = tiny_llm(attention)
    embeds = golden["und_inputs_embeds"]
    with torch.inference_mode():
        hidden = llm.hidden_states(embeds, llm.new_cache(1, embeds.shape[1]), 0)
        logits = llm.text_logits(hidden)
    torch.testing.assert_close(hidden, golden["und_prompt_hidden_states"][-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, golden["und_prompt_logits"], atol=2e-4, rtol=0)


def test_kv_cached_greedy_decoding_matches_reference(golden: dict[str, torch.Tensor]) -> None:
    llm = tiny_llm(SDPAAttention())
    embeds = golden["und_inputs_embeds"]
    cache = llm.new_cache(1, embeds.shape[1] + 16)
    ids, step_logits = [], []
    with torch.inference_mode():
        hidden = llm.hidden_states(embeds, cache, 0)[:, -1]
        for step in range(16):
            logits = llm.text_logits(hidden)
            step_logits.append(logits[0])
            token = logits.argmax(-1)
            ids.append(int(token))
            hidden = llm.hidden_states(llm.embed_tokens(token[:, None]), cache, embeds.shape[1] + step)[:, -1]
    assert ids == golden["greedy_ids"].tolist()
    torch.testing.assert_close(torch.stack(step_logits), golden["greedy_step_logits"], atol=2e-4, rtol=0)


@pytest.mark.parametrize("attention", [SDPAAttention(), EagerAttention()], ids=["sdpa", "eager"])
def test_decode_at_a_device_position_equals_decode_at_an_int_position(
    attention: object, golden: dict[str, torch.Tensor]
) -> None:
    """The CUDA-graph step's form (position as a tensor, whole cache masked past it) computes what the sliced
    form does; checked here on the CPU, replayed as a graph in tests/test_cuda.py."""
    llm = tiny_llm(attention)
    embeds = golden["und_inputs_embeds"][:, :30]
    steps = torch.randn(4, 1, 1, embeds.shape[-1])
    caches = [llm.new_cache(1, 40), llm.new_cache(1, 40)]
    with torch.inference_mode():
        for cache in caches:
            cache.keys.zero_(), cache.values.zero_()  # as a captured step's cache is made: it reads it all
            llm.hidden_states(embeds, cache, 0)
        for i, step in enumerate(steps):
            by_int = llm.run_layers(step, caches[0], 30 + i)
            by_tensor = llm.run_layers(step, caches[1], torch.tensor([30 + i]))
            torch.testing.assert_close(by_tensor, by_int, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[1].keys[:, :, :, :34], caches[0].keys[:, :, :, :34])


@pytest.mark.parametrize("attention", [SDPAAttention(), EagerAttention()], ids=["sdpa", "eager"])
@pytest.mark.parametrize("fused", [True, False], ids=["kernel-ops-where-usable", "torch-ops"])
def test_a_step_never_reads_cache_positions_not_yet_written(
    attention: object, fused: bool, golden: dict[str, torch.Tensor]
) -> None:
    """new_cache leaves its memory unwritten (zeroing four images' cache cost 0.3 s): NaN there must not reach
    a prefill or a decode step."""
    llm = tiny_llm(attention, fused_layer_ops=fused)
    embeds = golden["und_inputs_embeds"][:, :30]
    steps = torch.randn(4, 1, 1, embeds.shape[-1])
    caches = [llm.new_cache(1, 40), llm.new_cache(1, 40)]
    caches[0].keys.fill_(float("nan")), caches[0].values.fill_(float("nan"))
    caches[1].keys.zero_(), caches[1].values.zero_()
    with torch.inference_mode():
        outs = [[llm.hidden_states(embeds, cache, 0)] for cache in caches]
        for i, step in enumerate(steps):
            for out, cache in zip(outs, caches, strict=True):
                out.append(llm.hidden_states(step, cache, 30 + i))
    for dirty, clean in zip(*outs, strict=True):
        assert torch.isfinite(dirty).all()
        torch.testing.assert_close(dirty, clean, atol=0, rtol=0)


def test_chunked_prefill_equals_one_shot_prefill(golden: dict[str, torch.Tensor]) -> None:
    """A prompt fed in two blocks (end-aligned causal mask) gives the same states as one block."""
    llm = tiny_llm(SDPAAttention())
    embeds = golden["und_inputs_embeds"][:, :40]
    with torch.inference_mode():
        whole = llm.hidden_states(embeds, llm.new_cache(1, 40), 0)
        cache = llm.new_cache(1, 40)
        first = llm.hidden_states(embeds[:, :25], cache, 0)
        second = llm.hidden_states(embeds[:, 25:], cache, 25)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=1e-5)


def test_sequence_beyond_cache_is_a_clear_error(golden: dict[str, torch.Tensor]) -> None:
    llm = tiny_llm(SDPAAttention())
    with pytest.raises(InputError, match="does not fit the KV cache of 8"):
        llm.hidden_states(golden["und_inputs_embeds"][:, :10], llm.new_cache(1, 8), 0)


def test_end_aligned_causal_mask() -> None:
    mask = end_aligned_causal_mask(2, 4, torch.device("cpu"), torch.float32)
    assert torch.isinf(mask).tolist() == [[False, False, False, True], [False, False, False, False]]


def test_sdpa_and_eager_agree_on_end_aligned_causal_blocks() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (3, 7, 7))
    a = SDPAAttention().attend(q, k, v, causal=True)
    b = EagerAttention().attend(q, k, v, causal=True)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_config_defaults_are_llama_defaults_for_the_7b_file() -> None:
    """The official 7B language_config omits the sizes; LlamaConfig's defaults must fill them."""
    config = DeepSeekLLMConfig(max_position_embeddings=16384, num_hidden_layers=30, vocab_size=102400)
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads) == (4096, 11008, 32)


def test_config_rejects_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        DeepSeekLLMConfig(hidden_size=100, num_attention_heads=3)


def test_config_takes_only_the_silu_activation() -> None:
    """The MLP is LLaMA's SwiGLU; a config asking for another activation is refused, not run as silu."""
    with pytest.raises(ValueError, match=r"hidden_act\s+Input should be 'silu'"):
        DeepSeekLLMConfig(hidden_act="gelu")
