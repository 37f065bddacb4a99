"""`janus chat`, `janus generate` and `janus info` on the tiny reference checkpoint."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
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


def test_runtime_errors_are_one_line_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process: `python -m janus_sdk.cli.main` passing main's code to the shell is checked by test_tuning's
    bad-pin test, and the installed `janus` by test_cli_core's console-script test."""
    missing = str(tmp_path / "nope")
    assert main(["chat", "--model", missing, "hello"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert missing in err
    assert main(["--debug", "chat", "--model", missing, "hello"]) == 1
    assert "Traceback" in capsys.readouterr().err


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
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
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


# -- inputs checked before the model loads -------------------------------------------------------------


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: what is checked here must be checked before any load."""
    from janus_sdk.cli import model_cmds

    def no_load(args: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(model_cmds, "load_pipeline", no_load)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--config", "{tmp}/absent.yaml"], "config file not found"),
        (["chat", "--config", "{tmp}/bad.yaml"], "generation.top_p"),
        (["chat", "--device", "gpu"], "unknown device 'gpu'"),
        (["chat", "--dtype", "f8"], "--dtype f8: unknown dtype 'f8'"),
        (["chat", "--device", "cpu", "--dtype", "float16"], "float16 is not supported on the CPU"),
        (["chat", "--linear", "bogus"], "--linear bogus: no linear_backend called 'bogus'"),
        (["chat", "--attention", "bogus"], "--attention bogus: no attention_backend called 'bogus'"),
        (["chat", "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["chat", "--max-new-tokens", "0"], "max_new_tokens"),
        (["generate", "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["generate", "--max-batch", "0"], "max_batch"),
        (["generate", "--out", "{tmp}/taken.txt"], "exists and is not a directory"),
        (["generate", "--out", "{tmp}/taken.txt/images"], "is inside {tmp}/taken.txt, a file"),
        (["generate", "--out", "{tmp}/full"], "pass --overwrite"),
    ],
)
@pytest.mark.usefixtures("no_model")
def test_inputs_are_checked_before_the_model_loads(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text("checkpoint: x\ngeneration: {top_p: 1.5}\n")
    (tmp_path / "taken.txt").write_text("a file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "000.png").write_bytes(b"an earlier image")
    command, *options = (arg.format(tmp=tmp_path) for arg in argv)
    out = [] if "--out" in options or command == "chat" else ["--out", str(tmp_path / "new")]
    assert main([command, "--model", MODEL, *options, *out, "a prompt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert message.format(tmp=tmp_path) in err
    assert (tmp_path / "full" / "000.png").read_bytes() == b"an earlier image"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.usefixtures("no_model")
def test_generate_checks_the_out_folder_is_writable_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert main(["generate", "--model", MODEL, "--out", str(locked / "imgs"), "x"]) == 1
    finally:
        locked.chmod(0o755)
    assert f"no permission to write in {locked}" in capsys.readouterr().err


def test_neither_model_nor_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["chat", "hello"])
    assert exc.value.code == 2
    assert "janus chat: error: pass --model" in capsys.readouterr().err


# -- --config -------------------------------------------------------------------------------------------


def write_config(path: Path, **fields: object) -> Path:
    """The tiny checkpoint's own config (on the CPU in float32) with `fields` replaced, as a YAML file."""
    from janus_sdk.config import PipelineConfig

    config = PipelineConfig.from_checkpoint(MODEL).model_dump(mode="json")
    config.update(device="cpu", dtype="float32", **fields)
    path.write_text(yaml.safe_dump(config))
    return path


def test_chat_takes_a_config_file_with_its_generation_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config's max_new_tokens (16) gives the golden answer; the built-in default (512) would not."""
    config = write_config(tmp_path / "pipeline.yaml", generation={"max_new_tokens": 16})
    image = str(FIXTURE / "golden" / "input.png")
    assert main(["chat", "--config", str(config), "--image", image, "What is shown in this image?"]) == 0
    captured = capsys.readouterr()
    assert captured.out == MANIFEST["greedy_text"] + "\n"
    assert f"loading {MODEL} ..." in captured.err


class RecordingPipeline:
    """Stands in for a loaded model in `janus generate`: 8 x 8 images; the settings of each call kept."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.calls: list[dict[str, Any]] = []

    def generate_images(self, prompt: str, **settings: Any) -> list[Image.Image]:
        self.calls.append(settings)
        n = settings["n"] or self.config.image_generation.n
        return [Image.new("RGB", (8, 8)) for _ in range(n)]


def test_generate_config_defaults_plan_the_files_and_options_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from janus_sdk.pipeline.janus import JanusPipeline

    loaded: list[RecordingPipeline] = []

    def from_config(config: Any) -> RecordingPipeline:
        loaded.append(RecordingPipeline(config))
        return loaded[-1]

    monkeypatch.setattr(JanusPipeline, "from_config", from_config)
    config = write_config(
        tmp_path / "pipeline.yaml",
        checkpoint=str(tmp_path / "elsewhere"),
        image_generation={"n": 2, "seed": 7},
    )
    out = tmp_path / "imgs"
    argv = ["generate", "--config", str(config), "--out", str(out), "--json", "a cube"]
    assert main([*argv, "--model", MODEL, "--attention", "eager"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n"], summary["seed"], summary["model"]) == (2, 7, MODEL)
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png"]
    [pipe] = loaded
    assert pipe.config.checkpoint == MODEL and pipe.config.attention.name == "eager"
    assert pipe.config.device == "cpu"  # the config's, no option given

    assert main([*argv, "--overwrite"]) == 1  # the config's own checkpoint does not exist
    assert f"model directory not found: {tmp_path / 'elsewhere'}" in capsys.readouterr().err
    write_config(config, checkpoint=None)
    assert main(argv) == 1
    assert f"{config} names no checkpoint: set `checkpoint` in it or pass --model" in capsys.readouterr().err


# -- what the terminal shows ----------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_chat_escapes_control_characters_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Answering:
        def stream_chat(self, prompt: str, **_: Any) -> Iterator[str]:
            yield from ["bell\x07", "\x1b]0;pwned\x07", "nul\x00\n"]

    monkeypatch.setattr("janus_sdk.cli.model_cmds.load_pipeline", lambda args: Answering())
    assert main(["chat", "--model", MODEL, "hi"]) == 0
    assert capsys.readouterr().out == "bell\x07\x1b]0;pwned\x07nul\x00\n\n"  # a pipe gets the exact text
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    assert main(["chat", "--model", MODEL, "hi"]) == 0
    assert screen.getvalue() == "bell\\x07\\x1b]0;pwned\\x07nul\\x00\n\n"


def test_a_model_missing_from_the_hub_cache_says_what_a_cli_user_can_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["chat", "--model", "deepseek-ai/Janus-Pro-7B", "hi"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "hf download deepseek-ai/Janus-Pro-7B" in err and "HF_HUB_OFFLINE" in err
    assert "local_files_only" not in err  # huggingface_hub's advice to its own Python callers


def test_generation_progress_is_one_bar_over_every_batch() -> None:
    """-n 3 --max-batch 2 under classifier-free guidance: batches of 2 and 1 images (4 and 2 rows), each
    reported from step 1; the bar counts the 3 images' tokens once, with one rate."""
    from janus_sdk.cli.progress import image_progress
    from janus_sdk.pipeline.decoding import Progress

    screen = io.StringIO()
    with image_progress(3, 2, stream=screen) as on_step:
        assert on_step is not None
        for rows in (4, 2):
            for step in range(1, 5):
                on_step(Progress(step=step, total=4, rows=rows, elapsed=float(step)))
    shown = [int(done) for done in re.findall(r"(\d+)/12 ", screen.getvalue())]
    assert shown == sorted(shown) and shown[-1] == 12
    final = screen.getvalue().split("\r")[-1]
    assert final.startswith("3 images, 4 tokens each: 100%") and final.count("/s") == 1
    assert "rows" not in screen.getvalue()


def test_the_loading_line_on_a_pipe_and_the_spinner_on_a_terminal() -> None:
    from janus_sdk.cli.progress import CLEAR_LINE, loading_status

    log = io.StringIO()
    with loading_status("loading tiny", stream=log):
        assert log.getvalue() == "loading tiny ...\n"  # said before the wait, not after

    class WatchedTerminal(Terminal):
        def __init__(self) -> None:
            super().__init__()
            self.drawn = threading.Event()

        def write(self, text: str) -> int:
            self.drawn.set()
            return super().write(text)

    screen = WatchedTerminal()
    with loading_status("loading tiny", stream=screen):
        assert screen.drawn.wait(timeout=60), "the spinner never drew"
    assert screen.getvalue().startswith(f"{CLEAR_LINE}loading tiny | 0s")
    assert re.search(r"loading tiny \.\.\. done in \d+\.\ds\n$", screen.getvalue())
    failed = WatchedTerminal()
    with pytest.raises(KeyboardInterrupt), loading_status("loading tiny", stream=failed):
        assert failed.drawn.wait(timeout=60)
        raise KeyboardInterrupt
    assert failed.getvalue().endswith(CLEAR_LINE)  # the error line that follows stands alone
