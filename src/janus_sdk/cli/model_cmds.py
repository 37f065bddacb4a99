"""`janus info`, `janus chat` and `janus generate`: the commands that load a model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from janus_sdk.config import GenerationConfig, ImageGenerationConfig
from janus_sdk.errors import InputError

MODEL_HELP = (
    "checkpoint directory in the official layout, or a Hugging Face Hub id (e.g. deepseek-ai/Janus-Pro-1B)"
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    info = sub.add_parser(
        "info",
        help="components and parameter counts of a model",
        formatter_class=raw,
        description="Show the components of a model and their parameter counts. With --preset, the real "
        "architecture of a released model is built on the meta device (no weights, no download).",
        epilog="examples:\n  janus info --model tests/fixtures/janus-tiny/checkpoint\n"
        "  janus info --preset Janus-Pro-7B --json",
    )
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help=MODEL_HELP)
    source.add_argument(
        "--preset", help="a released model's architecture: Janus-Pro-1B, Janus-Pro-7B, Janus-1.3B"
    )
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=run_info)

    chat = sub.add_parser(
        "chat",
        help="answer a prompt about images (streamed), or talk interactively",
        formatter_class=raw,
        description="Answer PROMPT about the given images, streaming the text. Without PROMPT, open an "
        "interactive multi-turn session: /image PATH attaches an image to the next message, "
        "/reset starts over, "
        "/exit leaves.",
        epilog='examples:\n  janus chat --model DIR --image cat.png "What is in this picture?"\n'
        '  janus chat --model DIR --temperature 0.7 --top-p 0.9 --seed 1 "Write a haiku."\n'
        '  janus chat --model DIR --sampler min-p --sampler-param p=0.05 --temperature 0.8 "Write a haiku."\n'
        "  janus chat --model DIR            # interactive",
    )
    add_model_options(chat)
    chat.add_argument("--image", action="append", default=[], metavar="FILE", help="an image (repeatable)")
    chat.add_argument("--max-new-tokens", type=int, help="most tokens in the answer (default 512)")
    mode = chat.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="greedy decoding (the default)")
    mode.add_argument("--temperature", type=float, help="sample with this temperature")
    chat.add_argument("--top-p", type=float, help="nucleus sampling mass (with --temperature)")
    chat.add_argument("--top-k", type=int, help="sample among the k most likely tokens (with --temperature)")
    chat.add_argument("--seed", type=int, help="seed for sampling")
    add_strategy_options(chat, "sampler", "sampling strategy by name: greedy, sample, min-p, or a plugin's")
    chat.add_argument("prompt", nargs="?", help="the question; omit for an interactive session")
    chat.set_defaults(handler=run_chat)

    generate = sub.add_parser(
        "generate",
        help="generate images from a prompt",
        formatter_class=raw,
        description="Generate images and write OUT/000.png, OUT/001.png, ... (never overwriting unless "
        "--overwrite); prints their paths.",
        epilog='examples:\n  janus generate --model DIR -n 4 --seed 0 --out out/ "a red fox in snow"\n'
        '  janus generate --model DIR --cfg-weight 3 --grid --json "a lighthouse at dusk"\n'
        '  janus generate --model DIR --guidance cfg --guidance-param schedule=cosine "a red fox"',
    )
    add_model_options(generate)
    generate.add_argument("-n", type=int, help="number of images (default 1)")
    generate.add_argument("--cfg-weight", type=float, help="classifier-free guidance weight (default 5)")
    generate.add_argument("--temperature", type=float, help="sampling temperature (default 1)")
    generate.add_argument("--top-k", type=int, help="sample among the k most likely codes (default: all)")
    generate.add_argument("--top-p", type=float, help="nucleus sampling mass (default 1)")
    generate.add_argument("--seed", type=int, help="seed: the same seed and n give the same images")
    generate.add_argument("--max-batch", type=int, help="most images sampled at once (memory bound)")
    add_strategy_options(
        generate, "guidance", "guidance strategy by name: cfg, cfg-zero-star, none, or a plugin's"
    )
    add_strategy_options(
        generate, "sampler", "sampler of the image codes by name: sample, min-p, or a plugin's"
    )
    generate.add_argument("--out", default="janus-images", help="output directory (default: janus-images)")
    generate.add_argument("--overwrite", action="store_true", help="replace existing files of the same names")
    generate.add_argument(
        "--grid", action="store_true", help="also write grid.png, a contact sheet of all images"
    )
    generate.add_argument("--json", action="store_true", help="print a machine-readable summary")
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")
    generate.add_argument("prompt", help="what to draw")
    generate.set_defaults(handler=run_generate)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument(
        "--dtype", default="auto", help="auto, float32, bfloat16, float16 (CUDA) (default auto)"
    )
    parser.add_argument(
        "--attention", help="attention backend: auto (default), sdpa, eager, xformers, avx2 (CPU kernel)"
    )
    parser.add_argument(
        "--linear",
        help="linear backend of the per-token layers: auto (default), torch, avx2 / avx512 (CPU kernels), "
        "int8 / int4 (weight-only int8, group-wise int4)",
    )


def add_strategy_options(parser: argparse.ArgumentParser, field: str, what: str) -> None:
    """--FIELD NAME and repeatable --FIELD-param KEY=VALUE: a component spec (`strategy_spec`)."""
    parser.add_argument(f"--{field}", metavar="NAME", help=f"{what}; its params with --{field}-param")
    parser.add_argument(
        f"--{field}-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a param of --{field} (repeatable); VALUE is read as JSON when it parses (0.05, true, [1, 2]), "
        "else as a string",
    )


def strategy_spec(args: argparse.Namespace, field: str) -> dict[str, Any] | None:
    """The {name, params} spec of --FIELD and its --FIELD-param options (None when --FIELD is not given)."""
    name, pairs = getattr(args, field), getattr(args, f"{field}_param")
    if name is None:
        if pairs:
            raise InputError(f"--{field}-param needs --{field} NAME: the params are that component's")
        return None
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--{field}-param takes KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(text)
        except ValueError:
            params[key.strip()] = text
    return {"name": name, "params": params}


def load_pipeline(args: argparse.Namespace) -> Any:
    """The pipeline the model options (`add_model_options`) describe."""
    from janus_sdk.pipeline.janus import JanusPipeline

    return JanusPipeline.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, attention=args.attention, linear=args.linear
    )


def _check_settings(model: type[BaseModel], settings: dict[str, Any]) -> Any:
    """Validate per-call settings against their defaults before any model is loaded."""
    from janus_sdk.pipeline.janus import merge_settings

    return merge_settings(model(), settings, model)


def run_info(args: argparse.Namespace) -> int:
    if args.preset:
        from janus_sdk.pipeline.inspect import preset_info

        info = preset_info(args.preset)
    else:
        info = load_pipeline(
            argparse.Namespace(model=args.model, device="cpu", dtype="auto", attention=None, linear=None)
        ).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for slot, name in info["components"].items():
        print(f"{slot:<16} {name}")
    print()
    for module, count in info["parameters"].items():
        print(f"{module:<18} {count:>15,}")
    print(f"{'total':<18} {info['total_parameters']:>15,}")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    sampler = strategy_spec(args, "sampler")
    settings: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "sampler": sampler}
    if sampler is not None:  # the shorthand options set the named sampler's params
        settings.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    elif args.temperature is not None:
        settings.update(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    elif args.top_p is not None or args.top_k is not None:
        raise InputError("--top-p and --top-k apply to sampling: add --temperature T")
    _check_settings(GenerationConfig, settings)
    from janus_sdk.images import check_image_file

    for image in args.image:  # a typo is reported now, not after a long model load
        check_image_file(image)
    pipe = load_pipeline(args)
    if args.prompt is not None:
        for piece in pipe.stream_chat(args.prompt, images=args.image, seed=args.seed, **settings):
            print(piece, end="", flush=True)
        print()
        return 0
    from janus_sdk.cli.interactive import interactive_chat

    return interactive_chat(pipe, first_images=args.image, seed=args.seed, settings=settings)


def run_generate(args: argparse.Namespace) -> int:
    from janus_sdk.cli.output import planned_paths, write_outputs

    settings = {
        "n": args.n,
        "cfg_weight": args.cfg_weight,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_batch": args.max_batch,
        "guidance": strategy_spec(args, "guidance"),
        "sampler": strategy_spec(args, "sampler"),
    }
    n = _check_settings(ImageGenerationConfig, settings).n
    out = Path(args.out)
    paths = planned_paths(out, n, grid=args.grid, overwrite=args.overwrite)  # refuse before any model work
    pipe = load_pipeline(args)
    from janus_sdk.cli.progress import progress_bar

    with progress_bar(enabled=not args.no_progress and not args.json) as on_step:
        images = pipe.generate_images(args.prompt, seed=args.seed, on_step=on_step, **settings)
    write_outputs(images, paths, grid=args.grid)
    if args.json:
        summary = {
            "prompt": args.prompt,
            "n": n,
            "seed": args.seed,
            "model": args.model,
            "images": [str(p) for p in paths.images],
            "grid": str(paths.grid) if args.grid else None,
        }
        print(json.dumps(summary, indent=2))
    else:
        for path in [*paths.images, *([paths.grid] if args.grid else [])]:
            print(path)
    sys.stdout.flush()
    return 0
