"""transformers interop: the official janus-tiny checkpoint converted to the layout of transformers'
`JanusForConditionalGeneration` runs in transformers' own model and reproduces the official goldens, and
converting back gives the original tensors bit for bit. Also pins the known differences of transformers'
port."""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from jinja2.exceptions import TemplateError
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, JanusConfig, JanusForConditionalGeneration, JanusProcessor, LlamaModel

from janus_adapters.transformers_interop import (
    EXTRAS_FILE,
    Reshape,
    convert_checkpoint,
    detect_janus_layout,
    route_official,
    route_transformers,
)
from janus_adapters.transformers_interop.config import END_OF_SENTENCE, TokenIds, official_to_transformers
from janus_sdk.checkpoint import open_checkpoint
from janus_sdk.errors import CheckpointError, ConfigError

CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
"""This transformers' name of the KV cache argument (5.24 renamed `past_key_values` to `cache`; older releases
ignore an unknown `cache` and run without one)."""

FIXTURE = Path(__file__).parents[1] / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
CHECKPOINT_BIN = FIXTURE / "checkpoint-bin"
CFG_WEIGHT = 5.0
Model = Any  # a loaded JanusForConditionalGeneration (its type hints are stricter than its behaviour)
METADATA_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "golden" / "golden.safetensors"))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(CHECKPOINT, tmp_path_factory.mktemp("convert") / "hf", to="transformers")


@pytest.fixture(scope="module")
def model(hf_dir: Path) -> Model:
    loaded: Model = JanusForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32)
    return loaded.eval()


@pytest.fixture(scope="module")
def processor(hf_dir: Path) -> Any:
    return JanusProcessor.from_pretrained(str(hf_dir))


