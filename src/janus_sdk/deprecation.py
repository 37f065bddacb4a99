"""Names that moved to another module, still importable from the old one for a release, with a warning."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any


def moved_names(old: str, new: dict[str, ModuleType]) -> Callable[[str], Any]:
    """A module `__getattr__` for the module `old`: each name of `new` from its new module, with a
    DeprecationWarning saying where to import it from; AttributeError for any other name."""

    def __getattr__(name: str) -> Any:
        if name not in new:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module = new[name]
        warnings.warn(
            f"{old}.{name} moved to {module.__name__}.{name}; import it from there "
            "(the old module goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, name)

    return __getattr__
