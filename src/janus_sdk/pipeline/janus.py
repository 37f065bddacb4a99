"""`JanusPipeline`: one object that owns the components of a Janus model and answers chat and text-to-image.

It is written against the component interfaces only; which class fills each slot comes from the PipelineConfig
and the plugin registry. Calls are serialised by a lock, so one pipeline can be shared between threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
from PIL import Image
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from torch import Tensor

from janus_sdk.checkpoint import load_state_into, resolve_model_source
from janus_sdk.checkpoint.layouts import WeightSource
from janus_sdk.checkpoint.saving import CheckpointState, save_checkpoint
from janus_sdk.config import GenerationConfig, ImageGenerationConfig, PipelineConfig
from janus_sdk.config.components import ComponentSpec
from janus_sdk.config.generation import MAX_NEW_TOKENS
from janus_sdk.config.pipeline import AUTO, SLOT_KINDS
from janus_sdk.devices import resolve_device, resolve_dtype
from janus_sdk.errors import ConfigError, InputError, PluginError
from janus_sdk.images import ImageProcessor, ImageSource, to_pil, to_uint8
from janus_sdk.interfaces import (
    AttentionBackend,
    ChatTemplate,
    LinearBackend,
    PreparedBackbone,
    Sampler,
    TextTokenizer,
)
from janus_sdk.kinds import ComponentKind
from janus_sdk.pipeline.decoding import (
    PerRowSampler,
    ProgressCallback,
    generate_image_codes,
    generate_text_ids,
)
from janus_sdk.pipeline.model import MODULE_SLOTS, JanusModel
from janus_sdk.pipeline.strategies import CheckedGuidance, CheckedSampler
from janus_sdk.plugins import PluginHost, get_plugin_host
from janus_sdk.prompts import (
    Message,
    UnderstandingInputs,
    build_generation_prompt_ids,
    build_understanding_inputs,
    left_pad,
    sample_rows,
)
from janus_sdk.registry import BuildContext, Registry, describe_validation_error
from janus_sdk.text_stream import ChatBatchStream, ChatStream, StreamDecoder, TokenUsage
from janus_sdk.tuning import Decision, get_tuner, probe_generator

log = logging.getLogger(__name__)
_Prompt = TypeVar("_Prompt")
_Built = TypeVar("_Built")

Seed = int | torch.Generator | None
Seeds = Seed | Sequence[int]
"""One seed (or generator) drawn from by a whole call, as the reference script draws; or a list of ints,
one per image (or answer), each drawn from by its image alone."""
Images = Sequence[ImageSource] | ImageSource | None
"""A chat's images: a list of them, one given bare, or none."""
ChatPrompt = str | Sequence[Message | dict[str, Any]]
"""A prompt of a batch of chats: a question (asked about the batch's images) or a whole conversation."""
TUNED_BATCHES = (1, 2, 8)
"""Rows of a chat, of one image with guidance and of four: the decode steps `tune` measures."""


