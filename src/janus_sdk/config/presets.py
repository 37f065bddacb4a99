"""The config.json of each released Janus model as DeepSeek publishes it (only the keys that shape the model).

Used to build the real architectures on the meta device (parameter counts, `janus info --preset`) without any
download. Note that Janus-Pro-7B's language_config omits the LLaMA sizes: LlamaConfig's defaults fill them in.
"""

from __future__ import annotations

from typing import Any

from janus_sdk.errors import ConfigError


def _official(width: int, language: dict[str, Any]) -> dict[str, Any]:
    mlp = {"depth": 2, "projector_type": "mlp_gelu"}
    return {
        "vision_config": {
            "cls": "CLIPVisionTower",
            "params": {
                "image_size": 384,
                "model_name": "siglip_large_patch16_384",
                "select_feature": "same",
                "select_layer": -1,
            },
        },
        "aligner_config": {"cls": "MlpProjector", "params": {**mlp, "input_dim": 1024, "n_embed": width}},
        "gen_vision_config": {"cls": "VQ-16", "params": {"image_token_size": 16384, "n_embed": 8}},
        "gen_aligner_config": {"cls": "MlpProjector", "params": {**mlp, "input_dim": 8, "n_embed": width}},
        "gen_head_config": {
            "cls": "vision_head",
            "params": {"image_token_embed": width, "image_token_size": 16384, "n_embed": width},
        },
        "language_config": language,
    }


_SMALL_LLM = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "max_position_embeddings": 16384,
    "model_type": "llama",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "torch_dtype": "bfloat16",
    "vocab_size": 102400,
}

OFFICIAL_CONFIGS: dict[str, dict[str, Any]] = {
    "deepseek-ai/Janus-Pro-1B": _official(2048, _SMALL_LLM),
    "deepseek-ai/Janus-Pro-7B": _official(
        4096,
        {
            "max_position_embeddings": 16384,
            "model_type": "llama",
            "num_hidden_layers": 30,
            "torch_dtype": "bfloat16",
            "vocab_size": 102400,
        },
    ),
    "deepseek-ai/Janus-1.3B": _official(2048, _SMALL_LLM),
}


def preset_names() -> list[str]:
    """Names accepted by `official_preset`."""
    return sorted(OFFICIAL_CONFIGS)


def official_preset(name: str) -> dict[str, Any]:
    """The official config.json contents of a released model, by hub id or its last part ('Janus-Pro-7B')."""
    for key, value in OFFICIAL_CONFIGS.items():
        if name in (key, key.split("/")[-1]):
            return value
    raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(preset_names())}")
