"""Writing a loaded model back as a checkpoint in DeepSeek's official layout, which `from_pretrained` (and
other tools that read Janus-Pro) loads: `model.safetensors` (or shards and their index) under the official
tensor names, config.json, preprocessor_config.json, processor_config.json, and the tokenizer files.

The JSON files are the source checkpoint's own, kept verbatim wherever they describe what the pipeline runs
(a sub-config whose component and params the pipeline did not change), and written from the PipelineConfig
where they do not. Every other non-weight file of the source (tokenizer, README, ...) is copied unchanged.

Nothing the user had is lost: the checkpoint is written into a temporary sibling directory that takes the
destination's place only once complete; a non-empty destination is replaced only with `overwrite=True` and
only when it holds a checkpoint (so a wrong path never deletes unrelated files); the checkpoint the pipeline
was loaded from is never written to.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from janus_sdk.checkpoint.convert import copy_other_files, parse_size, shard_files, swap_in_directory
from janus_sdk.checkpoint.weights import CONFIG_FILE, USABLE_DTYPES, detect_layout
from janus_sdk.config.official import OFFICIAL_SLOTS, official_to_pipeline_dict, read_json
from janus_sdk.config.pipeline import PipelineConfig
from janus_sdk.errors import CheckpointError, ConfigError
from janus_sdk.interfaces import CheckpointTensors
from janus_sdk.registry import Registry

PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
#: `model_type` of each official sub-config, as DeepSeek's config.json writes it.
MODEL_TYPES = {
    "vision_config": "vision",
    "aligner_config": "aligner",
    "gen_vision_config": "gen_vision",
    "gen_aligner_config": "gen_aligner",
    "gen_head_config": "gen_head",
}
_CODES = {dtype: code for code, dtype in USABLE_DTYPES.items()}
MAX_LISTED = 5


class CheckpointState(Mapping[str, torch.Tensor]):
    """`model`'s state dict with each tensor a module holds repacked (`interfaces.CheckpointTensors`) in the
    checkpoint's layout, made when read and dropped after: one such copy at a time."""

    def __init__(self, model: nn.Module) -> None:
        self._held: dict[str, torch.Tensor] = model.state_dict()
        self._repacked: dict[str, tuple[CheckpointTensors, str]] = {}
        for prefix, module in model.named_modules():
            own = itertools.chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False))
            names = [name for name, _ in own]
            if isinstance(module, CheckpointTensors):
                for name in names:
                    self._repacked[f"{prefix}.{name}" if prefix else name] = (module, name)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._repacked:
            module, own = self._repacked[name]
            repacked = module.checkpoint_tensor(own)
            if repacked is not None:
                return repacked
        return self._held[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)


