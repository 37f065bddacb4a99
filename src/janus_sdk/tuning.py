"""Measured choices: which of several interchangeable ways to compute something is fastest on this machine.

A CPU's feature flags say what it can run, not how fast: the same AVX2 kernel that streams weights faster than
torch at two rows on a Zen 1 EPYC loses to oneDNN at eight rows on a Xeon with AMX, and a bfloat16 GEMM is a
slow reference loop on one CPU and the fastest path on the next. So every `auto` decision with more than one
candidate (a linear layer's kernel per row count, the dtype compute-bound work runs in, the attention of a
decode step, the VQ convolutions) is taken by timing the candidates on the model's own shapes the first time
it is needed, and kept:

- in memory for the process, so a decision costs a dictionary look-up after its first use;
- on disk (`tuning.json` in the janus-sdk cache folder, `$JANUS_SDK_CACHE_DIR` or `~/.cache/janus-sdk`), under
  a key of the machine: CPU model and flags, architecture, torch version and thread count. Later processes on
  the same machine reuse it; another machine's entries in the same file are left alone.

The rule every decision keeps: a candidate replaces the `baseline` (torch's own path) only when it measured
faster than it by `MARGIN`, so no default is slower than torch's path as measured here. `janus tune` prints
and re-measures the decisions. `JANUS_SDK_TUNE` pins them: `off` takes every baseline without measuring, and
`FAMILY=CHOICE[,FAMILY=CHOICE...]` (e.g. `linear=torch,matmul-dtype=float32`) fixes a family's choice.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock

from janus_sdk.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_ENV = "JANUS_SDK_CACHE_DIR"
PIN_ENV = "JANUS_SDK_TUNE"
FORMAT = 1
MARGIN = 0.03
"""A candidate must beat the baseline by 3% to replace it: closer is noise, and torch's path wins."""

T = TypeVar("T")
Timer = Callable[[str, Callable[[], object], float], float]
"""`timer(candidate, run, limit)`: seconds one call of `run` (the candidate's work) takes; it may stop
repeating once a call took over `limit`."""


def cache_dir() -> Path:
    """janus-sdk's cache folder: `$JANUS_SDK_CACHE_DIR`, else `$XDG_CACHE_HOME/janus-sdk` (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "janus-sdk"


def best_seconds(
    candidate: str, run: Callable[[], object], limit: float, repeats: int = 5, budget: float = 0.25
) -> float:
    """The fastest of a few timed calls after a warm-up call. A warm-up slower than both `limit` and `budget`
    is the answer (that candidate lost, or one call says enough); repeats stop once they took `budget`."""
    start = time.perf_counter()
    run()
    warm_up = time.perf_counter() - start
    if warm_up > max(limit, budget):
        return warm_up
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget:
            break
    return best


def machine() -> dict[str, Any]:
    """What a measurement depends on besides the workload: the CPU, the torch build and the thread count."""
    model, flags = _cpu_model_and_flags()
    return {
        "cpu": model,
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "arch": platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _cpu_model_and_flags() -> tuple[str, str]:
    """CPU model name and feature flags from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    return model, fields.get("flags") or fields.get("Features") or ""


