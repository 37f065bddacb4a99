"""The SDK loads a checkpoint in the layout of transformers' `JanusForConditionalGeneration` directly, through
the transformers_interop plugin's `open_checkpoint_layout` hook: the converted janus-tiny fixture gives the
official model tensor for tensor and the golden greedy answer; without the side file of official extras the
unused attention-pool head is left out; and the hook's dispatch rules hold (plugins first, official last, a
plugin's checkpoint errors reach the caller, its bugs are skipped with a warning)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from janus_adapters.transformers_interop import EXTRAS_FILE, OfficialView, convert_checkpoint
from janus_adapters.transformers_interop import plugin as transformers_plugin
from janus_sdk.checkpoint import open_checkpoint
from janus_sdk.checkpoint.layouts import CheckpointLayoutView
from janus_sdk.cli.main import main
from janus_sdk.config import PipelineConfig
from janus_sdk.errors import CheckpointError, PluginError
from janus_sdk.hookspecs import hookimpl
from janus_sdk.pipeline.janus import JanusPipeline
from janus_sdk.plugins import PluginHost, PluginWarning, get_plugin_host

FIXTURE = Path(__file__).parents[1] / "fixtures" / "janus-tiny"
CHECKPOINT = FIXTURE / "checkpoint"
MANIFEST = json.loads((FIXTURE / "golden" / "manifest.json").read_text(encoding="utf-8"))["info"]
ATTN_POOL = "vision_model.vision_tower.attn_pool."
CODEBOOK_USED = "gen_vision_model.quantize.codebook_used"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_checkpoint(CHECKPOINT, tmp_path_factory.mktemp("layout") / "hf", to="transformers")


@pytest.fixture(scope="module")
def official() -> JanusPipeline:
    return JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def from_hf(hf_dir: Path) -> JanusPipeline:
    return JanusPipeline.from_pretrained(hf_dir, device="cpu", dtype="float32")


def _without_extras(hf_dir: Path, tmp_path: Path) -> Path:
    bare = tmp_path / "bare"
    shutil.copytree(hf_dir, bare)
    (bare / EXTRAS_FILE).unlink()
    return bare


def _assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


def test_greedy_answer_matches_golden(from_hf: JanusPipeline) -> None:
    image = Image.open(FIXTURE / "golden" / "input.png")
    prompt = MANIFEST["und_conversation"][0]["content"]
    assert from_hf.chat(prompt, images=[image], max_new_tokens=16, do_sample=False) == MANIFEST["greedy_text"]


def test_same_tensors_and_config_as_the_official_checkpoint(
    from_hf: JanusPipeline, official: JanusPipeline, hf_dir: Path
) -> None:
    _assert_same_state(from_hf.model.state_dict(), official.model.state_dict())
    assert from_hf.config.checkpoint == str(hf_dir)
    assert from_hf.config.model_copy(update={"checkpoint": None}) == official.config.model_copy(
        update={"checkpoint": None}
    )
    assert from_hf.tokenizer.encode(MANIFEST["und_sft_format"]) == official.tokenizer.encode(
        MANIFEST["und_sft_format"]
    )


def test_config_from_checkpoint_and_from_config(hf_dir: Path, official: JanusPipeline) -> None:
    config = PipelineConfig.from_checkpoint(hf_dir, device="cpu", dtype="float32")
    assert config.visual_encoder == PipelineConfig.from_checkpoint(CHECKPOINT).visual_encoder
    pipe = JanusPipeline.from_config(config.model_dump())
    _assert_same_state(pipe.model.state_dict(), official.model.state_dict())


def test_view_presents_official_names_shapes_and_dtypes(hf_dir: Path) -> None:
    with OfficialView(hf_dir, ties_lm_head=False) as view, open_checkpoint(CHECKPOINT) as reference:
        assert sorted(view) == sorted(reference) and len(view) == len(reference)
        for name in reference:
            assert name in view
            assert view.shape_of(name) == reference.shape_of(name), name
            assert view.dtype_of(name) == reference.dtype_of(name), name
            assert view.nbytes_of(name) == reference.nbytes_of(name), name
        qkv = "vision_model.vision_tower.blocks.1.attn.qkv.weight"
        assert torch.equal(view.get(qkv), reference.get(qkv))
        assert view.file_of(f"{ATTN_POOL}latent").name == EXTRAS_FILE
        assert view.file_of(qkv).name == "model.safetensors"
        with pytest.raises(CheckpointError, match="no tensor named 'ghost'"):
            view.shape_of("ghost")


def test_without_side_file_the_attention_pool_is_left_out(
    hf_dir: Path, tmp_path: Path, official: JanusPipeline
) -> None:
    bare = _without_extras(hf_dir, tmp_path)
    pipe = JanusPipeline.from_pretrained(bare, device="cpu", dtype="float32")
    assert pipe.config.visual_encoder.params["global_pool"] == ""
    state = pipe.model.state_dict()
    expected = {k: v for k, v in official.model.state_dict().items() if not k.startswith(ATTN_POOL)}
    _assert_same_state(state, expected)  # codebook_used regenerated as the official zeros
    assert not state[CODEBOOK_USED].any()


def test_tied_lm_head_comes_from_the_embeddings(hf_dir: Path, tmp_path: Path) -> None:
    tied = tmp_path / "tied"
    shutil.copytree(hf_dir, tied)
    tensors = load_file(str(tied / "model.safetensors"))
    embed = tensors.pop("model.language_model.embed_tokens.weight")
    tensors.pop("lm_head.weight")
    save_file({**tensors, "model.language_model.embed_tokens.weight": embed}, str(tied / "model.safetensors"))
    with OfficialView(tied, ties_lm_head=True) as view:
        assert torch.equal(view.get("language_model.lm_head.weight"), embed)
    with pytest.raises(CheckpointError, match=r"no lm_head\.weight and its config does not tie it"):
        JanusPipeline.from_pretrained(tied, device="cpu", dtype="float32")


def test_missing_projection_is_reported_not_read_as_official(hf_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(hf_dir, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["model.vision_model.encoder.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight needs .*k_proj\.weight"):
        JanusPipeline.from_pretrained(broken, device="cpu", dtype="float32")


def test_janus_info_on_the_transformers_layout(hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(hf_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_parameters"] == 6_080_011  # the fixture README's count: the extras restore attn_pool
    assert info["components"]["visual_encoder"] == "CLIPVisionTower"


# -- the hook's dispatch -------------------------------------------------------------------------------------


def test_plugin_is_installed_through_its_entry_point() -> None:
    host = get_plugin_host()
    assert host.pm.get_plugin("transformers_interop") is transformers_plugin
    assert "transformers_interop" in {info.name for info in host.plugins()}


def test_official_layout_is_the_builtin_fallback(hf_dir: Path, isolated_host: PluginHost) -> None:
    official = isolated_host.open_checkpoint_layout(CHECKPOINT)
    assert official.pipeline_dict["checkpoint"] == str(CHECKPOINT)
    assert "language_model.lm_head.weight" in official.weights
    with pytest.raises(CheckpointError, match="not a Janus config in the official layout"):
        isolated_host.open_checkpoint_layout(hf_dir)
    isolated_host.register(transformers_plugin, "transformers_interop")
    assert transformers_plugin.open_checkpoint_layout(CHECKPOINT) is None  # the official layout is not its
    view = isolated_host.open_checkpoint_layout(hf_dir)
    assert isinstance(view.weights, OfficialView)
    assert view.pipeline_dict["checkpoint"] == str(hf_dir)


class _Answers:
    """A layout plugin that answers every directory with `result` (or raises it)."""

    def __init__(self, result: Any) -> None:
        self.result = result

    @hookimpl
    def open_checkpoint_layout(self, directory: Path) -> CheckpointLayoutView | None:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[no-any-return]


def test_plugin_errors_and_bugs(isolated_host: PluginHost) -> None:
    isolated_host.register(_Answers(CheckpointError("broken in my layout")), "strict")
    with pytest.raises(CheckpointError, match="broken in my layout"):
        isolated_host.open_checkpoint_layout(CHECKPOINT)
    isolated_host.unregister("strict")

    isolated_host.register(_Answers(RuntimeError("bug")), "buggy")
    with pytest.warns(PluginWarning, match="'buggy' raised in open_checkpoint_layout: RuntimeError: bug"):
        view = isolated_host.open_checkpoint_layout(CHECKPOINT)
    assert view.pipeline_dict["checkpoint"] == str(CHECKPOINT)
    isolated_host.unregister("buggy")

    isolated_host.register(_Answers("not a view"), "wrong")
    with pytest.raises(PluginError, match="returned str, not a CheckpointLayoutView"):
        isolated_host.open_checkpoint_layout(CHECKPOINT)


def test_a_later_plugin_is_asked_first(isolated_host: PluginHost) -> None:
    first = CheckpointLayoutView({"checkpoint": "first"}, open_checkpoint(CHECKPOINT))
    second = CheckpointLayoutView({"checkpoint": "second"}, open_checkpoint(CHECKPOINT))
    isolated_host.register(_Answers(first), "first")
    isolated_host.register(_Answers(second), "second")
    assert isolated_host.open_checkpoint_layout(CHECKPOINT) is second
    isolated_host.register(_Answers(None), "silent")
    assert isolated_host.open_checkpoint_layout(CHECKPOINT) is second
