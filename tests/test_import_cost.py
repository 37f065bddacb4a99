"""`import janus_sdk` stays light: torch (1.5-2 s to import) loads when something that needs it is first used,
e.g. when a pipeline is built, not when the package is imported for its exceptions or version."""

from __future__ import annotations

import subprocess
import sys

import janus_sdk


def test_importing_the_package_does_not_import_torch() -> None:
    heavy = "('torch', 'transformers', 'PIL')"
    code = f"import sys, janus_sdk; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_every_exported_name_resolves() -> None:
    missing = [name for name in janus_sdk.__all__ if getattr(janus_sdk, name, None) is None]
    assert not missing
    assert janus_sdk.JanusPipeline.__module__ == "janus_sdk.pipeline.janus"


def test_commands_that_need_no_model_do_not_import_transformers() -> None:
    """The plugins load for every `janus` command; the transformers-layout adapter imports transformers (~2 s)
    only once a checkpoint in that layout is opened or converted."""
    code = (
        "import contextlib, io, sys; from janus_sdk.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert main(['plugins']) == 0\n"
        "print('transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
