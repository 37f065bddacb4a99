"""Benchmark janus-sdk against transformers' Janus and DeepSeek's reference loop on the same random weights.

    python bench/run.py                                  # quick: 1B dims, bf16, CPU, 32 image tokens, n=1,4
    python bench/run.py --tokens 576                     # whole images (minutes per workload on a CPU)
    python bench/run.py --device cuda --dtype bfloat16 --tokens 576

Each system runs in a subprocess of its own (worker.py), one after the other, so each has the machine and its
memory to itself and its peak memory is its own. The memory-bandwidth floor is measured here, between the
workers, by each of our workers just before and after its decode workloads (floor.read_in_place_gbps), and
between the steps of a second run of each of them (measure.ReadingClock).
Prints a table; --json writes everything (per-step times included), --markdown writes a report.
See bench/RESULTS.md for the latest results and what each figure means.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import report
from floor import StepBytes, measure_bandwidth
from janus_sdk.devices import resolve_dtype
from models import MODEL_SIZES, meta_model
from worker import SYSTEMS, WORKLOADS, WorkerSpec

HERE = Path(__file__).resolve().parent
FULL_IMAGE = 576
CPU_DEFAULT = ("t2i", "understand")


def _csv(kind: type, allowed: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        items = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        bad = [i for i in items if allowed is not None and i not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {allowed or kind.__name__}")
        return items

    return parse


PARAM_OPTIONS = {"llm_backbone": "backbone", "image_tokenizer": "image-tokenizer"}
"""Config slot of our pipeline -> the option that sets its params."""


def component_params(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The params each option sets, by config slot (slots left at their defaults are left out)."""
    given = {slot: dict(getattr(args, option.replace("-", "_"))) for slot, option in PARAM_OPTIONS.items()}
    return {slot: values for slot, values in given.items() if values}


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        if sep and key.strip():
            return key.strip(), value  # a bare string
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (VALUE in JSON), got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=32,
        help="image tokens per text-to-image run (576 = a whole image) and understanding "
        "decode tokens (default 32: a quick, bounded run)",
    )
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--n", type=_csv(int), default=(1, 4), help="images per text-to-image run, e.g. 1,4")
    parser.add_argument(
        "--workloads",
        type=_csv(str, WORKLOADS),
        default=None,
        help=f"subset of {','.join(WORKLOADS)} (default: all on CUDA; "
        f"{','.join(CPU_DEFAULT)} on the CPU, where a peer's bfloat16 VQ decode at 1B "
        "size runs into --vq-budget)",
    )
    parser.add_argument(
        "--systems", type=_csv(str, SYSTEMS), default=SYSTEMS, help=f"subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--model-size", choices=MODEL_SIZES, default="1b")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for every system (default: torch's default here)",
    )
    parser.add_argument("--vq-repeats", type=int, default=1, help="timed VQ decodes after the warm-up one")
    parser.add_argument("--vq-images", type=int, default=1, help="images per VQ decode call (one batch)")
    parser.add_argument(
        "--vq-budget",
        type=float,
        default=600.0,
        help="seconds after which a VQ decode is stopped and reported as a lower bound",
    )
    parser.add_argument(
        "--no-floor-between-steps",
        dest="floor_between_steps",
        action="store_false",
        help="skip the second run of each decode workload of ours that reads the memory between its steps "
        "(it doubles our decode time: minutes per workload for --tokens 576 on a CPU)",
    )
    parser.add_argument("--attention", default=None, help="our attention backend (default: the config's)")
    parser.add_argument(
        "--linear",
        default=None,
        help="the linear backend of 'ours' (default: the config's 'auto'); 'ours-int8' uses int8",
    )
    parser.add_argument(
        "--backbone",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a param of our LLM backbone, e.g. fused_layer_ops=false (repeatable)",
    )
    parser.add_argument(
        "--image-tokenizer",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a param of our image tokenizer, e.g. winograd=false or cuda_graphs=false",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown report here")
    args = parser.parse_args(argv)
    if not 1 <= args.tokens <= FULL_IMAGE:
        parser.error(f"--tokens must be in 1..{FULL_IMAGE}")
    if args.workloads is None:
        args.workloads = CPU_DEFAULT if torch.device(args.device).type == "cpu" else WORKLOADS
    return args


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
        "unknown",
    )


