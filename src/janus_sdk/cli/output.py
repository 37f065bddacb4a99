"""Writing generated images: fixed names, no overwriting unless asked, atomic writes (no half-written PNG)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from janus_sdk.atomic_write import write_atomic
from janus_sdk.errors import InputError


@dataclass(frozen=True)
class OutputPaths:
    """Where one `janus generate` run writes, and whether it may replace existing files."""

    images: list[Path]
    grid: Path
    overwrite: bool = False


def planned_paths(out: Path, n: int, *, grid: bool, overwrite: bool) -> OutputPaths:
    """The files a run will write; raises before any work if one exists and overwrite is off."""
    paths = OutputPaths([out / f"{i:03d}.png" for i in range(n)], out / "grid.png", overwrite)
    targets = [*paths.images, *([paths.grid] if grid else [])]
    existing = [str(p) for p in targets if os.path.lexists(p)]  # a dangling symlink counts too
    if existing and not overwrite:
        raise InputError(
            f"{len(existing)} output file(s) already exist ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace them or choose another "
            "--out"
        )
    _check_writable(out)
    return paths


def _check_writable(out: Path) -> None:
    """InputError unless the images can be written under `out`: it is a directory (or can be made one) that
    this user may write to, judged from `out` or its nearest existing parent (nothing is created here)."""
    existing = next(p for p in (out, *out.parents) if os.path.lexists(p))
    if not existing.is_dir():
        where = "exists and is not a directory" if existing == out else f"is inside {existing}, a file"
        raise InputError(f"--out {out} {where}; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"--out {out}: no permission to write in {existing}; choose another --out or fix its permissions"
        )


def save_png_atomic(image: Image.Image, path: Path, *, overwrite: bool) -> None:
    """Write a complete PNG at `path` or nothing (`write_atomic`). Without `overwrite`, a file that appeared
    at `path` meanwhile (e.g. during a long generation) is an InputError and stays untouched."""
    try:
        write_atomic(path, lambda handle: image.save(handle, format="PNG"), overwrite=overwrite)
    except FileExistsError:
        raise InputError(
            f"{path} already exists (it appeared while the images were generated); pass --overwrite "
            "to replace it or choose another --out"
        ) from None


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
        save_png_atomic(image, path, overwrite=paths.overwrite)
    if grid:
        save_png_atomic(contact_sheet(images), paths.grid, overwrite=paths.overwrite)
