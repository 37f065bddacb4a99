"""`janus convert`: rewrite a checkpoint's weights as safetensors (sharded or not), keeping its other files."""

from __future__ import annotations

import argparse

from janus_sdk.checkpoint import convert_to_safetensors


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "convert", help="convert a checkpoint's .bin weights to safetensors",
        description="Read a checkpoint (pytorch_model*.bin, sharded or not, loaded with weights_only=True, or "
        "safetensors) and write it as safetensors into DST, copying config, tokenizer and processor files. "
        "DST is never overwritten without --overwrite.",
        epilog="examples:\n  janus convert Janus-Pro-7B/ Janus-Pro-7B-safetensors/\n"
        "  janus convert --max-shard-size 2GB src/ dst/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="checkpoint directory to read")
    parser.add_argument("dst", help="directory to write (must not exist unless --overwrite)")
    parser.add_argument("--max-shard-size", help="split into shards of at most this size, e.g. 5GB (default: one file)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    written = convert_to_safetensors(args.src, args.dst, max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    print(written)
    return 0
