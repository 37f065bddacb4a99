"""Writing generated images: fixed names, refusal to overwrite unless asked, atomic replace (no half-written PNG)."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from janus_sdk.errors import InputError


@dataclass(frozen=True)
class OutputPaths:
    """Where one `janus generate` run writes."""

    images: list[Path]
    grid: Path


def planned_paths(out: Path, n: int, *, grid: bool, overwrite: bool) -> OutputPaths:
    """The files a run will write; raises before any work if one exists and overwrite is off."""
    paths = OutputPaths([out / f"{i:03d}.png" for i in range(n)], out / "grid.png")
    targets = [*paths.images, *([paths.grid] if grid else [])]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise InputError(
            f"{len(existing)} output file(s) already exist ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace them or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    return paths


def save_png_atomic(image: Image.Image, path: Path) -> None:
    """Write to a temporary file in the same directory, then rename over the target in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def contact_sheet(images: list[Image.Image]) -> Image.Image:
    """All images in a near-square grid."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % cols) * w, (i // cols) * h))
    return sheet


def write_outputs(images: list[Image.Image], paths: OutputPaths, *, grid: bool) -> None:
    """Save each image (and the contact sheet) atomically."""
    for image, path in zip(images, paths.images, strict=True):
        save_png_atomic(image, path)
    if grid:
        save_png_atomic(contact_sheet(images), paths.grid)
