"""`janus tune`: the measured choices (`janus_sdk.tuning`) this machine has taken, and taking them again."""

from __future__ import annotations

import argparse
import json
from typing import Any

from janus_sdk.cli.model_cmds import load_pipeline
from janus_sdk.tuning import PIN_ENV, Decision, get_tuner


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tune",
        help="show or take the measured kernel and dtype choices of this machine",
        description="Every 'auto' choice with more than one candidate (the linear kernel per row count, "
        "the dtype of prefills and the VQ coder, the decode attention, the layer ops, NNPACK) is timed on "
        "first use and cached per machine. Without --model: print what is cached. With --model: take every "
        "choice a chat and 1- and 4-image generations need now (--reset: measure again). "
        f"{PIN_ENV} pins choices.",
        epilog="examples:\n  janus tune\n"
        "  janus tune --model deepseek-ai/Janus-Pro-1B --dtype bfloat16 --reset\n"
        f"  {PIN_ENV}=linear=torch janus generate ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="measure for this model now (a directory or hub id)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 (default auto)")
    parser.add_argument("--reset", action="store_true", help="forget this machine's choices first")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run, attention=None, linear=None)


def run(args: argparse.Namespace) -> int:
    tuner = get_tuner()
    if args.reset:
        tuner.forget()
    decisions = load_pipeline(args).tune() if args.model else tuner.decisions()
    report: dict[str, Any] = {
        "cache": str(tuner.path),
        "machine": tuner.machine,
        "decisions": {name: _describe(d) for name, d in sorted(decisions.items())},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    facts = ", ".join(f"{key} {value}" for key, value in tuner.machine.items())
    print(f"cache: {report['cache']}\nmachine: {facts}")
    if not decisions:
        print("no choices measured yet: they are taken on first use, or now with --model")
    for name, decision in sorted(decisions.items()):
        times = ", ".join(f"{c} {s * 1e3:.3g} ms" for c, s in decision.seconds.items())
        print(f"{name}: {decision.winner}  ({times or decision.how})")
    return 0


def _describe(decision: Decision) -> dict[str, Any]:
    return {"winner": decision.winner, "seconds": decision.seconds, "how": decision.how}