def machine_key(facts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(facts), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    """One taken choice: the winner, each candidate's measured seconds (empty when pinned) and how it was
    taken ("measured", "cached", "pinned")."""

    winner: str
    seconds: dict[str, float] = field(default_factory=dict)
    how: str = "measured"


class Tuner:
    """Takes and keeps measured decisions (see the module docstring); safe to share between threads."""

    def __init__(
        self, path: Path | None = None, *, timer: Timer = best_seconds, pins: str | None = None
    ) -> None:
        self.path = path if path is not None else cache_dir() / "tuning.json"
        self.timer = timer
        self.machine = machine()
        self.machine_id = machine_key(self.machine)
        self.pins = parse_pins(os.environ.get(PIN_ENV, "") if pins is None else pins)
        self._decisions: dict[str, Decision] | None = None
        self.memo: dict[tuple[object, ...], Any] = {}
        """What callers derived from decisions (see `remembered`): a look-up per call on hot paths."""
        self._lock = threading.RLock()
        self._announced = False

    def choose(
        self, family: str, key: str, candidates: Mapping[str, Callable[[], object]], baseline: str
    ) -> str:
        """The name of the fastest of `candidates` for the decision `family/key`; `baseline` unless another
        measured faster by MARGIN. Measured on first use, then taken from memory or the cache file."""
        if baseline not in candidates:
            raise ValueError(f"baseline {baseline!r} is not one of the candidates {sorted(candidates)}")
        pinned = self._pinned(family, candidates, baseline)
        if pinned is not None:
            return pinned
        name = f"{family}/{key}"
        with self._lock:
            decisions = self._load()
            known = decisions.get(name)
            if known is not None and _still_valid(known, candidates):
                return known.winner
            self._announce()
            decision = self._measure(candidates, baseline)
            decisions[name] = decision
            log.info("tuning %s: %s (%s)", name, decision.winner, _describe(decision.seconds))
            self._save(name, decision)
            return decision.winner

    def decisions(self) -> dict[str, Decision]:
        """Every decision known for this machine (from the cache file and this process)."""
        with self._lock:
            return dict(self._load())

    def forget(self) -> None:
        """Drop this machine's decisions (memory and cache file): the next use of each measures again."""
        with self._lock, self._file_lock():
            self._decisions = {}
            self.memo.clear()
            data = self._read_file()
            data["machines"].pop(self.machine_id, None)
            self._write_file(data)

    # -- internals -------------------------------------------------------------------------------------------
    def _pinned(
        self, family: str, candidates: Mapping[str, Callable[[], object]], baseline: str
    ) -> str | None:
        if self.pins.off:
            return baseline
        choice = self.pins.choices.get(family)
        if choice is None:
            return None
        if choice not in candidates:
            raise ConfigError(
                f"{PIN_ENV} pins {family}={choice}, but {family} chooses between "
                f"{', '.join(sorted(candidates))} here; fix or remove that pin"
            )
        return choice

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            log.warning(
                "janus-sdk: measuring which kernels are fastest on this CPU for this model (seconds, once per"
                " machine; kept in %s, see `janus tune`)",
                self.path,
            )

    def _measure(self, candidates: Mapping[str, Callable[[], object]], baseline: str) -> Decision:
        """Time the candidates in their order, each given up on once it took 4x the best so far (list a
        cheap candidate first where another may be very slow)."""
        seconds: dict[str, float] = {}
        for name, run in candidates.items():
            seconds[name] = self.timer(name, run, 4 * min(seconds.values(), default=float("inf")))
        best = min(seconds, key=lambda n: seconds[n])
        winner = best if seconds[best] < seconds[baseline] * (1 - MARGIN) else baseline
        return Decision(winner, seconds)

    def _load(self) -> dict[str, Decision]:
        if self._decisions is None:
            entry = self._read_file()["machines"].get(self.machine_id, {})
            self._decisions = {}
            for name, raw in entry.get("decisions", {}).items():
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    seconds = {str(k): float(v) for k, v in raw.get("seconds", {}).items()}
                    self._decisions[name] = Decision(str(raw["winner"]), seconds, "cached")
        return self._decisions

    def _save(self, name: str, decision: Decision) -> None:
        try:
            with self._file_lock():
                data = self._read_file()
                entry = data["machines"].setdefault(
                    self.machine_id, {"machine": self.machine, "decisions": {}}
                )
                entry.setdefault("decisions", {})[name] = {
                    "winner": decision.winner,
                    "seconds": decision.seconds,
                    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                self._write_file(data)
        except OSError as exc:
            log.warning(
                "could not save the tuning cache %s (%s); decisions hold for this process only",
                self.path,
                exc,
            )

    def _file_lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=60)

    def _read_file(self) -> dict[str, Any]:
        """The cache file's content; a missing one is empty, a corrupt or foreign one is set aside with a
        warning (renamed to *.bad) and measured anew."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT, "machines": {}}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._set_aside(f"unreadable ({exc})")
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or not isinstance(data.get("machines"), dict)
        ):
            return self._set_aside(f"not a janus-sdk tuning cache of format {FORMAT}")
        return data

    def _set_aside(self, why: str) -> dict[str, Any]:
        bad = self.path.with_name(self.path.name + ".bad")
        log.warning("ignoring the tuning cache %s: %s; moved to %s, measuring again", self.path, why, bad)
        with contextlib.suppress(OSError):
            os.replace(self.path, bad)
        return {"format": FORMAT, "machines": {}}

    def _write_file(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, self.path)


@dataclass(frozen=True)
class Pins:
    """What `JANUS_SDK_TUNE` fixes: everything to its baseline (`off`), or some families' choices."""

    off: bool = False
    choices: dict[str, str] = field(default_factory=dict)


def parse_pins(text: str) -> Pins:
    """'' -> nothing pinned; 'off' -> every baseline; 'linear=torch,matmul-dtype=float32' -> those two."""
    text = text.strip()
    if text.lower() in {"off", "0", "false", "no"}:
        return Pins(off=True)
    choices = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        family, sep, choice = item.partition("=")
        if not sep or not family.strip() or not choice.strip():
            raise ConfigError(
                f"{PIN_ENV}={text!r}: {item!r} is not FAMILY=CHOICE; write e.g. "
                f"{PIN_ENV}=linear=torch,matmul-dtype=float32, or {PIN_ENV}=off to measure nothing"
            )
        choices[family.strip()] = choice.strip()
    return Pins(choices=choices)


def _describe(seconds: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value * 1e3:.3g} ms" for name, value in seconds.items())


_tuner: Tuner | None = None
_tuner_lock = threading.Lock()


def get_tuner() -> Tuner:
    """The process-wide tuner (created on first use, reading `JANUS_SDK_TUNE` and the cache folder then)."""
    global _tuner
    tuner = _tuner  # read without the lock: this runs on hot paths (`remembered`)
    if tuner is not None:
        return tuner
    with _tuner_lock:
        if _tuner is None:
            _tuner = Tuner()
        return _tuner


@contextlib.contextmanager
def use_tuner(tuner: Tuner) -> Iterator[Tuner]:
    """Make `tuner` the process-wide one inside the block (e.g. tests), restoring the previous one after."""
    global _tuner
    with _tuner_lock:
        previous, _tuner = _tuner, tuner
    try:
        yield tuner
    finally:
        with _tuner_lock:
            _tuner = previous


def _still_valid(known: Decision, candidates: Mapping[str, Callable[[], object]]) -> bool:
    """Whether a remembered decision answers for these candidates: one measured among others (an earlier
    version's, or a CPU that had fewer builds) is measured again, so a new candidate is never left untried."""
    return known.winner in candidates and (not known.seconds or set(known.seconds) == set(candidates))


def choose(family: str, key: str, candidates: Mapping[str, Callable[[], object]], baseline: str) -> str:
    """`get_tuner().choose(...)`: the measured choice of the process-wide tuner."""
    return get_tuner().choose(family, key, candidates, baseline)


def probe_generator() -> torch.Generator:
    """A generator for a probe's random inputs: measuring never draws from (or moves) the caller's RNG."""
    return torch.Generator().manual_seed(0)


def remembered(key: tuple[object, ...], decide: Callable[[], T]) -> T:
    """`decide()` once per key and process-wide tuner, then a dictionary look-up: the hot-path form of a
    decision (e.g. a linear layer asking at each call whether the kernel serves its row count)."""
    memo = get_tuner().memo
    try:
        value: T = memo[key]
    except KeyError:
        value = memo[key] = decide()
    return value