class JanusPipeline:
    """Chat about images and generate images with a Janus model.

    >>> pipe = JanusPipeline.from_pretrained("path/to/Janus-Pro-1B")          # doctest: +SKIP
    >>> pipe.chat("Describe this image.", images=["cat.png"])                 # doctest: +SKIP
    >>> pipe.generate_images("a red fox in snow", n=4, seed=0)                # doctest: +SKIP
    """

    def __init__(
        self,
        config: PipelineConfig,
        model: JanusModel,
        tokenizer: TextTokenizer,
        chat_template: ChatTemplate,
        attention: AttentionBackend,
        registry: Registry,
        *,
        linear: LinearBackend | None = None,
    ) -> None:
        """Wrap loaded components; `linear` is the backend that converted `model`'s per-token linear layers
        (None: they are torch's own)."""
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.registry = registry
        self.image_processor = ImageProcessor(config.image_processor)
        self.attention = attention
        self.linear = linear
        self.device, self.dtype = model.gen_embed.weight.device, model.gen_embed.weight.dtype
        self._lock = threading.RLock()

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attention: str | None = None,
        linear: str | None = None,
        plugins: PluginHost | None = None,
    ) -> JanusPipeline:
        """Load a checkpoint from a local directory or a Hugging Face Hub id: the official layout, or any
        layout a plugin reads (the `open_checkpoint_layout` hook, e.g. transformers' Janus layout).

        `dtype` takes a torch dtype or a name ("bfloat16", "bf16", "float32", "auto"); an invalid argument is
        reported as this call's, not as the checkpoint's config.json's."""
        path = resolve_model_source(source)
        overrides: dict[str, Any] = {"device": device, "dtype": dtype}
        if attention is not None:
            overrides["attention"] = {"name": attention}
        if linear is not None:
            overrides["linear"] = {"name": linear}
        host = plugins or get_plugin_host()
        view = host.open_checkpoint_layout(path)
        with contextlib.ExitStack() as on_error:
            on_error.callback(view.weights.close)
            config = PipelineConfig.from_layout(
                view.pipeline_dict,
                path,
                registry=host.registry,
                overrides_source="arguments of JanusPipeline.from_pretrained",
                **overrides,
            )
            on_error.pop_all()
        return cls._assemble(config, host, path, view.weights)

    @classmethod
    def from_config(
        cls, config: PipelineConfig | dict[str, Any] | str | Path, *, plugins: PluginHost | None = None
    ) -> JanusPipeline:
        """Build every component the config names and load the checkpoint's weights into them (the checkpoint
        in any layout a plugin reads, else the official one).

        `plugins` is the plugin host to take components from (default: the process-wide one, with every
        installed plugin)."""
        host = plugins or get_plugin_host()
        registry = host.registry
        if isinstance(config, (str, Path)):
            config = PipelineConfig.from_file(config, registry=registry)
        elif isinstance(config, dict):
            config = PipelineConfig.parse(config, registry=registry)
        if config.checkpoint is None:
            raise ConfigError(
                "the config names no checkpoint: set `checkpoint` to a model directory or hub id"
            )
        path = resolve_model_source(config.checkpoint)
        return cls._assemble(config, host, path, host.open_checkpoint_layout(path).weights)

    @classmethod
    def _assemble(
        cls, config: PipelineConfig, host: PluginHost, path: Path, weights: WeightSource
    ) -> JanusPipeline:
        """Build the components of a validated config and fill them from `weights` (official names) of the
        checkpoint directory `path`."""
        registry = host.registry
        get_tuner()  # a bad JANUS_SDK_TUNE is reported now, not in the middle of a generation
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        attention = build_backend(
            host, ComponentKind.ATTENTION_BACKEND, config.attention, path, device, dtype
        )
        linear = build_backend(host, ComponentKind.LINEAR_BACKEND, config.linear, path, device, dtype)
        context = BuildContext(path, device, dtype, attention)
        model = build_model(config, registry, context)
        weightless = [f"{name}.*" for name, module in model.named_children() if not module.state_dict()]
        with contextlib.closing(weights):
            load_state_into(model, weights, dtype=dtype, device=device, ignore=weightless)
        model.convert_per_token_linears(linear)
        model.eval()
        if isinstance(model.language_model, PreparedBackbone):
            model.language_model.prepare(device, dtype)
        tokenizer = _build(
            registry,
            ComponentKind.TEXT_TOKENIZER,
            config.text_tokenizer.name,
            config.text_tokenizer.params,
            context,
        )
        template = _build(
            registry,
            ComponentKind.CHAT_TEMPLATE,
            config.chat_template.name,
            config.chat_template.params,
            context,
        )
        log.info("loaded %s on %s as %s", path, device, dtype)
        return cls(config, model, tokenizer, template, attention, registry, linear=linear)

    @property
    def components(self) -> dict[str, Any]:
        """Every component by slot name, e.g. to inspect or to share weights with another pipeline."""
        slots = {slot: getattr(self.model, module) for module, slot in MODULE_SLOTS.items()}
        return {
            **slots,
            "gen_embed": self.model.gen_embed,
            "attention": self.attention,
            "linear": self.linear,
            "text_tokenizer": self.tokenizer,
            "chat_template": self.chat_template,
        }

    def save_pretrained(
        self, directory: str | Path, *, overwrite: bool = False, max_shard_size: int | str | None = None
    ) -> Path:
        """Write this pipeline's model as a checkpoint in the official layout that `from_pretrained` loads
        back to the same outputs: safetensors weights in the pipeline's dtype (one file, or shards of at most
        `max_shard_size`, e.g. "5GB"), config.json and the processor files (the loaded checkpoint's own where
        they still describe this model) and the tokenizer files. Returns the directory.

        Nothing is lost: the files are written into a temporary sibling that replaces `directory` only once
        complete; a non-empty `directory` is replaced only with `overwrite=True` and only when it holds a
        checkpoint; the checkpoint this pipeline was loaded from is never written to. Weights a linear backend
        converted (int8) have no place in the layout: such a pipeline refuses, naming the backend; weights a
        backend only repacked (the `avx2` kernel's bfloat16 panels) are written back as the checkpoint holds
        them, one tensor at a time.
        Settings that are not part of a checkpoint (device, backends, generation defaults) are not saved."""
        if self.config.checkpoint is None:
            raise ConfigError(
                "save_pretrained copies the tokenizer files of the checkpoint this pipeline was loaded from, "
                "but its config names no checkpoint; set `config.checkpoint` to that directory"
            )
        source = resolve_model_source(self.config.checkpoint)
        with self._lock:
            # names, shapes and kinds of dtype only: built on the meta device, no second copy of the weights
            context = BuildContext(source, torch.device("meta"), self.dtype, self.attention)
            layout = build_model(self.config, self.registry, context).state_dict()
            return save_checkpoint(
                directory,
                CheckpointState(self.model),
                layout,
                self.config,
                source=source,
                registry=self.registry,
                converted_by=self.linear.name if self.linear is not None else "torch",
                overwrite=overwrite,
                max_shard_size=max_shard_size,
            )

    # -- understanding ---------------------------------------------------------------------------------------
    def chat(
        self,
        prompt: str | None = None,
        *,
        images: Images = (),
        messages: Sequence[Message | dict[str, Any]] | None = None,
        system_prompt: str | None = None,
        seed: Seed = None,
        on_step: ProgressCallback | None = None,
        **settings: Any,
    ) -> str:
        """Answer a prompt (with optional images) or continue a conversation; returns the whole answer."""
        return "".join(
            self.stream_chat(
                prompt,
                images=images,
                messages=messages,
                system_prompt=system_prompt,
                seed=seed,
                on_step=on_step,
                **settings,
            )
        )

    def stream_chat(
        self,
        prompt: str | None = None,
        *,
        images: Images = (),
        messages: Sequence[Message | dict[str, Any]] | None = None,
        system_prompt: str | None = None,
        seed: Seed = None,
        on_step: ProgressCallback | None = None,
        **settings: Any,
    ) -> ChatStream:
        """Like `chat`, yielding the answer's text as it is decoded; the stream's `usage` counts the prompt's
        and the answer's tokens.

        settings: any GenerationConfig field (max_new_tokens, sampler, do_sample, temperature, top_k, top_p,
        repetition_penalty, presence_penalty, frequency_penalty), e.g.
        ``sampler={"name": "min-p", "params": {"p": 0.05}}``.
        """
        gen = merge_settings(self.config.generation, settings, GenerationConfig, self.registry)
        _check_callback(on_step)
        prepared = [self._chat_inputs(prompt, images, messages, system_prompt, gen.max_new_tokens)]
        seeds = _generators(seed if seed is not None else gen.seed, 1, "answers", self.device)
        return ChatStream(self._answers(prepared, gen, seeds, on_step))

    def chat_batch(
        self,
        prompts: Sequence[ChatPrompt],
        *,
        images: Images = (),
        system_prompt: str | None = None,
        seed: Seeds = None,
        max_new_tokens: int | Sequence[int] | None = None,
        on_step: ProgressCallback | None = None,
        **settings: Any,
    ) -> list[str]:
        """Answer several prompts together, each step one forward pass over all of them (prompts of
        different lengths left-padded); returns the answers in order. Each prompt is a string, asked about
        `images` (the same for every string), or a conversation: a list of messages, as `chat`'s messages=.

        seed: an int or a torch.Generator draws every answer from one generator; a list of ints, one per
        prompt, gives answer i `chat(prompt_i, seed=seed[i])`'s draws. max_new_tokens: one limit for all, or
        one per prompt. settings: as for `stream_chat`."""
        stream = self.stream_chat_batch(
            prompts,
            images=images,
            system_prompt=system_prompt,
            seed=seed,
            max_new_tokens=max_new_tokens,
            on_step=on_step,
            **settings,
        )
        answers = [""] * len(stream.limits)
        for index, piece in stream:
            answers[index] += piece
        return answers

    def stream_chat_batch(
        self,
        prompts: Sequence[ChatPrompt],
        *,
        images: Images = (),
        system_prompt: str | None = None,
        seed: Seeds = None,
        max_new_tokens: int | Sequence[int] | None = None,
        on_step: ProgressCallback | None = None,
        **settings: Any,
    ) -> ChatBatchStream:
        """`chat_batch` as it is decoded: yields `(index, piece)` pairs, the answers interleaved step by step
        (a server answering concurrent clients streams each its own); `usage[i]` and `finish_reason(i)` once
        it is exhausted. Arguments as for `chat_batch`."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise InputError(
                "chat_batch takes a non-empty list of prompts (strings or conversations), got "
                f"{prompts!r:.40}; for one prompt use chat"
            )
        if isinstance(max_new_tokens, int):
            settings["max_new_tokens"] = max_new_tokens
        gen = merge_settings(self.config.generation, settings, GenerationConfig, self.registry)
        _check_callback(on_step)
        limits = _answer_limits(max_new_tokens, len(prompts), gen)

        def inputs_of(item: tuple[ChatPrompt, int]) -> tuple[UnderstandingInputs, int]:
            prompt, limit = item
            if isinstance(prompt, str):
                return self._chat_inputs(prompt, images, None, system_prompt, limit)
            if not isinstance(prompt, (list, tuple)):
                kind = type(prompt).__name__
                raise InputError(
                    f"a prompt must be a string or a conversation (a list of messages), got {kind}"
                )
            return self._chat_inputs(None, (), prompt, system_prompt, limit)

        prepared = _per_prompt(list(zip(prompts, limits, strict=True)), inputs_of)
        seeds = _generators(seed if seed is not None else gen.seed, len(prepared), "answers", self.device)
        return self._answers(prepared, gen, seeds, on_step)

    def _chat_inputs(
        self,
        prompt: str | None,
        images: Images,
        messages: Sequence[Message | dict[str, Any]] | None,
        system_prompt: str | None,
        max_new_tokens: int,
    ) -> tuple[UnderstandingInputs, int]:
        """One conversation's model inputs and the most tokens its answer may have (the context's room)."""
        conversation = _conversation(prompt, images, messages)
        inputs = build_understanding_inputs(
            conversation,
            self.tokenizer,
            self.chat_template,
            self.image_processor,
            self.config.processor,
            system_prompt=system_prompt,
        )
        prompt_len = inputs.input_ids.shape[1]
        room = self.model.language_model.max_context - prompt_len
        if room < 1:
            raise InputError(
                f"the prompt is {prompt_len} tokens long but the model's context is "
                f"{self.model.language_model.max_context}; shorten the text or send fewer images"
            )
        return inputs, min(max_new_tokens, room)

    def _answers(
        self,
        prepared: list[tuple[UnderstandingInputs, int]],
        gen: GenerationConfig,
        seeds: torch.Generator | list[torch.Generator],
        on_step: ProgressCallback | None,
    ) -> ChatBatchStream:
        """The answers to prepared conversations (inputs, token limit), decoded together."""
        usage = [TokenUsage(prompt_tokens=inputs.input_ids.shape[1]) for inputs, _ in prepared]
        limits = [limit for _, limit in prepared]
        sampler, generator = self._sampling(gen.sampler_spec, seeds)
        pieces = self._decode(prepared, sampler, generator, on_step, usage)
        return ChatBatchStream(pieces, usage, limits)

    def _decode(
        self,
        prepared: list[tuple[UnderstandingInputs, int]],
        sampler: Sampler,
        generator: torch.Generator | None,
        on_step: ProgressCallback | None,
        usage: list[TokenUsage],
    ) -> Generator[tuple[int, str], None, None]:
        """Decode under the lock one step at a time and yield outside it: a stream may be consumed from any
        thread (web servers move a sync iterator between workers), and concurrent streams interleave safely,
        each with its own cache and generator. An answer's held-back text is released when it ends."""
        with self._lock, torch.inference_mode():
            embeds, padding = left_pad([self._understanding_embeds(inputs) for inputs, _ in prepared], 0.0)
            steps = generate_text_ids(
                self.model.language_model,
                embeds,
                sampler,
                max_new_tokens=[limit for _, limit in prepared],
                eos_id=self.tokenizer.eos_id,
                generator=generator,
                on_step=on_step,
                padding=padding,
            )
        decoders: list[StreamDecoder | None] = [StreamDecoder(self.tokenizer) for _ in prepared]
        while True:
            with self._lock, torch.inference_mode():
                tokens = next(steps, None)
            rows = [-1] * len(prepared) if tokens is None else tokens.tolist()
            for index, token in enumerate(rows):
                decoder = decoders[index]
                if decoder is None:
                    continue
                if token >= 0:
                    usage[index].completion_tokens += 1
                    piece = decoder.push(token)
                else:  # the answer has ended: what the decoder held back is final now
                    piece, decoders[index] = decoder.flush(), None
                if piece:
                    yield index, piece
            if tokens is None:
                return

    def _understanding_embeds(self, inputs: UnderstandingInputs) -> Tensor:
        """Token embeddings with each image's aligned SigLIP features in place of its placeholder tokens."""
        input_ids = inputs.input_ids.to(self.device)
        embeds = self.model.language_model.embed_tokens(input_ids)
        if inputs.pixel_values.shape[1]:
            size = self.image_processor.config.image_size
            pixels = inputs.pixel_values.to(self.device, self.dtype).view(-1, 3, size, size)
            features = self.model.aligner(self.model.vision_model(pixels))
            seq_mask = inputs.images_seq_mask.to(self.device)
            emb_mask = inputs.images_emb_mask.to(self.device).view(-1, features.shape[1])
            embeds[seq_mask] = features[emb_mask].to(embeds.dtype)
        return embeds

    # -- generation ------------------------------------------------------------------------------------------
    def generate_images(
        self,
        prompt: str | Sequence[str],
        *,
        seed: Seeds = None,
        on_step: ProgressCallback | None = None,
        **settings: Any,
    ) -> list[Image.Image]:
        """Generate n images for a prompt, or for each prompt of a list, all in one batch: prompt-major, the
        first prompt's n images first. settings: any ImageGenerationConfig field (n, guidance, cfg_weight,
        sampler, temperature, top_k, top_p, max_batch), e.g.
        ``guidance={"name": "cfg", "params": {"cfg_weight": 5, "schedule": "cosine"}}``.

        seed: an int or a torch.Generator: every image is drawn from one generator, as the reference script
        draws (an image then depends on n, max_batch and the other prompts); a list of ints, one per image:
        image i is `generate_images(prompt_i, n=1, seed=seed[i])`'s, whatever shares its batch."""
        codes = self.generate_image_codes(prompt, seed=seed, on_step=on_step, **settings)
        return to_pil(self.decode_images(codes))

    def generate_image_codes(
        self,
        prompt: str | Sequence[str],
        *,
        seed: Seeds = None,
        on_step: ProgressCallback | None = None,
        **settings: Any,
    ) -> Tensor:
        """The image-token half of `generate_images`: codes [images, grid**2] (int64), for `decode_images`.

        Each batch of at most max_batch images is one forward pass per token; prompts of different lengths
        are left-padded, their blanks masked (LLMBackbone.new_cache)."""
        gen = merge_settings(self.config.image_generation, settings, ImageGenerationConfig, self.registry)
        _check_callback(on_step)
        num_tokens = self.model.gen_vision_model.grid_size**2
        prompt_ids = _per_prompt(_prompt_list(prompt), self.image_prompt_ids)
        samples = [ids for ids in prompt_ids for _ in range(gen.n)]
        what = f"images ({len(prompt_ids)} prompt(s) x n={gen.n})"
        seeds = _generators(seed if seed is not None else gen.seed, len(samples), what, self.device)
        guidance = self._strategy(ComponentKind.GUIDANCE, gen.guidance_spec)
        chunk = gen.max_batch or len(samples)
        results = []
        with self._lock, torch.inference_mode():
            for first in range(0, len(samples), chunk):
                part = slice(first, first + chunk)
                rows, padding = sample_rows(samples[part], guidance, self.tokenizer.pad_id)
                sampler, generator = self._sampling(
                    gen.sampler_spec, seeds if isinstance(seeds, torch.Generator) else seeds[part]
                )
                results.append(
                    generate_image_codes(
                        self.model.language_model,
                        self.model.language_model.embed_tokens(rows.to(self.device)),
                        gen_head=self.model.gen_head,
                        gen_embed=self.model.gen_embed,
                        gen_aligner=self.model.gen_aligner,
                        guidance=guidance,
                        sampler=sampler,
                        num_tokens=num_tokens,
                        generator=generator,
                        on_step=on_step,
                        padding=padding,
                    )
                )
        return torch.cat(results)

    def image_prompt_ids(self, prompt: str) -> list[int]:
        """The token ids of a text-to-image prompt (the official layout), checked to fit the model's context
        with the image's tokens: an InputError saying what is wrong otherwise (e.g. to check a file of
        prompts before a long job)."""
        num_tokens = self.model.gen_vision_model.grid_size**2
        prompt_ids = build_generation_prompt_ids(prompt, self.tokenizer, self.chat_template)
        total = len(prompt_ids) + num_tokens
        if total > self.model.language_model.max_context:
            raise InputError(
                f"the prompt is {len(prompt_ids)} tokens; with the {num_tokens} image tokens that is "
                f"{total}, "
                f"beyond the model's context of {self.model.language_model.max_context}; shorten the prompt"
            )
        return prompt_ids

    def _sampling(
        self, spec: ComponentSpec, seeds: torch.Generator | list[torch.Generator]
    ) -> tuple[Sampler, torch.Generator | None]:
        """The sampler of one batch and the generator to hand it: one sampler over every row drawing from
        the shared generator, or one sampler per row drawing from the row's own (`PerRowSampler`)."""
        if isinstance(seeds, torch.Generator):
            return self._strategy(ComponentKind.SAMPLER, spec), seeds
        return PerRowSampler([self._strategy(ComponentKind.SAMPLER, spec) for _ in seeds], seeds), None

    def decode_images(self, codes: Tensor) -> Tensor:
        """Image codes [n, grid**2] -> uint8 images [n, H, W, 3], converted as the reference script does."""
        with self._lock, torch.inference_mode():
            return to_uint8(self.model.gen_vision_model.decode(codes.to(self.device)).float().cpu())

    def encode_image(self, image: ImageSource) -> Tensor:
        """An image -> its VQ codes [grid**2] (after the understanding preprocessing)."""
        pixels = self.image_processor([self.image_processor.load(image)]).to(self.device, self.dtype)
        with self._lock, torch.inference_mode():
            return self.model.gen_vision_model.encode(pixels)[0]

    # -- tuning ----------------------------------------------------------------------------------------------
    def tune(
        self, batch_sizes: Sequence[int] = TUNED_BATCHES, prompt_length: int = 64
    ) -> dict[str, Decision]:
        """Take now the measured choices (`janus_sdk.tuning`) that chats and image generations at
        `batch_sizes` rows need, rather than at their first use: a prefill of `prompt_length` random
        embeddings and one decode step per batch size through the backbone and both heads, and one VQ
        decode. Choices keyed by length (attention) are taken for those lengths; longer prompts and caches
        measure theirs at first use. Returns every decision known for this machine (what `janus tune`
        prints)."""
        llm = self.model.language_model
        with self._lock, torch.inference_mode():
            for rows in batch_sizes:
                cache = llm.new_cache(rows, prompt_length + 1)
                shape = (rows, prompt_length + 1, llm.hidden_size)
                embeds = (torch.randn(shape, generator=probe_generator()) * 0.02).to(self.device, self.dtype)
                hidden = llm.hidden_states(embeds[:, :prompt_length], cache, 0)
                step = llm.hidden_states(embeds[:, prompt_length:], cache, prompt_length)
                for last in (hidden[:, -1], step[:, -1]):  # the rows the decoding loops feed the heads
                    llm.text_logits(last)
                    self.model.gen_head(last)
            grid = self.model.gen_vision_model.grid_size
            self.model.gen_vision_model.decode(
                torch.zeros(1, grid * grid, dtype=torch.long, device=self.device)
            )
        return get_tuner().decisions()

    # -- helpers ---------------------------------------------------------------------------------------------
    def _component(self, kind: ComponentKind, name: str, params: dict[str, Any]) -> Any:
        return _build(self.registry, kind, name, params, BuildContext(device=self.device, dtype=self.dtype))

    def _strategy(self, kind: ComponentKind, spec: ComponentSpec) -> Any:
        """A sampler or guidance for one call, wrapped so that a wrong output names its plugin."""
        registration = self.registry.get(kind, spec.name)
        component = registration.build(spec.params, BuildContext(device=self.device, dtype=self.dtype))
        if kind is ComponentKind.GUIDANCE:
            return CheckedGuidance(component, registration, self.model.language_model.vocab_size)
        return CheckedSampler(component, registration)

    def info(self) -> dict[str, Any]:
        """Device, dtype, components and parameter counts (what `janus info` prints)."""
        return model_info(self.config, self.model) | {"device": str(self.device), "dtype": str(self.dtype)}


