"""Janus metadata files, official layout <-> transformers layout: config.json, generation_config.json, and
the tokenizer/processor settings files.

transformers' `JanusConfig()` defaults are not Janus-Pro (its VQ `projection_dim`/`image_token_embed_dim` are
2048 whatever the LLM width, it ties the LM head to the embeddings, and `image_token_id` is the real
vocabulary's), so every size is written out explicitly and `tie_word_embeddings` is False at both levels. The
official params go through the SDK's own component configs, which fill in what official files leave to presets
(SigLIP sizes from `model_name`, VQ sizes hard-coded upstream, LlamaConfig's defaults for the 7B
`language_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from transformers import JanusConfig

from janus_plugins.deepseek_llm.config import DeepSeekLLMConfig
from janus_plugins.mlp.config import MlpProjectorConfig, VisionHeadConfig
from janus_plugins.siglip.config import DEFAULT_MODEL, SigLIPConfig
from janus_plugins.vq16.config import VQ16Config
from janus_sdk.errors import ConfigError

IMAGE_TOKEN = "<image_placeholder>"
BEGIN_OF_IMAGE = "<begin_of_image>"
END_OF_IMAGE = "<end_of_image>"
PAD_TOKEN = "<｜▁pad▁｜>"
END_OF_SENTENCE = "<｜end▁of▁sentence｜>"

# The official sub-config classes this translation understands, by config key.
_OFFICIAL_CLASSES = {
    "vision_config": "CLIPVisionTower",
    "aligner_config": "MlpProjector",
    "gen_vision_config": "VQ-16",
    "gen_aligner_config": "MlpProjector",
    "gen_head_config": "vision_head",
}
_FILE_KEYS = {"model_type", "torch_dtype", "dtype", "transformers_version", "architectures"}

CHAT_TEMPLATE = (
    # The official "deepseek" format: a system message renders as its text + "\n\n"; a non-empty turn as
    # "role: text" + "\n\n" after even turns and EOS after odd turns (the trailing "\n\n" of a final user
    # turn is dropped, as the official prompt is strip()-ed); an empty turn as "role:". Image parts become the
    # image tag and parts of one message join with "\n". JanusProcessor prepends the default system prompt.
    "{%- set ns = namespace(turn=0) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
    "{%- else -%}{%- set ns.parts = [] -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.parts = ns.parts + ['" + IMAGE_TOKEN + "'] -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.parts = ns.parts + [part['text']] -%}{%- endif -%}"
    "{%- endfor -%}{%- set ns.text = ns.parts | join('\\n') -%}{%- endif -%}"
    "{%- set text = ns.text | trim -%}"
    "{%- if message['role'] == 'system' -%}{%- if text -%}{{ text + '\\n\\n' }}{%- endif -%}"
    "{%- else -%}"
    "{%- if message['role'] == 'user' -%}{%- set role = '<|User|>' -%}"
    "{%- elif message['role'] == 'assistant' -%}{%- set role = '<|Assistant|>' -%}"
    "{%- else -%}{{ raise_exception('Janus chat roles: system, user, assistant; got ' + message['role']) }}"
    "{%- endif -%}"
    "{%- if not text -%}{{ role + ':' }}"
    "{%- elif ns.turn % 2 == 1 -%}{{ role + ': ' + text + '" + END_OF_SENTENCE + "' }}"
    "{%- elif loop.last and not add_generation_prompt -%}{{ role + ': ' + text }}"
    "{%- else -%}{{ role + ': ' + text + '\\n\\n' }}{%- endif -%}"
    "{%- set ns.turn = ns.turn + 1 -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|Assistant|>:{%- endif -%}"
)
"""transformers chat template that renders the official Janus-Pro prompt format."""


@dataclass(frozen=True)
class TokenIds:
    """Ids of the special tokens the transformers config and generation config name (looked up by string)."""

    bos: int
    eos: int
    pad: int
    image: int
    begin_of_image: int
    end_of_image: int


def _validated(model: type[BaseModel], params: Mapping[str, Any], where: str) -> Any:
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _sub_params(official: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    sub = official.get(key)
    if not isinstance(sub, Mapping):
        raise ConfigError(f"config.json: {key} is missing; is this an official Janus config?")
    if sub.get("cls") != _OFFICIAL_CLASSES[key]:
        raise ConfigError(
            f"config.json: {key}.cls is {sub.get('cls')!r}; "
            f"transformers' Janus port only has {_OFFICIAL_CLASSES[key]}"
        )
    params = sub.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"config.json: {key}.params must be an object")
    return params


def _require_equal(checks: list[tuple[str, Any, Any]]) -> None:
    for what, left, right in checks:
        if left != right:
            raise ConfigError(
                f"config.json: {what} ({left} vs {right}); transformers' Janus port cannot express it"
            )


def official_to_transformers(official: Mapping[str, Any], ids: TokenIds) -> dict[str, Any]:
    """The transformers `config.json` of an official Janus config.json."""
    vision: SigLIPConfig = _validated(SigLIPConfig, _sub_params(official, "vision_config"), "vision_config")
    aligner: MlpProjectorConfig = _validated(
        MlpProjectorConfig, _sub_params(official, "aligner_config"), "aligner_config"
    )
    vq: VQ16Config = _validated(VQ16Config, _sub_params(official, "gen_vision_config"), "gen_vision_config")
    gen_aligner: MlpProjectorConfig = _validated(
        MlpProjectorConfig, _sub_params(official, "gen_aligner_config"), "gen_aligner_config"
    )
    head: VisionHeadConfig = _validated(
        VisionHeadConfig, _sub_params(official, "gen_head_config"), "gen_head_config"
    )
    language = official.get("language_config")
    if not isinstance(language, Mapping):
        raise ConfigError("config.json: language_config is missing; is this an official Janus config?")
    llm: DeepSeekLLMConfig = _validated(
        DeepSeekLLMConfig, {k: v for k, v in language.items() if k not in _FILE_KEYS}, "language_config"
    )
    _require_equal(
        [
            (
                "aligner projector_type / gen_aligner projector_type must be mlp_gelu",
                (aligner.projector_type, gen_aligner.projector_type),
                ("mlp_gelu", "mlp_gelu"),
            ),
            ("aligner depth / gen_aligner depth must be 2", (aligner.depth, gen_aligner.depth), (2, 2)),
            (
                "SigLIP pixel_mean/pixel_std must be unset",
                (vision.pixel_mean, vision.pixel_std),
                (None, None),
            ),
            ("codebook_l2_norm must be true", vq.codebook_l2_norm, True),
            ("aligner input_dim must equal the SigLIP width", aligner.input_dim, vision.width),
            (
                "gen_aligner input_dim must equal the VQ code width",
                gen_aligner.input_dim,
                vq.codebook_embed_dim,
            ),
            (
                "gen_head image_token_embed must equal gen_aligner n_embed",
                head.image_token_embed,
                gen_aligner.n_embed,
            ),
            (
                "gen_head image_token_size must equal the codebook size",
                head.image_token_size,
                vq.codebook_size,
            ),
            ("the VQ code grid must equal the SigLIP patch grid", vq.grid_size, vision.grid_size),
        ]
    )
    dtype = official.get("torch_dtype", language.get("torch_dtype", "bfloat16"))
    return {
        "architectures": ["JanusForConditionalGeneration"],
        "model_type": "janus",
        "dtype": dtype,
        "image_token_id": ids.image,
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "llama",
            "vocab_size": llm.vocab_size,
            "hidden_size": llm.hidden_size,
            "intermediate_size": llm.intermediate_size,
            "num_hidden_layers": llm.num_hidden_layers,
            "num_attention_heads": llm.num_attention_heads,
            "num_key_value_heads": llm.num_key_value_heads or llm.num_attention_heads,
            "head_dim": llm.hidden_size // llm.num_attention_heads,
            "max_position_embeddings": llm.max_position_embeddings,
            "rms_norm_eps": llm.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": llm.rope_theta},
            "hidden_act": llm.hidden_act,
            "attention_bias": llm.attention_bias,
            "mlp_bias": llm.mlp_bias,
            "tie_word_embeddings": False,
            "bos_token_id": ids.bos,
            "eos_token_id": ids.eos,
            "pad_token_id": ids.pad,
            "dtype": dtype,
        },
        "vision_config": {
            "model_type": "janus_vision_model",
            "hidden_size": vision.width,
            "num_hidden_layers": vision.num_blocks,
            "num_attention_heads": vision.heads,
            "mlp_ratio": vision.mlp_ratio,
            "patch_size": vision.patch_size,
            "image_size": vision.image_size,
            "num_channels": 3,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
            "attention_bias": True,
            "use_qk_norm": False,
            "projection_dim": aligner.n_embed,
            "depth": aligner.depth,
            "num_image_tokens": vision.grid_size**2,
        },
        "vq_config": {
            "model_type": "janus_vqgan",
            "embed_dim": vq.codebook_embed_dim,
            "num_embeddings": vq.codebook_size,
            "latent_channels": vq.z_channels,
            "base_channels": vq.ch,
            "channel_multiplier": list(vq.ch_mult),
            "num_res_blocks": vq.num_res_blocks,
            "in_channels": 3,
            "out_channels": 3,
            "double_latent": False,
            "num_patches": vq.grid_size,
            "projection_dim": gen_aligner.n_embed,
            "num_hidden_layers": gen_aligner.depth,
            "image_token_embed_dim": head.n_embed,
            "hidden_act": "gelu",
        },
    }


def _hf_config(hf: Mapping[str, Any]) -> JanusConfig:
    try:
        config = JanusConfig.from_dict(dict(hf))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config.json is not a valid transformers JanusConfig: {exc}") from None
    return config


def transformers_ties_lm_head(hf: Mapping[str, Any]) -> bool:
    """Whether transformers builds this config's LM head from the token embeddings (files may omit it)."""
    return bool(_hf_config(hf).tie_word_embeddings)


