"""What the CLI shows while it waits: a status line while a model loads, one progress bar over a whole image
generation (however many batches `max_batch` splits it into), both on stderr."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm

from janus_sdk.pipeline.decoding import Progress, ProgressCallback

SPINNER = "|/-\\"
SPIN_SECONDS = 0.1  # how often the spinner turns (a display rate; nothing waits on it)
CLEAR_LINE = "\r\x1b[K"


@contextmanager
def loading_status(message: str, *, enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Say `message` while the block runs (a 7B load takes half a minute of silence otherwise).

    On a terminal a spinner with the seconds so far turns until the block ends, then the line says how long it
    took (or is cleared when the block raised, so that the error stands alone); elsewhere (a pipe, a log
    file) the message is one plain line written before the block."""
    out = sys.stderr if stream is None else stream
    if not enabled:
        yield
        return
    if not out.isatty():
        print(f"{message} ...", file=out, flush=True)
        yield
        return
    start = time.perf_counter()
    done = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle(SPINNER):
            out.write(f"{CLEAR_LINE}{message} {frame} {time.perf_counter() - start:.0f}s")
            out.flush()
            if done.wait(SPIN_SECONDS):
                return

    spinner = threading.Thread(target=spin, name="janus-loading-status", daemon=True)
    spinner.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        done.set()
        spinner.join()
        took = time.perf_counter() - start
        out.write(CLEAR_LINE + (f"{message} ... done in {took:.1f}s\n" if finished else ""))
        out.flush()


def batch_sizes(n: int, max_batch: int | None) -> list[int]:
    """The images of each batch the pipeline samples at once, in order (`ImageGenerationConfig.max_batch`)."""
    size = max_batch or n
    return [min(size, n - first) for first in range(0, n, size)]


@contextmanager
def image_progress(
    n: int, max_batch: int | None, *, enabled: bool = True, stream: TextIO | None = None
) -> Iterator[ProgressCallback | None]:
    """Yield an `on_step` callback drawing one bar for the whole run: the image tokens of all `n` images
    (each image's tokens once, whatever the guidance's extra rows) and one rate, image tokens per second.

    The pipeline reports each batch from step 1 again; the batches come in the order `batch_sizes` gives."""
    if not enabled:
        yield None
        return
    sizes = batch_sizes(n, max_batch)
    bars: list[tqdm] = []  # type: ignore[type-arg]
    finished = 0  # image tokens of the batches already done
    batch, last_step = 0, 0

    def on_step(progress: Progress) -> None:
        nonlocal finished, batch, last_step
        if not bars:
            label = f"{n} image{'s' if n != 1 else ''}, {progress.total} tokens each"
            bars.append(tqdm(total=n * progress.total, desc=label, unit="tok", file=stream or sys.stderr))
        if progress.step <= last_step:  # the next batch started over at step 1
            finished += sizes[batch] * progress.total
            batch += 1
        last_step = progress.step
        bars[0].update(finished + sizes[batch] * progress.step - bars[0].n)

    try:
        yield on_step
    finally:
        for bar in bars:
            bar.close()
