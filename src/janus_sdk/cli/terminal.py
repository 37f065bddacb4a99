"""Generated text on a terminal: control characters a model may produce (escape sequences, NUL, carriage
returns, backspaces) are shown escaped, so an answer can neither move the cursor, recolour or retitle the
terminal nor hide what came before it. Text for a pipe or a file stays exact, as in the API and `--json`."""

from __future__ import annotations

import re
from typing import TextIO

#: Unicode's control characters (category Cc: C0, DEL, C1) but newline and tab, which text legitimately holds.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    r"""Each control character but newline and tab as a visible \xNN escape."""
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class TextOut:
    """Writes generated text to `stream` as it arrives: escaped when the stream is a terminal, else exact."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.escape = stream.isatty()

    def write(self, text: str) -> None:
        self.stream.write(escape_controls(text) if self.escape else text)
        self.stream.flush()
