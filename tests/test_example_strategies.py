"""The second example third-party distribution (plugins/example-strategies): a history-aware sampler and a
guidance with its own rows and a schedule, found through their entry point and chosen by name from the
Python API, a config file and the CLI.

The distribution is installed into a folder of its own that only the subprocesses of these tests put on their
path (the environment the test builds), and that folder is removed afterwards: nothing is left installed in
the environment running the tests.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from helpers import CHECKPOINT, REPO
from janus_sdk.plugins import PluginHost
from janus_sdk.registry import BuildContext

SOURCE = REPO / "plugins" / "example-strategies"
DISTRIBUTION = "janus-example-strategies"
PLUGIN = "example_strategies"


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """A folder holding the distribution as pip installs it (from a copy of its source, so the build leaves
    nothing in the repository), removed when the module's tests are done."""
    root = Path(tempfile.mkdtemp(prefix="janus-example-strategies-"))
    try:
        shutil.copytree(SOURCE, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet"]
        command += ["--target", str(root / "site"), str(root / "source")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"pip could not install {SOURCE}:\n{result.stdout}{result.stderr}"
        yield root / "site"
    finally:
        shutil.rmtree(root)
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution(DISTRIBUTION)  # never installed where the tests run


def python(site: Path, code: str, *args: str) -> Any:
    """What `code` prints last, as JSON, run in a fresh interpreter that sees the installed distribution."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANUS_SDK_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# One fresh interpreter (its start-up, torch and the plugins, is most of the cost) for both tests below: the
# Python API, then `janus` commands, each through the CLI's own entry point (the console script around it is
# tested in test_cli_core).
USE = """
import contextlib, io, json, logging, sys

import torch

from janus_sdk import JanusPipeline, PipelineConfig, get_plugin_host, get_registry
from janus_sdk.cli.main import main

checkpoint, config_file, out = sys.argv[1:]
info = {i.name: i for i in get_plugin_host().plugins()}["example_strategies"]
pipe = JanusPipeline.from_pretrained(checkpoint, device="cpu", dtype="float32")
sampler = {"name": "no-repeat-ngram", "params": {"ngram_size": 1}}
answer = pipe.chat("hi", max_new_tokens=10, sampler=sampler)
interval = {"name": "cfg-interval", "params": {"end": 1.0}}
guided = pipe.generate_image_codes("a cube", seed=0, guidance=interval)
config = PipelineConfig.from_file(config_file)
api = {
    "plugin": [info.distribution, info.version, info.module, sorted(map(list, info.components)), info.errors],
    "answer": answer,
    "greedy": pipe.chat("hi", max_new_tokens=10),
    "guided_equals_cfg": bool(torch.equal(guided, pipe.generate_image_codes("a cube", seed=0))),
    "config": [config.generation.sampler_spec.model_dump(),
               config.image_generation.guidance_spec.model_dump()],
    "registered_by": get_registry().get("sampler", "no-repeat-ngram").plugin,
}

logging.basicConfig()  # log records keep going to the real stderr, not to one command's captured one


def janus(*argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(argv))
    return {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue()}


model = ["--model", checkpoint, "--device", "cpu"]
cli = {
    "plugins": janus("plugins", "--json"),
    "chat": janus("chat", *model, "--max-new-tokens", "8", "--sampler", "no-repeat-ngram",
                  "--sampler-param", "ngram_size=1", "hi"),
    "generate": janus("generate", *model, "--seed", "0", "--no-progress", "--out", out, "--guidance",
                      "cfg-interval", "--guidance-param", "start=0.25", "a cube"),
    "bad": janus("generate", *model, "--out", out, "--guidance", "cfg-interval", "--guidance-param",
                 "start=0.9", "--guidance-param", "end=0.1", "x"),
}
print(json.dumps({"api": api, "cli": cli}))
"""


@pytest.fixture(scope="module")
def fresh_process(site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the distribution does in a fresh interpreter: through the Python API ("api") and the CLI ("cli",
    each command's exit code and output; "out" the folder `generate` wrote to)."""
    folder = tmp_path_factory.mktemp("example-strategies")
    config_file = folder / "pipeline.yaml"
    config_file.write_text(
        "generation:\n  sampler: {name: no-repeat-ngram, params: {ngram_size: 2}}\n"
        "image_generation:\n  guidance: cfg-interval\n  cfg_weight: 3\n",
        encoding="utf-8",
    )
    found: dict[str, Any] = python(site, USE, str(CHECKPOINT), str(config_file), str(folder / "images"))
    found["out"] = folder / "images"
    return found


@pytest.mark.slow
def test_found_through_its_entry_point_and_used_by_name(fresh_process: dict[str, Any]) -> None:
    found = fresh_process["api"]
    assert found["plugin"] == [
        DISTRIBUTION,
        "0.1.0",
        "janus_example_strategies",
        [["guidance", "cfg-interval"], ["sampler", "no-repeat-ngram"]],
        [],
    ]
    # The tiny model's greedy answer repeats no token, so forbidding repeats changes nothing.
    assert found["answer"] == found["greedy"]
    # cfg-interval over all the steps is the official classifier-free guidance, token for token.
    assert found["guided_equals_cfg"]
    assert found["config"] == [
        {"name": "no-repeat-ngram", "params": {"ngram_size": 2}},
        {"name": "cfg-interval", "params": {"cfg_weight": 3.0}},
    ]
    assert found["registered_by"] == PLUGIN


@pytest.mark.slow
def test_the_cli_takes_them_by_name(fresh_process: dict[str, Any]) -> None:
    cli = fresh_process["cli"]
    listed = cli["plugins"]
    assert listed["code"] == 0, listed["err"]
    entry = {p["name"]: p for p in json.loads(listed["out"])}[PLUGIN]
    assert sorted((c["kind"], c["name"]) for c in entry["components"]) == [
        ("guidance", "cfg-interval"),
        ("sampler", "no-repeat-ngram"),
    ]
    assert cli["chat"]["code"] == 0, cli["chat"]["err"]
    assert cli["generate"]["code"] == 0, cli["generate"]["err"]
    assert (fresh_process["out"] / "000.png").is_file()
    bad = cli["bad"]
    assert bad["code"] == 1 and "guidance.params: start 0.9 is after end 0.1" in bad["err"]


# -- the module itself, imported from its source tree ------------------------------------------------------


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(SOURCE / "src"))
    return importlib.import_module("janus_example_strategies")


def test_no_repeat_ngram_forbids_completing_a_seen_ngram(module: ModuleType) -> None:
    sampler = module.NoRepeatNgramSampler(module.NoRepeatNgramConfig(ngram_size=2))
    logits = torch.tensor([[0.0, 1.0, 5.0, 4.0]]).repeat(2, 1)
    history = torch.tensor([[1, 2, 3, 1], [3, 1, 0, 2]])
    # Row 0 ends in 1 and generated "1 2" before: 2 is forbidden. Row 1 ends in 2, never followed before.
    assert sampler(logits, None, history=history).tolist() == [3, 2]
    assert sampler(logits, None, history=history[:, :1]).tolist() == [2, 2]  # shorter than an n-gram


def test_no_repeat_unigram_never_repeats_a_token(module: ModuleType) -> None:
    sampler = module.NoRepeatNgramSampler(module.NoRepeatNgramConfig(ngram_size=1))
    logits = torch.tensor([[0.0, 5.0, 4.0, 1.0]])
    assert sampler(logits, None, history=torch.empty(1, 0, dtype=torch.long)).tolist() == [1]
    assert sampler(logits, None, history=torch.tensor([[1]])).tolist() == [2]
    assert sampler(logits, None, history=torch.tensor([[1, 2]])).tolist() == [3]


def test_interval_guidance_guides_inside_its_interval_only(module: ModuleType) -> None:
    guidance = module.IntervalGuidance(module.IntervalGuidanceConfig(cfg_weight=3.0, start=0.25, end=0.5))
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    guided = torch.tensor([[4.0, -2.0]])
    assert torch.equal(guidance.combine(logits, 0, 8), logits[0:1])
    assert torch.equal(guidance.combine(logits, 2, 8), guided)
    assert torch.equal(guidance.combine(logits, 4, 8), logits[0:1])
    assert guidance.rows(torch.tensor([7, 8, 9, 10]), 0).tolist() == [[7, 8, 9, 10], [7, 0, 0, 10]]


def test_registered_in_process_like_any_plugin(module: ModuleType) -> None:
    host = PluginHost()
    host.register(module, PLUGIN, DISTRIBUTION, "0.1.0")
    sampler = host.registry.get("sampler", "no-repeat-ngram")
    assert sampler.description and sampler.config.model_config.get("extra") == "forbid"
    assert host.registry.get("guidance", "cfg-interval").build({"end": 1.0}, BuildContext()).num_branches == 2