def build_model(config: PipelineConfig, registry: Registry, context: BuildContext) -> JanusModel:
    """Build the weight-bearing components on the meta device (no memory), ready for `load_state_into`."""
    with torch.device("meta"):
        modules = {
            slot: _build(registry, kind, spec.name, spec.params, context)
            for slot, (kind, spec) in config.component_specs().items()
            if slot in MODULE_SLOTS.values()
        }
        for slot, component in modules.items():
            if not isinstance(component, torch.nn.Module):
                reg = registry.get(SLOT_KINDS[slot], getattr(config, slot).name)
                raise PluginError(
                    f"plugin {reg.plugin!r} ({reg.distribution}) built the {slot} {reg.name!r} as a "
                    f"{type(component).__name__}; components with weights must be torch.nn.Modules"
                )
        return JanusModel(modules)


def model_info(config: PipelineConfig, model: JanusModel) -> dict[str, Any]:
    """Components and parameter counts of a model (built on meta or loaded)."""
    counts = model.parameter_counts()
    components = {slot: getattr(config, slot).name for slot in config.component_specs()}
    return {"components": components, "parameters": counts, "total_parameters": sum(counts.values())}


def build_backend(
    host: PluginHost,
    kind: ComponentKind,
    spec: ComponentSpec,
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
) -> Any:
    """The backend a config slot names ("auto": the plugins' choice), checked for the device and dtype."""
    name = host.choose_backend(kind, device, dtype) if spec.name == AUTO else spec.name
    backend = host.registry.get(kind, name).build(spec.params, BuildContext(path, device, dtype))
    backend.check(device, dtype)
    return backend


