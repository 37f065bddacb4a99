"""The component registry: which component of kind K is called N, and which plugin provided it.

Conflict rule (documented in docs/plugins.md): two plugins registering the same name (or alias) for the same kind
is an error naming both, unless exactly one of them registers with ``override=True``; that one replaces the
other, which is how a third party swaps out a built-in without touching it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ValidationError

from janus_sdk.errors import ConfigError, JanusError, PluginError, UnknownComponentError
from janus_sdk.kinds import ComponentKind


@dataclass(frozen=True)
class BuildContext:
    """What a factory may need beyond its own config."""

    checkpoint_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    attention: Any = None  # the AttentionBackend chosen for this pipeline, for components that attend


Factory = Callable[[Any, BuildContext], Any]


class Register(Protocol):
    """The callback handed to every register hook."""

    def __call__(
        self,
        name: str,
        factory: Factory,
        *,
        config: type[BaseModel],
        aliases: Iterable[str] = (),
        override: bool = False,
        description: str = "",
    ) -> None: ...


@dataclass(frozen=True)
class Registration:
    """One component as a plugin registered it."""

    kind: ComponentKind
    name: str
    factory: Factory
    config: type[BaseModel]
    plugin: str
    distribution: str
    aliases: tuple[str, ...] = ()
    override: bool = False
    description: str = ""

    def validate_params(self, params: dict[str, Any], where: str = "params") -> BaseModel:
        """Validate `params` against this component's config model, with an error naming each bad field."""
        try:
            return self.config.model_validate(params)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, prefix=where, subject=f"{self.kind.value} {self.name!r}"))

    def build(self, params: BaseModel | dict[str, Any], context: BuildContext) -> Any:
        """Build the component and check that it satisfies its kind's interface."""
        config = params if isinstance(params, BaseModel) else self.validate_params(params)
        try:
            component = self.factory(config, context)
        except JanusError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {self.plugin!r} ({self.distribution}) failed to build {self.kind.value} {self.name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(component, self.kind.interface):
            missing = _missing_members(component, self.kind.interface)
            raise PluginError(
                f"plugin {self.plugin!r} ({self.distribution}) built a {self.kind.value} {self.name!r} of type "
                f"{type(component).__name__} that does not satisfy {self.kind.interface.__name__}: "
                f"missing {', '.join(missing)}"
            )
        return component


def _missing_members(obj: object, protocol: type) -> list[str]:
    members = [m for m in getattr(protocol, "__protocol_attrs__", ()) if not m.startswith("_")]
    if not members:  # Python < 3.12 keeps the list elsewhere
        members = [m for m in dir(protocol) if not m.startswith("_")] + list(getattr(protocol, "__annotations__", {}))
    return sorted({m for m in members if not hasattr(obj, m)}) or ["(callable)"]


def describe_validation_error(exc: ValidationError, prefix: str = "", subject: str = "config") -> str:
    """Reword a Pydantic error as one line per problem: the field path, what was wrong, what is allowed."""
    lines = [f"invalid {subject}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "(root)")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        allowed = (err.get("ctx") or {}).get("expected")
        if allowed and "expected" not in msg.lower():
            msg += f" (allowed: {allowed})"
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f", got {err.get('input')!r}"
        lines.append(f"  {path}: {msg}{shown}")
    return "\n".join(lines)


class Registry:
    """All registrations, indexed by kind and by name or alias, conflicts resolved at `add` time."""

    def __init__(self) -> None:
        self._by_kind: dict[ComponentKind, dict[str, Registration]] = {k: {} for k in ComponentKind}
        self._names: dict[ComponentKind, dict[str, str]] = {k: {} for k in ComponentKind}

    def add(self, reg: Registration) -> None:
        """Add one registration, applying the conflict rule."""
        table = self._by_kind[reg.kind]
        clashes = {self._names[reg.kind][n] for n in (reg.name, *reg.aliases) if n in self._names[reg.kind]}
        for clash_name in clashes:
            other = table[clash_name]
            if reg.override == other.override:
                raise PluginError(
                    f"{reg.kind.value} {reg.name!r} is registered twice: by plugin {other.plugin!r} "
                    f"({other.distribution}) and by plugin {reg.plugin!r} ({reg.distribution}). Rename one, or "
                    f"register the replacement with override=True."
                )
            if reg.override:  # the newcomer replaces the existing one
                self._remove(other)
            else:  # the existing override stands; this one is shadowed
                return
        table[reg.name] = reg
        for n in (reg.name, *reg.aliases):
            self._names[reg.kind][n] = reg.name

    def _remove(self, reg: Registration) -> None:
        del self._by_kind[reg.kind][reg.name]
        for n in (reg.name, *reg.aliases):
            if self._names[reg.kind].get(n) == reg.name:
                del self._names[reg.kind][n]

    def get(self, kind: ComponentKind | str, name: str) -> Registration:
        """The registration of kind `kind` called `name` (or one of its aliases)."""
        kind = ComponentKind(kind)
        canonical = self._names[kind].get(name)
        if canonical is None:
            available = ", ".join(
                f"{r.name} (from {r.plugin})" for r in sorted(self._by_kind[kind].values(), key=lambda r: r.name)
            )
            raise UnknownComponentError(
                f"no {kind.value} called {name!r}; available: {available or 'none (is a plugin missing?)'}"
            )
        return self._by_kind[kind][canonical]

    def all(self, kind: ComponentKind | str | None = None) -> list[Registration]:
        """Every registration, or every one of a kind, sorted by kind and name."""
        kinds = [ComponentKind(kind)] if kind is not None else list(ComponentKind)
        return [r for k in kinds for r in sorted(self._by_kind[k].values(), key=lambda r: r.name)]
