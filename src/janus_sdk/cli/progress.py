"""A tqdm progress bar over image tokens, fed by the pipeline's `on_step` callback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from janus_sdk.pipeline.decoding import Progress, ProgressCallback


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback | None]:
    """Yield an on_step callback drawing one bar per batch of images (tokens done / total, tokens/s)."""
    if not enabled:
        yield None
        return
    bars: list[tqdm] = []  # type: ignore[type-arg]

    def on_step(progress: Progress) -> None:
        if progress.step == 1:
            if bars:
                bars[-1].close()
            bars.append(
                tqdm(
                    total=progress.total,
                    desc=f"image tokens ({progress.rows} rows)",
                    unit="tok",
                    file=sys.stderr,
                    leave=True,
                )
            )
        bar = bars[-1]
        bar.update(progress.step - bar.n)
        bar.set_postfix_str(f"{progress.tokens_per_second:.1f} tok/s")

    try:
        yield on_step
    finally:
        for bar in bars:
            bar.close()
