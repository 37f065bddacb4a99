"""Decode steps captured as CUDA graphs and kept with the model between calls, as gpt-fast keeps its caches.

A captured step replays a decode position of every row in one launch, but it is bound to the tensors it was
captured with, its KV cache among them. So the backbone owns a pool of captured steps, one per bucket (rows
rounded up to a power of two, cache length up to a multiple of LENGTH_STEP), each with the cache it writes. A
generation leases the bucket that fits it: its cache is a view of the bucket's first rows, and its decode
steps replay the bucket's graph (the rows past its own compute on blanks that no row reads). The next call of
that bucket replays the same graph: one capture per bucket and process, not one per call. A bucket whose
cache is still in use (two generations interleaved) lends the other call a bucket of its own, dropped with it;
past `keep` buckets, the least recently used idle one is dropped with its memory.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from janus_plugins.deepseek_llm.cache import StaticKVCache

LENGTH_STEP = 256
"""Cache lengths are rounded up to a multiple of this: prompts of similar length share a captured step."""

Step = Callable[[Tensor, StaticKVCache, Tensor], Tensor]
"""One decode position of every row: (embeddings [B, 1, hidden], cache, position as a one-element int64
tensor) -> hidden states [B, 1, hidden]."""


class Replayable(Protocol):
    def replay(self) -> None: ...


Capture = Callable[[Callable[[], Tensor], torch.device], tuple[Replayable, Tensor]]
"""How a call is captured: (call, device) -> (graph, the output each replay writes), see cuda_graphs."""


def bucket_of(rows: int, length: int) -> tuple[int, int]:
    """The (rows, cache length) of the bucket serving `rows` rows of `length` positions."""
    return 1 << max(rows - 1, 0).bit_length(), -(-length // LENGTH_STEP) * LENGTH_STEP


class DecodeGraph:
    """One decode position of every row of one cache, captured and replayed each step.

    Inputs go through static buffers: the embeddings [rows, 1, hidden] and the position. Warm-up and capture
    use the cache's last slot, which real steps never write (the last sampled token is not fed back) and never
    attend to (the mask stops at the current position). All of it runs in inference mode whatever the
    caller's, so the compiled parts of the step see one kind of tensor.
    """

    @torch.inference_mode()
    def __init__(self, step: Step, cache: StaticKVCache, hidden_size: int, capture: Capture) -> None:
        keys = cache.keys
        self.embeds = torch.zeros(keys.shape[1], 1, hidden_size, dtype=keys.dtype, device=keys.device)
        self.position = torch.full((1,), cache.max_length - 1, dtype=torch.long, device=keys.device)
        self.graph, self.hidden = capture(lambda: step(self.embeds, cache, self.position), keys.device)

    def __call__(self, embeds: Tensor, start: int) -> Tensor:
        """The hidden states of `embeds`' rows (the first rows of the captured batch) at position `start`."""
        rows = embeds.shape[0]
        with torch.inference_mode():
            self.embeds[:rows].copy_(embeds)
            self.position.fill_(start)
            self.graph.replay()
        return self.hidden[:rows].clone()  # the next replay overwrites the static output


class _Bucket:
    """A cache of a bucket's size (its padding always allocated, zeros where unpadded, so that one graph
    serves both), the graph captured on it at its first decode step, and the view now using it, if any."""

    def __init__(self, cache: StaticKVCache, step: Step, hidden_size: int, capture: Capture) -> None:
        self.cache, self.step, self.hidden_size, self.capture = cache, step, hidden_size, capture
        self.graph: DecodeGraph | None = None
        self.lease: weakref.ref[StaticKVCache] | None = None

    def in_use(self) -> bool:
        return self.lease is not None and self.lease() is not None

    def view(self, rows: int, padding: Tensor | None) -> StaticKVCache:
        """A cache of this bucket's first `rows` rows with `padding` (or none), leased until it is dropped."""
        assert self.cache.padding is not None
        self.cache.padding.zero_()
        if padding is not None:
            self.cache.padding[:rows].copy_(padding)
        view = StaticKVCache(
            self.cache.keys[:, :rows],
            self.cache.values[:, :rows],
            None if padding is None else self.cache.padding[:rows],
            captured=self.replay,
        )
        self.lease = weakref.ref(view)
        return view

    def replay(self, embeds: Tensor, start: int) -> Tensor:
        if self.graph is None:
            self.graph = DecodeGraph(self.step, self.cache, self.hidden_size, self.capture)
        return self.graph(embeds, start)


class DecodeGraphs:
    """The pool of captured decode steps a backbone keeps (see the module docstring); thread-safe.

    `new_cache(rows, length)` allocates a bucket's cache; `step` is the decode step to capture on it."""

    def __init__(
        self,
        new_cache: Callable[[int, int], StaticKVCache],
        step: Step,
        *,
        hidden_size: int,
        keep: int,
        capture: Capture,
    ) -> None:
        self.new_cache, self.step, self.hidden_size = new_cache, step, hidden_size
        self.keep, self.capture = keep, capture
        self.buckets: OrderedDict[tuple[int, int], _Bucket] = OrderedDict()
        """The kept buckets by (rows, length), least recently leased first."""
        self._lock = threading.Lock()

    def lease(self, rows: int, length: int, padding: Tensor | None) -> StaticKVCache:
        """A cache for `rows` rows of at least `length` positions whose decode steps replay a kept graph."""
        key = bucket_of(rows, length)
        # normal tensors even when leased in inference mode: a later call outside it must write them too
        with self._lock, torch.inference_mode(False):
            bucket = self.buckets.get(key)
            if bucket is not None and not bucket.in_use():
                self.buckets.move_to_end(key)
            else:
                bucket = self._new_bucket(*key)
                if key not in self.buckets:
                    self.buckets[key] = bucket
                    self._drop_idle()
            return bucket.view(rows, padding)

    def _new_bucket(self, rows: int, length: int) -> _Bucket:
        cache = self.new_cache(rows, length)
        cache.padding = torch.zeros(rows, dtype=torch.long, device=cache.keys.device)
        return _Bucket(cache, self.step, self.hidden_size, self.capture)

    def _drop_idle(self) -> None:
        """Drop the least recently leased idle buckets while more than `keep` are kept."""
        for key in [key for key, bucket in self.buckets.items() if not bucket.in_use()]:
            if len(self.buckets) <= self.keep:
                return
            del self.buckets[key]