def _build(
    registry: Registry, kind: ComponentKind, name: str, params: dict[str, Any], context: BuildContext
) -> Any:
    return registry.get(kind, name).build(params, context)


def merge_settings(
    defaults: BaseModel, overrides: dict[str, Any], model: type[BaseModel], registry: Registry | None = None
) -> Any:
    """Per-call settings on top of the pipeline's defaults, validated (components looked up in `registry`,
    default: the process-wide one) before any model work starts.

    Only the settings the defaults set explicitly are carried over, so that shorthand fields keep their
    meaning (config/generation.py); a call that names a sampler or guidance replaces the defaults' choice,
    their shorthand for it included."""
    unknown = sorted(set(overrides) - set(model.model_fields))
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(model.model_fields)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    base = defaults.model_dump(exclude_unset=True)
    shorthand: dict[str, tuple[str, ...]] = getattr(model, "SHORTHAND", {})
    for field, fields in shorthand.items():
        if field in given:
            base = {k: v for k, v in base.items() if k not in fields}
    try:
        return model.model_validate(
            {**base, **given}, context={"registry": registry} if registry is not None else None
        )
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, subject="generation settings")) from None


def _conversation(
    prompt: str | None, images: Images, messages: Sequence[Message | dict[str, Any]] | None
) -> list[Message]:
    if messages is not None:
        if prompt is not None or images:
            raise InputError("pass either prompt (with images) or messages, not both")
        try:
            return [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]
        except ValidationError as exc:
            raise InputError(describe_validation_error(exc, subject="messages")) from None
    if prompt is None:
        raise InputError("nothing to answer: pass a prompt or messages")
    if not isinstance(prompt, str):
        several = "; to answer several prompts at once use chat_batch" if isinstance(prompt, list) else ""
        raise InputError(f"the prompt must be a string, got {type(prompt).__name__}{several}")
    if images is None:
        images = ()
    elif isinstance(images, (str, bytes, os.PathLike, Image.Image)):
        images = (images,)  # one image given bare, not a sequence of them
    elif not isinstance(images, Sequence):
        raise InputError(
            f"images must be a list of images (paths, bytes or PIL images), got {type(images).__name__}"
        )
    try:
        return [Message(role="user", content=prompt, images=list(images))]
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, subject="images")) from None


