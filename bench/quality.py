"""What a linear backend (and dtype) costs in fidelity.

On the janus-tiny reference goldens (default): each (linear backend, dtype) loads the tiny checkpoint through
the public API and is compared with the official implementation's float32 outputs: the logits of the
understanding prompt (631 positions), and the classifier-free-guided image-token logits of the first 32
teacher-forced generation steps (2 images). With `--size 1b` (or 7b): the quantized backends on the bench's
seeded random weights at that size (bench/models.py writes the checkpoint once), against torch's own bfloat16
path on the same weights (no official outputs exist at that size): the generation prompt's logits and the
guided logits of 32 teacher-forced image steps (2 images, random codes). Printed: max and mean absolute logit
error, and how often the top-1 token agrees where the reference's top-2 gap is at least 1e-3 (for image
logits: the image token greedy decoding would pick). Run: `python bench/quality.py [--size 1b] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from janus_plugins.cpu_kernels import kernel_isas
from janus_sdk import BackendUnavailableError, JanusPipeline
from janus_sdk.kinds import ComponentKind
from janus_sdk.pipeline.decoding import generate_image_codes
from janus_sdk.prompts import build_generation_prompt_ids, guidance_rows
from models import checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "janus-tiny"


def variants() -> list[tuple[str, str]]:
    """(linear, dtype) pairs measured on the tiny checkpoint: torch, each build of the kernel this CPU runs
    (the wide one in bfloat16 only: in float32 it computes as the base one), int8, and int4 in bfloat16."""
    try:
        builds = kernel_isas()
    except BackendUnavailableError:
        builds = ()
    pairs: list[tuple[str, str]] = []
    for dtype in ("float32", "bfloat16"):
        kernels = builds if dtype == "bfloat16" else builds[:1]
        pairs += [("torch", dtype), *((build, dtype) for build in kernels), ("int8", dtype)]
    return [*pairs, ("int4", "bfloat16")]


FORCED_STEPS = 32


class TeacherForcing:
    """A Sampler that records the logits it is shown and answers with the reference's forced tokens."""

    def __init__(self, tokens: Tensor) -> None:
        self.tokens, self.logits = tokens, []  # type: ignore[var-annotated]

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        self.logits.append(logits.float().clone())
        return self.tokens[:, len(self.logits) - 1]


def forced_cfg_logits(pipe: JanusPipeline, forced: Tensor, prompt: str) -> Tensor:
    """[2, FORCED_STEPS, codebook] guided logits of the image loop fed the reference's tokens."""
    guidance = pipe._component(ComponentKind.GUIDANCE, "cfg", {"cfg_weight": 5.0})
    ids = build_generation_prompt_ids(prompt, pipe.tokenizer, pipe.chat_template)
    rows = guidance_rows(ids, forced.shape[0], guidance, pipe.tokenizer.pad_id)
    sampler = TeacherForcing(forced)
    model = pipe.model
    with torch.inference_mode():
        generate_image_codes(
            model.language_model,
            model.language_model.embed_tokens(rows),
            gen_head=model.gen_head,
            gen_embed=model.gen_embed,
            gen_aligner=model.gen_aligner,
            guidance=guidance,
            sampler=sampler,
            num_tokens=FORCED_STEPS,
            generator=None,
        )
    return torch.stack(sampler.logits, dim=1)


def prompt_logits(pipe: JanusPipeline, embeds: Tensor) -> Tensor:
    llm = pipe.model.language_model
    with torch.inference_mode():
        hidden = llm.hidden_states(embeds.to(pipe.dtype), llm.new_cache(1, embeds.shape[1]), 0)
        return llm.text_logits(hidden).float()


def compare(ours: Tensor, reference: Tensor, gap: Tensor) -> dict[str, float]:
    error = (ours - reference).abs()
    robust = gap >= 1e-3
    agree = ours.argmax(-1)[robust] == reference.argmax(-1)[robust]
    return {
        "max_abs": float(error.max()),
        "mean_abs": float(error.mean()),
        "top1_agreement": float(agree.float().mean()),
        "reference_std": float(reference.std()),
    }


