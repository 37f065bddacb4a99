"""Streaming detokenisation: turning token ids into text as they are generated, one final piece at a time."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Literal

from janus_sdk.interfaces import TextTokenizer


class StreamDecoder:
    """Incremental detokeniser: feed ids one at a time, get back only text that is final.

    A byte-level token can end in the middle of a UTF-8 character, and decoders may treat the first token of
    a text specially, so decoding tokens one by one is wrong. Each step decodes a short window of recent
    tokens twice (without and with the new ones) and emits the difference, holding text back while it ends
    in U+FFFD (an unfinished character). The window only moves past text that was emitted cleanly, so the
    concatenated output equals `tokenizer.decode(all_ids)`; `flush` releases whatever is still held back.
    """

    def __init__(self, tokenizer: TextTokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # ids before this index have been emitted

    def push(self, token_id: int) -> str:
        """Add one token id; return the text it completes (often "", e.g. inside a multi-byte character)."""
        self._ids.append(int(token_id))
        emitted, new = self._pending()
        if len(new) > len(emitted) and not new.endswith("\ufffd") and new.startswith(emitted):
            self._prefix, self._read = self._read, len(self._ids)
            return new[len(emitted) :]
        return ""

    def flush(self) -> str:
        """Return the text still held back (e.g. a genuinely invalid byte sequence at the end) and reset."""
        emitted, new = self._pending()
        self._ids.clear()
        self._prefix = self._read = 0
        return new[len(emitted) :]

    def _pending(self) -> tuple[str, str]:
        """Window text up to the emitted point, and window text including the tokens not yet emitted."""
        window = self._ids[self._prefix :]
        emitted = self._tokenizer.decode(window[: self._read - self._prefix], self._skip)
        return emitted, self._tokenizer.decode(window, self._skip)


@dataclass
class TokenUsage:
    """Token accounting of one answer, as OpenAI-style APIs report it: the prompt's tokens (text, chat
    template and image tokens) and the answer's tokens (the end-of-sequence token not counted)."""

    prompt_tokens: int
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length"]
"""Why an answer ended, as OpenAI-style APIs say it: its end-of-sequence token, or its token limit."""


class ChatBatchStream(Iterator[tuple[int, str]]):
    """Several answers decoded together: iterate `(index, piece)` pairs as the pieces become final, the
    answers' pieces interleaved step by step. `usage[i]` and `finish_reason(i)` describe answer i (final once
    the stream is exhausted). `close()` abandons every answer, as a generator's does (so does dropping it)."""

    def __init__(
        self, pieces: Generator[tuple[int, str], None, None], usage: list[TokenUsage], limits: list[int]
    ) -> None:
        self._pieces = pieces
        self.usage = usage
        self.limits = limits

    def __next__(self) -> tuple[int, str]:
        return next(self._pieces)

    def finish_reason(self, index: int) -> FinishReason:
        """ "length" when answer `index` used all the tokens it was allowed, else "stop"."""
        return "length" if self.usage[index].completion_tokens >= self.limits[index] else "stop"

    def close(self) -> None:
        """Stop decoding and let the pipeline go (the rest of the answers is not computed)."""
        self._pieces.close()


class ChatStream(Iterator[str]):
    """The answer's text as it is decoded (iterate it), with its `usage`: the prompt's tokens from the start,
    the answer's tokens so far (final once the stream is exhausted). `close()` abandons it, as a generator's
    does (so does dropping it)."""

    def __init__(self, answers: ChatBatchStream) -> None:
        self._answers = answers
        self.usage = answers.usage[0]

    def __next__(self) -> str:
        return next(self._answers)[1]

    @property
    def finish_reason(self) -> FinishReason:
        """ "length" when the answer used all the tokens it was allowed, else "stop" (its end-of-sequence)."""
        return self._answers.finish_reason(0)

    def close(self) -> None:
        """Stop decoding and let the pipeline go (the rest of the answer is not computed)."""
        self._answers.close()
