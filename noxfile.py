"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s docs`, `nox -s bench -- ARGS`.

Virtual environments are reused between runs (`nox -R` also skips the installs); `nox` alone runs tests, lint,
typecheck and docs. The tests session installs and runs exactly what README.md and .ci/run do.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]

TORCH = "torch==2.13.0"  # the version the project is tested with (README.md, .ci/run)
LINTED = ("src", "plugins", "adapters", "bench", "tests")
TYPED = ("src/janus_sdk", "plugins/janus_plugins", "adapters/janus_adapters", "bench", "tests")
"""What `mypy --strict` checks (bench/ and tests/ import their own modules by bare name: MYPYPATH)."""


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: `nox -s tests -- -k golden -x` passes the arguments on to pytest."""
    session.install(TORCH)
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's lint rules and formatting check."""
    session.install("ruff")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the SDK, its plugins and adapters, the benchmarks and the tests."""
    session.install(TORCH)
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", *TYPED, env={"MYPYPATH": "bench:tests"})


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/, warnings as errors (`nox -s docs -- serve` serves it)."""
    session.install(TORCH)
    session.install("-e", ".[docs]")
    quiet = {"NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=quiet)
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs, env=quiet)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark: `nox -s bench -- --help` for its options."""
    session.install(TORCH)
    session.install("-e", ".")
    session.run("python", "bench/run.py", *session.posargs)


TRANSFORMERS_RANGE = {"oldest": "transformers==5.5.0", "newest": "transformers<6"}
"""The ends of pyproject.toml's `transformers>=5.5,<6`: 5.5.0 is the first whose `JanusImageProcessorPil` (the
interop adapter's) imports without torchvision; 6 may drop what 5.x only deprecates."""
TRANSFORMERS_TESTS = (
    "tests/plugins/test_deepseek_chat.py",  # the tokenizer
    "tests/plugins/test_llama_blocks.py",  # our LLaMA blocks against transformers' modules
    "tests/adapters/test_transformers_interop.py",
    "tests/adapters/test_load_transformers_layout.py",
    "tests/test_cli_convert.py",
    "tests/test_llm_backbone.py",  # goldens: DeepSeek's reference outputs
    "tests/test_pipeline_golden.py",
)
"""What uses transformers, and the goldens."""


@nox.session
@nox.parametrize("transformers", list(TRANSFORMERS_RANGE.values()), ids=list(TRANSFORMERS_RANGE))
def transformers_range(session: nox.Session, transformers: str) -> None:
    """The tests that use transformers, against the oldest and the newest release pyproject.toml allows:
    `nox -s transformers_range`, or one end, `nox -s "transformers_range(oldest)"`."""
    session.install(TORCH)
    session.install("--upgrade", "-e", ".[test]", transformers)  # the newest end moves: upgrade a kept venv
    session.run("python", "-m", "pytest", *TRANSFORMERS_TESTS, *session.posargs)
