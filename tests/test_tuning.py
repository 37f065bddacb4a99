"""Measured choices: the fastest candidate wins only when it beats torch's path, decisions are cached per
machine and pinned by JANUS_SDK_TUNE, and a pipeline's defaults follow them (checked with fake timers)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch

from helpers import CHECKPOINT, fake_timer
from janus_plugins import cpu_kernels as kernel_module
from janus_plugins.deepseek_llm.layer_ops import TORCH_OPS, KernelLayerOps
from janus_plugins.deepseek_llm.model import DeepSeekLLM
from janus_plugins.linear.packed import PackedLinear
from janus_sdk import JanusPipeline, tuning
from janus_sdk.cli.main import main
from janus_sdk.errors import BackendUnavailableError, ConfigError

BASELINES = {"torch", "bfloat16"}  # torch's own path in every family (bfloat16 weights: a bfloat16 GEMM)


def speeds(*, torch: float, kernels: float, winograd: float) -> dict[str, float]:
    """Seconds for a pipeline's candidates: torch's path, every kernel (linear builds "avx2" and "avx512",
    attention and layer ops "kernel"), and the VQ's Winograd convolution and channels-last activations."""
    return {
        "torch": torch,
        "kernel": kernels,
        "avx2": kernels,
        "avx512": kernels,
        "winograd": winograd,
        "channels-last": winograd,
    }


def never_timed(candidate: str, run: Callable[[], object], limit: float) -> float:
    raise AssertionError(f"{candidate} was timed, but the decision should have come from the cache or a pin")


def candidates() -> dict[str, Callable[[], object]]:
    return {"torch": lambda: None, "kernel": lambda: None}


def test_the_fastest_candidate_wins_only_by_a_margin_over_the_baseline(tmp_path: Path) -> None:
    tuner = tuning.Tuner(tmp_path / "t.json", timer=fake_timer({"torch": 1.0, "kernel": 0.5}), pins="")
    assert tuner.choose("linear", "a", candidates(), baseline="torch") == "kernel"
    close = tuning.Tuner(tmp_path / "u.json", timer=fake_timer({"torch": 1.0, "kernel": 0.99}), pins="")
    assert close.choose("linear", "a", candidates(), baseline="torch") == "torch"  # within the margin: noise
    slower = tuning.Tuner(tmp_path / "v.json", timer=fake_timer({"torch": 1.0, "kernel": 3.0}), pins="")
    assert slower.choose("linear", "a", candidates(), baseline="torch") == "torch"
    decision = tuner.decisions()["linear/a"]
    assert decision.seconds == {"torch": 1.0, "kernel": 0.5} and decision.how == "measured"


def test_decisions_are_measured_once_and_reused_by_later_processes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    path = tmp_path / "tuning.json"
    first = tuning.Tuner(path, timer=fake_timer({"torch": 2.0, "kernel": 1.0}, calls), pins="")
    with caplog.at_level(logging.WARNING):
        assert first.choose("linear", "a", candidates(), baseline="torch") == "kernel"
        assert first.choose("linear", "a", candidates(), baseline="torch") == "kernel"
        assert first.choose("linear", "b", candidates(), baseline="torch") == "kernel"
    assert calls == ["torch", "kernel", "torch", "kernel"]
    assert caplog.text.count("measuring which kernels are fastest") == 1  # one line per process
    later = tuning.Tuner(path, timer=never_timed, pins="")
    assert later.choose("linear", "a", candidates(), baseline="torch") == "kernel"
    assert later.decisions()["linear/a"].how == "cached"
    stored = json.loads(path.read_text())
    (entry,) = stored["machines"].values()
    assert entry["machine"] == tuning.machine() and set(entry["decisions"]) == {"linear/a", "linear/b"}


def test_a_decision_taken_without_a_new_candidate_is_measured_again(tmp_path: Path) -> None:
    """A cached winner measured among fewer candidates (an earlier version, before a new kernel build) does
    not stand for the new set: the new candidate gets timed, once."""
    path = tmp_path / "tuning.json"
    tuning.Tuner(path, timer=fake_timer({"torch": 1.0, "kernel": 2.0}), pins="").choose(
        "linear", "a", candidates(), baseline="torch"
    )
    calls: list[str] = []
    wider = {**candidates(), "avx512": lambda: None}
    later = tuning.Tuner(path, timer=fake_timer({"torch": 1.0, "kernel": 2.0, "avx512": 0.5}, calls), pins="")
    assert later.choose("linear", "a", wider, baseline="torch") == "avx512"
    assert calls == ["torch", "kernel", "avx512"]
    again = tuning.Tuner(path, timer=never_timed, pins="")
    assert again.choose("linear", "a", wider, baseline="torch") == "avx512"


