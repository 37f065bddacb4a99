"""Tensor names of DeepSeek's official Janus checkpoints <-> those of transformers'
`JanusForConditionalGeneration`.

The mapping is data: `_RENAMES` pairs an official name pattern with its transformers pattern
(`{n}`/`{m}` stand for layer indices, `{part}` for the VQ encoder or decoder, `{rest}` for the rest of the
name) and is read in both directions, first match wins. Three kinds of tensors are more than a rename:

- the SigLIP blocks' fused `attn.qkv` is split into `q_proj`/`k_proj`/`v_proj` (rows in that order, as timm
  unbinds them) and concatenated back;
- the SigLIP `pos_embed` [1, N, W] becomes the `position_embedding` table [N, W];
- the official `vision_tower.attn_pool.*` head (never run by Janus) and the VQ `quantize.codebook_used`
  training buffer have no place in transformers' model: they are `DROPPED` (the converter keeps them in a side
  file).

Only two-layer aligners are mapped (`layers.0`/`layers.2`, as in every Janus and Janus-Pro checkpoint); the
config translation refuses other depths.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache

import torch

from janus_sdk.errors import CheckpointError


class Reshape(Enum):
    """How one official tensor becomes its transformers tensor(s)."""

    SAME = "same"
    SPLIT_QKV = "split_qkv"
    SQUEEZE_BATCH = "squeeze_batch"
    DROPPED = "dropped"


_VIT = "vision_model.vision_tower"
_HF_VIT = "model.vision_model"
_VQ_ENCODER_BLOCK = "model.vqmodel.encoder.down.{n}.block.{m}.{rest}"
_VQ_DECODER_BLOCK = "model.vqmodel.decoder.up.{n}.block.{m}.{rest}"

# (official pattern, transformers pattern), most specific first within each family.
_RENAMES: tuple[tuple[str, str], ...] = (
    (f"{_VIT}.patch_embed.proj.{{rest}}", f"{_HF_VIT}.embeddings.patch_embedding.{{rest}}"),
    (f"{_VIT}.blocks.{{n}}.norm1.{{rest}}", f"{_HF_VIT}.encoder.layers.{{n}}.layer_norm1.{{rest}}"),
    (f"{_VIT}.blocks.{{n}}.norm2.{{rest}}", f"{_HF_VIT}.encoder.layers.{{n}}.layer_norm2.{{rest}}"),
    (
        f"{_VIT}.blocks.{{n}}.attn.proj.{{rest}}",
        f"{_HF_VIT}.encoder.layers.{{n}}.self_attn.projection_layer.{{rest}}",
    ),
    (f"{_VIT}.blocks.{{n}}.mlp.{{rest}}", f"{_HF_VIT}.encoder.layers.{{n}}.mlp.{{rest}}"),
    (f"{_VIT}.norm.{{rest}}", f"{_HF_VIT}.post_layernorm.{{rest}}"),
    ("aligner.layers.0.{rest}", "model.aligner.fc1.{rest}"),
    ("aligner.layers.2.{rest}", "model.aligner.hidden_layers.0.{rest}"),
    ("gen_aligner.layers.0.{rest}", "model.generation_aligner.fc1.{rest}"),
    ("gen_aligner.layers.2.{rest}", "model.generation_aligner.hidden_layers.0.{rest}"),
    ("gen_head.output_mlp_projector.{rest}", "model.generation_head.proj_out.{rest}"),
    ("gen_head.vision_head.{rest}", "model.generation_head.vision_head.{rest}"),
    ("gen_embed.{rest}", "model.generation_embeddings.{rest}"),
    ("gen_vision_model.encoder.conv_blocks.{n}.res.{m}.{rest}", _VQ_ENCODER_BLOCK),
    ("gen_vision_model.encoder.conv_blocks.{n}.{rest}", "model.vqmodel.encoder.down.{n}.{rest}"),
    ("gen_vision_model.decoder.conv_blocks.{n}.res.{m}.{rest}", _VQ_DECODER_BLOCK),
    ("gen_vision_model.decoder.conv_blocks.{n}.{rest}", "model.vqmodel.decoder.up.{n}.{rest}"),
    ("gen_vision_model.{part}.mid.0.{rest}", "model.vqmodel.{part}.mid.block_1.{rest}"),
    ("gen_vision_model.{part}.mid.1.{rest}", "model.vqmodel.{part}.mid.attn_1.{rest}"),
    ("gen_vision_model.{part}.mid.2.{rest}", "model.vqmodel.{part}.mid.block_2.{rest}"),
    ("gen_vision_model.{rest}", "model.vqmodel.{rest}"),
    ("language_model.model.{rest}", "model.language_model.{rest}"),
    ("language_model.lm_head.{rest}", "lm_head.{rest}"),
)

QKV_PARTS = ("q_proj", "k_proj", "v_proj")
_QKV = (
    f"{_VIT}.blocks.{{n}}.attn.qkv.{{rest}}",
    f"{_HF_VIT}.encoder.layers.{{n}}.self_attn.{{proj}}.{{rest}}",
)
_POS_EMBED = (f"{_VIT}.pos_embed", f"{_HF_VIT}.embeddings.position_embedding.weight")
_DROPPED = (f"{_VIT}.attn_pool.{{rest}}", "gen_vision_model.quantize.codebook_used")

CODEBOOK_USED = "gen_vision_model.quantize.codebook_used"
"""The official VQ training buffer transformers drops; the official checkpoints hold 65536 zeros."""
CODEBOOK_USED_SIZE = 65536
CODEBOOK = "gen_vision_model.quantize.embedding.weight"
OFFICIAL_LM_HEAD = "language_model.lm_head.weight"
OFFICIAL_EMBED_TOKENS = "language_model.model.embed_tokens.weight"

_FIELDS = {"n": r"\d+", "m": r"\d+", "part": "encoder|decoder", "proj": "|".join(QKV_PARTS), "rest": r".+"}


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    """`pattern` with its `{field}`s as named groups, everything else literal."""
    pieces = re.split(r"\{(\w+)\}", pattern)
    regex = "".join(
        f"(?P<{piece}>{_FIELDS[piece]})" if i % 2 else re.escape(piece) for i, piece in enumerate(pieces)
    )
    return re.compile(regex)


def _match(pattern: str, name: str) -> dict[str, str] | None:
    found = _compile(pattern).fullmatch(name)
    return found.groupdict() if found else None


@dataclass(frozen=True)
class Route:
    """One official tensor and the transformers tensor(s) it becomes (none when transformers drops it)."""

    official: str
    transformers: tuple[str, ...]
    reshape: Reshape


def route_official(name: str) -> Route:
    """Where the official tensor `name` goes in the transformers layout."""
    if any(_match(pattern, name) is not None for pattern in _DROPPED):
        return Route(name, (), Reshape.DROPPED)
    if name == _POS_EMBED[0]:
        return Route(name, (_POS_EMBED[1],), Reshape.SQUEEZE_BATCH)
    fields = _match(_QKV[0], name)
    if fields is not None:
        targets = tuple(_QKV[1].format(proj=proj, **fields) for proj in QKV_PARTS)
        return Route(name, targets, Reshape.SPLIT_QKV)
    for official, hf in _RENAMES:
        fields = _match(official, name)
        if fields is not None:
            return Route(name, (hf.format(**fields),), Reshape.SAME)
    raise CheckpointError(
        f"tensor {name!r} is not part of an official Janus checkpoint (no transformers name)"
    )


def route_transformers(name: str) -> Route:
    """The official tensor that the transformers tensor `name` comes from (q/k/v_proj share one fused qkv)."""
    if name == _POS_EMBED[1]:
        return Route(_POS_EMBED[0], (name,), Reshape.SQUEEZE_BATCH)
    fields = _match(_QKV[1], name)
    if fields is not None:
        fields.pop("proj")
        targets = tuple(_QKV[1].format(proj=proj, **fields) for proj in QKV_PARTS)
        return Route(_QKV[0].format(**fields), targets, Reshape.SPLIT_QKV)
    for official, hf in _RENAMES:
        fields = _match(hf, name)
        if fields is not None:
            return Route(official.format(**fields), (name,), Reshape.SAME)
    raise CheckpointError(
        f"tensor {name!r} is not part of transformers' JanusForConditionalGeneration (no official name)"
    )


def to_transformers(route: Route, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """The transformers tensors of one official tensor (values and dtype unchanged)."""
    if route.reshape is Reshape.DROPPED:
        return {}
    if route.reshape is Reshape.SPLIT_QKV:
        if tensor.shape[0] % 3:
            raise CheckpointError(f"{route.official}: {tensor.shape[0]} fused qkv rows are not 3 equal parts")
        parts = tensor.chunk(3, dim=0)
        return {name: part.clone() for name, part in zip(route.transformers, parts, strict=True)}
    if route.reshape is Reshape.SQUEEZE_BATCH:
        if tensor.dim() != 3 or tensor.shape[0] != 1:
            raise CheckpointError(f"{route.official}: expected shape [1, N, W], got {list(tensor.shape)}")
        return {route.transformers[0]: tensor[0].clone()}
    return {route.transformers[0]: tensor}


def to_official(route: Route, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The official tensor of `route` from its transformers tensors, in `route.transformers` order."""
    if len(tensors) != len(route.transformers) or not tensors:
        raise CheckpointError(f"{route.official} needs {', '.join(route.transformers) or 'no tensors'}")
    if route.reshape is Reshape.SPLIT_QKV:
        return torch.cat(list(tensors), dim=0)
    if route.reshape is Reshape.SQUEEZE_BATCH:
        return tensors[0].unsqueeze(0).clone()
    return tensors[0]
