"""Built-in plugin: the checkpoint's text tokenizer and the official "deepseek" chat format."""

from __future__ import annotations

from janus_plugins.deepseek_chat.template import (
    DeepSeekChatConfig,
    DeepSeekChatTemplate,
    build_deepseek_template,
)
from janus_plugins.deepseek_chat.tokenizer import (
    HFTextTokenizer,
    HFTokenizerConfig,
    build_hf_tokenizer,
)
from janus_sdk.hookspecs import hookimpl
from janus_sdk.registry import Register

__all__ = [
    "DeepSeekChatConfig",
    "DeepSeekChatTemplate",
    "HFTextTokenizer",
    "HFTokenizerConfig",
    "register_chat_templates",
    "register_text_tokenizers",
]


@hookimpl
def register_text_tokenizers(register: Register) -> None:
    """The tokenizer in the checkpoint directory, whatever class name its tokenizer_config.json gives."""
    register(
        "hf-tokenizer",
        build_hf_tokenizer,
        config=HFTokenizerConfig,
        aliases=("LlamaTokenizer", "LlamaTokenizerFast", "AutoTokenizer"),
    )


@hookimpl
def register_chat_templates(register: Register) -> None:
    """The official "deepseek" sft_format named in processor_config.json."""
    register("deepseek", build_deepseek_template, config=DeepSeekChatConfig, aliases=("deepseek-sft",))
