"""`janus info`, `janus chat` and `janus generate`: the commands that load a model, and the model options they
share with `janus serve`, all checked before anything slow starts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from janus_sdk.cli.batch_cmd import add_prompts_option, run_batch, wants_batch
from janus_sdk.config import GenerationConfig, ImageGenerationConfig, PipelineConfig
from janus_sdk.devices import resolve_device, resolve_dtype
from janus_sdk.errors import ConfigError, InputError
from janus_sdk.tuning import get_tuner

MODEL_HELP = (
    "checkpoint directory in the official layout, or a Hugging Face Hub id (e.g. deepseek-ai/Janus-Pro-1B)"
)
#: Options that replace the pipeline config's field of the same name (and --model its `checkpoint`).
OVERRIDES = ("device", "dtype", "attention", "linear")


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
    add_prompts_option(generate)
    generate.add_argument("prompt", nargs="?", help="what to draw (or --prompts FILE)")
    generate.set_defaults(handler=run_generate)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"{MODEL_HELP}; may be left out when --config names the checkpoint")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a pipeline config file (JSON, YAML or TOML; `janus config show` writes one): the checkpoint, "
        "components, device, dtype and default settings; the options given here override it",
    )
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's, else auto)")
    parser.add_argument(
        "--dtype", help="auto, float32, bfloat16, float16 (CUDA) (default: the config's, else auto)"
    )
    parser.add_argument(
        "--attention", help="attention backend: auto (default), sdpa, eager, xformers, avx2 (CPU kernel)"
    )
    parser.add_argument(
        "--linear",
        help="linear backend of the per-token layers: auto (default), torch, avx2 / avx512 (CPU kernels), "
        "int8 / int4 (weight-only int8, group-wise int4)",
    )
    # "neither --model nor --config" is a usage error (exit 2, this command's usage) found after parsing
    parser.set_defaults(usage_error=parser.error)


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


@dataclass(frozen=True)
class ModelOptions:
    """The model options, checked: where the checkpoint is, and the --config file's config with the other
    options applied (None without --config: the checkpoint's own files imply the config)."""

    source: str
    config: PipelineConfig | None


def check_model_options(args: argparse.Namespace) -> ModelOptions:
    """Read --config and check every model option against the installed plugins and this machine (device,
    dtype, the JANUS_SDK_TUNE pins) without touching the checkpoint: a mistake is one line naming the option,
    before any wait."""
    given = {name: value for name in OVERRIDES if (value := getattr(args, name, None)) is not None}
    fields = {name: _checked_field(name, value) for name, value in given.items()}
    config_file = getattr(args, "config", None)
    config = PipelineConfig.from_file(config_file).model_copy(update=fields) if config_file else None
    source = args.model or (config.checkpoint if config is not None else None)
    if source is None:
        if config is not None:
            raise ConfigError(f"{config_file} names no checkpoint: set `checkpoint` in it or pass --model")
        usage_error: Callable[[str], NoReturn] = args.usage_error
        usage_error("pass --model (a checkpoint directory or Hub id), or --config FILE naming one")
    device = resolve_device(config.device if config else given.get("device", "auto"))
    resolve_dtype(config.dtype if config else given.get("dtype", "auto"), device)
    get_tuner()  # a bad JANUS_SDK_TUNE is reported now too
    return ModelOptions(source, config)


def _checked_field(name: str, value: str) -> Any:
    """The config field option --`name` sets, validated alone so that an error names the option."""
    try:
        config = PipelineConfig.model_validate(
            {name: value if name in ("device", "dtype") else {"name": value}}
        )
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--{name} {value}: {reason}") from None
    return getattr(config, name)


def load_pipeline(args: argparse.Namespace) -> Any:
    """The pipeline the model options (`add_model_options`) describe, loaded under a status line (none with
    --no-progress or --json)."""
    from janus_sdk.checkpoint.sources import resolve_model_source
    from janus_sdk.cli.progress import loading_status
    from janus_sdk.pipeline.janus import JanusPipeline

    options = check_model_options(args)
    path = resolve_model_source(options.source)  # a Hub download shows its own progress bars
    quiet = getattr(args, "no_progress", False) or getattr(args, "json", False)
    with loading_status(f"loading {options.source}", enabled=not quiet):
        if options.config is not None:
            return JanusPipeline.from_config(options.config.model_copy(update={"checkpoint": str(path)}))
        return JanusPipeline.from_pretrained(
            path,
            device=args.device or "auto",
            dtype=args.dtype or "auto",
            attention=args.attention,
            linear=args.linear,
        )


def check_settings(model: type[BaseModel], settings: dict[str, Any], defaults: BaseModel | None) -> Any:
    """Validate per-call settings on top of their defaults (the --config file's, else the built-in ones)
    before any model is loaded."""
    from janus_sdk.pipeline.janus import merge_settings

    return merge_settings(defaults or model(), settings, model)


def run_info(args: argparse.Namespace) -> int:
    if args.preset:
        from janus_sdk.pipeline.presets import preset_info

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
    options = check_model_options(args)
    defaults = options.config.generation if options.config else None
    check_settings(GenerationConfig, {**settings, "seed": args.seed}, defaults)
    from janus_sdk.images import check_image_file

    for image in args.image:  # a typo is reported now, not after a long model load
        check_image_file(image)
    pipe = load_pipeline(args)
    if args.prompt is not None:
        from janus_sdk.cli.terminal import TextOut

        answer = TextOut(sys.stdout)
        for piece in pipe.stream_chat(args.prompt, images=args.image, seed=args.seed, **settings):
            answer.write(piece)
        print()
        return 0
    from janus_sdk.cli.interactive import interactive_chat

    return interactive_chat(pipe, first_images=args.image, seed=args.seed, settings=settings)


def run_generate(args: argparse.Namespace) -> int:
    if wants_batch(args):
        return run_batch(args)
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
    options = check_model_options(args)
    defaults = options.config.image_generation if options.config else None
    plan = check_settings(ImageGenerationConfig, {**settings, "seed": args.seed}, defaults)
    # refused before any model work: files it would replace, an --out it could not write to
    paths = planned_paths(Path(args.out), plan.n, grid=args.grid, overwrite=args.overwrite)
    pipe = load_pipeline(args)
    from janus_sdk.cli.progress import image_progress

    with image_progress(plan.n, plan.max_batch, enabled=not args.no_progress and not args.json) as on_step:
        images = pipe.generate_images(args.prompt, seed=args.seed, on_step=on_step, **settings)
    write_outputs(images, paths, grid=args.grid)
    if args.json:
        summary = {
            "prompt": args.prompt,
            "n": plan.n,
            "seed": plan.seed,
            "model": options.source,
            "images": [str(p) for p in paths.images],
            "grid": str(paths.grid) if args.grid else None,
        }
        print(json.dumps(summary, indent=2))
    else:
        for path in [*paths.images, *([paths.grid] if args.grid else [])]:
            print(path)
    sys.stdout.flush()
    return 0
