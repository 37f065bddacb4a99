"""The results table: one row per figure with each system's value, the peers' ratios to ours, the floor and
the issue's target. All figures are times or sizes (smaller is better): `peer/ours` > 1 means ours wins."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from floor import StepBytes
from worker import OURS, PEERS, SYSTEMS

HEADER = ["figure", *SYSTEMS, *(f"{p}/ours" for p in PEERS), "floor", "ours/floor", "target"]
GB = 1e9
Entry = dict[str, Any]


@dataclass(frozen=True)
class Row:
    label: str
    values: dict[str, float | None]  # by system
    floor: float | None = None
    target: str = ""
    peer_ratios: bool = True
    floor_of: str = "ours"  # whose value the floor column divides

    def cells(self) -> list[str]:
        ours = self.values.get("ours")
        ratios = [_ratio(self.values.get(p), ours) if self.peer_ratios else "" for p in PEERS]
        return [
            self.label,
            *(_fmt(self.values.get(s)) for s in SYSTEMS),
            *ratios,
            _fmt(self.floor),
            _ratio(self.values.get(self.floor_of), self.floor),
            self.target,
        ]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _ratio(num: float | None, den: float | None) -> str:
    return "—" if num is None or not den else f"{num / den:.2f}x"


def _entry(results: dict[str, Any], system: str, workload: str) -> Entry | None:
    entry = results.get(system, {}).get("results", {}).get(workload)
    return entry if entry and "error" not in entry else None


def _shape(results: dict[str, Any], workload: str) -> Entry | None:
    """The workload's entry of the first system that ran it (sizes and token counts are the same for all)."""
    return next((e for s in SYSTEMS if (e := _entry(results, s, workload)) is not None), None)


def _values(
    results: dict[str, Any], workload: str, pick: Callable[[Entry], float | None]
) -> dict[str, float | None]:
    return {s: (pick(e) if (e := _entry(results, s, workload)) is not None else None) for s in SYSTEMS}


def _beside_rows(
    results: dict[str, Any],
    workload: str,
    label: str,
    steps: range,
    kv: Callable[[int], int],
    targets: dict[str, str],
) -> list[Row]:
    """Per system of ours: its mean step over `steps` against its own floor, the bytes of its own step
    weights (int8 ones for ours-int8) plus step i's `kv(i)`, at the faster of the two in-place reads of its
    largest weights just before and just after the workload (the worker's `floor_beside_gbps`): on a shared
    machine whose bandwidth moves by tens of percent between minutes, the floor read seconds from the steps
    is the one to hold them to."""
    rows = []
    for system in OURS:
        entry = _entry(results, system, workload)
        if entry is None or not entry.get("floor_beside_gbps") or not steps:
            continue
        gbps, weights = max(entry["floor_beside_gbps"]), entry["step_weight_bytes"]
        floor_ms = sum(weights + kv(i) for i in steps) / len(steps) / (gbps * GB) * 1e3
        rows.append(
            Row(
                f"{label}: {system}, mean ms/token of steps "
                f"{steps.start}-{steps.stop - 1} against its own {weights / GB:.2f} GB of weights at the "
                f"bandwidth read beside them ({gbps:.1f} GB/s)",
                {system: statistics.fmean(entry["steps_ms"][steps.start : steps.stop])},
                floor_ms,
                targets.get(system, ""),
                peer_ratios=False,
                floor_of=system,
            )
        )
        if (paired := _paired_row(entry, label, system, steps, kv, targets)) is not None:
            rows.append(paired)
    return rows


def _paired_row(
    entry: Entry, label: str, system: str, steps: range, kv: Callable[[int], int], targets: dict[str, str]
) -> Row | None:
    """The second run of the workload with the memory read between its steps (the worker's `paired`): its
    mean step over `steps` against the mean of each step's own floor, at the faster of the readings just
    before and just after that step."""
    paired = entry.get("paired")
    if not paired or len(paired["steps_ms"]) < steps.stop:
        return None
    weights, times, readings = entry["step_weight_bytes"], paired["steps_ms"], paired["read_gbps"]
    floors = [(weights + kv(i)) / (max(readings[i], readings[i + 1]) * GB) * 1e3 for i in steps]
    chosen = [readings[i] for i in steps] + [readings[steps.stop]]
    return Row(
        f"{label}: {system}, a second run with the memory read between its steps: mean ms/token of steps "
        f"{steps.start}-{steps.stop - 1} against each step's floor at the faster reading beside it "
        f"({min(chosen):.1f}-{max(chosen):.1f} GB/s)",
        {system: statistics.fmean(times[steps.start : steps.stop])},
        statistics.fmean(floors),
        targets.get(system, ""),
        peer_ratios=False,
        floor_of=system,
    )


