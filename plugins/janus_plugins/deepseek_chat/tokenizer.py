"""The checkpoint's own text tokenizer, loaded from its files with transformers.

Loaded with `AutoTokenizer`, never `LlamaTokenizerFast`: Janus-Pro's `tokenizer_config.json` names
LlamaTokenizer, but its `tokenizer.json` is a byte-level BPE; transformers 5 then picks the plain `tokenizers`
backend and reproduces the official ids, whereas forcing LlamaTokenizerFast imposes Llama's own
pre-tokenisation and gives different ids. With transformers 4.x AutoTokenizer resolves to LlamaTokenizerFast,
which in 4.x reads `tokenizer.json` as-is, as the official code did.

"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from janus_sdk.errors import CheckpointError
from janus_sdk.registry import BuildContext

__all__ = ["DEFAULT_PAD_TOKEN", "HFTextTokenizer", "HFTokenizerConfig", "build_hf_tokenizer"]

DEFAULT_PAD_TOKEN = "<｜▁pad▁｜>"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class HFTokenizerConfig(BaseModel):
    """Where to find the tokenizer files and which vocabulary entry pads the unconditional CFG rows."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        default=None,
        description="Directory with tokenizer.json and tokenizer_config.json; None = checkpoint directory.",
    )
    pad_token: str = Field(
        default=DEFAULT_PAD_TOKEN,
        description="Vocabulary entry used as the pad id (the official processor looks this string up; the "
        "checkpoint's tokenizer_config leaves pad_token unset).",
    )


class HFTextTokenizer:
    """A transformers tokenizer behind the `TextTokenizer` interface; special ids are looked up by string."""

    def __init__(self, tokenizer: Any, directory: Path, pad_token: str = DEFAULT_PAD_TOKEN) -> None:
        self._tok = tokenizer
        self._directory = directory
        self._vocab: dict[str, int] = dict(tokenizer.get_vocab())  # added tokens included; read once
        self.bos_id = self._required_id(tokenizer.bos_token_id, "bos_token")
        self.eos_id = self._required_id(tokenizer.eos_token_id, "eos_token")
        self.pad_id = self.token_id(pad_token)

    @classmethod
    def from_directory(cls, directory: str | Path, pad_token: str = DEFAULT_PAD_TOKEN) -> HFTextTokenizer:
        """Load the tokenizer stored in `directory`; CheckpointError if its files are absent or broken."""
        path = Path(directory)
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise CheckpointError(
                f"no tokenizer files in {str(path)!r}: expected one of {', '.join(_TOKENIZER_FILES)} "
                f"(set the tokenizer's `path` to the directory that holds them)"
            )
        # Heavy import, deferred until a tokenizer is actually built. With a tokenizer.json, load exactly that
        # file: the checkpoint names LlamaTokenizer, and in some transformers versions AutoTokenizer maps
        # that to LlamaTokenizerFast, whose own pre-tokenisation gives other ids for this byte-level BPE.
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        loader = PreTrainedTokenizerFast if (path / "tokenizer.json").is_file() else AutoTokenizer
        try:
            with _quiet_transformers():
                tokenizer = loader.from_pretrained(str(path), trust_remote_code=False)
        except Exception as exc:
            raise CheckpointError(
                f"cannot load the tokenizer in {str(path)!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return cls(tokenizer, path, pad_token)

    def _required_id(self, value: int | None, what: str) -> int:
        if value is None:
            raise CheckpointError(f"the tokenizer in {str(self._directory)!r} defines no {what}")
        return int(value)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, BOS first (added by the tokenizer's own post-processor, as officially)."""
        return list(self._tok.encode(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; undecodable byte sequences become U+FFFD, as in the official decode."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_id(self, token: str) -> int:
        """The id of `token`, which must be a single entry of this checkpoint's vocabulary."""
        try:
            return self._vocab[token]
        except KeyError:
            raise CheckpointError(
                f"the tokenizer in {str(self._directory)!r} has no token {token!r} "
                f"(is this a Janus checkpoint?)"
            ) from None

    def __len__(self) -> int:
        return len(self._tok)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load-time notices (it reads the multimodal config.json and complains about the
    LlamaTokenizer class name; both are expected for Janus checkpoints)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def build_hf_tokenizer(config: HFTokenizerConfig, context: BuildContext) -> HFTextTokenizer:
    """The checkpoint's text tokenizer (transformers AutoTokenizer)."""
    directory = config.path if config.path is not None else context.checkpoint_dir
    if directory is None:
        raise CheckpointError(
            "the text tokenizer needs a directory: set its `path` or load it from a checkpoint"
        )
    return HFTextTokenizer.from_directory(directory, config.pad_token)
