"""A file of text-to-image prompts, read line by line: plain text (one prompt a line) or, for a `.jsonl` file,
JSON Lines (one object a line: "prompt", and optionally "seed", "n" and generation settings).

Blank lines are skipped. A bad line becomes a `BadLine` naming its number and does not stop the others, so a
long job runs what it can and lists the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from janus_sdk.config.generation import MAX_SEED
from janus_sdk.errors import InputError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
LINE_KEYS = ("prompt", "seed", "n")
SETTING_KEYS = ("cfg_weight", "temperature", "top_k", "top_p", "guidance", "sampler")
"""The generation settings a line may set for its own images (ImageGenerationConfig fields; how many images
share a batch is the job's choice, not a line's)."""


@dataclass(frozen=True)
class PromptLine:
    """One line's request: its number in the file (from 1), its prompt, and what it sets itself."""

    number: int
    prompt: str
    seed: int | None = None
    n: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BadLine:
    """A line that makes no images, and why."""

    number: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.number}: {self.reason}"


def read_prompt_file(path: Path) -> tuple[list[PromptLine], list[BadLine]]:
    """The good and the bad lines of a prompts file. InputError when it cannot be read or holds no prompt at
    all (empty or blank)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the prompts file {path}: {exc.strerror or exc}") from None
    parse = _json_line if path.suffix.lower() in JSONL_SUFFIXES else _text_line
    lines: list[PromptLine] = []
    bad: list[BadLine] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            if text:
                lines.append(parse(number, text))
        except UnicodeDecodeError as exc:
            bad.append(BadLine(number, f"not UTF-8 text (byte {exc.start + 1} of the line)"))
        except InputError as exc:
            bad.append(BadLine(number, str(exc)))
    if not lines and not bad:
        raise InputError(
            f"the prompts file {path} holds no prompt (it is empty or blank): write one prompt a line"
        )
    return lines, bad


def _text_line(number: int, text: str) -> PromptLine:
    return PromptLine(number, text)


def _json_line(number: int, text: str) -> PromptLine:
    try:
        item = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not a JSON object: {exc}") from None
    if not isinstance(item, dict):
        raise InputError(f'expected a JSON object with a "prompt", got a {type(item).__name__}')
    unknown = sorted(set(item) - {*LINE_KEYS, *SETTING_KEYS})
    if unknown:
        allowed = ", ".join((*LINE_KEYS, *SETTING_KEYS))
        raise InputError(f"unknown key(s) {', '.join(unknown)}; a line takes {allowed}")
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f'"prompt" must be a non-empty string, got {prompt!r:.40}')
    seed, n = item.get("seed"), item.get("n")
    if seed is not None and not _is_int(seed, 0, MAX_SEED):
        raise InputError(f'"seed" must be an integer in [0, 2**64), got {seed!r:.40}')
    if n is not None and not _is_int(n, 1, None):
        raise InputError(f'"n" must be an integer >= 1, got {n!r:.40}')
    return PromptLine(number, prompt, seed, n, {k: item[k] for k in SETTING_KEYS if k in item})


def _is_int(value: object, low: int, high: int | None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return low <= value and (high is None or value <= high)