def _git_revision() -> str:
    try:
        rev, dirty = (
            subprocess.run(["git", *cmd], capture_output=True, text=True, check=True, cwd=HERE).stdout.strip()
            for cmd in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty else ''}"


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo")
    total = (
        next(
            (
                int(line.split()[1]) * 1024
                for line in meminfo.read_text().splitlines()
                if line.startswith("MemTotal")
            ),
            None,
        )
        if meminfo.exists()
        else None
    )
    device = torch.device(args.device)
    return {
        "cpu": _lscpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "memory_gb": round(total / 1e9, 1) if total else None,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": importlib.metadata.version("transformers"),
        "janus_sdk": importlib.metadata.version("janus-sdk"),
        "git": _git_revision(),
    }


def run_system(spec: WorkerSpec) -> dict[str, Any]:
    """One worker subprocess (its output goes to our stderr). When it fails, what it saved before is kept
    and 'error' says how it ended (e.g. killed for memory)."""
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
        out = Path(tmp) / "result.json"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / "worker.py"), spec.to_json(), str(out)],
            stdout=sys.stderr,
            check=False,
        )
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
        result["wall_s"] = time.perf_counter() - start
        if proc.returncode != 0 or not result.get("complete"):
            result["error"] = f"worker exited with status {proc.returncode} before finishing"
        return result


def notes(
    args: argparse.Namespace,
    bandwidth: list[dict[str, float]],
    step_bytes: StepBytes,
    results: dict[str, Any],
) -> list[str]:
    def listed(key: str) -> str:
        return ", ".join(f"{b[key]:.1f}" for b in bandwidth)

    floors = [b["floor_gbps"] for b in bandwidth]
    lines = []
    if args.tokens < FULL_IMAGE and {"t2i", "understand"} & set(args.workloads):
        t = args.tokens
        lines.append(
            f"BOUNDED RUN: every text-to-image run stops after {t} of the {FULL_IMAGE} image tokens, so "
            f"s/image covers those {t} tokens only (prefill included) and 'end' is token {t}, not the end of "
            f"an image; understanding decodes {t} tokens. Whole images: --tokens {FULL_IMAGE}."
        )
    lines += [
        f"Floor bandwidth {max(floors):.1f} GB/s: the fastest read-only pass over 1 GiB of float32 (sum, "
        f"dot, max; best of 5 each), measured {len(floors)} times in this run, before and after each system "
        f"(read {listed('read_gbps')}; a copy, read + write bytes counted, for comparison: "
        f"{listed('copy_gbps')} GB/s).",
        f"Bytes per decode step: text-to-image {step_bytes.image_weights / 1e9:.3f} GB of weights (decoder "
        f"layers, final norm, gen head, gen aligner) + K and V, {step_bytes.kv_per_position / 1e3:.0f} kB "
        f"per cached position per row; understanding {step_bytes.text_weights / 1e9:.3f} GB (layers, norm, "
        f"lm head) + the same KV. All weights: {step_bytes.total_weights / 1e9:.3f} GB.",
        "Ratios peer/ours > 1 mean ours is faster (smaller). Per-token 'start'/'end' are medians over the "
        "window of decode steps named in the row; step 0 (prefill) is excluded from them.",
        "Settings: transformers = JanusForConditionalGeneration.generate as shipped (eager, its default "
        "dynamic KV cache and attention implementation); reference = DeepSeek's generation_inference.py loop "
        "and inference.py's generate on transformers' LlamaForCausalLM (eager, a dynamic KV cache grown each "
        "step); ours = JanusPipeline.from_pretrained defaults (a static preallocated KV cache, the choices "
        "JanusPipeline.tune() measured before timing, decode steps captured as CUDA graphs on CUDA).",
    ]
    for slot, values in component_params(args).items():
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())
        lines.append(f"Our {slot} ran with {params} (--{PARAM_OPTIONS[slot]}), not its defaults.")
    if "vq" not in args.workloads:
        lines.append("VQ decode not run (the default on the CPU); add it with --workloads t2i,understand,vq.")
    lines += report.vq_notes(results)
    failed = [f"{s}: {r['error']}" for s, r in results.items() if "error" in r]
    failed += [
        f"{s} {w}: {e['error']}"
        for s, r in results.items()
        for w, e in r.get("results", {}).items()
        if e and "error" in e
    ]
    lines += [f"FAILED {f}" for f in failed]
    return lines


