"""The layers import downwards only: the core (`janus_sdk`) imports no plugin or adapter package, and the
built-in plugins import no adapter; plugins and adapters reach the core through its hooks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {
    "src/janus_sdk": ("janus_plugins", "janus_adapters"),
    "plugins/janus_plugins": ("janus_adapters",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, including those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
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
    assert imported_modules(source) == [(2, "janus_adapters"), (3, "janus_plugins.linear")]
