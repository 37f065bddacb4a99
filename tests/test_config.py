"""Pipeline configs: strict validation with field paths, component params checked by the component's own
model, generation ranges, JSON / YAML / TOML files, JSON Schema export, checkpoints and official presets."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError

from helpers import CHECKPOINT
from janus_sdk.config import ComponentSpec, GenerationConfig, ImageGenerationConfig, PipelineConfig
from janus_sdk.config.files import dump_config, read_config_file
from janus_sdk.config.official import official_config_to_pipeline_dict
from janus_sdk.config.presets import OFFICIAL_CONFIGS, official_preset, preset_names
from janus_sdk.config.schema import pipeline_json_schema
from janus_sdk.errors import CheckpointError, ConfigError
from janus_sdk.plugins import PluginHost, get_registry
from toy_plugins import EncoderPlugin, plugged

# -- every field is described, unknown keys are refused ------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation refers to (through Optional, list[...], Annotated, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def undescribed_fields(model: type[BaseModel], prefix: str = "", seen: set[type] | None = None) -> list[str]:
    """Paths of the fields, in `model` and every model nested in it, that have no description."""
    seen = set() if seen is None else seen
    seen.add(model)
    missing = []
    for name, field in model.model_fields.items():
        if not (field.description or "").strip():
            missing.append(prefix + name)
        for sub in _models_in(field.annotation):
            if sub not in seen:
                missing += undescribed_fields(sub, f"{prefix}{name}.", seen)
    return missing


def forbids_extra_keys(model: type[BaseModel], seen: set[type] | None = None) -> list[str]:
    """Names of the models (nested included) that would silently accept an unknown key."""
    seen = set() if seen is None else seen
    seen.add(model)
    lax = [] if model.model_config.get("extra") == "forbid" else [model.__name__]
    for field in model.model_fields.values():
        lax += [
            n
            for sub in _models_in(field.annotation)
            if sub not in seen
            for n in forbids_extra_keys(sub, seen)
        ]
    return lax


def test_the_walkers_find_what_they_look_for() -> None:
    class Inner(BaseModel):
        described: int = 0
        bare: int = 1

    class Outer(BaseModel):
        inner: Inner | None = None
        items: list[Inner] = []

    assert undescribed_fields(Outer) == ["inner", "inner.described", "inner.bare", "items"]
    assert forbids_extra_keys(Outer) == ["Outer", "Inner"]


def test_every_pipeline_config_field_is_described_and_strict() -> None:
    assert undescribed_fields(PipelineConfig) == []
    assert forbids_extra_keys(PipelineConfig) == []
    assert {"generation", "image_generation", "image_processor", "processor"} <= set(
        PipelineConfig.model_fields
    )


@pytest.mark.parametrize("reg", get_registry().all(), ids=lambda r: f"{r.kind.value}.{r.name}")
def test_every_installed_component_config_is_described_and_strict(reg: Any) -> None:
    assert undescribed_fields(reg.config) == []
    assert forbids_extra_keys(reg.config) == []


@pytest.mark.parametrize(
    ("data", "path", "allowed"),
    [
        ({"devcie": "cpu"}, "devcie", "checkpoint, device, dtype"),
        ({"generation": {"max_tokens": 5}}, "generation.max_tokens", "max_new_tokens, do_sample"),
        ({"image_generation": {"steps": 5}}, "image_generation.steps", "n, cfg_weight"),
        ({"image_processor": {"size": 5}}, "image_processor.size", "image_size"),
        ({"visual_encoder": {"name": "siglip", "prams": {}}}, "visual_encoder.prams", "name, params"),
        (
            {"visual_encoder": {"name": "siglip", "params": {"widht": 32}}},
            "visual_encoder.params.widht",
            "width",
        ),
        (
            {"gen_aligner": {"name": "mlp", "params": {"dim": 8}}},
            "gen_aligner.params.dim",
            "input_dim, n_embed",
        ),
    ],
)
def test_unknown_key_names_its_path_and_the_allowed_keys(
    data: dict[str, Any], path: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse(data, source="pipeline.yaml")
    message = str(info.value)
    assert message.startswith("invalid pipeline.yaml:")
    line = next(line for line in message.splitlines() if line.strip().startswith(f"{path}:"))
    assert "unknown key" in line and allowed in line


# -- component params are validated by the component's own config model --------------------------------


@pytest.mark.parametrize(
    ("params", "path", "expected"),
    [
        (
            {"width": "wide"},
            "visual_encoder.params.width",
            "valid integer, unable to parse string as an integer, got 'wide'",
        ),
        ({"width": -8}, "visual_encoder.params.width", "greater than 0, got -8"),
        ({"select_feature": "cls"}, "visual_encoder.params.select_feature", "'same', 'patch' or 'cls_patch'"),
        ({"global_pool": "avg"}, "visual_encoder.params.global_pool", "'map' or ''"),
        ({"model_name": "siglip_huge"}, "visual_encoder.params.model_name", "siglip_large_patch16_384"),
        ({"width": 30, "heads": 4}, "visual_encoder.params", "width 30 is not divisible by heads 4"),
    ],
)
def test_bad_siglip_param_names_its_full_path(params: dict[str, Any], path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse({"visual_encoder": {"name": "CLIPVisionTower", "params": params}})
    assert f"  {path}: " in str(info.value) and expected in str(info.value)


def test_every_bad_field_is_reported_at_once() -> None:
    data = {
        "visual_encoder": {"name": "siglip", "params": {"width": 0, "layers": "many"}},
        "gen_aligner": {"name": "mlp", "params": {"depth": 0}},
        "generation": {"top_p": 2},
    }
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse(data)
    paths = [line.split(":")[0].strip() for line in str(info.value).splitlines()[1:]]
    assert sorted(paths) == [
        "gen_aligner.params.depth",
        "generation.top_p",
        "visual_encoder.params.layers",
        "visual_encoder.params.width",
    ]


def test_unknown_component_names_the_slot_and_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse({"visual_encoder": {"name": "clip"}, "image_generation": {"guidance": "cfgg"}})
    message = str(info.value)
    assert "visual_encoder.name: no visual_encoder called 'clip'; available: " in message
    assert "siglip (also CLIPVisionTower, siglip_large_patch16_384; plugin siglip)" in message
    assert "image_generation.guidance: no guidance called 'cfgg'; available: " in message
    assert "cfg (also classifier-free; plugin guidance)" in message


def test_wrong_types_of_whole_sections_are_reported() -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse({"visual_encoder": "siglip", "generation": [1, 2], "device": 3})
    message = str(info.value)
    for path in ("visual_encoder", "generation", "device"):
        assert f"  {path}: Input should be" in message
    with pytest.raises(ConfigError, match="expected a mapping of settings, got list"):
        PipelineConfig.parse([1, 2])  # type: ignore[arg-type]


def test_params_are_completed_with_the_component_defaults() -> None:
    config = PipelineConfig.parse({"visual_encoder": {"name": "CLIPVisionTower", "params": {"width": 64}}})
    assert config.visual_encoder.name == "CLIPVisionTower"  # the name is kept as written
    params = config.visual_encoder.params
    assert (params["width"], params["layers"], params["heads"], params["image_size"]) == (64, 24, 16, 384)
    default = PipelineConfig()  # defaults are validated too (Janus-Pro-1B)
    assert default.visual_encoder.params["width"] == 1024
    assert default.llm_backbone.params["hidden_size"] == 2048
    assert default.llm_backbone.params["rms_norm_eps"] == 1e-6


def test_components_of_an_explicit_registry(
    isolated_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse(registry=...) validates against that registry (here: built-ins plus an in-process plugin)."""
    monkeypatch.setenv("JANUS_SDK_DISABLE_PLUGIN_AUTOLOAD", "1")
    isolated_host.load_entry_points()
    data = {"visual_encoder": {"name": "ToyTower", "params": {"width": 32}}}
    with plugged(isolated_host, ("toyplug", EncoderPlugin("toy", ("ToyTower",)))) as host:
        config = PipelineConfig.parse(data, registry=host.registry)
        assert config.visual_encoder.params == {"width": 32}
        with pytest.raises(ConfigError, match=r"visual_encoder.params.width: Input should be greater than 0"):
            PipelineConfig.parse(
                {"visual_encoder": {"name": "toy", "params": {"width": 0}}}, registry=host.registry
            )
        tiny = PipelineConfig.from_checkpoint(
            CHECKPOINT, registry=host.registry, visual_encoder=data["visual_encoder"]
        )
        assert tiny.visual_encoder.name == "ToyTower" and tiny.aligner.params["input_dim"] == 32
    with pytest.raises(ConfigError, match="no visual_encoder called 'ToyTower'"):
        PipelineConfig.parse(data)  # the process-wide registry has no such plugin


