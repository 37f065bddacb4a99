"""`janus chat`, `janus generate` and `janus info` on the tiny reference checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from janus_sdk.cli.main import main

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
MODEL = str(FIXTURE / "checkpoint")
MANIFEST = json.loads((FIXTURE / "golden" / "manifest.json").read_text())["info"]


def test_chat_prints_the_greedy_answer(capsys: pytest.CaptureFixture[str]) -> None:
    image = str(FIXTURE / "golden" / "input.png")
    code = main(
        [
            "chat",
            "--model",
            MODEL,
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--image",
            image,
            "--max-new-tokens",
            "16",
            "What is shown in this image?",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == MANIFEST["greedy_text"] + "\n"


def test_interactive_chat_supports_image_reset_and_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = iter(
        [
            f"/image {FIXTURE / 'golden' / 'input.png'}",
            "What is shown in this image?",
            "/reset",
            "/image /no/such.png",
            "/bogus",
            "/exit",
        ]
    )
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    assert main(["chat", "--model", MODEL, "--max-new-tokens", "16"]) == 0
    captured = capsys.readouterr()
    assert MANIFEST["greedy_text"] in captured.out
    assert "conversation cleared" in captured.err
    assert "/no/such.png" in captured.err and "unknown command /bogus" in captured.err


def test_generate_writes_pngs_refuses_overwrite_and_reports_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imgs"
    args = [
        "generate",
        "--model",
        MODEL,
        "--cfg-weight",
        "1",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no-progress",
        "-n",
        "2",
        "--grid",
        "--json",
        "a red cube",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == [str(out / "000.png"), str(out / "001.png")]
    assert Image.open(out / "000.png").size == (384, 384)
    assert Image.open(out / "grid.png").size == (768, 384)
    before = (out / "000.png").read_bytes()
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "000.png").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "grid.png"]  # no temp files left


def test_info_reports_counts_per_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", MODEL, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_parameters"] == 6_080_011  # the fixture README's count
    assert info["components"]["visual_encoder"] == "CLIPVisionTower"
    assert main(["info", "--preset", "Janus-Pro-7B"]) == 0
    assert "7,420,434,059" in capsys.readouterr().out


@pytest.mark.parametrize("linear", ["torch", "int8"])
def test_linear_option_picks_the_backend(linear: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["chat", "--model", MODEL, "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4"]
    assert main([*args, "--linear", linear, "hello"]) == 0
    assert capsys.readouterr().out.strip()
    assert main([*args, "--linear", "no-such-kernel", "hello"]) == 1
    error = capsys.readouterr().err
    assert "no linear_backend called 'no-such-kernel'" in error and "int8" in error


def test_runtime_errors_are_one_line_with_exit_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "janus_sdk.cli.main", "chat", "--model", str(tmp_path / "nope"), "hello"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    debug = subprocess.run(
        [
            sys.executable,
            "-m",
            "janus_sdk.cli.main",
            "--debug",
            "chat",
            "--model",
            str(tmp_path / "nope"),
            "hello",
        ],
        capture_output=True,
        text=True,
    )
    assert "Traceback" in debug.stderr


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", MODEL, "-n", "not-a-number", "x"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "bad",
    [
        ["-n", "0"],
        ["--cfg-weight", "-1"],
        ["--top-p", "1.5"],
        ["--temperature", "0"],
        ["--guidance", "cfgg"],
        ["--guidance-param", "cfg_weight=3"],
        ["--guidance", "cfg", "--guidance-param", "schedule"],
        ["--guidance", "cfg", "--guidance-param", "schedule=exponential"],
        ["--sampler", "min-p", "--sampler-param", "q=0.1"],
        ["--guidance", "none", "--cfg-weight", "3"],
    ],
)
def test_bad_generation_settings_fail_before_loading(
    bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--model", MODEL, "--out", str(tmp_path), *bad, "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) <= 3


def test_strategy_errors_name_the_option_or_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["generate", "--model", MODEL, "--out", str(tmp_path)]
    assert main([*out, "--guidance", "cfgg", "x"]) == 1
    assert "no guidance called 'cfgg'; available: cfg (also classifier-free; plugin guidance)" in (
        capsys.readouterr().err
    )
    assert main([*out, "--guidance", "cfg", "--guidance-param", "schedule=exponential", "x"]) == 1
    assert (
        "guidance.params.schedule: Input should be 'constant', 'linear' or 'cosine'"
        in capsys.readouterr().err
    )
    assert main(["chat", "--model", MODEL, "--sampler-param", "p=0.1", "x"]) == 1
    assert "--sampler-param needs --sampler NAME" in capsys.readouterr().err


def test_chat_and_generate_take_named_strategies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chat = ["chat", "--model", MODEL, "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "16"]
    image = ["--image", str(FIXTURE / "golden" / "input.png")]
    assert main([*chat, *image, "--sampler", "greedy", "What is shown in this image?"]) == 0
    assert capsys.readouterr().out == MANIFEST["greedy_text"] + "\n"
    minp = ["--sampler", "min-p", "--sampler-param", "p=0.05", "--temperature", "0.8", "--seed", "1"]
    assert main([*chat, *minp, "Hi"]) == 0
    first = capsys.readouterr().out
    assert main([*chat, *minp, "Hi"]) == 0 and capsys.readouterr().out == first  # seeded
    generate = ["generate", "--model", MODEL, "--seed", "0", "--no-progress", "--out", str(tmp_path)]
    cosine = [
        "--guidance",
        "cfg",
        "--guidance-param",
        "schedule=cosine",
        "--guidance-param",
        "start_weight=2",
    ]
    assert main([*generate, *cosine, "--sampler", "min-p", "--sampler-param", "p=0.2", "a cube"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "000.png")
    with Image.open(tmp_path / "000.png") as picture:
        assert picture.size == (384, 384)


def test_every_documented_command_is_wired() -> None:
    from janus_sdk.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    assert {"chat", "generate", "info", "serve", "plugins", "config", "convert"} <= set(commands)


@pytest.mark.parametrize("bad", ["missing", "not-an-image"])
def test_chat_reports_a_bad_image_before_loading_the_model(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from janus_sdk.cli import model_cmds

    def no_load(args: object) -> None:
        raise AssertionError("the model was loaded before the image was checked")

    monkeypatch.setattr(model_cmds, "load_pipeline", no_load)
    path = tmp_path / "photo.png"
    if bad == "not-an-image":
        path.write_text("not pixels")
    code = main(["chat", "--model", MODEL, "--image", str(path), "What is this?"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert str(path) in err
    assert ("does not exist" if bad == "missing" else "not an image file") in err
