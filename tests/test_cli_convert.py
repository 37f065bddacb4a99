"""`janus convert`: safetensors (the default), the transformers layout and back bit for bit, refusal to
overwrite (exit 1, one line), an unknown --to (exit 2, argparse) and the examples in --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import CHECKPOINT, FIXTURE
from janus_sdk.checkpoint import LayoutKind, open_checkpoint
from janus_sdk.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(directory) as weights:
        return {name: weights.get(name).clone() for name in weights}


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and torch.equal(actual[name], tensor), name


def test_default_rewrites_bin_shards_as_safetensors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "st"
    code, out, _ = run_cli(capsys, "convert", str(FIXTURE / "checkpoint-bin"), str(dst))
    assert (code, out.strip()) == (0, str(dst))
    with open_checkpoint(dst) as weights:
        assert weights.layout.kind is LayoutKind.SAFETENSORS
    assert_same_tensors(tensors(dst), tensors(CHECKPOINT))


def test_to_transformers_and_back_is_bit_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf, back = tmp_path / "hf", tmp_path / "back"
    code, out, _ = run_cli(capsys, "convert", "--to", "transformers", str(CHECKPOINT), str(hf))
    assert (code, out.strip()) == (0, str(hf))
    assert json.loads((hf / "config.json").read_text(encoding="utf-8"))["model_type"] == "janus"
    assert "model.vision_model.encoder.layers.0.self_attn.q_proj.weight" in open_checkpoint(hf)

    code, out, _ = run_cli(
        capsys, "convert", "--to", "official", "--max-shard-size", "4MB", str(hf), str(back)
    )
    assert (code, out.strip()) == (0, str(back))
    assert json.loads((back / "config.json").read_text(encoding="utf-8"))["model_type"] == "multi_modality"
    with open_checkpoint(back) as weights:
        assert weights.layout.kind is LayoutKind.SAFETENSORS_SHARDED
    assert_same_tensors(tensors(back), tensors(CHECKPOINT))


@pytest.mark.parametrize("target", ["safetensors", "transformers"])
def test_refuses_to_overwrite_without_the_option(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine", encoding="utf-8")
    code, out, err = run_cli(capsys, "convert", "--to", target, str(CHECKPOINT), str(dst))
    assert (code, out) == (1, "")
    assert (
        err == f"error: destination {dst} already exists and is not empty; pass --overwrite to replace it\n"
    )
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]

    code, _, _ = run_cli(capsys, "convert", "--to", target, "--overwrite", str(CHECKPOINT), str(dst))
    assert code == 0 and not (dst / "keep.txt").exists()


def test_converter_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "convert", "--to", "official", str(CHECKPOINT), str(tmp_path / "x"))
    assert code == 1
    assert err.count("\n") == 1 and "already in the official layout" in err


def test_unknown_target_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--to", "gguf", str(CHECKPOINT), str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "invalid choice: 'gguf'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_help_shows_the_targets_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "{safetensors,transformers,official}" in out
    assert "janus convert --to transformers Janus-Pro-1B/ Janus-Pro-1B-hf/" in out