# -- generation settings -------------------------------------------------------------------------------

BAD_GENERATION = [
    ("max_new_tokens", 0),
    ("max_new_tokens", -5),
    ("max_new_tokens", 10**9),
    ("max_new_tokens", 2.5),
    ("temperature", 0.0),
    ("temperature", -1.0),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("top_k", -1),
    ("top_p", 0.0),
    ("top_p", 1.0001),
    ("top_p", -0.5),
    ("top_p", math.nan),
    ("seed", -1),
    ("do_sample", "perhaps"),
]
BAD_IMAGE_GENERATION = [
    ("n", 0),
    ("n", -1),
    ("n", 65),
    ("n", 10**6),
    ("n", 1.5),
    ("cfg_weight", -0.1),
    ("cfg_weight", 101.0),
    ("cfg_weight", math.nan),
    ("cfg_weight", math.inf),
    ("temperature", 0.0),
    ("temperature", math.inf),
    ("top_k", -3),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("seed", -2),
    ("max_batch", 0),
    ("guidance", ""),
]


@pytest.mark.parametrize(("field", "value"), BAD_GENERATION)
def test_generation_ranges(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        GenerationConfig.model_validate({field: value})
    with pytest.raises(ConfigError, match=rf"  generation\.{field}: "):
        PipelineConfig.parse({"generation": {field: value}})


@pytest.mark.parametrize(("field", "value"), BAD_IMAGE_GENERATION)
def test_image_generation_ranges(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        ImageGenerationConfig.model_validate({field: value})
    with pytest.raises(ConfigError, match=r"  image_generation(\.|: )"):
        PipelineConfig.parse({"image_generation": {field: value}})


def test_generation_range_edges_are_accepted() -> None:
    gen = GenerationConfig(max_new_tokens=16384, temperature=1e-4, top_p=1.0, top_k=0, seed=0)
    neutral = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert gen.sampler_spec == ComponentSpec(name="greedy", params=neutral)
    assert GenerationConfig(do_sample=True, top_p=1e-6).sampler_spec.name == "sample"
    image = ImageGenerationConfig(n=64, cfg_weight=0.0, top_p=1.0, max_batch=1)
    assert image.sampler_spec.params == {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    assert image.guidance_spec == ComponentSpec(name="cfg", params={"cfg_weight": 0.0})
    assert ImageGenerationConfig(cfg_weight=100).cfg_weight == 100


def test_generation_out_of_range_message_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse(
            {"generation": {"top_p": 1.5}, "image_generation": {"n": 0, "cfg_weight": math.inf}}
        )
    message = str(info.value)
    assert "generation.top_p: Input should be less than or equal to 1, got 1.5" in message
    assert "image_generation.n: Input should be greater than or equal to 1, got 0" in message
    assert "image_generation.cfg_weight: Input should be a finite number, got inf" in message


# -- files: JSON, YAML, TOML ---------------------------------------------------------------------------

SAME_CONFIG = {
    ".json": """{
  "checkpoint": "tests/fixtures/janus-tiny/checkpoint",
  "device": "cpu",
  "dtype": "float32",
  "attention": {"name": "eager"},
  "visual_encoder": {"name": "CLIPVisionTower",
                     "params": {"width": 32, "layers": 2, "heads": 2, "mlp_ratio": 4.0, "select_layer": -1}},
  "aligner": {"name": "MlpProjector", "params": {"input_dim": 32, "n_embed": 64}},
  "image_tokenizer": {"name": "VQ-16", "params": {"ch": 32, "ch_mult": [1, 1, 2, 2, 4], "z_channels": 32}},
  "llm_backbone": {"name": "llama", "params": {"hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 640,
                   "rms_norm_eps": 1e-6}},
  "chat_template": {"name": "deepseek", "params": {"system_prompt": "Réponds en français, s'il te plaît."}},
  "generation": {"max_new_tokens": 64, "do_sample": true, "temperature": 0.7, "top_p": 0.9, "seed": 7},
  "image_generation": {"n": 4, "cfg_weight": 4.5, "guidance": "cfg"}
}
""",
    ".yaml": """
checkpoint: tests/fixtures/janus-tiny/checkpoint
device: cpu
dtype: float32
attention:
  name: eager
visual_encoder:
  name: CLIPVisionTower
  params: {width: 32, layers: 2, heads: 2, mlp_ratio: 4.0, select_layer: -1}
aligner:
  name: MlpProjector
  params:
    input_dim: 32
    n_embed: 64
image_tokenizer:
  name: VQ-16
  params:
    ch: 32
    ch_mult: [1, 1, 2, 2, 4]
    z_channels: 32
llm_backbone:
  name: llama
  params:
    hidden_size: 64
    intermediate_size: 128
    num_hidden_layers: 2
    num_attention_heads: 4
    vocab_size: 640
    rms_norm_eps: 1e-6     # YAML 1.1 reads this as a string; the float field still takes it
chat_template:
  name: deepseek
  params:
    system_prompt: "Réponds en français, s'il te plaît."
generation: {max_new_tokens: 64, do_sample: true, temperature: 0.7, top_p: 0.9, seed: 7}
image_generation:
  n: 4
  cfg_weight: 4.5
  guidance: cfg
""",
    ".toml": """
checkpoint = "tests/fixtures/janus-tiny/checkpoint"
device = "cpu"
dtype = "float32"

[attention]
name = "eager"

[visual_encoder]
name = "CLIPVisionTower"
params = { width = 32, layers = 2, heads = 2, mlp_ratio = 4.0, select_layer = -1 }

[aligner]
name = "MlpProjector"
params = { input_dim = 32, n_embed = 64 }

[image_tokenizer]
name = "VQ-16"

[image_tokenizer.params]
ch = 32
ch_mult = [1, 1, 2, 2, 4]
z_channels = 32

[llm_backbone]
name = "llama"

[llm_backbone.params]
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
vocab_size = 640
rms_norm_eps = 1e-6

[chat_template]
name = "deepseek"
params = { system_prompt = "Réponds en français, s'il te plaît." }

[generation]
max_new_tokens = 64
do_sample = true
temperature = 0.7
top_p = 0.9
seed = 7

[image_generation]
n = 4
cfg_weight = 4.5
guidance = "cfg"
""",
}


@pytest.fixture
def same_config_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for suffix, text in SAME_CONFIG.items():
        paths[suffix] = tmp_path / f"pipeline{suffix}"
        paths[suffix].write_text(text, encoding="utf-8")
    return paths


def test_the_same_config_in_json_yaml_and_toml_parses_to_the_same_result(
    same_config_files: dict[str, Path],
) -> None:
    configs = {suffix: PipelineConfig.from_file(path) for suffix, path in same_config_files.items()}
    assert configs[".json"] == configs[".yaml"] == configs[".toml"]
    config = configs[".toml"]
    assert config.llm_backbone.params["rms_norm_eps"] == 1e-6
    assert config.image_tokenizer.params["ch_mult"] == [1, 1, 2, 2, 4]
    assert config.chat_template.params["system_prompt"] == "Réponds en français, s'il te plaît."
    assert config.generation.seed == 7 and config.image_generation.n == 4
    assert read_config_file(same_config_files[".json"]) == read_config_file(same_config_files[".toml"])


@pytest.mark.parametrize("fmt", ["json", "yaml", "toml"])
def test_dump_config_round_trips(same_config_files: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    for original in (
        PipelineConfig.from_file(same_config_files[".yaml"]),
        PipelineConfig.from_checkpoint(CHECKPOINT),
        PipelineConfig(),
    ):
        path = tmp_path / f"dumped.{fmt}"
        path.write_text(dump_config(original.model_dump(mode="json"), fmt), encoding="utf-8")
        assert PipelineConfig.from_file(path) == original


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("pipeline.ini", "[x]", "unsupported config format '.ini'"),
        ("pipeline.json", "{not json", "is not valid JSON"),
        ("pipeline.yaml", "a: [1, 2", "is not valid YAML"),
        ("pipeline.toml", "a = ", "is not valid TOML"),
        ("pipeline.yml", "- 1\n- 2\n", "the top level must be a mapping of settings, got list"),
        ("pipeline.json", "", "is not valid JSON"),
    ],
)
def test_unreadable_config_files_are_config_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        PipelineConfig.from_file(path)
    assert str(path) in str(info.value)


def test_missing_config_file_and_unknown_dump_format() -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere\.yaml"):
        PipelineConfig.from_file("nowhere.yaml")
    with pytest.raises(ConfigError, match="unknown config format 'ini'"):
        dump_config({}, "ini")


# -- JSON Schema ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = pipeline_json_schema(get_registry())
    jsonschema.Draft202012Validator.check_schema(result)
    return result


def _schema_accepts(schema: dict[str, Any], data: dict[str, Any]) -> bool:
    return bool(jsonschema.Draft202012Validator(schema).is_valid(data))


def test_schema_accepts_good_configs(schema: dict[str, Any], same_config_files: dict[str, Path]) -> None:
    assert _schema_accepts(schema, {})
    assert _schema_accepts(schema, json.loads(SAME_CONFIG[".json"]))
    assert _schema_accepts(schema, PipelineConfig.from_checkpoint(CHECKPOINT).model_dump(mode="json"))
    assert _schema_accepts(schema, PipelineConfig().model_dump(mode="json"))


BAD_FOR_SCHEMA = [
    {"devcie": "cpu"},
    {"visual_encoder": {"name": "siglip", "params": {"widht": 32}}},
    {"visual_encoder": {"name": "siglip", "params": {"width": "wide"}}},
    {"visual_encoder": {"name": "siglip", "params": {"select_feature": "cls"}}},
    {"visual_encoder": {"name": "clip"}},
    {"visual_encoder": {"params": {}}},
    {"aligner": {"name": "MlpProjector", "params": {"depth": 0}}},
    {"generation": {"top_p": 1.5}},
    {"image_generation": {"n": 0}},
    {"image_generation": {"nn": 1}},
]


@pytest.mark.parametrize("data", BAD_FOR_SCHEMA, ids=lambda d: json.dumps(d))
def test_schema_rejects_what_the_config_rejects(schema: dict[str, Any], data: dict[str, Any]) -> None:
    assert not _schema_accepts(schema, data)
    with pytest.raises(ConfigError):
        PipelineConfig.parse(data)


def test_schema_lists_each_slot_s_installed_components(
    schema: dict[str, Any], isolated_host: PluginHost
) -> None:
    choices = {c["title"]: c for c in schema["properties"]["visual_encoder"]["oneOf"]}
    assert set(choices["siglip"]["properties"]["name"]["enum"]) >= {"siglip", "CLIPVisionTower"}
    assert {c["title"] for c in schema["properties"]["gen_aligner"]["oneOf"]} >= {"mlp"}
    assert schema["properties"]["visual_encoder"]["description"]
    with plugged(isolated_host, ("toyplug", EncoderPlugin("toy", ("ToyTower",)))) as host:
        toy_schema = pipeline_json_schema(host.registry)
    [toy] = toy_schema["properties"]["visual_encoder"]["oneOf"]
    assert toy["properties"]["name"]["enum"] == ["toy", "ToyTower"]
    assert _schema_accepts(toy_schema, {"visual_encoder": {"name": "ToyTower", "params": {"width": 3}}})
    assert not _schema_accepts(toy_schema, {"visual_encoder": {"name": "toy", "params": {"width": 0}}})


# -- checkpoints and presets ---------------------------------------------------------------------------


def test_from_checkpoint_gives_the_tiny_dimensions() -> None:
    config = PipelineConfig.from_checkpoint(CHECKPOINT)
    assert config.checkpoint == str(CHECKPOINT)
    llm = config.llm_backbone
    assert llm.name == "llama"
    assert (llm.params["hidden_size"], llm.params["intermediate_size"], llm.params["num_hidden_layers"]) == (
        64,
        128,
        2,
    )
    assert (
        llm.params["num_attention_heads"],
        llm.params["num_key_value_heads"],
        llm.params["vocab_size"],
    ) == (4, 4, 640)
    assert llm.params["max_position_embeddings"] == 16384 and llm.params["rms_norm_eps"] == 1e-6
    vision = config.visual_encoder
    assert (vision.name, vision.params["width"], vision.params["layers"], vision.params["heads"]) == (
        "CLIPVisionTower",
        32,
        2,
        2,
    )
    assert (config.aligner.name, config.aligner.params["input_dim"], config.aligner.params["n_embed"]) == (
        "MlpProjector",
        32,
        64,
    )
    assert (config.gen_aligner.params["input_dim"], config.gen_aligner.params["n_embed"]) == (8, 64)
    assert (config.image_tokenizer.name, config.image_tokenizer.params["ch"]) == ("VQ-16", 32)
    assert (
        config.image_tokenizer.params["z_channels"] == 32
        and config.image_tokenizer.params["codebook_size"] == 16384
    )
    head = config.generation_head
    assert (head.name, head.params["n_embed"], head.params["image_token_embed"]) == ("vision_head", 64, 64)
    assert (config.text_tokenizer.name, config.chat_template.name) == ("LlamaTokenizer", "deepseek")
    assert config.image_processor.image_size == 384 and config.processor.num_image_tokens == 576


def test_from_checkpoint_overrides_and_errors(tmp_path: Path) -> None:
    config = PipelineConfig.from_checkpoint(CHECKPOINT, device="cpu", attention={"name": "eager"})
    assert (config.device, config.attention.name) == ("cpu", "eager")
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        PipelineConfig.from_checkpoint(tmp_path / "absent")
    (tmp_path / "config.json").write_text(json.dumps({"language_config": {}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="missing vision_config, aligner_config"):
        PipelineConfig.from_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match=r"generation\.top_p"):
        PipelineConfig.from_checkpoint(CHECKPOINT, generation={"top_p": 3})


def _preset_config(name: str) -> PipelineConfig:
    return PipelineConfig.parse(
        official_config_to_pipeline_dict(official_preset(name), source=name), source=name
    )


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_presets_parse(name: str) -> None:
    config = _preset_config(name)
    assert config.visual_encoder.params["width"] == 1024 and config.image_tokenizer.params["ch"] == 128
    hidden = config.llm_backbone.params["hidden_size"]
    assert config.aligner.params["n_embed"] == hidden == config.generation_head.params["n_embed"]
    assert official_preset(name.split("/")[-1]) is official_preset(name)


def test_7b_preset_gets_llama_config_defaults() -> None:
    """The official 7B language_config omits the LLaMA sizes; LlamaConfig's defaults apply."""
    assert "hidden_size" not in OFFICIAL_CONFIGS["deepseek-ai/Janus-Pro-7B"]["language_config"]
    llm = _preset_config("Janus-Pro-7B").llm_backbone.params
    assert (llm["hidden_size"], llm["intermediate_size"], llm["num_attention_heads"]) == (4096, 11008, 32)
    assert (llm["num_hidden_layers"], llm["vocab_size"], llm["max_position_embeddings"]) == (
        30,
        102400,
        16384,
    )
    small = _preset_config("Janus-Pro-1B").llm_backbone.params
    assert (small["hidden_size"], small["intermediate_size"], small["num_attention_heads"]) == (
        2048,
        5632,
        16,
    )


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match="unknown model preset 'Janus-Pro-3B'; known: " + ", ".join(preset_names())
    ):
        official_preset("Janus-Pro-3B")


def test_component_spec_is_strict() -> None:
    with pytest.raises(ValidationError):
        ComponentSpec.model_validate({"name": "siglip", "parms": {}})
    with pytest.raises(ValidationError):
        ComponentSpec.model_validate({"params": {}})
