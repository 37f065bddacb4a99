"""`janus convert`: rewrite a checkpoint as safetensors in its own layout, or move it between DeepSeek's
official layout and the layout of transformers' `JanusForConditionalGeneration`.

Added to the CLI by this adapter's plugin (`register_commands`), next to the layout it converts to and from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from janus_sdk.checkpoint import convert_to_safetensors
from janus_sdk.errors import InputError

TARGETS = ("safetensors", "transformers", "official")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "convert",
        help="convert a checkpoint to safetensors, or to/from the transformers layout",
        description="Write the checkpoint SRC into DST. --to safetensors (default) keeps the layout and "
        "rewrites the weights (pytorch_model*.bin, sharded or not, loaded with weights_only=True, or "
        "safetensors) as safetensors, copying config, tokenizer and processor files. --to transformers "
        "writes the layout of transformers' JanusForConditionalGeneration (config, processor files, renamed "
        "weights); --to official writes DeepSeek's official layout back from it, bit for bit. DST is never "
        "overwritten without --overwrite.",
        epilog="examples:\n"
        "  janus convert Janus-Pro-7B/ Janus-Pro-7B-safetensors/\n"
        "  janus convert --max-shard-size 2GB src/ dst/\n"
        "  janus convert --to transformers Janus-Pro-1B/ Janus-Pro-1B-hf/\n"
        "  janus convert --to official Janus-Pro-1B-hf/ Janus-Pro-1B/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="checkpoint directory to read")
    parser.add_argument("dst", help="directory to write (must not exist unless --overwrite)")
    parser.add_argument(
        "--to",
        choices=TARGETS,
        default="safetensors",
        help="safetensors (same layout, default), transformers or official",
    )
    parser.add_argument(
        "--max-shard-size",
        help="split into shards of at most this size, e.g. 5GB (default: one file for safetensors, 5GB for "
        "the layout conversions)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Checked here too, so that the message names the option rather than the API's `overwrite=True`.
    if not args.overwrite and _non_empty(Path(args.dst).expanduser()):
        raise InputError(
            f"destination {args.dst} already exists and is not empty; pass --overwrite to replace it"
        )
    if args.to == "safetensors":
        written = convert_to_safetensors(
            args.src, args.dst, max_shard_size=args.max_shard_size, overwrite=args.overwrite
        )
    else:
        # Imports transformers (about 2 s), which the other `janus` commands and `--to safetensors` need not.
        from janus_adapters.transformers_interop.convert import convert_checkpoint

        shards = {"max_shard_size": args.max_shard_size} if args.max_shard_size else {}
        written = convert_checkpoint(args.src, args.dst, to=args.to, overwrite=args.overwrite, **shards)
    print(written)
    return 0


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())
