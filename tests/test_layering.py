"""The layers import downwards only: the core (`janus_sdk`) imports no plugin or adapter package, and the
built-in plugins import no adapter; plugins and adapters reach the core through its hooks. Each built-in
plugin family (a module or package directly under `janus_plugins`) imports no other family: what they share
is in the core or in `janus_plugins.cpu_kernels`, a library that imports no plugin (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins" / "janus_plugins"
SHARED_LIBRARIES = ("cpu_kernels",)
"""Rooms under janus_plugins that every family may import (they import no family themselves)."""
LAYERS = {
    "src/janus_sdk": ("janus_plugins", "janus_adapters"),
    "plugins/janus_plugins": ("janus_adapters",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, including those inside functions; `from m import n` is
    (line, "m.n"), n being a module or a name in m."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import name` may import a module: counted as package.name
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize(("layer", "forbidden"), LAYERS.items())
def test_a_layer_imports_nothing_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((REPO / layer).rglob("*.py"))
    assert files, f"no Python files under {layer}"
    offending = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]
    assert not offending, f"{layer} imports {', '.join(forbidden)}:\n" + "\n".join(offending)


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from janus_adapters import server\n    import janus_plugins.linear\n")
    assert imported_modules(source) == [(2, "janus_adapters.server"), (3, "janus_plugins.linear")]


def family(module: str) -> str | None:
    """The plugin family of a janus_plugins module name (`janus_plugins.linear.packed` -> `linear`)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "janus_plugins" and len(parts) > 1 else None


def test_plugin_families_do_not_import_each_other() -> None:
    offending = []
    for path in sorted(PLUGINS.rglob("*.py")):
        own = path.relative_to(PLUGINS).parts[0].removesuffix(".py")
        allowed = {own} if own in SHARED_LIBRARIES else {own, *SHARED_LIBRARIES}
        offending += [
            f"{path.relative_to(REPO)}:{line}: {module}"
            for line, module in imported_modules(path)
            if family(module) is not None and family(module) not in allowed
        ]
    assert not offending, "a plugin family imports another (share through the core instead):\n" + "\n".join(
        offending
    )


def test_families_are_read_from_module_names() -> None:
    assert family("janus_plugins.linear.packed") == "linear"
    assert family("janus_plugins.cpu_kernels") == "cpu_kernels"
    assert family("janus_plugins") is None
    assert family("janus_sdk.plugins") is None
