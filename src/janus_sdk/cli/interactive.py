"""The interactive `janus chat` session: multi-turn, with /image, /reset and /exit."""

from __future__ import annotations

import sys
from typing import Any

from janus_sdk.errors import InputError
from janus_sdk.images import load_image

HELP = "commands: /image PATH (attach to the next message), /reset (forget the conversation), /exit"


def interactive_chat(
    pipe: Any, *, first_images: list[str], seed: int | None, settings: dict[str, Any]
) -> int:
    """Read messages from stdin until /exit or end of input; answers stream to stdout."""
    history: list[dict[str, Any]] = []
    pending = [load_image(p) for p in first_images]
    print(f"janus chat - {HELP}", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history.clear()
            pending.clear()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if line.startswith("/image"):
            path = line[len("/image") :].strip()
            try:
                pending.append(load_image(path))
                print(f"(attached {path})", file=sys.stderr)
            except InputError as exc:
                print(f"error: {exc}", file=sys.stderr)
            continue
        if line.startswith("/"):
            print(f"unknown command {line.split()[0]}; {HELP}", file=sys.stderr)
            continue
        turn = {"role": "user", "content": line, "images": list(pending)}
        print("janus> ", end="", flush=True)
        answer = []
        try:
            for piece in pipe.stream_chat(messages=[*history, turn], seed=seed, **settings):
                answer.append(piece)
                print(piece, end="", flush=True)
        except InputError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            continue
        print()
        history += [turn, {"role": "assistant", "content": "".join(answer)}]
        pending.clear()
