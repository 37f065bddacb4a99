"""The documentation is executable: every code block of README.md and docs/*.md runs, in page order.

- ```python blocks run in one namespace per page (a later block may use an earlier one's names);
- ```bash blocks: every command starts with `janus` (after optional VAR=value settings) and must exit 0;
- ```json / ```yaml / ```toml blocks are pipeline configs and must validate (PipelineConfig.from_file);
- ```text blocks (output, diagrams) are not code.

Each page runs in a fresh interpreter (this file is also that runner) whose working directory has `tests/` and
`docs/` linked in, so the examples' repository-relative paths work and what they write lands in a temporary
folder. A block that cannot run here is marked on the line before it, with a reason:

    <!-- skip: needs the real weights -->

and a block that quotes a file is marked with that file, and must appear in it verbatim:

    <!-- source: plugins/example-encoder/pyproject.toml -->
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import linecache
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from janus_sdk import tuning
from janus_sdk.cli.main import build_parser
from janus_sdk.config import PipelineConfig
from janus_sdk.config.files import read_config_file
from janus_sdk.kinds import ComponentKind

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
EXAMPLES = sorted(p for p in (DOCS / "examples").glob("pipeline.*"))
LINKED = ("tests", "docs")  # what a page's working directory links in from the repository

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
DATA = {"json": ".json", "yaml": ".yaml", "yml": ".yaml", "toml": ".toml"}
PLAIN = {"text", ""}

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
MARKER = re.compile(r"^[ \t]*<!--[ \t]*(?P<kind>skip|source):(?P<value>.*?)-->[ \t]*$")
SHELL_OPERATORS = {">", ">>", "<", "|", "&&", "||", ";", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
STEP_MARK = "[docs-step]"  # the runner prints it before each step


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int
    lang: str
    code: str
    skip: str | None = None
    source: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a markdown page, each with the marker on the line before it, if any."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.match(before)
        kind, value = (marker["kind"], marker["value"].strip()) if marker else (None, None)
        found.append(
            Block(
                page=str(page.relative_to(REPO)),
                line=line,
                lang=match["lang"].lower(),
                code=textwrap.dedent(match["body"]),
                skip=value if kind == "skip" else None,
                source=value if kind == "source" else None,
            )
        )
    return found


def commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def program(command: str) -> str:
    """The program a command line runs, past any VAR=value settings."""
    words = shlex.split(command, comments=True)
    return next((w for w in words if not ASSIGNMENT.match(w)), "")


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def plan(page: Path) -> list[dict[str, str]]:
    """What the runner does for a page: its runnable blocks in order."""
    steps = []
    for block in blocks(page):
        if block.skip is not None or (block.source is not None and block.lang not in PYTHON):
            continue
        if block.lang in PYTHON:
            steps.append({"kind": "python", "code": block.code, "where": block.where})
        elif block.lang in SHELL:
            steps += [{"kind": "shell", "code": c, "where": block.where} for c in commands(block.code)]
        elif block.lang in DATA:
            steps.append(
                {"kind": "config", "code": block.code, "where": block.where, "suffix": DATA[block.lang]}
            )
    return steps


RUNNABLE = [page for page in PAGES if plan(page)]


# -- the tests ------------------------------------------------------------------------------------------
def test_the_docs_have_pages_and_examples() -> None:
    names = {p.name for p in PAGES}
    expected = {
        "README.md",
        "index.md",
        "getting-started.md",
        "embedding.md",
        "plugins.md",
        "writing-a-plugin.md",
        "configuration.md",
        "cli.md",
        "architecture.md",
        "api.md",
    }
    assert expected <= names, f"missing pages: {sorted(expected - names)}"
    assert {p.suffix for p in EXAMPLES} == {".json", ".yaml", ".toml"}, EXAMPLES
    assert len(RUNNABLE) >= 6, [str(p) for p in RUNNABLE]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.where for b in ALL_BLOCKS])
def test_every_block_is_classified(block: Block) -> None:
    """Code is tagged with a language this test knows; a shell block runs `janus` only, unless marked skip."""
    known = PYTHON | SHELL | set(DATA) | PLAIN
    assert block.lang in known, f"{block.where}: unknown language {block.lang!r}; use one of {sorted(known)}"
    if block.skip is not None:
        assert block.skip, f"{block.where}: a skip marker needs a reason: <!-- skip: why -->"
        assert block.lang not in PLAIN, f"{block.where}: a ```text block never runs; drop the skip marker"
        return
    if block.lang in SHELL:
        for command in commands(block.code):
            assert program(command) == "janus", (
                f"{block.where}: {command!r} is not a janus command; mark the block <!-- skip: reason -->"
            )


def test_markers_precede_code() -> None:
    """A marker that is not right before a fenced block (a typo, a blank line) would silently do nothing."""
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if MARKER.match(line):
                following = lines[number] if number < len(lines) else ""
                assert following.lstrip().startswith("```"), (
                    f"{page.relative_to(REPO)}:{number}: marker not directly followed by a ``` block"
                )


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.source], ids=lambda b: b.where)
def test_quoted_sources_match(block: Block) -> None:
    """A block marked `source: PATH` is a verbatim excerpt of that file (the tutorial follows the code)."""
    assert block.source is not None
    path = REPO / block.source
    assert path.is_file(), f"{block.where}: {block.source} does not exist"
    assert block.code.strip() in path.read_text(encoding="utf-8"), (
        f"{block.where}: the block is no longer a verbatim excerpt of {block.source}; update the page"
    )


def test_tutorial_covers_the_example_plugin_line_by_line() -> None:
    """docs/writing-a-plugin.md quotes the example plugin's module and pyproject.toml whole, in order."""
    tutorial = blocks(DOCS / "writing-a-plugin.md")
    for source in (
        "plugins/example-encoder/src/janus_example_encoder/__init__.py",
        "plugins/example-encoder/pyproject.toml",
    ):
        text = (REPO / source).read_text(encoding="utf-8")
        if source.endswith(".py"):  # the module's docstring is the package's own introduction
            text = text[text.index('"""', 3) + 3 :]
        quoted = "\n".join(b.code for b in tutorial if b.source == source)
        assert _nonblank(quoted) == _nonblank(text), f"docs/writing-a-plugin.md no longer follows {source}"


