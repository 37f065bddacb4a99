"""One system in a process of its own: build it on the seeded random weights, run the asked-for workloads and
write the results with the process's peak memory as JSON, rewritten after every workload so that a run cut
short keeps what it measured. Started by run.py as `python bench/worker.py SPEC_JSON OUT_JSON`."""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image
from torch import Tensor, nn

import workloads
from floor import (
    StepBytes,
    image_step_modules,
    largest_tensors,
    module_bytes,
    read_in_place_gbps,
    text_step_modules,
)
from janus_sdk.devices import resolve_dtype
from janus_sdk.pipeline.janus import JanusPipeline
from janus_sdk.prompts import Message, build_generation_prompt_ids, build_understanding_inputs
from measure import ReadingClock, cuda_peak_bytes, peak_rss_bytes
from models import build_reference_peer, build_transformers_peer, load_ours, unique_bytes
from systems import NUM_IMAGE_TOKENS, Ours, ReferencePeer, System, TransformersPeer

SYSTEMS = ("ours", "ours-int8", "transformers", "reference")
PEERS = ("transformers", "reference")
OUR_LINEAR = {"ours-int8": "int8"}  # our variants: the linear backend each is built with
OURS = ("ours", *OUR_LINEAR)
WORKLOADS = ("t2i", "understand", "vq")
T2I_PROMPT = "A red cube on a blue table."
UNDERSTAND_PROMPT = "What is shown in this image?"


@dataclass(frozen=True)
class WorkerSpec:
    system: str
    model_size: str
    dtype: str
    device: str
    threads: int
    tokens: int
    n: tuple[int, ...]
    workloads: tuple[str, ...]
    vq_repeats: int
    vq_budget_s: float
    vq_images: int = 1
    floor_between_steps: bool = True  # ours: a second run of each decode workload, reading between its steps
    attention: str | None = None
    linear: str | None = None  # our linear backend (None: the config's "auto"); peers always get torch's
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # config slot -> params over ours' own
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        return cls(**{**data, "n": tuple(data["n"]), "workloads": tuple(data["workloads"])})


def understanding_embeds(pipe: JanusPipeline, seed: int) -> Tensor:
    """The official one-image prompt as embeddings [1, T, hidden] (T = 631 with the fixture tokenizer), seeded
    random features standing in for SigLIP + aligner output at the image positions."""
    blank = Image.new("RGB", (384, 384), (127, 127, 127))
    inputs = build_understanding_inputs(
        [Message(role="user", content=UNDERSTAND_PROMPT, images=[blank])],
        pipe.tokenizer,
        pipe.chat_template,
        pipe.image_processor,
        pipe.config.processor,
    )
    mask = inputs.images_seq_mask.to(pipe.device)
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    with torch.inference_mode():
        embeds = pipe.model.language_model.embed_tokens(inputs.input_ids.to(pipe.device))
        features = torch.randn(int(mask.sum()), embeds.shape[-1], generator=generator, device=pipe.device)
        embeds[mask] = features.to(embeds.dtype)
    return embeds


def build_system(spec: WorkerSpec, pipe: JanusPipeline) -> System:
    """The system under test; a peer takes over the pipeline's tensors (the caller drops the pipeline)."""
    if spec.system in OURS:
        return Ours(pipe, T2I_PROMPT)
    if spec.system == "transformers":
        return TransformersPeer(build_transformers_peer(pipe, spec.model_size))
    if spec.system == "reference":
        return ReferencePeer(build_reference_peer(pipe), pipe.tokenizer.pad_id, pipe.tokenizer.bos_id)
    raise ValueError(f"unknown system {spec.system!r}; known: {', '.join(SYSTEMS)}")


def _timed_tune(pipe: JanusPipeline) -> float:
    start = time.perf_counter()
    pipe.tune()
    return time.perf_counter() - start


