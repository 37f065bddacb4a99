"""`janus generate --prompts FILE`: the batch job (`janus_sdk.batch_job`) under `janus generate`'s options.

Exit codes: 0 when every line's images are in --out, 1 when some lines could not be made (listed at the end,
after the others ran), 2 for a usage error; Ctrl-C stops after at most the batch in flight is lost, and the
same command resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from janus_sdk.batch_job import BatchJob, JobProgress, JobReport

JobRunner = Callable[["BatchJob", argparse.Namespace, "JobProgress | None"], "JobReport"]
"""Runs a planned job as the command's options say, e.g. on this machine (`run_here`) or on a Ray cluster (the
ray adapter's --ray)."""

PROMPTS_HELP = (
    "generate the images of a file of prompts instead of PROMPT: text, one prompt a line, or JSON Lines "
    '(.jsonl), one object a line with "prompt" and optionally "seed", "n", "cfg_weight", "temperature", '
    '"top_k", "top_p", "guidance", "sampler". Writes OUT/LLLLL-KK.png and OUT/manifest.jsonl (prompt, seed, '
    "settings, model, file, sha256 of each image); the same command again resumes: finished images are kept, "
    "the rest are made (images another model made are refused without --overwrite). A line without a seed "
    "gets one derived from --seed (default 0) and its number"
)


def add_prompts_option(parser: argparse.ArgumentParser) -> None:
    """--prompts FILE on the generate command (whose PROMPT becomes optional)."""
    parser.add_argument("--prompts", metavar="FILE", help=PROMPTS_HELP)
    parser.set_defaults(prompts_usage_error=parser.error)


def wants_batch(args: argparse.Namespace) -> bool:
    """Whether `janus generate` was asked for a batch job (or for nothing, which `run_batch` reports)."""
    return args.prompts is not None or args.prompt is None


def run_batch(args: argparse.Namespace, runner: JobRunner | None = None) -> int:
    from janus_sdk.batch_job import BatchJob
    from janus_sdk.cli.model_cmds import strategy_spec
    from janus_sdk.prompt_file import SETTING_KEYS

    usage_error = args.prompts_usage_error
    if args.prompts is None:
        usage_error("give a PROMPT, or --prompts FILE")
    if args.prompt is not None:
        usage_error("give a PROMPT or --prompts FILE, not both")
    if args.grid:
        usage_error("--grid is for one prompt's images; a --prompts job writes no contact sheet")
    strategies = ("guidance", "sampler")
    settings = {k: strategy_spec(args, k) if k in strategies else getattr(args, k) for k in SETTING_KEYS}
    seed = 0 if args.seed is None else args.seed
    job = BatchJob.from_file(args.prompts, seed=seed, n=args.n, settings=settings)  # before the model loads
    quiet = args.no_progress or args.json
    try:
        with job_progress(enabled=not quiet) as on_progress:
            report = (runner or run_here)(job, args, on_progress)
    except KeyboardInterrupt:
        print(
            f"the finished images are in {args.out}; run the same command to make the rest", file=sys.stderr
        )
        raise
    if args.json:
        summary: dict[str, Any] = {
            "prompts": args.prompts,
            "seed": seed,
            "manifest": str(report.manifest),
            "made": [str(path) for path in report.made],
            "kept": [str(path) for path in report.kept],
            "bad": [{"line": line.number, "reason": line.reason} for line in report.bad],
        }
        print(json.dumps(summary, indent=2))
    else:
        for path in report.made:
            print(path)
        print(
            f"{len(report.made)} made, {len(report.kept)} already done; manifest: {report.manifest}",
            file=sys.stderr,
        )
    for line in report.bad:
        print(f"{args.prompts}: {line}", file=sys.stderr)
    if report.bad:
        print(f"error: {len(report.bad)} line(s) could not be made (listed above)", file=sys.stderr)
    sys.stdout.flush()
    return 1 if report.bad else 0


def run_here(job: BatchJob, args: argparse.Namespace, on_progress: JobProgress | None) -> JobReport:
    """Run the job with the model the options name, loaded in this process."""
    from janus_sdk.cli.model_cmds import load_pipeline

    pipe = load_pipeline(args)
    return job.run(
        pipe, args.out, max_batch=args.max_batch, overwrite=args.overwrite, on_progress=on_progress
    )


@contextmanager
def job_progress(*, enabled: bool) -> Iterator[Any]:
    """Yield the job's on_progress drawing one bar over all its images (None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bars: list[Any] = []

    def on_progress(done: float, total: int) -> None:
        if not bars:
            shown = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} [{elapsed}<{remaining}]"
            bars.append(tqdm(total=total, desc="images", file=sys.stderr, bar_format=shown))
        bars[0].update(done - bars[0].n)

    try:
        yield on_progress
    finally:
        for bar in bars:
            bar.close()