def top2_gap(logits: Tensor) -> Tensor:
    top = logits.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def measure(linear: str, dtype: str, golden: dict[str, Tensor], prompt: str) -> dict[str, Any]:
    pipe = JanusPipeline.from_pretrained(FIXTURE / "checkpoint", device="cpu", dtype=dtype, linear=linear)
    forced = golden["gen_forced_tokens"][:, :FORCED_STEPS]
    reference_gen = golden["gen_forced_cfg_logits_first32"][:, :FORCED_STEPS]
    reference_und = golden["und_prompt_logits"]
    return {
        "linear": linear,
        "dtype": dtype,
        "understanding_prompt": compare(
            prompt_logits(pipe, golden["und_inputs_embeds"]), reference_und, top2_gap(reference_und)
        ),
        "image_tokens_cfg": compare(
            forced_cfg_logits(pipe, forced, prompt), reference_gen, top2_gap(reference_gen)
        ),
    }


def random_weights(size: str, prompt: str) -> list[dict[str, Any]]:
    """int8 and int4 against torch's bfloat16 path on the seeded random weights of `size`."""
    folder = checkpoint(size, torch.bfloat16, seed=0)
    results = []
    reference: dict[str, Tensor] = {}
    for linear in ("torch", "int8", "int4"):
        pipe = JanusPipeline.from_pretrained(folder, device="cpu", dtype="bfloat16", linear=linear)
        ids = torch.tensor([build_generation_prompt_ids(prompt, pipe.tokenizer, pipe.chat_template)])
        codes = torch.randint(
            0,
            pipe.model.gen_vision_model.codebook_size,
            (2, FORCED_STEPS),
            generator=torch.Generator().manual_seed(0),
        )
        with torch.inference_mode():
            logits = {
                "prompt": prompt_logits(pipe, pipe.model.language_model.embed_tokens(ids)),
                "image": forced_cfg_logits(pipe, codes, prompt),
            }
        del pipe
        if not reference:
            reference = logits
            continue
        results.append(
            {"linear": linear, "dtype": f"bfloat16, {size} random weights"}
            | {
                key: compare(logits[part], reference[part], top2_gap(reference[part]))
                for key, part in (("understanding_prompt", "prompt"), ("image_tokens_cfg", "image"))
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        choices=("tiny", "1b", "7b"),
        default="tiny",
        help="tiny: against the official goldens; 1b/7b: quantized against torch bfloat16",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    golden = load_file(FIXTURE / "golden" / "golden.safetensors")
    manifest = json.loads((FIXTURE / "golden" / "manifest.json").read_text(encoding="utf-8"))["info"]
    prompt = manifest["gen_conversation"][0]["content"]
    if args.size == "tiny":
        results = [measure(linear, dtype, golden, prompt) for linear, dtype in variants()]
    else:
        results = random_weights(args.size, prompt)
    print(
        "| linear | dtype | prompt logits: max / mean abs error, top-1 agreement "
        "| CFG image logits: max / mean abs error, top-1 agreement |"
    )
    print("|---|---|---|---|")
    for r in results:
        und, gen = r["understanding_prompt"], r["image_tokens_cfg"]
        print(
            f"| {r['linear']} | {r['dtype']} | {und['max_abs']:.2e} / {und['mean_abs']:.2e}, "
            f"{und['top1_agreement']:.1%} | {gen['max_abs']:.2e} / {gen['mean_abs']:.2e}, "
            f"{gen['top1_agreement']:.1%} |"
        )
    std = results[0]
    print(
        f"(reference logit std: prompt {std['understanding_prompt']['reference_std']:.3f}, "
        f"image {std['image_tokens_cfg']['reference_std']:.3f})"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
