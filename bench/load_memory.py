"""Peak memory of loading a checkpoint, against the bytes of its weights (run on demand).

Writes a synthetic checkpoint in the official layout (DeepSeek's config.json and tokenizer files, every tensor
of the model under its official name, sharded like Janus-Pro-7B) at a released model's geometry, then loads it
through `JanusPipeline.from_pretrained` in a fresh process per weight format and prints

    peak RSS growth while loading / bytes of the weights in the checkpoint

The child imports everything first (it loads the tiny fixture once) and resets the kernel's peak-RSS counter,
so the growth is the load's own. Linux only (it reads /proc/self/status and writes /proc/self/clear_refs).

    python bench/load_memory.py --size 1b                    # 4.1 GB of bfloat16 weights, both formats
    python bench/load_memory.py --size 7b --keep /data/ck  # 14.8 GB; writes (or reuses) checkpoints there
    python bench/load_memory.py --size scaled --json         # what tests/test_load_memory.py runs (~0.4 GB)
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from janus_sdk.config import PipelineConfig
from janus_sdk.config.official import official_config_to_pipeline_dict
from janus_sdk.config.presets import official_preset
from janus_sdk.pipeline.janus import build_model
from janus_sdk.plugins import get_registry
from janus_sdk.registry import BuildContext

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "janus-tiny" / "checkpoint"
"""Its tokenizer and processor files serve every geometry; its config.json is the base of `scaled`."""
FORMATS = ("bin", "safetensors")
SCALED_WIDTH = 1024
SCALED_LLM = {
    "hidden_size": SCALED_WIDTH,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "vocab_size": 32768,
}
"""`scaled`: the tiny fixture with a LLaMA backbone of ~0.4 GB in bfloat16 (big enough that a second copy of
the weights stands far above the noise of a Python process, small enough for a test)."""


def official_config(size: str) -> dict[str, Any]:
    """config.json of a geometry: a released model's (presets), or the fixture's with a larger backbone."""
    if size in ("1b", "7b"):
        config = official_preset(f"Janus-Pro-{size.upper()}")
        return {**config, "model_type": "multi_modality", "torch_dtype": "bfloat16"}
    config = json.loads((FIXTURE / "config.json").read_text(encoding="utf-8"))
    config["language_config"].update(SCALED_LLM)
    for key in ("aligner_config", "gen_aligner_config"):
        config[key]["params"]["n_embed"] = SCALED_WIDTH
    config["gen_head_config"]["params"].update(n_embed=SCALED_WIDTH, image_token_embed=SCALED_WIDTH)
    return dict(config)


def write_checkpoint(directory: Path, size: str, fmt: str, shards: int) -> int:
    """Write the geometry's checkpoint in `fmt` as `shards` files plus their index; returns its weight bytes.

    Tensors are made one shard at a time (a constant fill: the values do not matter to memory)."""
    directory.mkdir(parents=True)
    for entry in FIXTURE.iterdir():
        if entry.name != "config.json" and not entry.name.startswith("model"):
            shutil.copy2(entry, directory / entry.name)
    official = official_config(size)
    (directory / "config.json").write_text(json.dumps(official, indent=2), encoding="utf-8")
    config = PipelineConfig.parse(official_config_to_pipeline_dict(official, source=size))
    shapes = build_model(config, get_registry(), BuildContext(device=torch.device("meta"))).state_dict()
    total: int = sum(t.numel() * _stored_dtype(t).itemsize for t in shapes.values())
    groups: list[list[str]] = [[]]
    filled = 0
    for name, tensor in shapes.items():
        if filled >= total * len(groups) / shards:
            groups.append([])
        groups[-1].append(name)
        filled += tensor.numel() * _stored_dtype(tensor).itemsize
    stem, suffix = ("pytorch_model", "bin") if fmt == "bin" else ("model", "safetensors")
    weight_map: dict[str, str] = {}
    for number, names in enumerate(groups, start=1):
        filename = f"{stem}-{number:05d}-of-{len(groups):05d}.{suffix}"
        tensors = {
            name: torch.full(shapes[name].shape, 0.01).to(_stored_dtype(shapes[name])) for name in names
        }
        if fmt == "bin":
            torch.save(tensors, directory / filename)
        else:
            save_file(tensors, str(directory / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, filename))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{stem}.{suffix}.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return total


def _stored_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.bfloat16 if tensor.is_floating_point() else tensor.dtype


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_load(directory: Path, dtype: str, linear: str) -> dict[str, Any]:
    """In this process: peak RSS growth of `from_pretrained(directory)` after every import is done."""
    from janus_sdk import JanusPipeline

    options: dict[str, Any] = {"device": "cpu", "dtype": dtype, "linear": linear, "attention": "sdpa"}
    JanusPipeline.from_pretrained(FIXTURE, **options)  # imports, plugin discovery, tokenizer libraries
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")  # peak RSS := current RSS
    before = _proc_status("VmRSS")
    start = time.perf_counter()
    pipe = JanusPipeline.from_pretrained(directory, **options)
    seconds = time.perf_counter() - start
    peak = _proc_status("VmHWM")
    held = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in pipe.model.state_dict().values()
    }
    return {
        "rss_before": before,
        "peak_growth": peak - before,
        "model_bytes": sum(held.values()),
        "load_s": seconds,
    }


def run_child(directory: Path, dtype: str, linear: str) -> dict[str, Any]:
    """`measure_load` in a fresh Python process (nothing cached, nothing mapped from earlier loads)."""
    command = [sys.executable, __file__, "--child", str(directory), "--dtype", dtype, "--linear", linear]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loading {directory} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("scaled", "1b", "7b"), default="1b")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated: bin, safetensors")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", help="the dtype to load in (bfloat16: no conversion)")
    parser.add_argument("--linear", default="torch")
    parser.add_argument("--keep", type=Path, help="write the checkpoints under this folder and keep them")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_load(args.child, args.dtype, args.linear)))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="janus-load-memory-"))
    results: dict[str, Any] = {"size": args.size, "dtype": args.dtype, "linear": args.linear}
    try:
        for fmt in args.formats.split(","):
            directory = root / f"{args.size}-{fmt}-{args.shards}"
            index = directory / (
                "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
            )
            if index.exists():
                weight_bytes = json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"]
            else:
                weight_bytes = write_checkpoint(directory, args.size, fmt, args.shards)
            result = run_child(directory, args.dtype, args.linear)
            result |= {"weight_bytes": weight_bytes, "ratio": result["peak_growth"] / weight_bytes}
            results[fmt] = result
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{args.size} geometry, loaded as {args.dtype}, linear {args.linear}, {args.shards} shards")
    for fmt in args.formats.split(","):
        r = results[fmt]
        print(
            f"  {fmt:12} weights {r['weight_bytes'] / 2**30:6.2f} GiB  peak growth "
            f"{r['peak_growth'] / 2**30:6.2f} GiB  ratio {r['ratio']:.3f}  (model holds "
            f"{r['model_bytes'] / 2**30:.2f} GiB), {r['load_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
