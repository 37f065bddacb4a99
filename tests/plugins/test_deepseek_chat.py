"""deepseek_chat plugin: registration, checkpoint tokenizer, streaming decode, the official chat format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

import janus_plugins.deepseek_chat as deepseek_chat
from janus_plugins.deepseek_chat import (
    DeepSeekChatConfig,
    DeepSeekChatTemplate,
    HFTextTokenizer,
)
from janus_plugins.deepseek_chat.template import JANUS_PRO_SYSTEM_PROMPT
from janus_sdk.errors import CheckpointError, InputError
from janus_sdk.interfaces import ChatTemplate, TextTokenizer
from janus_sdk.kinds import ComponentKind
from janus_sdk.plugins import PluginHost
from janus_sdk.registry import BuildContext, Registry
from janus_sdk.text_stream import StreamDecoder

FIXTURE = Path(__file__).parents[1] / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
EOS_TEXT = "<｜end▁of▁sentence｜>"
MULTI_BYTE = "héllo wörld: 世界 🙂, ½ ∑ — ok"


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return dict(json.loads((FIXTURE / "golden" / "manifest.json").read_text(encoding="utf-8"))["info"])


@pytest.fixture(scope="module")
def greedy_ids() -> list[int]:
    return list(load_file(FIXTURE / "golden" / "golden.safetensors")["greedy_ids"].tolist())


@pytest.fixture(scope="module")
def registry() -> Registry:
    host = PluginHost()
    host.register(deepseek_chat, "deepseek_chat")
    return host.registry


@pytest.fixture(scope="module")
def tokenizer(registry: Registry) -> HFTextTokenizer:
    built = registry.get(ComponentKind.TEXT_TOKENIZER, "hf-tokenizer").build({}, BuildContext(CHECKPOINT))
    assert isinstance(built, HFTextTokenizer)
    return built


# -- registration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hf-tokenizer", "LlamaTokenizer", "LlamaTokenizerFast", "AutoTokenizer"])
def test_tokenizer_names(registry: Registry, name: str) -> None:
    assert registry.get(ComponentKind.TEXT_TOKENIZER, name).name == "hf-tokenizer"


@pytest.mark.parametrize("name", ["deepseek", "deepseek-sft"])
def test_template_names_build_a_chat_template(registry: Registry, name: str) -> None:
    template = registry.get(ComponentKind.CHAT_TEMPLATE, name).build({}, BuildContext())
    assert isinstance(template, ChatTemplate) and isinstance(template, DeepSeekChatTemplate)
    assert template.image_tag == "<image_placeholder>"
    assert (template.user_role, template.assistant_role) == ("<|User|>", "<|Assistant|>")


# -- tokenizer -----------------------------------------------------------------------------------------------


def test_tokenizer_satisfies_the_interface_and_knows_the_special_tokens(
    tokenizer: HFTextTokenizer, info: dict[str, Any]
) -> None:
    assert isinstance(tokenizer, TextTokenizer)
    ids = info["token_ids"]
    assert len(tokenizer) == ids["len(tokenizer)"]
    for token, token_id in ids.items():
        if token.startswith("<"):
            assert tokenizer.token_id(token) == token_id, token
    assert tokenizer.bos_id == ids["<｜begin▁of▁sentence｜>"]
    assert tokenizer.eos_id == ids["<｜end▁of▁sentence｜>"]
    assert tokenizer.pad_id == ids["<｜▁pad▁｜>"]
    assert tokenizer.encode("hello")[0] == tokenizer.bos_id


def test_unknown_special_token(tokenizer: HFTextTokenizer) -> None:
    with pytest.raises(CheckpointError, match="no token '<not_a_token>'"):
        tokenizer.token_id("<not_a_token>")


def test_decode_reproduces_the_official_greedy_text(
    tokenizer: HFTextTokenizer, greedy_ids: list[int], info: dict[str, Any]
) -> None:
    assert tokenizer.decode(greedy_ids) == info["greedy_text"]
    assert tokenizer.decode(greedy_ids, skip_special_tokens=False) == info["greedy_text_with_special"]
    assert tokenizer.decode(tokenizer.encode(MULTI_BYTE)) == MULTI_BYTE


def test_config_path_wins_over_the_checkpoint(registry: Registry, tmp_path: Path) -> None:
    registration = registry.get(ComponentKind.TEXT_TOKENIZER, "hf-tokenizer")
    built = registration.build({"path": str(CHECKPOINT)}, BuildContext(checkpoint_dir=tmp_path))
    assert len(built) == 614


@pytest.mark.parametrize(
    ("params", "checkpoint", "match"),
    [
        ({}, None, "needs a directory"),
        ({"path": "/nonexistent/tokenizer"}, None, "no tokenizer files"),
        ({}, FIXTURE / "golden", "no tokenizer files"),
        ({"pad_token": "<pad>"}, CHECKPOINT, "no token '<pad>'"),
    ],
)
def test_tokenizer_errors(
    registry: Registry, params: dict[str, str], checkpoint: Path | None, match: str
) -> None:
    with pytest.raises(CheckpointError, match=match):
        registry.get(ComponentKind.TEXT_TOKENIZER, "hf-tokenizer").build(params, BuildContext(checkpoint))


def test_broken_tokenizer_file(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="cannot load the tokenizer"):
        HFTextTokenizer.from_directory(tmp_path)


# -- streaming -----------------------------------------------------------------------------------------------


def _stream(tokenizer: HFTextTokenizer, ids: list[int], skip_special_tokens: bool = True) -> list[str]:
    decoder = StreamDecoder(tokenizer, skip_special_tokens)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def test_stream_of_greedy_ids_equals_the_full_decode(
    tokenizer: HFTextTokenizer, greedy_ids: list[int]
) -> None:
    assert "".join(_stream(tokenizer, greedy_ids)) == tokenizer.decode(greedy_ids)


def test_stream_yields_only_complete_characters(tokenizer: HFTextTokenizer) -> None:
    ids = [*tokenizer.encode(MULTI_BYTE), tokenizer.eos_id]
    chunks = _stream(tokenizer, ids)
    assert "".join(chunks) == MULTI_BYTE == tokenizer.decode(ids)
    assert all("\ufffd" not in chunk for chunk in chunks)
    # The byte-level tokenizer splits the multi-byte characters, so some pushes must have held text back.
    assert len(tokenizer.encode("世")) > 2 and chunks.count("") > 1
    with_special = _stream(tokenizer, ids, skip_special_tokens=False)
    assert "".join(with_special) == tokenizer.decode(ids, skip_special_tokens=False)


def test_stream_flush_releases_an_unfinished_character_and_resets(tokenizer: HFTextTokenizer) -> None:
    first_byte_of_sun = tokenizer.encode("世")[1]  # a lone UTF-8 lead byte
    decoder = StreamDecoder(tokenizer)
    assert decoder.push(first_byte_of_sun) == ""
    assert decoder.flush() == tokenizer.decode([first_byte_of_sun]) == "\ufffd"
    assert decoder.push(tokenizer.encode("a")[1]) == "a"


# -- chat template -------------------------------------------------------------------------------------------


def test_template_renders_the_official_deepseek_format() -> None:
    template = DeepSeekChatTemplate()
    user, assistant = template.user_role, template.assistant_role
    turns = [(user, " Hello! "), (assistant, "Hi! This is Tony."), (user, "Who are you?"), (assistant, "")]
    # By hand from conversation.py: system + sep; "role: content" + sep (even index) / sep2 (odd index);
    # an empty turn "role:" (no space); contents and the whole prompt strip()-ed.
    assert template.render(turns, JANUS_PRO_SYSTEM_PROMPT) == (
        JANUS_PRO_SYSTEM_PROMPT
        + "\n\n<|User|>: Hello!\n\n<|Assistant|>: Hi! This is Tony."
        + EOS_TEXT
        + "<|User|>: Who are you?\n\n<|Assistant|>:"
    )
    assert template.render(turns[:2], "") == "<|User|>: Hello!\n\n<|Assistant|>: Hi! This is Tony." + EOS_TEXT
    assert template.render([(user, "Hi")], "") == "<|User|>: Hi"  # the trailing separator is stripped
    assert template.default_system_prompt == JANUS_PRO_SYSTEM_PROMPT


def test_template_rejects_unknown_roles() -> None:
    with pytest.raises(InputError, match="role 'user'"):
        DeepSeekChatTemplate().render([("user", "hi")], "")


def test_template_config_changes_the_strings() -> None:
    template = DeepSeekChatTemplate(
        DeepSeekChatConfig(user_role="User", assistant_role="Assistant", sep2="</s>")
    )
    turns = [("User", "a"), ("Assistant", "b"), ("User", "c"), ("Assistant", "")]
    assert template.render(turns, "S") == "S\n\nUser: a\n\nAssistant: b</s>User: c\n\nAssistant:"


def test_ids_are_those_of_the_checkpoints_own_tokenizer_json() -> None:
    """Whatever the transformers version, the ids are the tokenizer.json's (the raw tokenizers library)."""
    from tokenizers import Tokenizer

    directory = Path(__file__).parents[1] / "fixtures" / "janus-tiny" / "checkpoint"
    raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
    ours = HFTextTokenizer.from_directory(directory)
    for text in [
        "<|User|>: A red cube on a blue table.\n\n<|Assistant|>:<begin_of_image>",
        "héllo  wörld\t!",
    ]:
        assert ours.encode(text) == raw.encode(text).ids
