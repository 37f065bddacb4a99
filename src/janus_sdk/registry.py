"""The component registry: which component of kind K is called N, and which plugin provided it.

Conflict rule (documented in docs/plugins.md): two plugins registering the same name (or alias) for the same
kind is an error naming both, unless exactly one of them registers with ``override=True``; that one replaces
the other and takes over its names and aliases, which is how a third party swaps out a built-in without
touching it (a checkpoint naming `CLIPVisionTower` then gets the replacement). Two overrides of one component
are an error too. The result does not depend on the order in which plugins are loaded.
"""

from __future__ import annotations

import dataclasses
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
            subject = f"{self.kind.value} {self.name!r}"
            message = describe_validation_error(exc, prefix=where, subject=subject, model=self.config)
            raise ConfigError(message) from None

    def build(self, params: BaseModel | dict[str, Any], context: BuildContext) -> Any:
        """Build the component and check that it satisfies its kind's interface."""
        if isinstance(params, self.config):
            config: BaseModel = params
        else:
            config = self.validate_params(params.model_dump() if isinstance(params, BaseModel) else params)
        try:
            component = self.factory(config, context)
        except JanusError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{self._who} failed to build {self.kind.value} {self.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        missing = _missing_members(component, self.kind.interface)
        if missing:
            raise PluginError(
                f"{self._who} built a {self.kind.value} {self.name!r} of type "
                f"{type(component).__name__} that does not satisfy {self.kind.interface.__name__}: "
                f"missing {', '.join(missing)}"
            )
        return component

    @property
    def _who(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution})"

    @property
    def names(self) -> tuple[str, ...]:
        """The name and every alias."""
        return (self.name, *self.aliases)


def _missing_members(obj: object, protocol: type) -> list[str]:
    """The members of `protocol` that `obj` lacks (attributes and methods; `__call__` as "not callable").

    Checked with hasattr rather than isinstance: from Python 3.12 a runtime Protocol check looks attributes up
    statically and so misses members an nn.Module serves through __getattr__ (submodules, buffers)."""
    members = getattr(protocol, "__protocol_attrs__", None) or _protocol_attrs(protocol)
    missing = sorted(m for m in members if not hasattr(obj, m))
    return ["__call__ (not callable)" if m == "__call__" else m for m in missing]


def _protocol_attrs(protocol: type) -> set[str]:
    """Python 3.11 keeps a Protocol's members behind a private helper (3.12 added `__protocol_attrs__`)."""
    import typing

    return set(getattr(typing, "_get_protocol_attrs")(protocol))  # noqa: B009 - private, hence untyped


#: Error type a PipelineConfig slot reports when a component's params fail the component's own config model;
#: its context carries the inner `errors` and the `model`, so the description can give full paths (and
#: `field`, the key holding the spec, when the error is raised by the model around it).
COMPONENT_PARAMS_ERROR = "component_params"
#: Error type a PipelineConfig field reports when no plugin registers the component it names (context:
#: `field`, the key holding the name when it is not "name").
UNKNOWN_COMPONENT_ERROR = "unknown_component"
#: Error type of settings that contradict each other (a message naming the fields; the input is not shown).
CONFLICT_ERROR = "conflicting_settings"
_NO_INPUT_SHOWN = ("missing", "extra_forbidden", UNKNOWN_COMPONENT_ERROR, CONFLICT_ERROR)
_MAX_SHOWN = 80


def describe_validation_error(
    exc: ValidationError, prefix: str = "", subject: str = "config", model: type[BaseModel] | None = None
) -> str:
    """Reword a Pydantic error as one line per problem: the field path, what was wrong, what is allowed.

    `model`, the class that was validated, lets an unknown key be answered with the keys allowed at its place.
    """
    return describe_errors(exc.errors(), prefix, subject, model)


def describe_errors(
    errors: Iterable[Any], prefix: str = "", subject: str = "config", model: type[BaseModel] | None = None
) -> str:
    """`describe_validation_error` for some of a ValidationError's `errors()`, e.g. those of one source."""
    return "\n".join([f"invalid {subject}:", *_describe(errors, prefix, model)])