def _check_callback(on_step: ProgressCallback | None) -> None:
    if on_step is not None and not callable(on_step):
        raise InputError(f"on_step must be a callable taking a Progress, got {type(on_step).__name__}")


def _prompt_list(prompt: str | Sequence[str]) -> list[str]:
    """A text-to-image call's prompts: one string, or a non-empty list of them."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise InputError(
            f"the text-to-image prompt must be a string or a list of strings, got {type(prompt).__name__}"
        )
    if not prompt:
        raise InputError("the list of text-to-image prompts is empty: give at least one")
    return list(prompt)


def _per_prompt(prompts: list[_Prompt], build: Callable[[_Prompt], _Built]) -> list[_Built]:
    """`build` of each prompt; of several, a bad one's InputError names it (0-based)."""
    if len(prompts) == 1:
        return [build(prompts[0])]
    built = []
    for index, prompt in enumerate(prompts):
        try:
            built.append(build(prompt))
        except InputError as exc:
            raise InputError(f"prompt {index}: {exc}") from None
    return built


def _answer_limits(
    max_new_tokens: int | Sequence[int] | None, count: int, gen: GenerationConfig
) -> list[int]:
    """Each answer's token limit: the settings' one for all, or a list of one per prompt, each checked as the
    setting is."""
    if not isinstance(max_new_tokens, Sequence):
        return [gen.max_new_tokens] * count
    if len(max_new_tokens) != count:
        raise InputError(
            f"max_new_tokens is a list of {len(max_new_tokens)} but there are {count} prompts; give one "
            "limit per prompt, or one int for all"
        )
    checked = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)])  # GenerationConfig's bounds
    limits = []
    for index, limit in enumerate(max_new_tokens):
        try:
            limits.append(checked.validate_python(limit, strict=True))
        except ValidationError as exc:
            why = exc.errors()[0]["msg"].lower()
            raise InputError(f"max_new_tokens[{index}] is {limit!r}: {why}") from None
    return limits


def _generators(
    seed: Seeds, count: int, what: str, device: torch.device
) -> torch.Generator | list[torch.Generator]:
    """One generator for the whole call, or for a list of seeds one per item, checked to be `count` (the
    call's `what`) before any model work."""
    if not isinstance(seed, Sequence):
        return _generator(seed, device)
    if len(seed) != count:
        raise InputError(
            f"seed is a list of {len(seed)} but the call makes {count} {what}; give one seed per item, or "
            "one int for all"
        )
    return [_generator(s, device, f"seed[{i}]") for i, s in enumerate(seed)]


def _generator(seed: Seed, device: torch.device, name: str = "seed") -> torch.Generator:
    """A generator on the pipeline's device: seeded when asked, else from fresh entropy."""
    if isinstance(seed, torch.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
        raise InputError(f"{name} must be an integer in [0, 2**64) or a torch.Generator, got {seed!r}")
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
