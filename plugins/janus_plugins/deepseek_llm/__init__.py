"""Built-in plugin: the DeepSeek-LLM backbone of Janus-Pro (LLaMA architecture, 1.5B and 7B)."""

from __future__ import annotations

from janus_plugins.deepseek_llm.config import DeepSeekLLMConfig
from janus_plugins.deepseek_llm.model import DeepSeekLLM
from janus_sdk.hookspecs import hookimpl
from janus_sdk.plugins import attention_for
from janus_sdk.registry import BuildContext, Register

__all__ = ["DeepSeekLLM", "DeepSeekLLMConfig"]


def build_deepseek_llm(config: DeepSeekLLMConfig, context: BuildContext) -> DeepSeekLLM:
    """DeepSeek-LLM backbone (LLaMA architecture) with a static KV cache."""
    return DeepSeekLLM(config, attention_for(context))


@hookimpl
def register_llm_backbones(register: Register) -> None:
    register(
        "deepseek-llm",
        build_deepseek_llm,
        config=DeepSeekLLMConfig,
        aliases=("llama", "LlamaForCausalLM", "deepseek_llm"),
    )