def _nonblank(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(REPO)) for p in RUNNABLE])
def test_page_runs(page: Path, tmp_path: Path, example_plugin_env: dict[str, str]) -> None:
    """Every runnable block of the page, in order, in a fresh interpreter (the example plugin installed)."""
    work = tmp_path / "work"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan(page)), encoding="utf-8")
    # As a user runs the page (no pins, no plugin filters), but with the session's cache folder: measured
    # choices must not land in the user's own cache.
    env = {
        k: v for k, v in example_plugin_env.items() if not k.startswith("JANUS_SDK_") or k == tuning.CACHE_ENV
    }
    # One thread: the tiny model's small matmuls get slower, not faster, with more threads on a busy machine.
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, __file__, str(plan_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, (
        f"a code block of {page.relative_to(REPO)} failed\n--- stdout\n{result.stdout[-8000:]}"
        f"\n--- stderr\n{result.stderr[-8000:]}"
    )
    assert result.stdout.count(STEP_MARK) == len(plan(page)), result.stdout[-4000:]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_config_examples_load(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = PipelineConfig.from_file(path)
    assert config.checkpoint == "tests/fixtures/janus-tiny/checkpoint"
    assert Path(config.checkpoint).is_dir()


def test_config_examples_agree() -> None:
    """The JSON, YAML and TOML examples are one config in three formats (TOML has no null, so none has)."""
    configs = {p.suffix: PipelineConfig.from_file(p).model_dump() for p in EXAMPLES}
    reference = configs[".yaml"]
    for suffix, config in configs.items():
        assert config == reference, f"pipeline{suffix} differs from pipeline.yaml"
    assert read_config_file(DOCS / "examples" / "pipeline.json") == read_config_file(
        DOCS / "examples" / "pipeline.yaml"
    ), "pipeline.json and pipeline.yaml should spell out the same settings"


def _hooks_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("janus_docs_reference", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_covers_the_schema() -> None:
    """The generated configuration reference names every field, slot, built-in component and parameter."""
    reference = _hooks_module()
    text = reference.config_reference()
    registry = reference.builtin_registry()
    for field in PipelineConfig.model_fields:
        assert f"`{field}`" in text, field
    for reg in registry.all():
        assert f"**`{reg.name}`**" in text, f"{reg.kind.value} {reg.name}"
        for param in reg.config.model_fields:
            assert f"`{param}`" in text, f"{reg.kind.value} {reg.name}: {param}"
    assert "patch-stats" not in text, "the reference documents the built-in components only"


def test_cli_reference_and_examples_cover_every_command() -> None:
    """Every `janus` command has its --help in the generated reference and at least one example in cli.md."""
    reference = _hooks_module()
    text = reference.cli_reference()
    cli_page = [c for b in blocks(DOCS / "cli.md") if b.lang in SHELL for c in commands(b.code)]
    examples = [
        " ".join(w for w in shlex.split(c, comments=True) if not ASSIGNMENT.match(w)) for c in cli_page
    ]
    for name, parser in reference.commands(build_parser()):
        assert f"### `{name}`" in text
        if not any(isinstance(action, argparse._SubParsersAction) for action in parser._actions):
            assert any(e == name or e.startswith(name + " ") for e in examples), (
                f"docs/cli.md has no `{name}` example"
            )


def test_render_rejects_unknown_sections() -> None:
    with pytest.raises(ValueError, match="unknown generated section"):
        _hooks_module().render("nope")


def test_plugins_page_lists_every_hook() -> None:
    from janus_sdk import hookspecs

    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    marker = f"{hookspecs.PROJECT}_spec"  # what pluggy's HookspecMarker sets on each hook specification
    hooks = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), marker)]
    assert {kind.hook_name for kind in ComponentKind} < set(hooks)
    for name in hooks:
        assert f"`{name}`" in text, f"docs/plugins.md does not document the hook {name}"
    for variable in ("JANUS_SDK_DISABLE_PLUGIN_AUTOLOAD", "JANUS_SDK_PLUGINS"):
        assert variable in text


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` (what `nox -s docs` runs): broken links, bad references or warnings fail."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


# -- the runner: `python tests/test_docs.py PLAN.json` -------------------------------------------------
def _run_plan(plan_file: str) -> None:
    """Run a page's steps in order; the first failure raises with the page and line of its block."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for step in json.loads(Path(plan_file).read_text(encoding="utf-8")):
        first_line = step["code"].splitlines()[0] if step["code"] else ""
        print(f"{STEP_MARK} {step['where']} {step['kind']}: {first_line}", flush=True)
        if step["kind"] == "python":
            filename = f"<{step['where']}>"
            linecache.cache[filename] = (len(step["code"]), None, step["code"].splitlines(True), filename)
            exec(compile(step["code"], filename, "exec"), namespace)
        elif step["kind"] == "shell":
            _run_command(step["code"], step["where"])
        else:
            _check_config(step["code"], step["suffix"])


def _run_command(command: str, where: str) -> None:
    """A janus command, run in this interpreter (its output sent to a file where it ends in `> FILE`); through
    bash when it sets variables (read once per process) or uses other shell syntax."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    target = words[-1] if len(words) > 2 and words[-2] in (">", ">>") else None
    argv = words[:-2] if target else words
    if argv[0] == "janus" and not SHELL_OPERATORS & set(argv):
        from janus_sdk.cli.main import main

        with contextlib.ExitStack() as stack:
            if target:
                output = stack.enter_context(open(target, "w" if words[-2] == ">" else "a", encoding="utf-8"))
                stack.enter_context(contextlib.redirect_stdout(output))
            code = main(argv[1:])
    else:
        code = subprocess.run(["bash", "-c", command]).returncode
    if code != 0:
        raise SystemExit(f"{where}: `{command}` exited with {code}")


def _check_config(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"snippet{suffix}"
        path.write_text(text, encoding="utf-8")
        PipelineConfig.from_file(path)


if __name__ == "__main__":
    _run_plan(sys.argv[1])