def save_checkpoint(
    directory: str | Path,
    state: Mapping[str, torch.Tensor],
    layout: Mapping[str, torch.Tensor],
    config: PipelineConfig,
    *,
    source: Path,
    registry: Registry,
    converted_by: str,
    overwrite: bool = False,
    max_shard_size: int | str | None = None,
) -> Path:
    """Write `state` (the model's state dict) as a checkpoint of `config` into `directory`; returns its path.

    `layout` is the state dict of the same model freshly built on the meta device: the names, shapes and
    kinds of dtype a checkpoint holds. `source` is the checkpoint the pipeline was loaded from (tokenizer
    files come from there); `converted_by` names the linear backend, for the error when it changed weights.
    """
    destination = _checked_destination(Path(directory), source, overwrite)
    _check_savable(state, layout, converted_by)
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    dtype = str(dtypes.pop() if len(dtypes) == 1 else torch.float32).removeprefix("torch.")
    files = official_files(config, source, registry, dtype)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    )
    try:
        copy_other_files(source, staging)
        for name, content in files.items():
            (staging / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        sizes = {name: t.numel() * t.element_size() for name, t in state.items()}
        for filename, names in shard_files(sizes, limit, staging):
            write_safetensors(staging / filename, {name: state[name] for name in names})
        swap_in_directory(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _checked_destination(directory: Path, source: Path, overwrite: bool) -> Path:
    """The resolved destination, refused before anything is written when saving there could lose files."""
    destination = directory.expanduser().resolve()
    origin = source.resolve()
    if destination == origin or destination.is_relative_to(origin) or origin.is_relative_to(destination):
        raise CheckpointError(
            f"cannot save into {destination}: it is (or contains, or lies inside) the checkpoint this "
            f"pipeline was loaded from, {origin}; choose another directory"
        )
    if destination.is_file():
        raise CheckpointError(f"cannot save into {destination}: it is a file; pass a directory")
    if destination.is_dir() and any(destination.iterdir()):
        if not overwrite:
            raise CheckpointError(
                f"cannot save into {destination}: it is not empty. Choose a new or empty directory, or pass "
                "overwrite=True to replace a checkpoint saved there before"
            )
        try:
            detect_layout(destination)
        except CheckpointError:
            raise CheckpointError(
                f"cannot save into {destination}: it is not empty and holds no checkpoint (config.json and "
                "weights), so overwrite=True does not replace it; choose a new or empty directory"
            ) from None
    return destination


def _check_savable(
    state: Mapping[str, torch.Tensor], layout: Mapping[str, torch.Tensor], converted_by: str
) -> None:
    """Refuse weights that are no longer the checkpoint's own: a linear backend that quantizes or repacks
    them (int8 weights plus scales) holds something the official layout has no place for."""
    problems = [f"{name}: missing" for name in layout if name not in state]
    problems += [f"{name}: not a checkpoint tensor" for name in state if name not in layout]
    for name, expected in layout.items():
        held = state.get(name)
        if held is None:
            continue
        if held.shape != expected.shape or held.is_floating_point() != expected.is_floating_point():
            problems.append(
                f"{name}: {held.dtype} {list(held.shape)}, the checkpoint layout has "
                f"{'a floating' if expected.is_floating_point() else expected.dtype} {list(expected.shape)}"
            )
    if problems:
        listed = "\n".join(f"  {line}" for line in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise CheckpointError(
            "cannot save: the pipeline's weights are no longer in the checkpoint's format (its linear "
            f"backend {converted_by!r} converted them):\n{listed}{more}\nLoad the checkpoint with "
            "linear='torch' (or a backend that keeps the weights as loaded, such as 'avx2') and save that "
            "pipeline."
        )


def official_files(config: PipelineConfig, source: Path, registry: Registry, dtype: str) -> dict[str, Any]:
    """config.json, preprocessor_config.json and processor_config.json of `config` in the official format,
    by file name; a file is left out (the source's copy stands) where it already says the same."""
    try:
        previous: PipelineConfig | None = PipelineConfig.parse(
            official_to_pipeline_dict(source), registry=registry
        )
        stored = read_json(source / CONFIG_FILE)
    except (CheckpointError, ConfigError):  # a layout a plugin reads: every file written anew
        previous, stored = None, {"architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality"}
    main = dict(stored)
    for key, slot in OFFICIAL_SLOTS.items():
        spec = getattr(config, slot)
        if previous is None or getattr(previous, slot) != spec:
            main[key] = {"cls": spec.name, "model_type": MODEL_TYPES[key], "params": spec.params}
    llm = config.llm_backbone
    if previous is None or previous.llm_backbone != llm:
        main["language_config"] = {**llm.params, "model_type": llm.name}
    main["language_config"] = {**main["language_config"], "torch_dtype": dtype}
    main["torch_dtype"] = dtype
    files: dict[str, Any] = {CONFIG_FILE: main} if main != stored else {}
    if previous is None or previous.image_processor != config.image_processor:
        base = _optional_json(source / PREPROCESSOR_FILE, previous)
        files[PREPROCESSOR_FILE] = {**base, **config.image_processor.model_dump(mode="json")}
    if previous is None or (previous.processor, previous.chat_template) != (
        config.processor,
        config.chat_template,
    ):
        base = _optional_json(source / PROCESSOR_FILE, previous)
        processor = config.processor.model_dump(mode="json")
        files[PROCESSOR_FILE] = {**base, **processor, "sft_format": config.chat_template.name}
    return files


def _optional_json(path: Path, previous: PipelineConfig | None) -> dict[str, Any]:
    """An official file's contents to update (its bookkeeping keys kept), or nothing to start from."""
    return read_json(path) if previous is not None and path.is_file() else {}


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write `tensors` as one safetensors file, streaming each tensor's bytes (safetensors' own `save_file`
    first copies every tensor into one bytes object: a second copy of a 7B model)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _CODES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as file:
        file.write(len(encoded).to_bytes(8, "little"))
        file.write(encoded)
        for tensor in tensors.values():
            data = tensor.detach().to("cpu").contiguous()  # a copy only of a GPU or strided tensor
            if data.numel():
                file.write(data.view(-1).view(torch.uint8).numpy().data)