def test_another_machines_decisions_are_kept_and_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tuning.json"
    tuning.Tuner(path, timer=fake_timer({"torch": 2.0, "kernel": 1.0}), pins="").choose(
        "linear", "a", candidates(), baseline="torch"
    )
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # another machine as far as timings go
    calls: list[str] = []
    other = tuning.Tuner(path, timer=fake_timer({"torch": 1.0, "kernel": 2.0}, calls), pins="")
    assert other.choose("linear", "a", candidates(), baseline="torch") == "torch"
    assert calls == ["torch", "kernel"]
    assert len(json.loads(path.read_text())["machines"]) == 2


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "machines": {}}', "[1, 2]"])
def test_a_corrupt_or_foreign_cache_is_set_aside_with_a_warning_and_measured_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "tuning.json"
    path.write_text(content)
    tuner = tuning.Tuner(path, timer=fake_timer({"torch": 2.0, "kernel": 1.0}), pins="")
    with caplog.at_level(logging.WARNING):
        assert tuner.choose("linear", "a", candidates(), baseline="torch") == "kernel"
    assert "ignoring the tuning cache" in caplog.text and "measuring again" in caplog.text
    assert (tmp_path / "tuning.json.bad").read_text() == content  # the user's file is moved, not lost
    assert "linear/a" in json.loads(path.read_text())["machines"][tuner.machine_id]["decisions"]


def test_pins_fix_a_family_or_turn_measuring_off(tmp_path: Path) -> None:
    pinned = tuning.Tuner(tmp_path / "t.json", timer=never_timed, pins="linear=kernel, matmul-dtype=float32")
    assert pinned.choose("linear", "a", candidates(), baseline="torch") == "kernel"
    off = tuning.Tuner(tmp_path / "t.json", timer=never_timed, pins="off")
    assert off.choose("linear", "a", candidates(), baseline="torch") == "torch"
    assert not (tmp_path / "t.json").exists()  # pinned choices are not measurements
    with pytest.raises(ConfigError, match=r"JANUS_SDK_TUNE pins linear=avx512.*between kernel, torch"):
        pinned_wrong = tuning.Tuner(tmp_path / "t.json", timer=never_timed, pins="linear=avx512")
        pinned_wrong.choose("linear", "a", candidates(), baseline="torch")
    with pytest.raises(ConfigError, match=r"'linear' is not FAMILY=CHOICE"):
        tuning.parse_pins("linear")


def test_forget_drops_this_machines_decisions(tmp_path: Path) -> None:
    calls: list[str] = []
    tuner = tuning.Tuner(tmp_path / "t.json", timer=fake_timer({"torch": 2.0, "kernel": 1.0}, calls), pins="")
    tuner.choose("linear", "a", candidates(), baseline="torch")
    tuner.memo[("x",)] = True
    tuner.forget()
    assert tuner.decisions() == {} and tuner.memo == {}
    tuner.choose("linear", "a", candidates(), baseline="torch")
    assert calls == ["torch", "kernel"] * 2


def test_a_slow_candidate_is_given_up_on_after_its_warm_up() -> None:
    ran: list[str] = []
    assert tuning.best_seconds("slow", lambda: ran.append("x"), limit=-1.0, budget=-1.0) >= 0  # over at once
    assert ran == ["x"]
    fast: list[str] = []
    tuning.best_seconds("fast", lambda: fast.append("x"), limit=1.0, repeats=3)
    assert len(fast) == 4  # a warm-up and three timed calls


# -- the rule in a pipeline: no default slower than torch's own path -----------------------------------------


@pytest.fixture
def kernels() -> None:
    try:
        kernel_module.load_kernels()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often the linear layers took the kernel and torch's GEMM."""
    counts = {"kernel": 0, "gemm": 0}
    for path in counts:
        original = getattr(PackedLinear, path)

        def counted(
            self: PackedLinear, *args: object, _o: Callable[..., torch.Tensor] = original, _p: str = path
        ) -> torch.Tensor:
            counts[_p] += 1
            return _o(self, *args)

        monkeypatch.setattr(PackedLinear, path, counted)
    yield counts


def run_defaults(
    timer: tuning.Timer, tmp_path: Path, calls: dict[str, int]
) -> tuple[JanusPipeline, torch.Tensor, object]:
    """A default float32 pipeline's chat and image, run twice: the calls counted are the second run's (the
    first took the decisions, whose probes call both paths). Also the layer ops its decode steps use."""
    with tuning.use_tuner(tuning.Tuner(tmp_path / "tuning.json", timer=timer, pins="")):
        pipe = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")
        for _ in range(2):
            calls.update(kernel=0, gemm=0)
            pipe.chat("hello", max_new_tokens=3)
            codes = pipe.generate_image_codes("a red cube", n=1, seed=0)
        llm = pipe.model.language_model
        assert isinstance(llm, DeepSeekLLM)
        assert llm.plan is not None  # chosen when the pipeline was built, under this tuner
        return pipe, codes, llm.plan.ops


