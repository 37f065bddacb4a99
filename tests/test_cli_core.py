"""`janus plugins` and `janus config`: output, JSON, exit codes (0 ok, 1 invalid input with the reasons and no
traceback, 2 usage), in-process through `main()` and once through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from helpers import CHECKPOINT
from janus_sdk import plugins
from janus_sdk.cli.main import main
from janus_sdk.config import PipelineConfig
from janus_sdk.config.files import read_config_file
from janus_sdk.plugins import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, PluginHost, PluginWarning
from toy_plugins import EncoderPlugin, FakeEntryPoint, RaisingPlugin, entry_point

GOOD = {"device": "cpu", "visual_encoder": {"name": "CLIPVisionTower", "params": {"width": 32, "heads": 2}}}
BAD = {
    "visual_encoder": {"name": "siglip", "params": {"widht": 32}},
    "llm_backbone": {"name": "llama", "params": {"hidden_size": -1}},
    "generation": {"top_p": 1.5},
}
BAD_PATHS = ("visual_encoder.params.widht", "llm_backbone.params.hidden_size", "generation.top_p")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data), encoding="utf-8")
    return path


# -- janus plugins -------------------------------------------------------------------------------------


def test_plugins_lists_each_plugin_with_distribution_version_and_components(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    version = metadata.version(BUILTIN_DISTRIBUTION)
    assert f"siglip  ({BUILTIN_DISTRIBUTION} {version})  [ok]  janus_plugins.siglip" in out
    assert "    visual_encoder     siglip  aliases: CLIPVisionTower, siglip_large_patch16_384" in out
    assert "    llm_backbone       deepseek-llm  aliases: llama" in out


def test_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    listed = {p["name"]: p for p in json.loads(out)}
    builtin = {
        ep.name
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION
    }
    assert builtin <= set(listed)
    for entry in listed.values():
        assert set(entry) == {"name", "distribution", "version", "module", "components", "errors"}
    siglip = listed["siglip"]
    assert (siglip["distribution"], siglip["version"], siglip["errors"]) == (
        BUILTIN_DISTRIBUTION,
        metadata.version(BUILTIN_DISTRIBUTION),
        [],
    )
    [component] = siglip["components"]
    assert component["kind"] == "visual_encoder" and component["name"] == "siglip"
    assert (
        component["aliases"] == ["CLIPVisionTower", "siglip_large_patch16_384"] and not component["override"]
    )
    assert component["description"]
    kinds = {(c["kind"], c["name"]) for p in listed.values() for c in p["components"]}
    assert {("aligner", "mlp"), ("image_tokenizer", "vq16"), ("chat_template", "deepseek")} <= kinds


def test_plugins_shows_failures(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A plugin that failed to import and one whose hook raised are listed with their errors; exit 0."""
    monkeypatch.syspath_prepend(str(tmp_path))
    broken: list[FakeEntryPoint] = [
        entry_point(tmp_path, "broken", "raise ImportError('no wheels')", "broken-dist")
    ]
    monkeypatch.setattr(metadata, "entry_points", lambda group: broken)
    host = PluginHost()
    with pytest.warns(PluginWarning):
        host.load_entry_points()
        host.register(RaisingPlugin(), "raising", "raising-dist", "0.3")
        host.register(EncoderPlugin(), "fine", "fine-dist", "1.0")
        host.registry  # noqa: B018
    monkeypatch.setattr(plugins, "_default_host", host)

    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert "broken  (broken-dist 2.0)  [FAILED]  fake_plugin_broken" in out
    assert "error: Error importing plugin 'broken': ImportError: no wheels" in out
    assert "raising  (raising-dist 0.3)  [FAILED]" in out
    assert "error: plugin 'raising' raised in register_visual_encoders" in out
    assert "fine  (fine-dist 1.0)  [ok]" in out

    code, out, _ = run_cli(capsys, "plugins", "--json")
    listed = {p["name"]: p for p in json.loads(out)}
    assert code == 0 and listed["fine"]["errors"] == []
    assert "no wheels" in listed["broken"]["errors"][0] and listed["broken"]["components"] == []
    assert [c["name"] for c in listed["raising"]["components"]] == ["toy-sampler"]


# -- janus config --------------------------------------------------------------------------------------


def test_config_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "config", "schema")
    assert code == 0
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(GOOD) and not validator.is_valid(BAD)
    assert "siglip" in {c["title"] for c in schema["properties"]["visual_encoder"]["oneOf"]}


@pytest.mark.parametrize("name", ["good.yaml", "good.json"])
def test_config_validate_accepts_a_valid_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, name, GOOD)
    assert run_cli(capsys, "config", "validate", str(path)) == (0, f"{path}: valid\n", "")


def test_config_validate_reports_every_bad_field_without_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "bad.yaml", BAD)
    code, out, err = run_cli(capsys, "config", "validate", str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: invalid {path}:")
    for field_path in BAD_PATHS:
        assert f"  {field_path}: " in err
    assert "unknown key (allowed: image_size, model_name" in err
    assert "Traceback" not in err


def test_config_validate_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "--debug", "config", "validate", str(write(tmp_path, "bad.json", BAD)))
    assert code == 1 and "Traceback" in err and "ConfigError" in err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("absent.yaml", None, "config file not found"),
        ("pipeline.ini", "x = 1", "unsupported config format '.ini'"),
        ("broken.json", "{", "is not valid JSON"),
    ],
)
def test_config_validate_unreadable_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    code, out, err = run_cli(capsys, "config", "validate", str(path))
    assert (code, out) == (1, "")
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["config"],
        ["config", "validate"],
        ["config", "validate", "a.yaml", "b.yaml"],
        ["config", "frobnicate"],
        ["config", "show"],
        ["config", "show", "--model", "x", "--format", "ini"],
        ["plugins", "--jsn"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: janus" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "yaml", "toml"])
def test_config_show_prints_the_checkpoint_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str
) -> None:
    code, out, _ = run_cli(capsys, "config", "show", "--model", str(CHECKPOINT), "--format", fmt)
    assert code == 0
    path = tmp_path / f"shown.{fmt}"
    path.write_text(out, encoding="utf-8")
    shown = PipelineConfig.parse(read_config_file(path))
    assert shown == PipelineConfig.from_checkpoint(CHECKPOINT)
    assert shown.llm_backbone.params["hidden_size"] == 64


@pytest.mark.slow
def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed `janus` command: an invalid file exits 1 with the field paths on stderr, no traceback."""
    janus = Path(sys.executable).parent / "janus"
    assert janus.exists(), f"the janus console script is not installed next to {sys.executable}"
    path = write(tmp_path, "bad.yaml", BAD)
    result = subprocess.run(
        [str(janus), "config", "validate", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert all(f"  {field_path}: " in result.stderr for field_path in BAD_PATHS)
