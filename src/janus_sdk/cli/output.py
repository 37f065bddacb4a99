"""Writing generated images: fixed names, no overwriting unless asked, atomic writes (no half-written PNG)."""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

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
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    return paths


def save_png_atomic(image: Image.Image, path: Path, *, overwrite: bool) -> None:
    """Write a complete PNG at `path` or nothing: the data goes to a temporary file in the same directory
    (flushed to disk), which then takes the target's name in one step. Without `overwrite`, a file that
    appeared at `path` meanwhile (e.g. during a long generation) is an InputError and stays untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open applies the umask to 0o666, so the PNG gets the usual permissions (mkstemp would give 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG")
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_without_replacing(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _move_without_replacing(tmp: Path, path: Path) -> None:
    """A hard link fails atomically when `path` exists; where links are unsupported, check just before."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    except OSError:  # e.g. FAT or some network file systems
        if not os.path.lexists(path):
            os.replace(tmp, path)
            return
    raise InputError(
        f"{path} already exists (it appeared while the images were generated); pass --overwrite "
        "to replace it or choose another --out"
    )


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
