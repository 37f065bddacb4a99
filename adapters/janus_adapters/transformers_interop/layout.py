"""A checkpoint in the layout of transformers' `JanusForConditionalGeneration`, read as if it were in
DeepSeek's official layout: the official metadata files (config, tokenizer and processor settings) and a lazy
view of the tensors under the official names and shapes. The SDK loads such a checkpoint through this view
(see `plugin`), and the converter writes the official layout from it.

Tensors transformers has no place for come from the side file `janus_official_extras.safetensors` when it is
there. Without it, the VQ `codebook_used` training buffer is regenerated as the zeros the official checkpoints
hold, and the unused SigLIP attention-pool head is left out: the official config then says `global_pool: ""`,
so the SigLIP component is built without that head and every tensor it expects is present with its exact
shape. A config that ties the LM head to the embeddings gets `lm_head` from the embeddings, as transformers
builds it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open

from janus_adapters.transformers_interop import config as meta
from janus_adapters.transformers_interop import keymap
from janus_sdk.checkpoint import open_checkpoint
from janus_sdk.checkpoint.weights import USABLE_DTYPES, ClosedOnExit
from janus_sdk.config.official import read_json, read_optional_json
from janus_sdk.errors import CheckpointError

EXTRAS_FILE = "janus_official_extras.safetensors"
"""Side file of a transformers-layout checkpoint holding the official tensors transformers drops."""
ATTN_POOL_PREFIX = "vision_model.vision_tower.attn_pool."
DEFAULT_NUM_IMAGE_TOKENS = 576


def official_metadata(
    directory: Path, hf_config: Mapping[str, Any], *, has_attn_pool: bool
) -> dict[str, dict[str, Any]]:
    """The official config.json, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json and
    processor_config.json (by file name) of the transformers-layout checkpoint `directory`."""
    official = meta.transformers_to_official(hf_config, transformers.__version__)
    if not has_attn_pool:
        official["vision_config"]["params"]["global_pool"] = ""
    processor = read_optional_json(directory / "processor_config.json") or {}
    image_processor = processor.get("image_processor")
    if not isinstance(image_processor, dict):
        image_processor = read_json(directory / "preprocessor_config.json")
    num_image_tokens = int(processor.get("num_image_tokens", DEFAULT_NUM_IMAGE_TOKENS))
    return {
        "config.json": official,
        **meta.official_tokenizer_files(read_json(directory / "tokenizer_config.json")),
        **meta.official_processor_files(image_processor, num_image_tokens),
    }


class OfficialView(ClosedOnExit):
    """The tensors of a transformers-layout checkpoint under the official names and shapes, read lazily.

    Offers the reading interface of `CheckpointWeights` (keys, shape_of, dtype_of, get, ...), so the SDK's
    loader and the converter read it like an official checkpoint. q/k/v projections are concatenated back
    into the fused `qkv` and the position table gets its batch axis back only when a tensor is read.
    """

    def __init__(self, directory: str | Path, *, ties_lm_head: bool) -> None:
        self._stored = open_checkpoint(directory)
        self.directory = self._stored.directory
        self._extras: Any = None
        has_extras = (self.directory / EXTRAS_FILE).is_file()
        self._extra_names: tuple[str, ...] = tuple(self._extras_file().keys()) if has_extras else ()
        self._routes = self._official_routes(ties_lm_head)
        self._regenerate_codebook_used = keymap.CODEBOOK_USED not in self._extra_names
        self._names = [
            *self._routes,
            *self._extra_names,
            *([keymap.CODEBOOK_USED] if self._regenerate_codebook_used else []),
        ]
        self._name_set = frozenset(self._names)

    def _official_routes(self, ties_lm_head: bool) -> dict[str, keymap.Route]:
        """Official name -> the stored transformers tensors it is made of; every part must be there."""
        routes: dict[str, keymap.Route] = {}
        for name in self._stored:
            route = keymap.route_transformers(name)
            routes.setdefault(route.official, route)
        for route in routes.values():
            missing = [name for name in route.transformers if name not in self._stored]
            if missing:
                raise CheckpointError(f"{self.directory}: {route.official} needs {', '.join(missing)}")
        if keymap.OFFICIAL_LM_HEAD not in routes:
            if not ties_lm_head:
                raise CheckpointError(
                    f"{self.directory} has no lm_head.weight and its config does not tie it"
                )
            embed = keymap.route_official(keymap.OFFICIAL_EMBED_TOKENS)
            routes[keymap.OFFICIAL_LM_HEAD] = keymap.Route(
                keymap.OFFICIAL_LM_HEAD, embed.transformers, keymap.Reshape.SAME
            )
        return routes

    @property
    def has_attn_pool(self) -> bool:
        """Whether the side file restores the official SigLIP attention-pool head."""
        return any(name.startswith(ATTN_POOL_PREFIX) for name in self._extra_names)

    def close(self) -> None:
        """Drop the open files (and their memory mappings, once no tensor from them is alive)."""
        self._stored.close()
        self._extras = None

    def keys(self) -> list[str]:
        """Official tensor names."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._name_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def _codebook(self) -> str:
        return keymap.route_official(keymap.CODEBOOK).transformers[0]

    def _check(self, name: str) -> None:
        if name not in self._name_set:
            raise CheckpointError(f"checkpoint {self.directory} has no tensor named {name!r}")

    def file_of(self, name: str) -> Path:
        """The file the tensor's data comes from (for a regenerated `codebook_used`: the codebook's)."""
        self._check(name)
        if name in self._routes:
            return self._stored.file_of(self._routes[name].transformers[0])
        if name in self._extra_names:
            return self.directory / EXTRAS_FILE
        return self._stored.file_of(self._codebook())

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The official shape, from the stored headers."""
        self._check(name)
        route = self._routes.get(name)
        if route is None:
            if name in self._extra_names:
                return tuple(self._extras_file().get_slice(name).get_shape())
            return (keymap.CODEBOOK_USED_SIZE,)
        first, *rest = (self._stored.shape_of(part) for part in route.transformers)
        if route.reshape is keymap.Reshape.SPLIT_QKV:
            return (first[0] + sum(shape[0] for shape in rest), *first[1:])
        if route.reshape is keymap.Reshape.SQUEEZE_BATCH:
            return (1, *first)
        return first

    def dtype_of(self, name: str) -> torch.dtype:
        """The stored dtype (every part of a fused tensor has it)."""
        self._check(name)
        route = self._routes.get(name)
        if route is not None:
            return self._stored.dtype_of(route.transformers[0])
        if name in self._extra_names:
            code = str(self._extras_file().get_slice(name).get_dtype())
            if code not in USABLE_DTYPES:
                raise CheckpointError(f"tensor {name!r} in {self.directory / EXTRAS_FILE} has dtype {code}")
            return USABLE_DTYPES[code]
        return self._stored.dtype_of(self._codebook())

    def nbytes_of(self, name: str) -> int:
        """Size of the official tensor in bytes, without reading it."""
        return math.prod(self.shape_of(name)) * self.dtype_of(name).itemsize

    def get(self, name: str) -> torch.Tensor:
        """The official tensor, built from the stored ones (possibly a view of a file's memory mapping)."""
        self._check(name)
        route = self._routes.get(name)
        if route is not None:
            return keymap.to_official(route, [self._stored.get(part) for part in route.transformers])
        if name in self._extra_names:
            tensor: torch.Tensor = self._extras_file().get_tensor(name)
            return tensor
        return torch.zeros(keymap.CODEBOOK_USED_SIZE, dtype=self.dtype_of(name))

    def _extras_file(self) -> Any:
        """The side file, opened (memory-mapped) on first use."""
        if self._extras is None:
            path = self.directory / EXTRAS_FILE
            try:
                self._extras = safe_open(str(path), framework="pt", device="cpu")
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
        return self._extras


def open_official_view(directory: str | Path) -> tuple[dict[str, dict[str, Any]], OfficialView]:
    """The official metadata files (see `official_metadata`) and tensors of a transformers-layout
    checkpoint."""
    path = Path(directory).expanduser()
    hf_config = read_json(path / "config.json")
    weights = OfficialView(path, ties_lm_head=meta.transformers_ties_lm_head(hf_config))
    try:
        files = official_metadata(path, hf_config, has_attn_pool=weights.has_attn_pool)
    except BaseException:
        weights.close()
        raise
    return files, weights
