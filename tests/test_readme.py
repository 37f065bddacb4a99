"""README.md's two commands work as written: the main job's `janus` commands give the reference's answer and
images on the bundled tiny model, and CI (.ci/run) sets up and tests exactly as the second command says."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from janus_sdk import tuning

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"
GOLDEN = REPO / "tests" / "fixtures" / "janus-tiny" / "golden"

Runs = tuple[Path, list["subprocess.CompletedProcess[str]"]]


def top_commands() -> tuple[list[str], list[str]]:
    """The README's two commands (the first two ```bash blocks), each split at `&&` into its steps."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) >= 2, "README.md should start with two ```bash commands"
    main_job, tests = (_steps(block) for block in blocks[:2])
    return main_job, tests


def _steps(block: str) -> list[str]:
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert len(lines) == 1, f"each README command is one line (steps joined with &&), got {lines}"
    return [step.strip() for step in lines[0].split("&&")]


def setup_steps(steps: list[str]) -> list[str]:
    return [s for s in steps if not s.startswith(("janus ", "python -m pytest"))]


def test_readme_starts_with_exactly_two_commands() -> None:
    main_job, tests = top_commands()
    assert any(s.startswith("janus chat ") for s in main_job)
    assert any(s.startswith("janus generate ") for s in main_job)
    assert [s for s in tests if s.startswith("python -m pytest")] == [tests[-1]]
    # Both set up the same way up to the extras: a venv, torch first (a CPU wheel on CI), then janus-sdk.
    assert (
        setup_steps(main_job)[:3]
        == setup_steps(tests)[:3]
        == ["python -m venv .venv", ". .venv/bin/activate", "pip install torch==2.13.0"]
    )


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run installs what the README's test command installs and runs the same pytest command."""
    _, tests = top_commands()
    ci_lines = [line.strip() for line in CI.read_text(encoding="utf-8").splitlines()]
    for step in tests:
        if step.startswith(("python -m venv", ". .venv/bin/activate")):
            continue  # CI may pick the interpreter (python3) itself
        assert step in ci_lines or f"{step} || status=$?" in ci_lines, f".ci/run does not run `{step}`"
    assert '"$PYTHON" -m venv .venv' in ci_lines and ". .venv/bin/activate" in ci_lines
    assert "set -euo pipefail" in ci_lines
    assert '[ "$status" -eq 5 ]' in "\n".join(ci_lines), "pytest's 'no tests collected' must fail CI"


def test_readme_links_exist() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8")):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


@pytest.fixture(scope="module")
def main_job_run(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Run the `janus` steps of the README's first command, as a user would, in a scratch folder."""
    main_job, _ = top_commands()
    work = tmp_path_factory.mktemp("readme")
    (work / "tests").symlink_to(REPO / "tests", target_is_directory=True)
    janus = Path(sys.executable).with_name("janus")
    # One torch thread: same results, and far faster than two on a machine busy with other work. As a user
    # runs it (no pins, no plugin filters), but with the session's cache folder: its measured choices stay out
    # of the user's cache, and it uses the session's build of the CPU kernels (the same build reached through
    # another path is a rebuild for ninja, a minute on 2 cores).
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANUS_SDK_") or k == tuning.CACHE_ENV}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    runs = []
    for step in main_job:
        if step.startswith("janus "):
            argv = [str(janus), *shlex.split(step)[1:]]
            runs.append(subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900))
    return work, runs


@pytest.mark.slow
def test_readme_chat_gives_the_reference_answer(main_job_run: Runs) -> None:
    """The chat step prints the answer DeepSeek's code gives on the tiny model (16 greedy tokens)."""
    _, (chat, _) = main_job_run
    assert chat.returncode == 0, chat.stderr
    expected = json.loads((GOLDEN / "manifest.json").read_text(encoding="utf-8"))["info"]["greedy_text"]
    assert chat.stdout == expected + "\n"


@pytest.mark.slow
def test_readme_generate_draws_the_reference_images(
    main_job_run: Runs,
) -> None:
    """The generate step writes two PNGs equal to the reference script's images for that prompt and seed."""
    work, (_, generate) = main_job_run
    assert generate.returncode == 0, generate.stderr
    paths = generate.stdout.split()
    assert paths == ["janus-images/000.png", "janus-images/001.png"]
    for i, path in enumerate(paths):
        ours = np.asarray(Image.open(work / path).convert("RGB"), dtype=np.int16)
        reference = np.asarray(Image.open(GOLDEN / f"sampled_{i:03d}.png").convert("RGB"), dtype=np.int16)
        assert ours.shape == reference.shape == (384, 384, 3)
        diff = np.abs(ours - reference)
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999, f"{path}: differs from the reference image"
