"""`JanusPipeline.from_pretrained` arguments (torch dtypes, errors that name the argument) and
`save_pretrained`: a checkpoint in the official layout that loads back to the same outputs, written without
ever losing what was in the destination."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from janus_plugins import cpu_kernels
from janus_plugins.cpu_kernels import AVX2
from janus_plugins.linear.packed import PackedLinear
from janus_sdk import BackendUnavailableError, CheckpointError, ConfigError, JanusPipeline, PipelineConfig

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
ARGUMENTS = "invalid arguments of JanusPipeline.from_pretrained"


def load(source: Path = CHECKPOINT, /, **options: object) -> JanusPipeline:
    settings: dict[str, object] = {"device": "cpu", "linear": "torch", "attention": "sdpa", **options}
    return JanusPipeline.from_pretrained(source, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pipe() -> JanusPipeline:
    return load(dtype=torch.float32)


# -- from_pretrained arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("torch.float32", torch.float32),
        ("BFloat16", torch.bfloat16),
    ],
)
def test_from_pretrained_takes_torch_dtypes_and_names(dtype: object, expected: torch.dtype) -> None:
    loaded = load(dtype=dtype)
    assert loaded.dtype == expected
    assert loaded.config.dtype == str(expected).removeprefix("torch.")  # stored by its canonical name


def test_from_pretrained_takes_a_torch_device() -> None:
    assert load(device=torch.device("cpu"), dtype="bf16").device == torch.device("cpu")


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ({"dtype": "fp8"}, "dtype: unknown dtype 'fp8'"),
        ({"dtype": torch.int8}, "dtype: dtype torch.int8"),
        ({"attention": "nope"}, "attention.name: no attention_backend called 'nope'"),
        ({"linear": "zzz"}, "linear.name: no linear_backend called 'zzz'"),
    ],
)
def test_a_wrong_argument_is_reported_as_the_calls(option: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**option)
    message = str(caught.value)
    assert message.startswith(ARGUMENTS) and field in message
    assert "config.json" not in message


def test_a_wrong_config_json_is_still_reported_as_the_checkpoints(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(CHECKPOINT, broken)
    config = json.loads((broken / "config.json").read_text())
    config["vision_config"]["params"]["width"] = "wide"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as caught:
        load(broken, attention="nope")
    message = str(caught.value)
    assert f"invalid {broken}/config.json:\n  visual_encoder.params.width" in message
    assert f"{ARGUMENTS}:\n  attention.name" in message


# -- save_pretrained ----------------------------------------------------------------------------------------
def test_a_saved_pipeline_loads_back_to_the_same_outputs(pipe: JanusPipeline, tmp_path: Path) -> None:
    saved = pipe.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        p.name for p in CHECKPOINT.iterdir()
    )  # the official layout: one model.safetensors beside the configs and tokenizer files
    again = load(saved)
    assert again.dtype == torch.float32
    for name, tensor in pipe.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
    images = [FIXTURE / "golden" / "input.png"]
    assert again.chat("What is shown in this image?", images=images, max_new_tokens=12) == pipe.chat(
        "What is shown in this image?", images=images, max_new_tokens=12
    )
    assert torch.equal(
        again.generate_image_codes("A red cube", n=1, seed=3),
        pipe.generate_image_codes("A red cube", n=1, seed=3),
    )


@pytest.mark.parametrize("source", ["checkpoint", "checkpoint-bin"])
def test_saving_in_the_stored_dtype_reproduces_the_checkpoint(source: str, tmp_path: Path) -> None:
    saved = load(FIXTURE / source, dtype="bfloat16").save_pretrained(tmp_path / "saved")
    original = load_file(str(CHECKPOINT / "model.safetensors"))
    written = load_file(str(saved / "model.safetensors"))
    assert written.keys() == original.keys()
    assert all(torch.equal(written[name], tensor) for name, tensor in original.items())
    for name in ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json"):
        assert (saved / name).read_bytes() == (CHECKPOINT / name).read_bytes(), name


def test_a_float32_save_says_so_in_its_config(pipe: JanusPipeline, tmp_path: Path) -> None:
    config = json.loads((pipe.save_pretrained(tmp_path / "f32") / "config.json").read_text())
    assert config["torch_dtype"] == config["language_config"]["torch_dtype"] == "float32"
    assert config["vision_config"] == json.loads((CHECKPOINT / "config.json").read_text())["vision_config"]


def test_changed_settings_are_written_and_read_back(tmp_path: Path) -> None:
    config = PipelineConfig.from_checkpoint(CHECKPOINT, device="cpu", linear={"name": "torch"})
    changed = config.model_copy(
        update={"image_processor": config.image_processor.model_copy(update={"min_size": 20})}
    )
    saved = JanusPipeline.from_config(changed).save_pretrained(tmp_path / "changed")
    assert json.loads((saved / "preprocessor_config.json").read_text())["min_size"] == 20
    assert PipelineConfig.from_checkpoint(saved).image_processor.min_size == 20


def test_sharded_saves_load_back(pipe: JanusPipeline, tmp_path: Path) -> None:
    saved = pipe.save_pretrained(tmp_path / "shards", max_shard_size="4MB")
    index = json.loads((saved / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (saved / "model.safetensors").exists()
    assert torch.equal(load(saved).model.gen_embed.weight, pipe.model.gen_embed.weight)


def test_a_non_empty_directory_is_never_replaced_unless_it_is_a_checkpoint(
    pipe: JanusPipeline, tmp_path: Path
) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match="not empty"):
            pipe.save_pretrained(target, overwrite=overwrite)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind


def test_a_previous_save_is_replaced_only_with_overwrite(pipe: JanusPipeline, tmp_path: Path) -> None:
    target = pipe.save_pretrained(tmp_path / "saved")
    (target / "extra.txt").write_text("from before")
    with pytest.raises(CheckpointError, match="overwrite=True"):
        pipe.save_pretrained(target)
    assert (target / "extra.txt").exists()
    pipe.save_pretrained(target, overwrite=True)
    assert not (target / "extra.txt").exists() and (target / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_the_loaded_checkpoint_is_never_written_to(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(CHECKPOINT, source)
    loaded = load(source, dtype="bf16")
    for target in (source, source / "inside", tmp_path):
        with pytest.raises(CheckpointError, match="loaded from"):
            loaded.save_pretrained(target, overwrite=True)
    assert sorted(p.name for p in source.iterdir()) == sorted(p.name for p in CHECKPOINT.iterdir())


def test_weights_a_kernel_holds_repacked_are_saved_as_the_checkpoint_holds_them(tmp_path: Path) -> None:
    """The kernel's AVX2 build holds bfloat16 weights as panels (the same values, another layout): a save
    writes each back in the official layout, tensor for tensor."""
    here = cpu_kernels.target()
    if here is None:
        pytest.skip("the kernels have no build for this CPU")
    try:
        pipe = load(dtype="bfloat16", linear=here.isa)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    held = [m.weight for m in pipe.model.modules() if isinstance(m, PackedLinear)]
    assert held and (here.isa != AVX2 or any(weight.dim() == 3 for weight in held))
    saved = pipe.save_pretrained(tmp_path / "saved")
    original = load_file(str(CHECKPOINT / "model.safetensors"))
    written = load_file(str(saved / "model.safetensors"))
    assert written.keys() == original.keys()
    assert all(torch.equal(written[name], tensor) for name, tensor in original.items())


def test_weights_a_linear_backend_converted_are_refused_by_name(tmp_path: Path) -> None:
    quantized = load(dtype="bf16", linear="int8")
    with pytest.raises(CheckpointError, match="linear backend 'int8' converted them") as caught:
        quantized.save_pretrained(tmp_path / "int8")
    assert "linear='torch'" in str(caught.value)
    assert not (tmp_path / "int8").exists()
