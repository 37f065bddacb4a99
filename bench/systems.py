"""Each system's own way of running the workloads, instrumented only by a per-token clock mark.

All three produce tokens the way their users would: ours through `JanusPipeline.generate_image_codes` and the
SDK's text decoding loop, transformers through `JanusForConditionalGeneration.generate`, the reference through
the loop of DeepSeek's `generation_inference.py` and, for text, the `language_model.generate` call of its
`inference.py`. End-of-sequence stopping is switched off everywhere so every run decodes the asked-for count.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from transformers import JanusForConditionalGeneration, LlamaModel

from janus_sdk.errors import GenerationCancelled
from janus_sdk.kinds import ComponentKind
from janus_sdk.pipeline.decoding import Progress, generate_text_ids
from janus_sdk.pipeline.janus import JanusPipeline
from janus_sdk.registry import BuildContext
from measure import StepClock
from models import ReferenceJanus

NUM_IMAGE_TOKENS = 576
CFG_WEIGHT = 5.0
TEMPERATURE = 1.0
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
"""This transformers' name of the KV cache argument and output (5.24: `cache`; earlier: `past_key_values`)."""


class System(Protocol):
    """What a workload needs; prompt_ids is the text-to-image prompt (BOS .. <begin_of_image>)."""

    module: nn.Module  # everything holding the system's weights

    def text_to_image(self, prompt_ids: list[int], n: int, tokens: int, clock: StepClock) -> None:
        """Sample `tokens` image tokens for n images (2n rows with CFG), marking the clock once per token."""

    def understand(self, embeds: Tensor, tokens: int, clock: StepClock) -> None:
        """Greedy-decode `tokens` text tokens after prompt embeddings [1, T, hidden], one mark per token."""

    def vq_decode(self, codes: Tensor) -> Tensor | None:
        """Image codes [n, 576] -> pixels; None when the system has no VQ decoder of its own."""


class Ours:
    """janus-sdk: the pipeline's own text-to-image entry point and its text decoding loop."""

    def __init__(self, pipe: JanusPipeline, prompt: str) -> None:
        self.pipe = pipe
        self.module: nn.Module = pipe.model
        self.prompt = prompt
        self.greedy = pipe.registry.get(ComponentKind.SAMPLER, "greedy").build(
            {}, BuildContext(device=pipe.device, dtype=pipe.dtype)
        )

    def text_to_image(self, prompt_ids: list[int], n: int, tokens: int, clock: StepClock) -> None:
        def on_step(progress: Progress) -> bool:
            clock.mark()
            return progress.step < tokens or tokens >= progress.total

        with suppress(GenerationCancelled):
            self.pipe.generate_image_codes(self.prompt, n=n, seed=0, on_step=on_step)

    def understand(self, embeds: Tensor, tokens: int, clock: StepClock) -> None:
        llm = self.pipe.model.language_model
        for _ in generate_text_ids(
            llm,
            embeds,
            self.greedy,
            max_new_tokens=tokens,
            eos_id=-1,
            generator=None,
            on_step=lambda _: clock.mark(),
        ):
            pass

    def vq_decode(self, codes: Tensor) -> Tensor:
        out: Tensor = self.pipe.model.gen_vision_model.decode(codes)
        return out


class _Enough(Exception):
    """Raised from inside a peer's generate to end a bounded run."""


@contextmanager
def marking(head: nn.Module, clock: StepClock, stop_after: int | None = None) -> Iterator[None]:
    """Mark the clock after every call of `head` (once per generated token), ending the run with _Enough after
    `stop_after` calls; a forward hook, so the peer's own generate runs unchanged."""
    calls = 0

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal calls
        clock.mark()
        calls += 1
        if stop_after is not None and calls >= stop_after:
            raise _Enough

    handle = head.register_forward_hook(hook)
    try:
        yield
    except _Enough:
        pass
    finally:
        handle.remove()