@pytest.mark.usefixtures("kernels")
def test_where_torch_measures_faster_the_defaults_are_torchs_path(
    tmp_path: Path, calls: dict[str, int]
) -> None:
    pipe, codes, ops = run_defaults(fake_timer(speeds(torch=1.0, kernels=2.0, winograd=2.0)), tmp_path, calls)
    assert pipe.linear is not None and pipe.linear.name in {"avx2", "avx512"}  # auto: the kernels, measured
    assert calls["kernel"] == 0 and calls["gemm"] > 0
    assert ops is TORCH_OPS
    with tuning.use_tuner(tuning.Tuner(tmp_path / "other.json", pins="off")):
        plain = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32", linear="torch")
        assert torch.equal(plain.generate_image_codes("a red cube", n=1, seed=0), codes)


@pytest.mark.usefixtures("kernels")
def test_where_the_kernels_measure_faster_they_serve(tmp_path: Path, calls: dict[str, int]) -> None:
    _, _, ops = run_defaults(fake_timer(speeds(torch=2.0, kernels=1.0, winograd=1.0)), tmp_path, calls)
    assert calls["kernel"] > 0
    assert calls["gemm"] > 0  # prefills (over 32 rows) stay on torch's GEMM
    assert isinstance(ops, KernelLayerOps)


@pytest.mark.usefixtures("kernels")
def test_each_row_count_is_decided_on_its_own(tmp_path: Path, calls: dict[str, int]) -> None:
    """The kernel for one row (chat), torch's GEMM for two (an image with guidance): as a CPU with a fast
    GEMM for several rows would measure."""

    seen: dict[str, str] = {}

    class RowAware(tuning.Tuner):
        def choose(
            self, family: str, key: str, candidates: Mapping[str, Callable[[], object]], baseline: str
        ) -> str:
            if family != "linear":
                return super().choose(family, key, candidates, baseline)
            seen[key] = "avx2" if "/rows=1/" in key else "torch"
            return seen[key]

    tuner = RowAware(
        tmp_path / "t.json", timer=fake_timer(speeds(torch=1.0, kernels=2.0, winograd=2.0)), pins=""
    )
    with tuning.use_tuner(tuner):
        pipe = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")
        pipe.chat("hello", max_new_tokens=3)
        chat_kernel = calls["kernel"]
        pipe.generate_image_codes("a red cube", n=1, seed=0)
    assert chat_kernel > 0 and calls["kernel"] == chat_kernel  # images: 2 rows, torch's GEMM only (no probes:
    # the linear choices are not measured here)
    assert any("/rows=1/" in k for k in seen) and any("/rows=2/" in k for k in seen)


@pytest.mark.usefixtures("kernels")
def test_pipeline_tune_takes_every_choice_a_chat_and_images_need(tmp_path: Path) -> None:
    with tuning.use_tuner(
        tuning.Tuner(
            tmp_path / "t.json", timer=fake_timer(speeds(torch=1.0, kernels=2.0, winograd=1.5)), pins=""
        )
    ):
        pipe = JanusPipeline.from_pretrained(CHECKPOINT, device="cpu", dtype="float32")
        state = torch.get_rng_state()
        decisions = pipe.tune()
        assert torch.equal(torch.get_rng_state(), state)
    families = {name.split("/")[0] for name in decisions}
    assert {"linear", "decode-attention", "vq-winograd"} <= families
    rows = {
        part
        for name in decisions
        if name.startswith("linear/")
        for part in name.split("/")
        if "rows=" in part
    }
    assert {"rows=1", "rows=2", "rows=8"} <= rows


# -- the CLI ------------------------------------------------------------------------------------------------


def test_janus_tune_measures_for_a_model_and_prints_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kernels: None
) -> None:
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    with tuning.use_tuner(tuning.Tuner(pins="")):
        assert main(["tune", "--json"]) == 0
        empty = json.loads(capsys.readouterr().out)
        assert empty["decisions"] == {} and empty["cache"] == str(tmp_path / "tuning.json")
        assert main(["tune", "--model", str(CHECKPOINT), "--dtype", "float32"]) == 0
        out = capsys.readouterr().out
        assert "linear/float32-weights/float32/" in out and "rows=8" in out and " ms" in out
        assert main(["tune", "--json"]) == 0
        cached = json.loads(capsys.readouterr().out)["decisions"]
        assert any(name.startswith("decode-attention/") for name in cached)
        assert main(["tune", "--reset", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["decisions"] == {}


@pytest.mark.slow
def test_a_bad_pin_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, tuning.PIN_ENV: "linear", tuning.CACHE_ENV: str(tmp_path)}
    command = [sys.executable, "-m", "janus_sdk.cli.main", "info", "--model", str(CHECKPOINT)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert (
        result.stderr.strip().startswith("error: JANUS_SDK_TUNE='linear'")
        and "Traceback" not in result.stderr
    )


def test_janus_kernels_says_where_the_build_is(capsys: pytest.CaptureFixture[str], kernels: None) -> None:
    assert main(["kernels"]) == 0
    assert capsys.readouterr().out.strip() == f"{kernel_module.build_dir()}: built"
    assert main(["kernels", "build"]) == 0
    assert str(kernel_module.build_dir()) in capsys.readouterr().out