def transformers_to_official(hf: Mapping[str, Any], transformers_version: str) -> dict[str, Any]:
    """The official `config.json` of a transformers Janus config.json (read through `JanusConfig`, so values
    it leaves out get transformers' defaults, exactly as transformers would build the model)."""
    config = _hf_config(hf)
    text: Any = config.text_config
    vision: Any = config.vision_config
    vq: Any = config.vq_config
    _require_equal(
        [
            (
                "vision hidden_act / VQ hidden_act must be exact gelu",
                (vision.hidden_act, vq.hidden_act),
                ("gelu", "gelu"),
            ),
            (
                "vision attention_bias must be true and use_qk_norm false",
                (vision.attention_bias, vision.use_qk_norm),
                (True, False),
            ),
            (
                "vision aligner depth / VQ aligner depth must be 2",
                (vision.depth, vq.num_hidden_layers),
                (2, 2),
            ),
            (
                "VQ double_latent / in_channels / out_channels",
                (vq.double_latent, vq.in_channels, vq.out_channels),
                (False, 3, 3),
            ),
            (
                "text head_dim must be hidden_size / num_attention_heads",
                text.head_dim,
                text.hidden_size // text.num_attention_heads,
            ),
            (
                "text hidden_act / attention_bias / mlp_bias",
                (text.hidden_act, text.attention_bias, text.mlp_bias),
                ("silu", False, False),
            ),
            ("text rope_type must be default", text.rope_parameters.get("rope_type", "default"), "default"),
        ]
    )
    dtype = str(hf.get("dtype") or hf.get("torch_dtype") or "bfloat16")

    def sub(cls: str, model_type: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"cls": cls, "model_type": model_type, "params": params}

    return {
        "aligner_config": sub(
            "MlpProjector",
            "aligner",
            {
                "depth": vision.depth,
                "input_dim": vision.hidden_size,
                "n_embed": vision.projection_dim,
                "projector_type": "mlp_gelu",
            },
        ),
        "architectures": ["MultiModalityCausalLM"],
        "gen_aligner_config": sub(
            "MlpProjector",
            "gen_aligner",
            {
                "depth": vq.num_hidden_layers,
                "input_dim": vq.embed_dim,
                "n_embed": vq.projection_dim,
                "projector_type": "mlp_gelu",
            },
        ),
        "gen_head_config": sub(
            "vision_head",
            "gen_head",
            {
                "image_token_embed": vq.projection_dim,
                "image_token_size": vq.num_embeddings,
                "n_embed": vq.image_token_embed_dim,
            },
        ),
        "gen_vision_config": sub(
            "VQ-16",
            "gen_vision",
            {
                "image_token_size": vq.num_embeddings,
                "n_embed": vq.embed_dim,
                "ch": vq.base_channels,
                "ch_mult": list(vq.channel_multiplier),
                "z_channels": vq.latent_channels,
                "num_res_blocks": vq.num_res_blocks,
                "codebook_size": vq.num_embeddings,
                "codebook_embed_dim": vq.embed_dim,
                "codebook_l2_norm": True,
            },
        ),
        "language_config": {
            "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size,
            "max_position_embeddings": text.max_position_embeddings,
            "model_type": "llama",
            "num_attention_heads": text.num_attention_heads,
            "num_hidden_layers": text.num_hidden_layers,
            "num_key_value_heads": text.num_key_value_heads,
            "rms_norm_eps": text.rms_norm_eps,
            "rope_theta": float(text.rope_parameters["rope_theta"]),
            "torch_dtype": dtype,
            "vocab_size": text.vocab_size,
        },
        "model_type": "multi_modality",
        "torch_dtype": dtype,
        "transformers_version": transformers_version,
        "vision_config": sub(
            "CLIPVisionTower",
            "vision",
            {
                "image_size": vision.image_size,
                "model_name": DEFAULT_MODEL,
                "select_feature": "same",
                "select_layer": -1,
                "width": vision.hidden_size,
                "layers": vision.num_hidden_layers,
                "heads": vision.num_attention_heads,
                "mlp_ratio": float(vision.mlp_ratio),
                "patch_size": vision.patch_size,
                "global_pool": "map",
            },
        ),
    }