class TransformersPeer:
    """transformers' JanusForConditionalGeneration.generate, image and text mode."""

    def __init__(self, model: JanusForConditionalGeneration) -> None:
        self.model = model
        self.module: nn.Module = model

    def text_to_image(self, prompt_ids: list[int], n: int, tokens: int, clock: StepClock) -> None:
        ids = cast(torch.LongTensor, torch.tensor([prompt_ids] * n, device=self.model.device))
        stop = tokens if tokens < NUM_IMAGE_TOKENS else None
        with marking(self.model.model.generation_head, clock, stop):
            self.model.generate(
                ids,
                attention_mask=cast(torch.LongTensor, torch.ones_like(ids)),
                generation_mode="image",
                do_sample=True,
                top_k=0,
                temperature=TEMPERATURE,
                guidance_scale=CFG_WEIGHT,
            )

    def understand(self, embeds: Tensor, tokens: int, clock: StepClock) -> None:
        mask = cast(torch.LongTensor, torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device))
        with marking(self.model.lm_head, clock):
            self.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=tokens,
                do_sample=False,
                eos_token_id=None,
            )

    def vq_decode(self, codes: Tensor) -> Tensor:
        out: Tensor = self.model.decode_image_tokens(codes)
        return out


class ReferencePeer:
    """DeepSeek's reference code: generation_inference.py's loop, inference.py's language_model.generate."""

    def __init__(self, model: ReferenceJanus, pad_id: int, bos_id: int) -> None:
        self.model, self.pad_id, self.bos_id = model, pad_id, bos_id
        self.module: nn.Module = model

    def text_to_image(self, prompt_ids: list[int], n: int, tokens: int, clock: StepClock) -> None:
        generate_reference(
            self.model, prompt_ids, self.pad_id, parallel_size=n, num_tokens=tokens, clock=clock
        )

    def understand(self, embeds: Tensor, tokens: int, clock: StepClock) -> None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        with marking(self.model.language_model.lm_head, clock):
            self.model.language_model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                pad_token_id=self.pad_id,
                bos_token_id=self.bos_id,
                eos_token_id=None,
                max_new_tokens=tokens,
                do_sample=False,
                use_cache=True,
            )

    def vq_decode(self, codes: Tensor) -> None:
        return None


def generate_reference(
    mmgpt: ReferenceJanus,
    prompt_ids: list[int],
    pad_id: int,
    *,
    parallel_size: int,
    num_tokens: int,
    clock: StepClock,
    cfg_weight: float = CFG_WEIGHT,
    temperature: float = TEMPERATURE,
) -> Tensor:
    """The text-to-image loop of DeepSeek's generation_inference.py, statement for statement.

    Differences: `num_tokens` may stop it early; the cache argument and attribute take this transformers'
    name (`CACHE_ARG`); tensors go to the model's device instead of `.cuda()`; a clock mark per token.
    """
    device = mmgpt.gen_embed.weight.device
    input_ids = torch.LongTensor(prompt_ids)

    tokens = torch.zeros((parallel_size * 2, len(input_ids)), dtype=torch.int).to(device)
    for i in range(parallel_size * 2):
        tokens[i, :] = input_ids
        if i % 2 != 0:
            tokens[i, 1:-1] = pad_id

    inputs_embeds = mmgpt.language_model.get_input_embeddings()(tokens)

    generated_tokens = torch.zeros((parallel_size, num_tokens), dtype=torch.int).to(device)

    cache = None
    for i in range(num_tokens):
        outputs = mmgpt.language_model.model(
            inputs_embeds=inputs_embeds, use_cache=True, **{CACHE_ARG: cache}
        )
        cache = getattr(outputs, CACHE_ARG)
        hidden_states = outputs.last_hidden_state

        logits = mmgpt.gen_head(hidden_states[:, -1, :])
        logit_cond = logits[0::2, :]
        logit_uncond = logits[1::2, :]

        logits = logit_uncond + cfg_weight * (logit_cond - logit_uncond)
        probs = torch.softmax(logits / temperature, dim=-1)

        next_token = torch.multinomial(probs, num_samples=1)
        generated_tokens[:, i] = next_token.squeeze(dim=-1)

        next_token = torch.cat([next_token.unsqueeze(dim=1), next_token.unsqueeze(dim=1)], dim=1).view(-1)
        img_embeds = mmgpt.prepare_gen_img_embeds(next_token)
        inputs_embeds = img_embeds.unsqueeze(dim=1)
        clock.mark()
    return generated_tokens
