"""The three systems under test, on one set of seeded random weights at a released model's real dimensions.

The weights are drawn once per (size, dtype, seed) and written as a checkpoint in the official layout
(`checkpoint`, in the janus-sdk cache folder); every system loads that checkpoint:

- ours: `JanusPipeline.from_pretrained` on it, as a user loads a model (`from_config` where the bench sets
  component params the call has no argument for);
- transformers: `JanusForConditionalGeneration` holding the same tensors, renamed through the SDK's
  official -> transformers key map (`janus_adapters.transformers_interop`);
- reference: DeepSeek's own module layout (transformers' `LlamaForCausalLM` + `vision_head` + `MlpProjector`
  + `gen_embed`), again holding the same tensors.

Every process that builds a system draws the same weights (per-tensor seeds from the tensor's name), so each
system can run in a process of its own and peak memory is measured per system.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from filelock import FileLock
from torch import Tensor, nn
from transformers import (
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    LlamaConfig,
    LlamaForCausalLM,
)

from janus_adapters.transformers_interop import config as hf_meta
from janus_adapters.transformers_interop import keymap
from janus_plugins.deepseek_llm.config import DeepSeekLLMConfig
from janus_sdk.config import PipelineConfig
from janus_sdk.config.official import official_config_to_pipeline_dict
from janus_sdk.config.presets import official_preset
from janus_sdk.kinds import ComponentKind
from janus_sdk.pipeline.janus import JanusPipeline, build_backend, build_model
from janus_sdk.pipeline.model import JanusModel
from janus_sdk.plugins import get_plugin_host, get_registry
from janus_sdk.registry import BuildContext
from janus_sdk.tuning import cache_dir

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "janus-tiny" / "checkpoint"
"""The tiny fixture: its tokenizer serves every model size (prompt ids only need to be valid ids), and its
config.json gives the `tiny` dimensions."""

PRESETS = {"1b": "Janus-Pro-1B", "7b": "Janus-Pro-7B"}
MODEL_SIZES = (*PRESETS, "tiny")
INIT_STD = 0.02


def official_config(size: str) -> dict[str, Any]:
    """The official config.json contents for a model size."""
    if size == "tiny":
        return cast(dict[str, Any], json.loads((FIXTURE / "config.json").read_text(encoding="utf-8")))
    return official_preset(PRESETS[size])


def pipeline_config(
    size: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attention: str | None,
    linear: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    checkpoint_folder: Path | None = None,
) -> PipelineConfig:
    """The PipelineConfig `JanusPipeline.from_pretrained` derives from the model's official config.json, with
    `params` (config slot -> params) over the components' own, loading `checkpoint_folder` (default: the
    fixture, whose tokenizer files a saved checkpoint copies)."""
    data = official_config_to_pipeline_dict(official_config(size), source=size)
    data.update(device=str(device), dtype=str(dtype).removeprefix("torch."))
    for slot, values in (params or {}).items():
        data[slot]["params"].update(values)
    if attention is not None:
        data["attention"] = {"name": attention}
    if linear is not None:
        data["linear"] = {"name": linear}
    data["checkpoint"] = str(checkpoint_folder or FIXTURE)
    return PipelineConfig.parse(data, source=size)


def meta_model(size: str) -> JanusModel:
    """The model of a size on the meta device (shapes only, no memory)."""
    config = pipeline_config(size, device=torch.device("cpu"), dtype=torch.float32, attention=None)
    return build_model(config, get_registry(), BuildContext(device=torch.device("meta")))


def init_tensor(name: str, shape: torch.Size, dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
    """One tensor of the random model: 1-D weights (norm scales) = 1, other 1-D tensors (biases, buffers) =
    0, the rest N(0, INIT_STD) from a generator seeded by (seed, name), so the order of creation is free."""
    if len(shape) == 1:
        fill = 1.0 if name.endswith(".weight") else 0.0
        return torch.full(shape, fill, dtype=dtype, device=device)
    generator = torch.Generator(device=device).manual_seed(seed * 2**32 + zlib.crc32(name.encode()))
    return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, INIT_STD, generator=generator)


def materialise(model: nn.Module, *, dtype: torch.dtype, device: torch.device, seed: int) -> None:
    """Fill a meta-built model in place: seeded values for everything a checkpoint would hold (floating
    tensors in `dtype`), then the computed buffers placed as the SDK's loader places them."""
    state = {
        name: init_tensor(name, t.shape, dtype if t.is_floating_point() else t.dtype, device, seed)
        for name, t in model.state_dict(keep_vars=True).items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    place_computed_buffers(model, device)


def place_computed_buffers(model: nn.Module, device: torch.device) -> None:
    """Non-persistent buffers after a meta build: rotary tables and position ids left on meta are recomputed,
    ones built on another real device (our rotary tables are built on the CPU) are moved to `device`."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "rope_type"):
                with torch.device(device):
                    setattr(parent, child_name, type(child)(config=child.config))
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta and name == "position_ids":
                positions = torch.arange(buffer.shape[-1], device=device).expand(buffer.shape)
                module.register_buffer(name, positions, persistent=False)
            elif not buffer.is_meta and buffer.device != device:
                setattr(module, name, buffer.to(device))
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"tensors left on the meta device: {', '.join(leftover)}")


def random_pipeline(size: str, *, dtype: torch.dtype, seed: int) -> JanusPipeline:
    """The pipeline of `size` on the CPU holding the seeded random weights (`materialise`), built step by step
    as `JanusPipeline.from_config` builds it but with no checkpoint to read: what `checkpoint` writes."""
    device = torch.device("cpu")
    config = pipeline_config(size, device=device, dtype=dtype, attention=None, linear="torch")
    host = get_plugin_host()
    registry = host.registry
    backend = build_backend(host, ComponentKind.ATTENTION_BACKEND, config.attention, FIXTURE, device, dtype)
    context = BuildContext(FIXTURE, device, dtype, backend)
    model = build_model(config, registry, context)
    materialise(model, dtype=dtype, device=device, seed=seed)
    model.eval()
    tokenizer = registry.get(ComponentKind.TEXT_TOKENIZER, config.text_tokenizer.name).build(
        config.text_tokenizer.params, context
    )
    template = registry.get(ComponentKind.CHAT_TEMPLATE, config.chat_template.name).build(
        config.chat_template.params, context
    )
    return JanusPipeline(config, model, tokenizer, template, backend, registry)


def checkpoint(size: str, dtype: torch.dtype, seed: int) -> Path:
    """The seeded random model of `size` as a checkpoint in the official layout, in `dtype`: written once (by
    `save_pretrained`, with the fixture's tokenizer) into the janus-sdk cache folder, `bench/<size>-<dtype>-
    seed<seed>` (`$JANUS_SDK_CACHE_DIR` moves it; delete it to reclaim the space: 4 GB for 1B in bfloat16)."""
    folder = cache_dir() / "bench" / f"{size}-{str(dtype).removeprefix('torch.')}-seed{seed}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / "config.json").exists():
            print(f"writing the {size} checkpoint into {folder} (once)", file=sys.stderr, flush=True)
            random_pipeline(size, dtype=dtype, seed=seed).save_pretrained(folder)
    return folder


def load_ours(
    size: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    seed: int,
    attention: str | None,
    linear: str | None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> JanusPipeline:
    """Our pipeline from the checkpoint of `size`, through the public API."""
    folder = checkpoint(size, dtype, seed)
    if not params:
        return JanusPipeline.from_pretrained(
            folder, device=device, dtype=dtype, attention=attention, linear=linear
        )
    return JanusPipeline.from_config(
        pipeline_config(
            size,
            device=device,
            dtype=dtype,
            attention=attention,
            linear=linear,
            params=params,
            checkpoint_folder=folder,
        )
    )


def token_ids(pipe: JanusPipeline) -> hf_meta.TokenIds:
    """The special-token ids transformers' Janus config and generation config need, from our tokenizer."""
    tok = pipe.tokenizer
    return hf_meta.TokenIds(
        bos=tok.bos_id,
        eos=tok.eos_id,
        pad=tok.pad_id,
        image=tok.token_id(hf_meta.IMAGE_TOKEN),
        begin_of_image=tok.token_id(hf_meta.BEGIN_OF_IMAGE),
        end_of_image=tok.token_id(hf_meta.END_OF_IMAGE),
    )


def build_transformers_peer(pipe: JanusPipeline, size: str) -> JanusForConditionalGeneration:
    """transformers' Janus holding our model's tensors (shared storage except the split SigLIP qkv)."""
    ids = token_ids(pipe)
    hf = hf_meta.official_to_transformers(official_config(size), ids)
    config = JanusConfig.from_dict(hf)
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    state: dict[str, Tensor] = {}
    for name, tensor in pipe.model.state_dict().items():
        state.update(keymap.to_transformers(keymap.route_official(name), tensor))
    model.load_state_dict(state, strict=True, assign=True)
    place_computed_buffers(model, pipe.device)
    model.generation_config = GenerationConfig(**hf_meta.generation_config(ids))  # type: ignore[no-untyped-call]
    model.eval()  # type: ignore[no-untyped-call]
    return model


class VisionHead(nn.Module):
    """The official `vision_head` (gen head): Linear -> GELU -> Linear, official parameter names."""

    def __init__(self, n_embed: int, image_token_embed: int, image_token_size: int) -> None:
        super().__init__()
        self.output_mlp_projector = nn.Linear(n_embed, image_token_embed)
        self.vision_activation = nn.GELU()
        self.vision_head = nn.Linear(image_token_embed, image_token_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.output_mlp_projector(x)
        x = self.vision_activation(x)
        out: Tensor = self.vision_head(x)
        return out


class MlpGelu(nn.Module):
    """The official two-layer `MlpProjector` (mlp_gelu, depth 2): `layers` = Linear, GELU, Linear."""

    def __init__(self, input_dim: int, n_embed: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_dim, n_embed), nn.GELU(), nn.Linear(n_embed, n_embed))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.layers(x)
        return out


class ReferenceJanus(nn.Module):
    """The parts of the official `MultiModalityCausalLM` that text-to-image and text decoding run."""

    def __init__(
        self,
        language_model: LlamaForCausalLM,
        gen_head: VisionHead,
        gen_aligner: MlpGelu,
        gen_embed: nn.Embedding,
    ) -> None:
        super().__init__()
        self.language_model = language_model
        self.gen_head = gen_head
        self.gen_aligner = gen_aligner
        self.gen_embed = gen_embed

    def prepare_gen_img_embeds(self, image_ids: Tensor) -> Tensor:
        out: Tensor = self.gen_aligner(self.gen_embed(image_ids))
        return out


def build_reference_peer(pipe: JanusPipeline) -> ReferenceJanus:
    """The official module layout holding our model's tensors (shared storage)."""
    state = pipe.model.state_dict()
    codebook, head_embed = state["gen_head.vision_head.weight"].shape
    code_dim = state["gen_embed.weight"].shape[1]
    hidden = pipe.model.language_model.hidden_size
    llm = DeepSeekLLMConfig.model_validate(pipe.config.llm_backbone.params)
    sizes = llm.model_dump(
        exclude={"rope_theta", "max_context", "cuda_graphs", "kept_decode_graphs", "fused_layer_ops"}
    )
    rope = {"rope_type": "default", "rope_theta": llm.rope_theta}
    llama_config = LlamaConfig(**sizes, rope_parameters=rope, tie_word_embeddings=False)
    llama_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = ReferenceJanus(
            LlamaForCausalLM(llama_config),
            VisionHead(hidden, head_embed, codebook),
            MlpGelu(code_dim, hidden),
            nn.Embedding(codebook, code_dim),
        )
    wanted = model.state_dict().keys()
    model.load_state_dict({name: t for name, t in state.items() if name in wanted}, strict=True, assign=True)
    place_computed_buffers(model, pipe.device)
    model.eval()
    return model


def unique_bytes(tensors: Mapping[str, Tensor] | list[Tensor]) -> int:
    """Bytes of distinct storages among `tensors` (shared weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors.values() if isinstance(tensors, Mapping) else tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
