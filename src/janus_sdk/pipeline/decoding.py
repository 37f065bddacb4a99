"""The two autoregressive loops: text tokens for chat, image codes for text-to-image.

Each is one short function over the component interfaces: prefill the prompt into a preallocated cache
once, then one position per step, the head applied to the last position only. Progress goes to an optional
callback, which
can cancel by returning False.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from janus_sdk.errors import GenerationCancelled
from janus_sdk.interfaces import (
    Aligner,
    GenerationHead,
    Guidance,
    HistorySampler,
    KVCache,
    LLMBackbone,
    Sampler,
)


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


class PerRowSampler:
    """Each row picked by a sampler and a generator of its own, on that row's logits alone: a row draws what
    a one-row run with its generator would, whatever else shares the batch (per-image seeds). The loops'
    `generator` is not used (pass None)."""

    uses_history = True

    def __init__(self, samplers: Sequence[Sampler], generators: Sequence[torch.Generator]) -> None:
        if len(samplers) != len(generators):
            raise ValueError(f"{len(samplers)} samplers for {len(generators)} generators")
        self.samplers, self.generators = list(samplers), list(generators)

    def __call__(
        self, logits: Tensor, generator: torch.Generator | None, *, history: Tensor | None = None
    ) -> Tensor:
        picked = []
        for i, (sampler, own) in enumerate(zip(self.samplers, self.generators, strict=True)):
            row = logits[i : i + 1]
            picked.append(
                sampler(row, own) if history is None else pick(sampler, row, own, history[i : i + 1])
            )
        return torch.cat(picked)


def new_cache(llm: LLMBackbone, rows: int, length: int, padding: Tensor | None) -> KVCache:
    """A cache for `rows` rows of `length` positions; `padding` (left padding per row) only where given, so a
    backbone without it still runs prompts of one length."""
    return llm.new_cache(rows, length) if padding is None else llm.new_cache(rows, length, padding)


def generate_text_ids(
    llm: LLMBackbone,
    inputs_embeds: Tensor,
    sampler: Sampler,
    *,
    max_new_tokens: int | Sequence[int],
    eos_id: int,
    generator: torch.Generator | None,
    on_step: ProgressCallback | None = None,
    padding: Tensor | None = None,
) -> Iterator[Tensor]:
    """Yield each step's new token ids [B] for prompts [B, T, hidden] (left-padded by `padding`, see
    LLMBackbone.new_cache), -1 in the rows that have ended: at their EOS (not yielded) or after their
    max_new_tokens (one count for every row, or one per row). Stops when every row has ended."""
    rows, prompt_len = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    limits = torch.as_tensor(max_new_tokens, device=device).expand(rows)
    longest = int(limits.max())
    cache = new_cache(llm, rows, prompt_len + longest, padding)
    tokens = torch.empty(rows, longest, dtype=torch.long, device=device)
    ended = torch.zeros(rows, dtype=torch.bool, device=device)
    report = _Reporter(on_step, longest, rows)
    hidden = llm.hidden_states(inputs_embeds, cache, 0)[:, -1]
    for step in range(longest):
        token = pick(sampler, llm.text_logits(hidden).float(), generator, tokens[:, :step])
        tokens[:, step] = token
        ended |= token == eos_id
        if bool(ended.all()):
            return
        yield token.masked_fill(ended, -1)
        report(step + 1)
        ended |= limits <= step + 1
        if bool(ended.all()):
            return
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
    padding: Tensor | None = None,
) -> Tensor:
    """Sample `num_tokens` image codes for each sample of `prompt_embeds` [n * branches, L, hidden]
    (left-padded by `padding` where prompts differ in length, see LLMBackbone.new_cache).

    Rows of one sample are adjacent, as `guidance.rows` built them ([cond, uncond] under classifier-free
    guidance); every row of a sample is fed the sample's code, embedded with gen_embed + gen_aligner; the
    guidance combines them knowing the step. Returns codes [n, num_tokens] (int64).
    """
    rows, prompt_len = prompt_embeds.shape[:2]
    branches = guidance.num_branches
    codes = torch.empty(rows // branches, num_tokens, dtype=torch.long, device=prompt_embeds.device)
    cache = new_cache(llm, rows, prompt_len + num_tokens, padding)
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
