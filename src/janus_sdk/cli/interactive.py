"""The interactive `janus chat` session: a conversation kept across turns, a few commands (/help lists them),
and Ctrl-C that stops the answer being written, not the session.

Answers go to stdout (control characters escaped on a terminal), everything else to stderr. The conversation
is the message list `JanusPipeline.chat(messages=...)` takes, images as absolute file paths, so a /save'd
transcript loads back as it is."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

from janus_sdk.cli.terminal import TextOut
from janus_sdk.errors import InputError, JanusError
from janus_sdk.images import load_image

HELP = """\
commands:
  /image PATH   attach an image to your next message
  /system TEXT  set the system prompt (/system alone: the model's default again)
  /save FILE    write the conversation as JSON, the message list pipe.chat(messages=...) takes
                (an existing FILE is kept; /save! FILE replaces it)
  /reset        forget the conversation and any attached images (the system prompt stays)
  /help         this list
  /exit, /quit  leave; so do Ctrl-D, and Ctrl-C at an empty prompt
Ctrl-C while an answer is written stops it; the part already written stays in the conversation."""

HISTORY_FILE = "chat_history"  # in janus-sdk's cache folder: the lines typed, for the up arrow
HISTORY_LENGTH = 1000

Message = dict[str, Any]


class ChatSession:
    """One conversation with a loaded pipeline: the turns so far, the system prompt and the images attached
    to the next message."""

    def __init__(
        self, pipe: Any, *, seed: int | None, settings: dict[str, Any], out: TextIO, err: TextIO
    ) -> None:
        self.pipe, self.seed, self.settings = pipe, seed, settings
        self.out, self.err = TextOut(out), err
        self.system: str | None = None
        self.turns: list[Message] = []
        self.pending: list[str] = []
        self.commands: dict[str, Callable[[str], bool]] = {
            "/image": self.attach,
            "/system": self.set_system,
            "/save": self.save,
            "/save!": lambda arg: self.save(arg, replace=True),
            "/reset": self.reset,
            "/help": self.help,
            "/exit": self.leave,
            "/quit": self.leave,
        }

    def messages(self) -> list[Message]:
        """The conversation as the library takes it: the system prompt (when set) first, then the turns."""
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*system, *self.turns]

    def run(self, read_line: Callable[[str], str], typed: Callable[[], str]) -> int:
        """Read lines until /exit, end of input or Ctrl-C at an empty prompt; `typed` is what the line being
        edited holds (a Ctrl-C on a half-typed line drops that line, as a shell does)."""
        while True:
            try:
                line = read_line("you> ").strip()
            except EOFError:
                self.note("")
                return 0
            except KeyboardInterrupt:
                self.note("")
                if typed().strip():
                    continue
                return 0
            if line and not self.handle(line):
                return 0

    def handle(self, line: str) -> bool:
        """Answer a message or run a command; False when the session should end."""
        if not line.startswith("/"):
            self.answer(line)
            return True
        name, _, arg = line.partition(" ")
        command = self.commands.get(name)
        if command is None:
            self.note(f"unknown command {name}; /help lists the commands")
            return True
        return command(arg.strip())

    def answer(self, text: str) -> None:
        """Stream the answer to `text`. Ctrl-C stops it: what was written stays in the conversation as the
        answer; when nothing was, the message is dropped (its images stay attached for the next one)."""
        turn: Message = {"role": "user", "content": text, "images": list(self.pending)}
        pieces: list[str] = []
        self.out.write("janus> ")
        stream = None
        try:
            stream = self.pipe.stream_chat(messages=[*self.messages(), turn], seed=self.seed, **self.settings)
            for piece in stream:
                pieces.append(piece)
                self.out.write(piece)
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()  # the rest of the answer is not computed
            self.out.write("\n")
            if not pieces:
                self.note("(stopped before the answer began; your message was not added)")
                return
            self.note("(stopped; the answer so far stays in the conversation)")
        except JanusError as exc:  # e.g. a conversation grown past the model's context: the session goes on
            self.out.write("\n")
            self.note(f"error: {exc}")
            return
        else:
            self.out.write("\n")
        self.turns += [turn, {"role": "assistant", "content": "".join(pieces)}]
        self.pending.clear()

    def attach(self, arg: str) -> bool:
        if not arg:
            self.note("usage: /image PATH")
            return True
        path = Path(arg).expanduser()
        try:
            load_image(path)  # decoded whole now: a truncated file is reported here, not at the next message
        except InputError as exc:
            self.note(f"error: {exc}")
            return True
        self.pending.append(str(path.resolve()))
        self.note(f"(attached {path} to your next message)")
        return True

    def set_system(self, arg: str) -> bool:
        self.system = arg or None
        self.note("(system prompt set)" if arg else "(system prompt: the model's default)")
        return True

    def save(self, arg: str, *, replace: bool = False) -> bool:
        if not arg:
            self.note("usage: /save FILE  (/save! FILE replaces an existing file)")
            return True
        path = Path(arg).expanduser()
        messages = self.messages()
        try:
            with path.open("w" if replace else "x", encoding="utf-8") as handle:
                handle.write(json.dumps(messages, indent=2, ensure_ascii=False) + "\n")
        except FileExistsError:
            self.note(f"{path} already exists and was kept; /save! {arg} replaces it")
        except OSError as exc:
            self.note(f"error: cannot write {path}: {exc.strerror or exc}")
        else:
            self.note(f"(saved {len(messages)} message{'s' if len(messages) != 1 else ''} to {path})")
        return True

    def reset(self, _: str) -> bool:
        self.turns.clear()
        self.pending.clear()
        self.note("(conversation cleared)")
        return True

    def help(self, _: str) -> bool:
        self.note(HELP)
        return True

    def leave(self, _: str) -> bool:
        return False

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


@contextmanager
def line_editing(history: Path) -> Iterator[Callable[[], str]]:
    """readline's line editing, with the lines typed kept in `history` across sessions; yields what the line
    being edited holds. Without readline (Windows), plain input and no history."""
    try:
        import readline
    except ImportError:
        yield lambda: ""
        return
    with suppress(OSError):  # no history yet
        readline.read_history_file(history)
    readline.set_history_length(HISTORY_LENGTH)
    try:
        yield readline.get_line_buffer
    finally:
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(history)
        except OSError as exc:
            print(f"(history not saved to {history}: {exc.strerror or exc})", file=sys.stderr)


def interactive_chat(
    pipe: Any, *, first_images: list[str], seed: int | None, settings: dict[str, Any]
) -> int:
    """Talk with `pipe` on stdin and stdout; on a terminal with line editing and history."""
    from janus_sdk.tuning import cache_dir

    session = ChatSession(pipe, seed=seed, settings=settings, out=sys.stdout, err=sys.stderr)
    session.note("janus chat - /help lists the commands; Ctrl-C stops an answer; Ctrl-D or /exit leaves")
    for image in first_images:
        session.attach(image)
    if not sys.stdin.isatty():
        return session.run(input, lambda: "")
    with line_editing(cache_dir() / HISTORY_FILE) as typed:
        return session.run(input, typed)