def _describe(errors: Iterable[Any], prefix: str, model: type[BaseModel] | None) -> list[str]:
    lines: list[str] = []
    for err in errors:
        loc = [str(part) for part in err["loc"]]
        ctx = err.get("ctx") or {}
        if err["type"] == COMPONENT_PARAMS_ERROR:
            lines += _describe(
                ctx["errors"], _path(prefix, *loc, ctx.get("field", ""), "params"), ctx["model"]
            )
            continue
        if err["type"] == UNKNOWN_COMPONENT_ERROR:
            loc.append(ctx.get("field", "name"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            keys = _allowed_keys(model, loc[:-1])
            msg = f"unknown key (allowed: {', '.join(keys)})" if keys else "unknown key (check its spelling)"
        allowed = ctx.get("expected")
        if allowed and str(allowed) not in msg:
            msg += f" (allowed: {allowed})"
        shown = "" if err["type"] in _NO_INPUT_SHOWN else f", got {_short(err.get('input'))}"
        lines.append(f"  {_path(prefix, *loc) or '(root)'}: {msg}{shown}")
    return lines


def _path(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _allowed_keys(model: type[BaseModel] | None, loc: list[str]) -> list[str]:
    """The field names of the (nested) model found at `loc`, or [] when that place is not a model."""
    for part in loc:
        field_info = model.model_fields.get(part) if model is not None else None
        annotation = field_info.annotation if field_info is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(model.model_fields) if model is not None else []


class Registry:
    """All registrations, indexed by kind and by name or alias, conflicts resolved at `add` time.

    The outcome does not depend on the order in which plugins are added: registrations replaced by an override
    are kept aside, so that two plugins claiming the same name without override=True are an error even when a
    third plugin overrides both.
    """

    def __init__(self) -> None:
        self._by_kind: dict[ComponentKind, dict[str, Registration]] = {k: {} for k in ComponentKind}
        self._names: dict[ComponentKind, dict[str, str]] = {k: {} for k in ComponentKind}
        self._replaced: dict[ComponentKind, list[Registration]] = {k: [] for k in ComponentKind}

    def add(self, reg: Registration) -> None:
        """Add one registration, applying the conflict rule."""
        names = self._names[reg.kind]
        active = [self._by_kind[reg.kind][n] for n in sorted({names[n] for n in reg.names if n in names})]
        for other in [*active, *self._replaced[reg.kind]]:
            shared = sorted(set(reg.names) & set(other.names))
            if shared and other.override == reg.override:
                raise PluginError(_conflict_message(reg, other, shared[0]))
        if reg.override:  # it replaces every registration it clashes with
            for other in active:
                self._remove(other)
                self._replaced[reg.kind].append(other)
            self._insert(reg, adopted=active)
        elif len(active) > 1:  # two overrides, each replacing part of this one
            raise PluginError(_conflict_message(active[1], active[0], reg.name))
        elif active:  # an override registered earlier replaces this one
            self._replaced[reg.kind].append(reg)
            self._remove(active[0])
            self._insert(active[0], adopted=[reg])
        else:
            self._insert(reg, adopted=[])

    def _insert(self, reg: Registration, adopted: list[Registration]) -> None:
        """Index `reg` under its names, plus the still free names of the registrations it replaces."""
        names = self._names[reg.kind]
        extra = [n for r in adopted for n in r.names if n not in names and n not in reg.names]
        if extra:
            reg = dataclasses.replace(reg, aliases=(*reg.aliases, *dict.fromkeys(extra)))
        self._by_kind[reg.kind][reg.name] = reg
        for n in reg.names:
            names[n] = reg.name

    def _remove(self, reg: Registration) -> None:
        del self._by_kind[reg.kind][reg.name]
        for n in reg.names:
            if self._names[reg.kind].get(n) == reg.name:
                del self._names[reg.kind][n]

    def get(self, kind: ComponentKind | str, name: str) -> Registration:
        """The registration of kind `kind` called `name` (or one of its aliases)."""
        kind = _kind(kind)
        canonical = self._names[kind].get(name)
        if canonical is None:
            available = ", ".join(_listed(r) for r in self.all(kind))
            raise UnknownComponentError(
                f"no {kind.value} called {name!r}; available: {available or 'none (is a plugin missing?)'}"
            )
        return self._by_kind[kind][canonical]

    def all(self, kind: ComponentKind | str | None = None) -> list[Registration]:
        """Every registration, or every one of a kind, sorted by kind and name."""
        kinds = [_kind(kind)] if kind is not None else list(ComponentKind)
        return [r for k in kinds for r in sorted(self._by_kind[k].values(), key=lambda r: r.name)]

    def replaced(self) -> list[Registration]:
        """Registrations that lost to an override (so are not available), sorted by kind and name."""
        return [r for k in ComponentKind for r in sorted(self._replaced[k], key=lambda r: r.name)]


def _kind(kind: ComponentKind | str) -> ComponentKind:
    try:
        return ComponentKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in ComponentKind)
        raise UnknownComponentError(f"no component kind {kind!r}; the kinds are {kinds}") from None


def _listed(reg: Registration) -> str:
    also = f"also {', '.join(reg.aliases)}; " if reg.aliases else ""
    return f"{reg.name} ({also}plugin {reg.plugin})"


def _conflict_message(new: Registration, old: Registration, shared: str) -> str:
    both = (
        f"{new.kind.value} {shared!r} is registered twice: as {old.name!r} by plugin {old.plugin!r} "
        f"({old.distribution}) and as {new.name!r} by plugin {new.plugin!r} ({new.distribution})"
    )
    if new.override:
        return f"{both}, both with override=True; only one plugin may replace it: uninstall or disable one"
    return f"{both}. Rename one, or register the replacement with override=True."
