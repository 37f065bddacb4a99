"""The interactive `janus chat` session, driven by a scripted keyboard and scripted answers: Ctrl-C mid-answer
stops the answer and returns to the prompt with the conversation kept; Ctrl-C at an empty prompt and Ctrl-D
end; /save, /system, /help; control characters escaped on a terminal only; the readline history."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import CHECKPOINT, FIXTURE, Pin
from janus_sdk.cli.interactive import HELP, ChatSession, line_editing
from janus_sdk.cli.terminal import TextOut, escape_controls
from janus_sdk.errors import InputError

IMAGE = str((FIXTURE / "golden" / "input.png").resolve())
INTERRUPT = object()  # in a scripted answer: Ctrl-C pressed at that point


@dataclass(frozen=True)
class CtrlC:
    """Ctrl-C at the prompt, with `typed` on the line being edited."""

    typed: str = ""


CTRL_D = object()


class Keyboard:
    """What is typed at each prompt: a line (Enter), CtrlC or CTRL_D (raised as input() does)."""

    def __init__(self, *keys: object) -> None:
        self.keys = list(keys)
        self.prompts: list[str] = []
        self.line = ""

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        key = self.keys.pop(0)
        if isinstance(key, CtrlC):
            self.line = key.typed
            raise KeyboardInterrupt
        if key is CTRL_D:
            raise EOFError
        assert isinstance(key, str)
        return key

    def typed(self) -> str:
        return self.line


class ScriptedPipe:
    """Stands in for a loaded model: each message is answered with the next scripted pieces; INTERRUPT raises
    KeyboardInterrupt there, as Ctrl-C does while the model decodes; an exception is raised when reached."""

    def __init__(self, *answers: list[object]) -> None:
        self.answers = list(answers)
        self.asked: list[list[dict[str, Any]]] = []
        self.closed = 0

    def stream_chat(self, *, messages: list[dict[str, Any]], **settings: Any) -> Iterator[str]:
        self.asked.append(json.loads(json.dumps(messages)))  # a copy, as sent
        pieces = self.answers.pop(0)

        def stream() -> Iterator[str]:
            try:
                for piece in pieces:
                    if piece is INTERRUPT:
                        raise KeyboardInterrupt
                    if isinstance(piece, Exception):
                        raise piece
                    assert isinstance(piece, str)
                    yield piece
            finally:
                self.closed += 1

        return stream()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def session(pipe: Any, out: io.StringIO | None = None) -> tuple[ChatSession, io.StringIO, io.StringIO]:
    out = out if out is not None else io.StringIO()
    err = io.StringIO()
    return ChatSession(pipe, seed=None, settings={}, out=out, err=err), out, err


def user(content: str, images: list[str] | None = None) -> dict[str, Any]:
    return {"role": "user", "content": content, "images": images or []}


def assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def test_ctrl_c_mid_answer_keeps_the_partial_answer_and_returns_to_the_prompt() -> None:
    pipe = ScriptedPipe(["Once", " upon", INTERRUPT, " never shown"], ["The end."])
    chat, out, err = session(pipe)
    keyboard = Keyboard("Tell me a story.", "And then?", "/exit")
    assert chat.run(keyboard, keyboard.typed) == 0
    assert keyboard.prompts == ["you> "] * 3  # the prompt came back after the interrupted answer
    assert "Once upon" in out.getvalue() and "never shown" not in out.getvalue()
    assert "stopped" in err.getvalue()
    assert pipe.asked[1] == [user("Tell me a story."), assistant("Once upon"), user("And then?")]
    assert chat.messages() == [*pipe.asked[1], assistant("The end.")]
    assert pipe.closed == 2


def test_ctrl_c_before_the_answer_began_drops_the_message_and_keeps_its_images() -> None:
    pipe = ScriptedPipe([INTERRUPT], ["A cat."])
    chat, _, err = session(pipe)
    keyboard = Keyboard(f"/image {IMAGE}", "Describe it.", "What is this?", CTRL_D)
    assert chat.run(keyboard, keyboard.typed) == 0
    assert "your message was not added" in err.getvalue()
    assert pipe.asked[1] == [user("What is this?", [IMAGE])]
    assert chat.messages() == [user("What is this?", [IMAGE]), assistant("A cat.")]
    assert chat.pending == []


def test_ctrl_c_at_the_prompt_drops_a_half_typed_line_and_ends_at_an_empty_one() -> None:
    pipe = ScriptedPipe()
    chat, _, _ = session(pipe)
    keyboard = Keyboard(CtrlC(typed="half a thou"), CtrlC(typed=""), "never read")
    assert chat.run(keyboard, keyboard.typed) == 0
    assert keyboard.prompts == ["you> ", "you> "] and keyboard.keys == ["never read"]
    assert pipe.asked == []


def test_an_error_mid_answer_is_one_line_and_the_session_goes_on() -> None:
    pipe = ScriptedPipe(["par", InputError("the prompt is too long")], ["fine"])
    chat, _, err = session(pipe)
    keyboard = Keyboard("first", "second", "/quit")
    assert chat.run(keyboard, keyboard.typed) == 0
    assert "error: the prompt is too long\n" in err.getvalue()
    assert chat.messages() == [user("second"), assistant("fine")]


def test_save_writes_the_message_list_and_never_overwrites_unasked(tmp_path: Path) -> None:
    pipe = ScriptedPipe(["Hello!"])
    chat, _, err = session(pipe)
    target = tmp_path / "talk.json"
    target.write_text("precious")
    keyboard = Keyboard(
        "/system Answer briefly.",
        f"/image {IMAGE}",
        "Hi",
        f"/save {target}",
        f"/save! {target}",
        f"/save {tmp_path / 'no-such-dir' / 'talk.json'}",
        f"/save {tmp_path / 'copy.json'}",
        "/exit",
    )
    assert chat.run(keyboard, keyboard.typed) == 0
    lines = err.getvalue().splitlines()
    assert f"{target} already exists and was kept; /save! {target} replaces it" in lines
    assert any(line.startswith("error: cannot write") and "no-such-dir" in line for line in lines)
    expected = [{"role": "system", "content": "Answer briefly."}, user("Hi", [IMAGE]), assistant("Hello!")]
    assert json.loads(target.read_text()) == expected
    assert json.loads((tmp_path / "copy.json").read_text()) == expected


def test_system_prompt_is_the_first_message_until_cleared_and_reset_keeps_it() -> None:
    pipe = ScriptedPipe(["a"], ["b"])
    chat, _, _ = session(pipe)
    keyboard = Keyboard("/system Be terse.", "one", "/reset", "two", "/system", "/exit")
    assert chat.run(keyboard, keyboard.typed) == 0
    assert pipe.asked == [
        [{"role": "system", "content": "Be terse."}, user("one")],
        [{"role": "system", "content": "Be terse."}, user("two")],
    ]
    assert chat.messages() == [user("two"), assistant("b")]


def test_help_lists_every_command_and_unknown_ones_point_to_it() -> None:
    chat, _, err = session(ScriptedPipe())
    keyboard = Keyboard("/help", "/bogus x", f"/image {FIXTURE / 'nope.png'}", "/exit")
    assert chat.run(keyboard, keyboard.typed) == 0
    for name in chat.commands:
        assert name in HELP, f"/help does not mention {name}"
    text = err.getvalue()
    assert HELP in text and "unknown command /bogus; /help lists the commands" in text
    assert "nope.png" in text and chat.pending == []


def test_control_characters_are_escaped_on_a_terminal_only(tmp_path: Path) -> None:
    nasty = "red\x1b[31m\x00\rtext\tand\nmore\x9b"
    assert escape_controls(nasty) == "red\\x1b[31m\\x00\\x0dtext\tand\nmore\\x9b"
    pipe = ScriptedPipe([nasty], [nasty])
    chat, screen, _ = session(pipe, Terminal())
    keyboard = Keyboard("hi", "again", f"/save {tmp_path / 't.json'}", "/exit")
    assert chat.run(keyboard, keyboard.typed) == 0
    assert "\x1b" not in screen.getvalue() and "\x00" not in screen.getvalue()
    assert json.loads((tmp_path / "t.json").read_text())[1]["content"] == nasty  # the transcript is exact
    piped = io.StringIO()
    TextOut(piped).write(nasty)
    assert piped.getvalue() == nasty


def test_line_history_is_kept_across_sessions(tmp_path: Path) -> None:
    readline = pytest.importorskip("readline")
    history = tmp_path / "cache" / "chat_history"
    readline.clear_history()
    with line_editing(history) as typed:
        readline.add_history("what is in the picture?")
        assert typed() == ""
    assert "what is in the picture?" in history.read_text()
    readline.clear_history()
    with line_editing(history):
        assert readline.get_history_item(readline.get_current_history_length()) == "what is in the picture?"
    readline.clear_history()


def test_a_saved_transcript_is_what_the_library_takes(tmp_path: Path, pinned: Pin) -> None:
    """With the tiny model: the transcript's first question, sent back through `chat(messages=...)`, gives
    the answer it records."""
    from janus_sdk.pipeline.janus import JanusPipeline

    pinned("off")  # torch's own paths: nothing measured

    pipe = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")
    chat = ChatSession(pipe, seed=None, settings={"max_new_tokens": 8}, out=io.StringIO(), err=io.StringIO())
    path = tmp_path / "talk.json"
    keyboard = Keyboard(f"/image {IMAGE}", "What is shown in this image?", f"/save {path}", CTRL_D)
    assert chat.run(keyboard, keyboard.typed) == 0
    transcript = json.loads(path.read_text())
    assert [m["role"] for m in transcript] == ["user", "assistant"]
    assert transcript[0]["images"] == [IMAGE]
    assert pipe.chat(messages=transcript[:1], max_new_tokens=8) == transcript[1]["content"] != ""