def _attempt(run: Callable[[], Any]) -> Any:
    """A workload's result, or its error (the other workloads still run)."""
    try:
        return run()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def run_worker(spec: WorkerSpec, save: Callable[[dict[str, Any]], None]) -> None:
    """Build the system, then run each workload, calling `save` with everything so far after each one."""
    torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    start = time.perf_counter()
    linear = "torch" if spec.system in PEERS else OUR_LINEAR.get(spec.system, spec.linear)
    pipe = load_ours(
        spec.model_size,
        dtype=dtype,
        device=device,
        seed=spec.seed,
        attention=spec.attention,
        linear=linear,
        params=spec.params,
    )
    # Ours takes its measured choices (janus_sdk.tuning, cached per machine) before anything is timed, as
    # `janus tune` would: a first run on a machine spends seconds here instead of inside the timed steps.
    tune_s = _timed_tune(pipe) if spec.system in OURS else None
    step_bytes = StepBytes.of(pipe.model, dtype)
    prompt_ids = build_generation_prompt_ids(T2I_PROMPT, pipe.tokenizer, pipe.chat_template)
    embeds = understanding_embeds(pipe, spec.seed) if "understand" in spec.workloads else None
    codes = torch.randint(
        0,
        pipe.model.gen_vision_model.codebook_size,
        (spec.vq_images, NUM_IMAGE_TOKENS),
        generator=torch.Generator().manual_seed(spec.seed),
    ).to(device)
    system = build_system(spec, pipe)
    # ours' decode steps get a floor read just before and just after them, on its own largest weights (a
    # peer's model is not held here: it may have been built from a copy that `del pipe` frees)
    ours_model = pipe.model if spec.system in OURS else None
    largest = largest_tensors(ours_model) if ours_model is not None else []
    del pipe
    gc.collect()
    build_s = time.perf_counter() - start
    print(f"{spec.system}: built in {build_s:.1f} s", file=sys.stderr, flush=True)

    # (result key, workload, positions x rows our KV cache holds for it, what its decode steps read once)
    jobs: list[tuple[str, Callable[..., Any], int, tuple[nn.Module, ...]]] = []
    if "t2i" in spec.workloads:
        jobs += [
            (
                f"t2i_n{n}",
                partial(workloads.text_to_image, system, device, prompt_ids, n, spec.tokens),
                2 * n * (len(prompt_ids) + NUM_IMAGE_TOKENS),
                image_step_modules(ours_model) if ours_model is not None else (),
            )
            for n in spec.n
        ]
    if embeds is not None:
        jobs.append(
            (
                "understand",
                partial(workloads.understand, system, device, embeds, spec.tokens),
                embeds.shape[1] + spec.tokens,
                text_step_modules(ours_model) if ours_model is not None else (),
            )
        )
    if "vq" in spec.workloads:
        vq = partial(workloads.vq_decode, system, device, codes, spec.vq_repeats, spec.vq_budget_s)
        jobs.append(("vq", vq, 0, ()))

    payload: dict[str, Any] = {
        "spec": asdict(spec),
        "build_s": build_s,
        "weight_bytes": unique_bytes(system.module.state_dict()),
        "kv_cache_bytes": 0,
        "step_bytes": step_bytes.as_dict(),
        "results": {},
        "complete": False,
        "tune_s": tune_s,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    for key, run, positions, step_modules in jobs:
        print(f"{spec.system}: {key} ...", file=sys.stderr, flush=True)
        beside = partial(read_in_place_gbps, largest, device) if step_modules else None
        before = beside() if beside else None
        payload["results"][key] = _attempt(run)
        if beside and "error" not in payload["results"][key]:
            payload["results"][key]["floor_beside_gbps"] = [before, beside()]
            payload["results"][key]["step_weight_bytes"] = module_bytes(step_modules)
            if spec.floor_between_steps:  # a second run, each step beside a reading of its own
                clock = ReadingClock(device, partial(read_in_place_gbps, largest, device, repeats=1))
                paired = _attempt(partial(run, clock=clock))
                if "error" not in paired:
                    readings = {"steps_ms": paired["steps_ms"], "read_gbps": clock.readings}
                    payload["results"][key]["paired"] = readings
        payload["kv_cache_bytes"] = max(payload["kv_cache_bytes"], step_bytes.kv_per_position * positions)
        payload.update(peak_rss_bytes=peak_rss_bytes(), cuda_peak_bytes=cuda_peak_bytes(device))
        save(payload)
    payload["complete"] = True
    save(payload)


def main() -> None:
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    spec, out = WorkerSpec.from_json(sys.argv[1]), Path(sys.argv[2])

    def save(payload: dict[str, Any]) -> None:
        out.write_text(json.dumps(payload), encoding="utf-8")

    run_worker(spec, save)


if __name__ == "__main__":
    main()