def _tensors(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    with open_checkpoint(directory) as weights:
        for name in weights:
            yield name, weights.get(name).clone()


def _assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# -- key mapping and config ----------------------------------------------------------------------------------


def test_key_map_is_a_bijection_onto_transformers_model(hf_dir: Path) -> None:
    with open_checkpoint(CHECKPOINT) as weights:
        official = list(weights)
    routes = [route_official(name) for name in official]
    dropped = sorted(r.official for r in routes if r.reshape is Reshape.DROPPED)
    assert dropped == sorted(
        n for n in official if ".attn_pool." in n or n == "gen_vision_model.quantize.codebook_used"
    )
    hf_names = [target for route in routes for target in route.transformers]
    with torch.device("meta"):
        reference = JanusForConditionalGeneration(JanusConfig.from_pretrained(str(hf_dir)))
    assert sorted(hf_names) == sorted(reference.state_dict())
    for route in routes:
        for target in route.transformers:
            assert route_transformers(target) == route
    with pytest.raises(CheckpointError, match="not part of an official"):
        route_official("vision_model.vision_tower.cls_token")
    with pytest.raises(CheckpointError, match="not part of transformers"):
        route_transformers("model.unknown.weight")


def test_config_writes_every_size_and_never_ties(hf_dir: Path, processor: Any) -> None:
    raw = _json(hf_dir / "config.json")
    assert raw["tie_word_embeddings"] is False and raw["text_config"]["tie_word_embeddings"] is False
    config = JanusConfig.from_pretrained(str(hf_dir))
    vision: Any = config.vision_config
    vq: Any = config.vq_config
    text: Any = config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (64, 128, 2)
    assert (text.vocab_size, text.num_key_value_heads, text.head_dim) == (640, 4, 16)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (32, 2, 2)
    assert (vision.projection_dim, vq.base_channels, vq.latent_channels) == (64, 32, 32)
    assert (vq.projection_dim, vq.image_token_embed_dim, vq.num_patches) == (64, 64, 24)
    assert config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image_placeholder>")


def _official_config(language: dict[str, Any], hidden: int) -> dict[str, Any]:
    """The official Janus-Pro config.json (which leaves the SigLIP and VQ sizes to presets)."""

    def sub(cls: str, model_type: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"cls": cls, "model_type": model_type, "params": params}

    mlp = {"depth": 2, "projector_type": "mlp_gelu", "n_embed": hidden}
    return {
        "aligner_config": sub("MlpProjector", "aligner", {**mlp, "input_dim": 1024}),
        "gen_aligner_config": sub("MlpProjector", "gen_aligner", {**mlp, "input_dim": 8}),
        "gen_head_config": sub(
            "vision_head",
            "gen_head",
            {"image_token_embed": hidden, "image_token_size": 16384, "n_embed": hidden},
        ),
        "gen_vision_config": sub("VQ-16", "gen_vision", {"image_token_size": 16384, "n_embed": 8}),
        "language_config": {
            "max_position_embeddings": 16384,
            "model_type": "llama",
            "torch_dtype": "bfloat16",
            "vocab_size": 102400,
            **language,
        },
        "model_type": "multi_modality",
        "torch_dtype": "bfloat16",
        "vision_config": sub(
            "CLIPVisionTower",
            "vision",
            {
                "image_size": 384,
                "model_name": "siglip_large_patch16_384",
                "select_feature": "same",
                "select_layer": -1,
            },
        ),
    }


@pytest.mark.parametrize(
    ("language", "hidden", "official_state_size"),
    [
        (
            {
                "hidden_size": 2048,
                "intermediate_size": 5632,
                "num_attention_heads": 16,
                "num_hidden_layers": 24,
                "num_key_value_heads": 16,
            },
            2048,
            2_089_297_547,
        ),
        ({"num_hidden_layers": 30}, 4096, 7_420_434_059),  # the 7B file relies on LlamaConfig's defaults
    ],
    ids=["Janus-Pro-1B", "Janus-Pro-7B"],
)
def test_real_janus_pro_configs_build_the_real_model(
    language: dict[str, Any], hidden: int, official_state_size: int
) -> None:
    ids = TokenIds(
        bos=100000, eos=100001, pad=100015, image=100581, begin_of_image=100016, end_of_image=100593
    )
    config = JanusConfig.from_dict(official_to_transformers(_official_config(language, hidden), ids))
    with torch.device("meta"):
        built = JanusForConditionalGeneration(config)
    width, mlp = 1024, 4096  # the official state also holds the SigLIP attention pool and codebook_used
    attn_pool = width + 4 * (width * width + width) + 2 * width + 2 * width * mlp + mlp + width
    assert sum(t.numel() for t in built.state_dict().values()) == official_state_size - attn_pool - 65536


def test_config_refuses_what_transformers_cannot_express() -> None:
    official = _json(CHECKPOINT / "config.json")
    official["aligner_config"]["params"]["depth"] = 3
    ids = TokenIds(600, 601, 602, 605, 603, 604)
    with pytest.raises(ConfigError, match="depth"):
        official_to_transformers(official, ids)


# -- transformers' model reproduces the official goldens -----------------------------------------------------


def test_understanding_logits_match_golden(model: Model, golden: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        out = model(
            input_ids=golden["und_input_ids"],
            pixel_values=golden["und_pixel_values"].flatten(0, 1),
            attention_mask=golden["und_attention_mask"],
        )
    torch.testing.assert_close(out.logits, golden["und_prompt_logits"], atol=2e-4, rtol=0)


def test_greedy_text_generation_matches_golden(model: Model, golden: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        out = model.generate(
            input_ids=golden["und_input_ids"],
            pixel_values=golden["und_pixel_values"].flatten(0, 1),
            attention_mask=golden["und_attention_mask"],
            max_new_tokens=16,
            do_sample=False,
        )
    assert out[0, -16:].tolist() == golden["greedy_ids"].tolist()


def test_teacher_forced_image_steps_match_golden(model: Model, golden: dict[str, torch.Tensor]) -> None:
    """Rows [cond0, uncond0, cond1, uncond1] as the official loop lays them out, through transformers."""
    forced = golden["gen_forced_tokens"]
    expected = golden["gen_forced_cfg_logits_first32"]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(golden["gen_cond_uncond_ids"].long())
        cache = DynamicCache(config=model.config.text_config)
        for step in range(16):  # of the 32 golden steps
            if step:
                pair_tokens = forced[:, step - 1].repeat_interleave(2)[:, None]
                embeds = model.prepare_embeddings_for_image_generation(pair_tokens)
            hidden = model.model.language_model(inputs_embeds=embeds, use_cache=True, **{CACHE_ARG: cache})
            logits = model.model.generation_head(hidden.last_hidden_state[:, -1])
            if step == 0:
                torch.testing.assert_close(logits, golden["gen_step0_raw_logits"], atol=2e-4, rtol=0)
            cfg = logits[1::2] + CFG_WEIGHT * (logits[0::2] - logits[1::2])
            torch.testing.assert_close(cfg, expected[:, step], atol=5e-4, rtol=0)


def test_vq_decode_matches_golden(model: Model, golden: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        decoded = model.model.vqmodel.decode(golden["vq_code_grid"].long())
    torch.testing.assert_close(decoded, golden["vq_decode_out"], atol=1e-4, rtol=0)


def test_image_generate_samples_like_official_only_without_top_k(
    model: Model, golden: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' own image-mode `generate` (its sampler's probabilities recorded) draws the official
    tokens from the official distribution (seed 42) once top-k is off; by default 50 candidates per step
    remain. 8 steps keep it fast: the loop length comes from the vision config."""
    steps = 8
    prompt = golden["gen_prompt_ids"][None].repeat(2, 1)
    vision_config: Any = model.model.vision_model.config
    sample = torch.multinomial
    recorded: list[torch.Tensor] = []

    def recording_multinomial(probs: torch.Tensor, num_samples: int) -> torch.Tensor:
        recorded.append(probs.clone())
        return sample(probs, num_samples)

    monkeypatch.setattr(torch, "multinomial", recording_multinomial)
    monkeypatch.setattr(vision_config, "num_image_tokens", steps)
    drawn, probs = {}, {}
    for top_k in (0, None, "default"):
        recorded.clear()
        torch.manual_seed(42)
        kwargs = {} if top_k == "default" else {"top_k": top_k}
        with torch.no_grad():
            drawn[top_k] = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                generation_mode="image",
                do_sample=True,
                **kwargs,
            )
        probs[top_k] = torch.stack(recorded, dim=1)  # [2, steps, 16384]
    official = golden["gen_sampled_tokens"][:, :steps].long()
    for top_k in (0, None):
        assert torch.equal(drawn[top_k], official)
        logprob = probs[top_k].gather(-1, official[..., None])[..., 0].log()
        torch.testing.assert_close(logprob, golden["gen_sampled_logprob"][:, :steps], atol=5e-4, rtol=0)
        assert bool((probs[top_k] > 0).all())
    assert bool(((probs["default"] > 0).sum(dim=-1) == 50).all())


def test_vq_encode_skips_the_official_l2_normalisation(model: Model, golden: dict[str, torch.Tensor]) -> None:
    """Same latent, different codes: only the official L2 normalisation of latent and codebook is missing."""
    vq = model.model.vqmodel
    with torch.no_grad():
        encoded = vq.encode(golden["und_pixel_values"].flatten(0, 1))
        latent = vq.quant_conv(encoded.last_hidden_state)
    torch.testing.assert_close(latent, golden["vq_encode_h"], atol=1e-4, rtol=1e-4)
    flat = F.normalize(latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1]), dim=-1)
    official_rule = torch.cdist(flat, F.normalize(vq.quantize.embedding.weight, dim=-1)).argmin(dim=-1)
    assert torch.equal(official_rule, golden["vq_encode_indices"])
    assert (encoded.image_tokens != golden["vq_encode_indices"]).sum() > 100


# -- the processor files -------------------------------------------------------------------------------------


def test_processor_reproduces_official_prompt_ids(processor: Any, golden: dict[str, torch.Tensor]) -> None:
    """The chat template + JanusProcessor give the official ids (pixels: see the resize difference)."""
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}],
        }
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = Image.open(FIXTURE / "golden" / "input.png").convert("RGB")
    inputs = processor(text=prompt, images=[image], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], golden["und_input_ids"])
    assert torch.equal(inputs["attention_mask"], golden["und_attention_mask"])
    generation = [{"role": "user", "content": [{"type": "text", "text": "A red cube on a blue table."}]}]
    prompt = processor.apply_chat_template(generation, add_generation_prompt=True)
    inputs = processor(text=prompt, generation_mode="image", return_tensors="pt")
    assert torch.equal(inputs["input_ids"][0], golden["gen_prompt_ids"])


def _official_prompt(system: str, turns: list[tuple[str, str]]) -> str:
    """The official `Conversation.get_prompt` (DeepSeek separator style) followed by strip()."""
    separators = ("\n\n", END_OF_SENTENCE)
    prompt = system + separators[0] if system else ""
    for i, (role, content) in enumerate(turns):
        text = content.strip()
        prompt += f"{role}: {text}{separators[i % 2]}" if text else f"{role}:"
    return prompt.strip()


@pytest.mark.parametrize(
    ("system", "turns"),
    [
        ("", [("user", "Hi")]),
        ("", [("user", " Hi "), ("assistant", "")]),
        ("", [("user", "Hi"), ("assistant", "Hello."), ("user", "More?"), ("assistant", "")]),
        ("", [("user", "Hi"), ("assistant", "Hello.")]),
        ("Be brief.", [("user", "Hi"), ("assistant", "")]),
    ],
)
def test_chat_template_renders_the_official_format(
    processor: Any, system: str, turns: list[tuple[str, str]]
) -> None:
    roles = {"user": "<|User|>", "assistant": "<|Assistant|>"}
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    messages += [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns]
    rendered = processor.apply_chat_template(messages)
    assert rendered == _official_prompt(system, [(roles[role], text) for role, text in turns])


def test_chat_template_generation_prompt_and_bad_role(processor: Any) -> None:
    user = {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    rendered = processor.apply_chat_template([user], add_generation_prompt=True)
    assert rendered == "<|User|>: Hi\n\n<|Assistant|>:"
    with pytest.raises(TemplateError, match="tool"):
        processor.apply_chat_template([{"role": "tool", "content": [{"type": "text", "text": "x"}]}])


def test_image_processor_rounds_where_the_reference_truncates(
    processor: Any, golden: dict[str, torch.Tensor]
) -> None:
    """300x203 -> 384 wide: the reference keeps int(259.84) = 259 rows (62..320), transformers round()s to 260
    (62..321). Fed the reference's own resized-and-padded image, transformers' pixels match exactly."""
    image = Image.open(FIXTURE / "golden" / "input.png").convert("RGB")
    ours = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
    reference = golden["und_pixel_values"][0, 0]
    background = (127 / 255 - 0.5) / 0.5
    torch.testing.assert_close(reference[:, 321], torch.full_like(reference[:, 321], background))
    assert not torch.allclose(ours[:, 321], torch.full_like(ours[:, 321], background))
    padded = Image.fromarray(golden["image_resized_padded_uint8"].numpy())
    same = processor.image_processor(images=[padded], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(same, reference, atol=1e-6, rtol=0)


# -- round trips, sources, refusal ---------------------------------------------------------------------------


def test_round_trip_is_bit_identical(hf_dir: Path, tmp_path: Path) -> None:
    back = convert_checkpoint(hf_dir, tmp_path / "official", to="official")
    assert detect_janus_layout(hf_dir) == "transformers" and detect_janus_layout(back) == "official"
    assert (hf_dir / EXTRAS_FILE).is_file()
    _assert_same_tensors(dict(_tensors(back)), dict(_tensors(CHECKPOINT)))
    config, original = _json(back / "config.json"), _json(CHECKPOINT / "config.json")
    config.pop("transformers_version")
    original.pop("transformers_version")
    assert config == original
    assert (back / "tokenizer.json").read_bytes() == (CHECKPOINT / "tokenizer.json").read_bytes()
    for name in METADATA_FILES:
        assert _json(back / name) == _json(CHECKPOINT / name), name


def test_round_trip_without_side_file_regenerates_codebook_used(hf_dir: Path, tmp_path: Path) -> None:
    """A transformers checkpoint from elsewhere has no side file: codebook_used comes back as the official
    zeros, the attention-pool head (never run by Janus, not recoverable) is absent and so declared."""
    bare = tmp_path / "bare"
    shutil.copytree(hf_dir, bare)
    (bare / EXTRAS_FILE).unlink()
    back = convert_checkpoint(bare, tmp_path / "official", to="official")
    restored = dict(_tensors(back))
    original = {name: t for name, t in _tensors(CHECKPOINT) if ".attn_pool." not in name}
    zeros = torch.zeros(65536, dtype=torch.bfloat16)
    assert torch.equal(original["gen_vision_model.quantize.codebook_used"], zeros)
    _assert_same_tensors(restored, original)
    assert _json(back / "config.json")["vision_config"]["params"]["global_pool"] == ""


def test_tied_lm_head_is_rebuilt_from_the_embeddings(hf_dir: Path, tmp_path: Path) -> None:
    tied = tmp_path / "tied"
    shutil.copytree(hf_dir, tied)
    tensors = load_file(str(tied / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(tied / "model.safetensors"), metadata={"format": "pt"})
    config = _json(tied / "config.json")
    config["tie_word_embeddings"] = True
    (tied / "config.json").write_text(json.dumps(config), encoding="utf-8")
    back = dict(_tensors(convert_checkpoint(tied, tmp_path / "official", to="official")))
    embeddings = back["language_model.model.embed_tokens.weight"]
    assert torch.equal(back["language_model.lm_head.weight"], embeddings)


def test_bin_shards_and_sharded_output(hf_dir: Path, tmp_path: Path) -> None:
    sharded = convert_checkpoint(CHECKPOINT_BIN, tmp_path / "hf", max_shard_size="3MB")
    index = _json(sharded / "model.safetensors.index.json")
    assert len(set(index["weight_map"].values())) > 1
    _assert_same_tensors(dict(_tensors(sharded)), dict(_tensors(hf_dir)))
    back = convert_checkpoint(sharded, tmp_path / "official", to="official")
    _assert_same_tensors(dict(_tensors(back)), dict(_tensors(CHECKPOINT)))


def test_refuses_to_overwrite_and_leaves_the_source_alone(hf_dir: Path, tmp_path: Path) -> None:
    before = _tree_digest(CHECKPOINT)
    dst = convert_checkpoint(CHECKPOINT, tmp_path / "hf")
    (dst / "marker.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(CheckpointError, match="overwrite=True"):
        convert_checkpoint(CHECKPOINT, dst)
    assert (dst / "marker.txt").is_file()
    convert_checkpoint(CHECKPOINT, dst, overwrite=True)
    assert not (dst / "marker.txt").exists()
    assert _tree_digest(dst) == _tree_digest(hf_dir)
    with pytest.raises(CheckpointError, match="outside the source"):
        convert_checkpoint(CHECKPOINT, CHECKPOINT / "nested", overwrite=True)
    with pytest.raises(CheckpointError, match="already in the official layout"):
        convert_checkpoint(CHECKPOINT, tmp_path / "same", to="official")
    with pytest.raises(ConfigError, match="to must be"):
        convert_checkpoint(CHECKPOINT, tmp_path / "bad", to="gguf")  # type: ignore[arg-type]
    assert _tree_digest(CHECKPOINT) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
