"""Converting a Janus checkpoint between DeepSeek's official layout and the layout of transformers'
`JanusForConditionalGeneration` (the `deepseek-community/Janus-Pro-*` repos), in either direction; the source
layout is detected from config.json.

official -> transformers writes `config.json` and `generation_config.json` (see `config.py`), the weights as
safetensors under transformers' names, and the processor files exactly as the installed transformers saves a
`JanusProcessor` (tokenizer.json, tokenizer_config.json, processor_config.json with the image-processor
settings, chat_template.jinja rendering the official prompt format). The official tensors transformers has no
place for (the unused SigLIP `attn_pool.*` head and the VQ `codebook_used` buffer) go into the side file
`janus_official_extras.safetensors`, which transformers ignores.

transformers -> official writes the official `config.json`, `model.safetensors` (restoring the side file
when there is one; without it `codebook_used` is regenerated as the zeros the official checkpoints hold, and
with no attention-pool weights to restore the vision config says `global_pool: ""`), `tokenizer.json` as is,
and the official tokenizer/processor settings files. A config that ties the LM head to the embeddings gets
`lm_head` as a copy of them, as transformers would build it.

Tensors are copied bit for bit (same dtype). The destination is written into a temporary sibling directory and
renamed into place when complete; an existing one is replaced only with `overwrite=True`.

Known behaviour differences of transformers' Janus port from the official code (not caused by the weights):
- image generation applies transformers' default top-k 50 after CFG (pass `top_k=0` or `top_k=None` to
  `generate` to sample like the official script, which has no top-k), and is greedy unless `do_sample=True`;
- `JanusVQVAE.encode` matches the latent against the codebook without the L2 normalisation the official VQ-16
  applies to both (its decode does normalise, so decoding matches);
- `JanusImageProcessor` rounds the resized short side where the official processor truncates it, so for some
  aspect ratios the image is one pixel taller or wider (300x203 -> 260 rows instead of 259).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from transformers import JanusProcessor, PreTrainedTokenizerFast
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

from janus_adapters.transformers_interop import config as meta
from janus_adapters.transformers_interop import keymap
from janus_adapters.transformers_interop.layout import (
    DEFAULT_NUM_IMAGE_TOKENS,
    EXTRAS_FILE,
    OfficialView,
    open_official_view,
)
from janus_sdk.checkpoint import CheckpointWeights, open_checkpoint, parse_size
from janus_sdk.checkpoint.convert import swap_in_directory
from janus_sdk.config.official import read_json, read_optional_json
from janus_sdk.errors import CheckpointError, ConfigError

Layout = Literal["official", "transformers"]
LAYOUTS: tuple[Layout, ...] = ("official", "transformers")

_MODEL_TYPES: dict[str, Layout] = {"multi_modality": "official", "janus": "transformers"}


def _write_json(path: Path, data: Mapping[str, Any], *, sort_keys: bool = False) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys)
    path.write_text(text + "\n", encoding="utf-8")


def detect_janus_layout(directory: str | Path) -> Layout:
    """'official' or 'transformers', from the `model_type` of the checkpoint's config.json."""
    path = Path(directory).expanduser() / "config.json"
    model_type = read_json(path).get("model_type")
    if model_type not in _MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type {model_type!r} is neither the official Janus 'multi_modality' "
            "nor transformers' 'janus'"
        )
    return _MODEL_TYPES[model_type]


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    to: Layout = "transformers",
    overwrite: bool = False,
    *,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Write the checkpoint `src` to `dst` in the `to` layout (the source layout is detected); returns `dst`.

    Weights are sharded at `max_shard_size` bytes per file (a single `model.safetensors` when they fit). A
    non-empty `dst` is replaced only with `overwrite=True`, and never when it is, or holds, the source.
    """
    if to not in LAYOUTS:
        raise ConfigError(f"to must be one of {', '.join(LAYOUTS)}, got {to!r}")
    source = Path(src).expanduser().resolve()
    target = Path(dst).expanduser().resolve()
    layout = detect_janus_layout(source)
    if layout == to:
        raise CheckpointError(f"{source} is already in the {to} layout")
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise CheckpointError(f"destination {target} must be outside the source checkpoint {source}")
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"destination {target} is a file; pass a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise CheckpointError(f"destination {target} already exists; pass overwrite=True to replace it")
    limit = parse_size(max_shard_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        staging.chmod(0o755)
        if to == "transformers":
            with open_checkpoint(source) as weights:
                _to_transformers(source, weights, staging, limit)
        else:
            _to_official(source, staging, limit)
        swap_in_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class _Job:
    """Output tensors made from some source tensors; `nbytes` (their total size) plans the shards unread."""

    nbytes: int
    make: Callable[[], dict[str, torch.Tensor]]


def _write_weights(out: Path, jobs: list[_Job], limit: int) -> None:
    """`model.safetensors`, or greedy shards of at most `limit` bytes plus transformers' index file."""
    shards: list[list[_Job]] = [[]]
    size = 0
    for job in jobs:
        if shards[-1] and size + job.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(job)
        size += job.nbytes
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    weight_map: dict[str, str] = {}
    for filename, shard in zip(names, shards, strict=True):
        tensors = _unshared({name: t for job in shard for name, t in job.make().items()})
        _save(tensors, out / filename)
        weight_map.update(dict.fromkeys(tensors, filename))
    if len(shards) > 1:
        total = sum(job.nbytes for job in jobs)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(out / "model.safetensors.index.json", index)


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A safetensors file readable by others like the JSON files beside it (safetensors writes it 0600)."""
    save_file(tensors, str(path), metadata={"format": "pt"})
    path.chmod(0o644)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing storage (as pickled tied weights may): give each its own."""
    seen: set[int] = set()
    result: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        result[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return result


# -- official -> transformers --------------------------------------------------------------------------------


def _load_tokenizer(src: Path) -> PreTrainedTokenizerFast:
    """The checkpoint's tokenizer.json through the `tokenizers` backend (transformers 5's LlamaTokenizerFast
    would re-pre-tokenise the byte-level BPE and give other ids), plus the image tokens of JanusProcessor."""
    if not (src / "tokenizer.json").is_file():
        raise CheckpointError(f"{src / 'tokenizer.json'} is missing: the converter needs the fast tokenizer")
    tokenizer: PreTrainedTokenizerFast = PreTrainedTokenizerFast.from_pretrained(
        str(src),
        extra_special_tokens={
            "image_token": meta.IMAGE_TOKEN,
            "boi_token": meta.BEGIN_OF_IMAGE,
            "eoi_token": meta.END_OF_IMAGE,
        },
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = meta.PAD_TOKEN
    return tokenizer


def _token_ids(tokenizer: PreTrainedTokenizerFast) -> meta.TokenIds:
    vocab = tokenizer.get_vocab()

    def id_of(token: str | None, role: str) -> int:
        if token is None or token not in vocab:
            raise CheckpointError(f"the tokenizer has no {role} token {token!r}")
        return int(vocab[token])

    return meta.TokenIds(
        bos=id_of(tokenizer.bos_token, "begin-of-sentence"),
        eos=id_of(tokenizer.eos_token, "end-of-sentence"),
        pad=id_of(tokenizer.pad_token, "padding"),
        image=id_of(meta.IMAGE_TOKEN, "image placeholder"),
        begin_of_image=id_of(meta.BEGIN_OF_IMAGE, "begin-of-image"),
        end_of_image=id_of(meta.END_OF_IMAGE, "end-of-image"),
    )


def _to_transformers_part(weights: CheckpointWeights, route: keymap.Route) -> dict[str, torch.Tensor]:
    return keymap.to_transformers(route, weights.get(route.official))


def _to_transformers(src: Path, weights: CheckpointWeights, out: Path, limit: int) -> None:
    tokenizer = _load_tokenizer(src)
    ids = _token_ids(tokenizer)
    _write_json(out / "config.json", meta.official_to_transformers(read_json(src / "config.json"), ids))
    _write_json(out / "generation_config.json", meta.generation_config(ids))
    preprocessor = read_optional_json(src / "preprocessor_config.json") or {}
    processor = read_optional_json(src / "processor_config.json") or {}
    JanusProcessor(
        image_processor=JanusImageProcessorPil(**meta.image_processor_kwargs(preprocessor)),
        tokenizer=tokenizer,
        chat_template=meta.CHAT_TEMPLATE,
        use_default_system_prompt=True,
        num_image_tokens=int(processor.get("num_image_tokens", DEFAULT_NUM_IMAGE_TOKENS)),
    ).save_pretrained(str(out))

    routes = [keymap.route_official(name) for name in weights]
    kept = [route for route in routes if route.reshape is not keymap.Reshape.DROPPED]
    jobs = [
        _Job(weights.nbytes_of(route.official), partial(_to_transformers_part, weights, route))
        for route in kept
    ]
    _write_weights(out, jobs, limit)
    dropped = {r.official: weights.get(r.official) for r in routes if r.reshape is keymap.Reshape.DROPPED}
    if dropped:
        _save(_unshared(dropped), out / EXTRAS_FILE)


# -- transformers -> official --------------------------------------------------------------------------------


def _official_part(weights: OfficialView, name: str) -> dict[str, torch.Tensor]:
    return {name: weights.get(name)}


def _to_official(src: Path, out: Path, limit: int) -> None:
    files, view = open_official_view(src)
    with view:
        for filename, data in files.items():
            _write_json(out / filename, data, sort_keys=filename != "config.json")
        jobs = [_Job(view.nbytes_of(name), partial(_official_part, view, name)) for name in view]
        _write_weights(out, jobs, limit)
    shutil.copy2(src / "tokenizer.json", out / "tokenizer.json")
