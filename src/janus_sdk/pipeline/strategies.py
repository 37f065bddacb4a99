"""A plugin's sampler or guidance as the pipeline runs it: checked where it hands tensors back.

A strategy that returns the wrong shape, dtype or device (or ids outside the vocabulary) would otherwise crash
a few steps later, deep in an embedding or a matmul, with nothing pointing at the plugin. Here its output is
checked at every step (shape, dtype and device are free to compare; the values, which need the device to
sync, at the first step) and any failure is a PluginError naming the component and its plugin. The pipeline
holds no state from a failed run, so it stays usable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

import torch
from torch import Tensor

from janus_sdk.errors import JanusError, PluginError
from janus_sdk.interfaces import Guidance, HistorySampler, Sampler
from janus_sdk.registry import Registration


def _who(reg: Registration) -> str:
    return f"{reg.kind.value} {reg.name!r} of plugin {reg.plugin!r} ({reg.distribution})"


@contextlib.contextmanager
def _blamed(who: str, what: str) -> Iterator[None]:
    """Errors a strategy raises (other than JanusErrors, which say what is wrong already) name it."""
    try:
        yield
    except JanusError:
        raise
    except Exception as exc:
        raise PluginError(f"{who} failed in {what}: {type(exc).__name__}: {exc}") from exc


def _expect(
    value: object, who: str, what: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    if not isinstance(value, Tensor):
        raise PluginError(f"{who} returned {type(value).__name__} for {what}; expected a tensor")
    wrong = [
        f"{name} {got} (expected {want})"
        for name, got, want in (
            ("shape", list(value.shape), list(shape)),
            ("dtype", value.dtype, dtype),
            ("device", value.device, device),
        )
        if got != want
    ]
    if wrong:
        raise PluginError(f"{who} returned {what} of {', '.join(wrong)}")
    return value


def _in_range(ids: Tensor, bound: int, who: str, what: str) -> None:
    if ids.numel() and not bool(((ids >= 0) & (ids < bound)).all()):
        raise PluginError(f"{who} returned {what} outside [0, {bound}): {ids.flatten()[:8].tolist()} ...")


class CheckedSampler:
    """A sampler whose ids are checked: int64 [B] on the logits' device, within the vocabulary. It takes the
    history always (its width is the step, for the errors) and hands it on if the sampler asks for it."""

    uses_history = True

    def __init__(self, sampler: Sampler, registration: Registration) -> None:
        self.sampler, self.who = sampler, _who(registration)
        self.forwards_history = bool(getattr(sampler, "uses_history", False))
        self._checked_values = False

    def __call__(
        self, logits: Tensor, generator: torch.Generator | None, *, history: Tensor | None = None
    ) -> Tensor:
        step = "ids" if history is None else f"ids at step {history.shape[1]}"
        with _blamed(self.who, "picking " + step):
            if self.forwards_history and history is not None:
                ids = cast(HistorySampler, self.sampler)(logits, generator, history=history)
            else:
                ids = self.sampler(logits, generator)
        _expect(ids, self.who, step, (logits.shape[0],), torch.long, logits.device)
        if not self._checked_values:
            _in_range(ids, logits.shape[-1], self.who, step)
            self._checked_values = True
        return ids


class CheckedGuidance:
    """A guidance whose rows (int64 [num_branches, L], within the vocabulary) and combined logits ([B, V], the
    logits' dtype and device) are checked."""

    def __init__(self, guidance: Guidance, registration: Registration, vocab_size: int) -> None:
        self.guidance, self.who, self.vocab_size = guidance, _who(registration), vocab_size
        branches = guidance.num_branches
        if isinstance(branches, bool) or not isinstance(branches, int) or branches < 1:
            raise PluginError(f"{self.who} has num_branches {branches!r}; expected an int >= 1")
        self.num_branches = branches

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        with _blamed(self.who, "building rows"):
            rows = self.guidance.rows(prompt_ids, pad_id)
        shape = (self.num_branches, prompt_ids.shape[0])
        _expect(rows, self.who, "rows", shape, torch.long, prompt_ids.device)
        _in_range(rows, self.vocab_size, self.who, "rows")
        return rows

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        what = f"combined logits at step {step}"
        with _blamed(self.who, "combining logits at step " + str(step)):
            combined = self.guidance.combine(logits, step, total)
        shape = (logits.shape[0] // self.num_branches, logits.shape[1])
        return _expect(combined, self.who, what, shape, logits.dtype, logits.device)