def render_markdown(
    command: str, machine: dict[str, Any], table: str, lines: list[str], args: argparse.Namespace
) -> str:
    device = machine["gpu"] or f"CPU ({machine['cpu']})"
    return "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB RAM"
            + (f", GPU {machine['gpu']}" if machine["gpu"] else "")
            + f"; {machine['threads']} torch threads for every system.",
            f"Versions: Python {machine['python']}, torch {machine['torch']}, transformers "
            f"{machine['transformers']}, janus-sdk {machine['janus_sdk']} (git {machine['git']}).",
            f"Model: Janus-Pro {args.model_size} dimensions, seeded random weights, {args.dtype} on "
            f"{device}.",
            "",
            table,
            "",
            *[f"- {line}" for line in lines],
            "",
        ]
    )


def _stop_on_sigterm(signum: int, _: object) -> None:
    """SIGTERM (`kill`, `timeout`) as an exit that unwinds: subprocess.run then kills the running worker,
    which would otherwise go on computing beside whatever runs next (and skew its times)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.set_num_threads(args.threads)
    machine = machine_info(args)
    print(f"{command}\n{json.dumps(machine)}", file=sys.stderr)
    step_bytes = StepBytes.of(meta_model(args.model_size), dtype)

    bandwidth = [measure_bandwidth(device)]
    results: dict[str, Any] = {}
    for system in args.systems:
        print(f"== {system} ==", file=sys.stderr, flush=True)
        spec = WorkerSpec(
            system=system,
            model_size=args.model_size,
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
            tokens=args.tokens,
            n=args.n,
            workloads=args.workloads,
            vq_repeats=args.vq_repeats,
            vq_images=args.vq_images,
            vq_budget_s=args.vq_budget,
            floor_between_steps=args.floor_between_steps,
            attention=args.attention,
            linear=args.linear,
            params=component_params(args),
        )
        results[system] = run_system(spec)
        bandwidth.append(measure_bandwidth(device))
    gbps = max(b["floor_gbps"] for b in bandwidth)

    rows: list[report.Row] = []
    if "t2i" in args.workloads:
        for n in args.n:
            rows += report.t2i_rows(results, n, step_bytes, gbps)
    if "understand" in args.workloads:
        rows += report.understand_rows(results, step_bytes, gbps)
    if "vq" in args.workloads:
        rows += report.vq_rows(results, args.vq_images)
    rows += report.memory_rows(results, device.type == "cuda")
    table = report.markdown_table(rows)
    lines = notes(args, bandwidth, step_bytes, results)
    print(table)
    print("\n".join(f"- {line}" for line in lines))
    if args.markdown is not None:
        args.markdown.write_text(render_markdown(command, machine, table, lines, args), encoding="utf-8")
    if args.json is not None:
        payload = {
            "command": command,
            "machine": machine,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "bandwidth": bandwidth,
            "floor_gbps": gbps,
            "step_bytes": step_bytes.as_dict(),
            "table": [dict(zip(report.HEADER, row.cells(), strict=True)) for row in rows],
            "notes": lines,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