def t2i_rows(results: dict[str, Any], n: int, step_bytes: StepBytes, gbps: float) -> list[Row]:
    key = f"t2i_n{n}"
    shape = _shape(results, key)
    if shape is None:
        return [Row(f"t2i n={n}: no system completed it", dict.fromkeys(SYSTEMS))]
    tokens, prompt, rows, k = shape["tokens"], shape["prompt_len"], shape["rows"], shape["window"]

    def floor_s(steps: range) -> float:
        """Seconds to read the bytes of these steps once (step i attends over prompt + i positions)."""
        return float(sum(step_bytes.image_step(prompt + i, rows) for i in steps)) / (gbps * GB)

    scope = "whole image" if tokens >= 576 else f"{tokens} of 576 tokens"
    step_target = "ours/floor <= 1.3x" if n == 1 else ""
    out = [
        Row(
            f"t2i n={n}: s/image ({scope})",
            _values(results, key, lambda e: e["s_per_image"]),
            floor_s(range(tokens)) / n,
            "peer/ours >= 2.5x",
        ),
        Row(
            f"t2i n={n}: ms/token, start (steps 1-{k})",
            _values(results, key, lambda e: e["start_ms"]),
            floor_s(range(1, 1 + k)) / k * 1e3,
            step_target,
        ),
        Row(
            f"t2i n={n}: ms/token, end (steps {tokens - k}-{tokens - 1})",
            _values(results, key, lambda e: e["end_ms"]),
            floor_s(range(tokens - k, tokens)) / k * 1e3,
            step_target,
        ),
    ]
    targets = {"ours": "ours/floor <= 1.2x (bf16)", "ours-int8": "ours-int8/floor <= 1.3x"} if n == 1 else {}
    out += _beside_rows(
        results, key, f"t2i n={n}", range(1, tokens), lambda i: step_bytes.kv(prompt + i, rows), targets
    )
    if n > 1:

        def relative(system: str) -> float | None:
            mine, single = _entry(results, system, key), _entry(results, system, "t2i_n1")
            return mine["s_per_image"] / single["s_per_image"] if mine and single else None

        out.append(
            Row(
                f"t2i n={n}: s/image relative to n=1",
                {s: relative(s) for s in SYSTEMS},
                target="ours <= 0.4",
                peer_ratios=False,
            )
        )
    return out


def understand_rows(results: dict[str, Any], step_bytes: StepBytes, gbps: float) -> list[Row]:
    shape = _shape(results, "understand")
    if shape is None:
        return [Row("understand: no system completed it", dict.fromkeys(SYSTEMS))]
    prompt, tokens = shape["prompt_len"], shape["tokens"]
    decode = range(1, tokens)

    floor_ms = (
        sum(step_bytes.text_step(prompt + i) for i in decode) / len(decode) / (gbps * GB) * 1e3
        if decode
        else None
    )
    return [
        Row(
            f"understand: prefill {prompt} tokens, s",
            _values(results, "understand", lambda e: e["prefill_s"]),
            target="transformers/ours >= 2x",
        ),
        Row(
            f"understand: decode ms/token (median of {len(decode)})",
            _values(results, "understand", lambda e: e["decode_ms"]),
            floor_ms,
            "transformers/ours >= 2x, ours/floor <= 1.3x",
        ),
        *_beside_rows(
            results, "understand", "understand", decode, lambda i: step_bytes.kv(prompt + i, 1), {}
        ),
    ]


def vq_notes(results: dict[str, Any]) -> list[str]:
    """One line per system whose VQ decode ran past --vq-budget: how far it got, and the ratio it implies."""
    ours = _entry(results, "ours", "vq")
    lines = []
    for system in SYSTEMS:
        entry = _entry(results, system, "vq")
        if entry is None or "stopped_after_s" not in entry:
            continue
        bound = entry["stopped_after_s"]
        ratio = f"; {system}/ours > {bound / ours['best_s']:.0f}x" if ours and "best_s" in ours else ""
        lines.append(
            f"{system}: VQ decode stopped at the time budget, {bound:.3g} s into its "
            f"{'warm-up' if entry['warm_up'] else 'timed'} run, after {entry['convolutions_run']} of "
            f"{entry['convolutions']} convolutions: it takes more than {bound:.3g} s{ratio}."
        )
    return lines


def vq_rows(results: dict[str, Any], images: int) -> list[Row]:
    label = (
        "VQ decode, 1 image 384x384, s (best)"
        if images == 1
        else (f"VQ decode, {images} images 384x384 in one call, s per image (best)")
    )
    return [
        Row(
            label,
            _values(results, "vq", lambda e: e["best_s"] / e["images"] if "best_s" in e else None),
            target="transformers/ours >= 1.5x",
        )
    ]


def memory_rows(results: dict[str, Any], cuda: bool) -> list[Row]:
    """Peak memory per system; the floor is our weights + the largest KV cache any of our workloads held."""
    ours = results.get("ours", {})
    budget = (ours["weight_bytes"] + ours["kv_cache_bytes"]) / GB if "weight_bytes" in ours else None

    def of(field: str) -> dict[str, float | None]:
        return {s: (results[s][field] / GB if results.get(s, {}).get(field) else None) for s in SYSTEMS}

    rows = [
        Row("peak RSS, GB (floor: weights + KV cache)", of("peak_rss_bytes"), budget, "ours/floor <= 1.2x")
    ]
    if cuda:
        rows.append(Row("CUDA max allocated, GB (floor: weights + KV cache)", of("cuda_peak_bytes"), budget))
    return rows


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join([*lines, *("| " + " | ".join(row.cells()) + " |" for row in rows)])
