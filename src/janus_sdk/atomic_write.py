"""Files written whole or not at all: a reader, a crash or Ctrl-C never leaves half a file under the name."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *, overwrite: bool) -> None:
    """Have `write` fill a temporary file in `path`'s directory (created if need be), flush it to disk, then
    give it `path`'s name in one step. Without `overwrite` a file at `path`, even one that appeared while
    `write` ran, raises FileExistsError and stays untouched. The temporary file never outlives the call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open applies the umask to 0o666, so the file gets the usual permissions (mkstemp would give 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
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
    raise FileExistsError(f"{path} already exists")