def generation_config(ids: TokenIds) -> dict[str, Any]:
    """transformers `generation_config.json`: the official text-to-image settings (CFG 5, temperature 1) and
    the ids its image mode needs (transformers 5 reads the begin-of-image id from `generation_kwargs`, earlier
    versions from `boi_token_id`). `top_k` is left to transformers' default (50), as in its own port."""
    return {
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "boi_token_id": ids.begin_of_image,
        "generation_kwargs": {"boi_token_id": ids.begin_of_image},
        "guidance_scale": 5.0,
        "temperature": 1.0,
    }


def image_processor_kwargs(preprocessor: Mapping[str, Any]) -> dict[str, Any]:
    """`JanusImageProcessor` keyword arguments from the official `preprocessor_config.json`."""
    size = int(preprocessor.get("image_size", 384))
    mean = list(preprocessor.get("image_mean", (0.48145466, 0.4578275, 0.40821073)))
    background = preprocessor.get("background_color")
    if background is not None and list(background) != [int(m * 255) for m in mean]:
        raise ConfigError(
            f"preprocessor_config.json: background_color {background} is not image_mean * 255; "
            "JanusImageProcessor always derives it from image_mean"
        )
    return {
        "size": {"height": size, "width": size},
        "min_size": int(preprocessor.get("min_size", 14)),
        "image_mean": mean,
        "image_std": list(preprocessor.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
        "do_normalize": bool(preprocessor.get("do_normalize", True)),
        "rescale_factor": float(preprocessor.get("rescale_factor", 1 / 255)),
    }


def official_processor_files(
    image_processor: Mapping[str, Any], num_image_tokens: int
) -> dict[str, dict[str, Any]]:
    """Official `preprocessor_config.json` and `processor_config.json` from transformers' image-processor
    settings and the processor's image-token count."""
    size = image_processor.get("size") or {}
    side = int(size.get("height", 384))
    if int(size.get("width", side)) != side:
        raise ConfigError(f"image processor size {dict(size)} is not square, as the official processor needs")
    mean = list(image_processor.get("image_mean", (0.5, 0.5, 0.5)))
    return {
        "preprocessor_config.json": {
            "background_color": [int(m * 255) for m in mean],
            "do_normalize": bool(image_processor.get("do_normalize", True)),
            "image_mean": mean,
            "image_processor_type": "VLMImageProcessor",
            "image_size": side,
            "image_std": list(image_processor.get("image_std", (0.5, 0.5, 0.5))),
            "min_size": int(image_processor.get("min_size", 14)),
            "processor_class": "VLChatProcessor",
            "rescale_factor": float(image_processor.get("rescale_factor", 1 / 255)),
        },
        "processor_config.json": {
            "add_special_token": False,
            "ignore_id": -100,
            "image_tag": IMAGE_TOKEN,
            "mask_prompt": True,
            "num_image_tokens": num_image_tokens,
            "processor_class": "VLChatProcessor",
            "sft_format": "deepseek",
        },
    }


def _token_text(token: Any) -> Any:
    """A special token as saved by transformers: a string, or an AddedToken dict with its `content`."""
    return token.get("content") if isinstance(token, Mapping) else token


def official_tokenizer_files(tokenizer_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Official `tokenizer_config.json` and `special_tokens_map.json` from transformers' tokenizer_config.json
    (the official files name LlamaTokenizer and keep the pad token only in the special-tokens map)."""
    extra = tokenizer_config.get("extra_special_tokens") or tokenizer_config.get("additional_special_tokens")
    if isinstance(extra, Mapping):
        extra = list(extra.values())
    bos, eos = _token_text(tokenizer_config.get("bos_token")), _token_text(tokenizer_config.get("eos_token"))
    return {
        "special_tokens_map.json": {
            "additional_special_tokens": [_token_text(token) for token in extra or []],
            "bos_token": bos,
            "eos_token": eos,
            "pad_token": _token_text(tokenizer_config.get("pad_token")) or PAD_TOKEN,
        },
        "tokenizer_config.json": {
            "bos_token": bos,
            "clean_up_tokenization_spaces": False,
            "eos_token": eos,
            "model_max_length": int(tokenizer_config.get("model_max_length", 16384)),
            "pad_token": None,
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": None,
            "use_default_system_prompt": True,
        },
    }
