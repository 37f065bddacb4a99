"""The two autoregressive loops: text tokens for chat, image codes for text-to-image.

Each is one short function over the component interfaces: prefill the prompt into a preallocated cache
once, then one position per step, the head applied to the last position only. Progress goes to an optional
callback, which
can cancel by returning False.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from janus_sdk.errors import GenerationCancelled
from janus_sdk.interfaces import Aligner, GenerationHead, Guidance, HistorySampler, LLMBackbone, Sampler


@dataclass(frozen=True)
class Progress:
    """Where a generation stands, handed to `on_step` after every token."""

    step: int
    total: int
    rows: int
    elapsed: float

    @property
    def tokens_per_second(self) -> float:
        """Tokens per second over all rows so far."""
        return self.step * self.rows / self.elapsed if self.elapsed > 0 else 0.0


ProgressCallback = Callable[[Progress], "bool | None"]


class _Reporter:
    def __init__(self, on_step: ProgressCallback | None, total: int, rows: int) -> None:
        self.on_step, self.total, self.rows, self.start = on_step, total, rows, time.perf_counter()

    def __call__(self, step: int) -> None:
        if self.on_step is not None:
            progress = Progress(step, self.total, self.rows, time.perf_counter() - self.start)
            if self.on_step(progress) is False:
                raise GenerationCancelled(
                    f"generation cancelled by the progress callback at step {step}/{self.total}"
                )


def pick(sampler: Sampler, logits: Tensor, generator: torch.Generator | None, history: Tensor) -> Tensor:
    """The sampler's ids for `logits`; `history` (the ids generated so far, [B, t]) goes to a sampler that
    asks for it with `uses_history` (see Sampler)."""
    if getattr(sampler, "uses_history", False):
        return cast(HistorySampler, sampler)(logits, generator, history=history)
    return sampler(logits, generator)


def generate_text_ids(
    llm: LLMBackbone,
    inputs_embeds: Tensor,
    sampler: Sampler,
    *,
    max_new_tokens: int,
    eos_id: int,
    generator: torch.Generator | None,
    on_step: ProgressCallback | None = None,
) -> Iterator[int]:
    """Yield new token ids for a one-row prompt [1, T, hidden] until EOS (not yielded) or max_new_tokens."""
    prompt_len = inputs_embeds.shape[1]
    cache = llm.new_cache(1, prompt_len + max_new_tokens)
    tokens = torch.empty(1, max_new_tokens, dtype=torch.long, device=inputs_embeds.device)
    report = _Reporter(on_step, max_new_tokens, 1)
    hidden = llm.hidden_states(inputs_embeds, cache, 0)[:, -1]
    for step in range(max_new_tokens):
        token = pick(sampler, llm.text_logits(hidden).float(), generator, tokens[:, :step])
        if int(token) == eos_id:
            return
        tokens[:, step] = token
        yield int(token)
        report(step + 1)
        if step + 1 < max_new_tokens:
            hidden = llm.hidden_states(llm.embed_tokens(token[:, None]), cache, prompt_len + step)[:, -1]


def generate_image_codes(
    llm: LLMBackbone,
    prompt_embeds: Tensor,
    *,
    gen_head: GenerationHead,
    gen_embed: nn.Embedding,
    gen_aligner: Aligner,
    guidance: Guidance,
    sampler: Sampler,
    num_tokens: int,
    generator: torch.Generator | None,
    on_step: ProgressCallback | None = None,
) -> Tensor:
    """Sample `num_tokens` image codes for each sample of `prompt_embeds` [n * branches, L, hidden].

    Rows of one sample are adjacent, as `guidance.rows` built them ([cond, uncond] under classifier-free
    guidance); every row of a sample is fed the sample's code, embedded with gen_embed + gen_aligner; the
    guidance combines them knowing the step. Returns codes [n, num_tokens] (int64).
    """
    rows, prompt_len = prompt_embeds.shape[:2]
    branches = guidance.num_branches
    codes = torch.empty(rows // branches, num_tokens, dtype=torch.long, device=prompt_embeds.device)
    cache = llm.new_cache(rows, prompt_len + num_tokens)
    report = _Reporter(on_step, num_tokens, rows)
    hidden = llm.hidden_states(prompt_embeds, cache, 0)[:, -1]
    for step in range(num_tokens):
        logits = guidance.combine(gen_head(hidden).float(), step, num_tokens)
        codes[:, step] = pick(sampler, logits, generator, codes[:, :step])
        report(step + 1)
        if step + 1 < num_tokens:
            fed = gen_aligner(gen_embed(codes[:, step].repeat_interleave(branches)))
            hidden = llm.hidden_states(fed[:, None], cache, prompt_len + step)[:, -1]
    return codes
