"""Plugin discovery and the host that turns plugins' register hooks into a Registry.

Every plugin, built-in or third-party, is an entry point in the ``janus_sdk`` group. Environment switches:

- ``JANUS_SDK_DISABLE_PLUGIN_AUTOLOAD=1``: load only the plugins that ship with janus-sdk itself;
- ``JANUS_SDK_PLUGINS=name1,name2``: load only the entry points with these names.

A plugin that fails to import or raises in a hook is reported (a `PluginWarning` naming the plugin and its
distribution, and in `janus plugins`), and everything else keeps working.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pluggy
import torch
from pydantic import BaseModel

from janus_sdk import hookspecs
from janus_sdk.checkpoint.layouts import CheckpointLayoutView, official_layout
from janus_sdk.errors import JanusError, PluginError
from janus_sdk.interfaces import AttentionBackend
from janus_sdk.kinds import ComponentKind
from janus_sdk.registry import BuildContext, Factory, Registration, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "janus_sdk"
ENV_DISABLE_AUTOLOAD = "JANUS_SDK_DISABLE_PLUGIN_AUTOLOAD"
ENV_ONLY = "JANUS_SDK_PLUGINS"
BUILTIN_DISTRIBUTION = "janus-sdk"
IN_PROCESS = "(in-process)"
DEFAULT_BACKENDS = {ComponentKind.ATTENTION_BACKEND: "sdpa", ComponentKind.LINEAR_BACKEND: "torch"}
"""What "auto" means for a backend kind when no plugin's `choose_*` hook answers."""


class PluginWarning(UserWarning):
    """A plugin could not be loaded or one of its hooks failed; the rest of the SDK still works."""


@dataclass
class PluginInfo:
    """What `janus plugins` reports about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    components: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PluginHost:
    """A pluggy manager plus the registry built from its register hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

    # -- loading ---------------------------------------------------------------------------------------------
    def register(self, plugin: object, name: str, distribution: str = IN_PROCESS, version: str = "") -> None:
        """Register a plugin object or module in-process (tests, apps that bundle their own components)."""
        if self.pm.get_plugin(name) is not None:
            raise PluginError(
                f"a plugin named {name!r} is already registered ({self._info[name].distribution})"
            )
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name!r} ({distribution}) cannot be registered: {exc}") from exc
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        info = PluginInfo(name, distribution, version, module)
        self._info[name] = info
        self._registry = None
        for caller in self.pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():  # pluggy accepts unknown hook names silently; a typo would do nothing
                self._fail(
                    info,
                    f"plugin {name!r} implements {caller.name!r}, which is not a janus-sdk hook "
                    f"(known: {', '.join(_HOOK_NAMES)})",
                )

    def unregister(self, name: str) -> None:
        """Remove a plugin registered earlier; its components disappear from the registry."""
        self.pm.unregister(name=name)
        self._info.pop(name, None)
        self._registry = None

    def load_entry_points(self) -> None:
        """Import and register every `janus_sdk` entry point the environment switches allow."""
        only = {n.strip() for n in os.environ.get(ENV_ONLY, "").split(",") if n.strip()}
        builtin_only = os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() in ("1", "true", "yes")
        entry_points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        unknown = sorted(only - {ep.name for ep in entry_points})
        if unknown:
            installed = ", ".join(ep.name for ep in entry_points) or "none"
            warnings.warn(
                f"{ENV_ONLY} names {', '.join(unknown)}, but no installed distribution has a "
                f"{ENTRY_POINT_GROUP!r} entry point of that name (installed: {installed})",
                PluginWarning,
                stacklevel=2,
            )
        for ep in entry_points:
            dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
            version = ep.dist.version if ep.dist is not None else ""
            if (only and ep.name not in only) or (builtin_only and dist != BUILTIN_DISTRIBUTION):
                continue
            if self.pm.get_plugin(ep.name) is not None:
                loaded = self._info[ep.name].distribution
                if loaded != dist:
                    warnings.warn(
                        f"plugin {ep.name!r} of distribution {dist} is skipped: a plugin of that "
                        f"name comes from {loaded}",
                        PluginWarning,
                        stacklevel=2,
                    )
                continue
            info = PluginInfo(ep.name, dist, version, ep.value)
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(info, f"Error importing plugin {ep.name!r}: {type(exc).__name__}: {exc}")
                continue
            try:
                self.register(plugin, ep.name, dist, version)
            except PluginError as exc:
                self._fail(info, str(exc))

    def _fail(self, info: PluginInfo, message: str) -> None:
        """Record and warn about a plugin problem once (the registry may be rebuilt many times)."""
        info = self._info.setdefault(info.name, info)
        if message in info.errors:
            return
        info.errors.append(message)
        warnings.warn(f"{message} (distribution {info.distribution})", PluginWarning, stacklevel=3)

    # -- the registry ----------------------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """All components, collected from every plugin's register hooks (built once, rebuilt after changes).

        A hook that raises or registers something invalid loses its components (with a PluginWarning); two
        plugins claiming one name raise PluginError naming both.
        """
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        for kind in ComponentKind:
            for impl in getattr(self.pm.hook, kind.hook_name).get_hookimpls():
                info = self._info[impl.plugin_name]
                try:
                    registrations = self._call_register_hook(impl.function, kind, info)
                except PluginError as exc:
                    self._fail(info, str(exc))
                    continue
                for reg in registrations:
                    registry.add(reg)
        for info in self._info.values():
            info.components = [(r.kind.value, r.name) for r in registry.all() if r.plugin == info.name]
        return registry

    def _call_register_hook(self, hook: Any, kind: ComponentKind, info: PluginInfo) -> list[Registration]:
        collected: list[Registration] = []

        def register(
            name: str,
            factory: Factory,
            *,
            config: type[BaseModel],
            aliases: Iterable[str] = (),
            override: bool = False,
            description: str = "",
        ) -> None:
            where = f"plugin {info.name!r} in {kind.hook_name}"
            if not isinstance(name, str) or not name.strip():
                raise PluginError(f"{where}: the name must be a non-empty string, got {name!r}")
            if not callable(factory):
                raise PluginError(f"{where}: the factory of {name!r} is not callable ({factory!r})")
            if not (isinstance(config, type) and issubclass(config, BaseModel)):
                raise PluginError(
                    f"{where}: config= of {name!r} must be a pydantic BaseModel subclass, got {config!r}"
                )
            if isinstance(aliases, str) or not all(isinstance(a, str) and a.strip() for a in aliases):
                raise PluginError(
                    f"{where}: aliases= of {name!r} must be a sequence of non-empty names, got {aliases!r}"
                )
            summary = description or (factory.__doc__ or "").strip().split("\n")[0]
            collected.append(
                Registration(
                    kind,
                    name,
                    factory,
                    config,
                    info.name,
                    info.distribution,
                    tuple(aliases),
                    override,
                    summary,
                )
            )

        try:
            hook(register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {info.name!r} raised in {kind.hook_name}: {type(exc).__name__}: {exc}"
            ) from exc
        return collected

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen (loaded or failed), with the components it registers."""
        self.registry  # noqa: B018 - make sure `components` is filled in
        return sorted(self._info.values(), key=lambda i: i.name)

    def choose_attention_backend(self, device: torch.device, dtype: torch.dtype) -> str:
        """The attention backend for a config's "auto": what the plugins choose, else SDPA."""
        return self.choose_backend(ComponentKind.ATTENTION_BACKEND, device, dtype)

    def choose_linear_backend(self, device: torch.device, dtype: torch.dtype) -> str:
        """The linear backend for a config's "auto": what the plugins choose, else torch's own."""
        return self.choose_backend(ComponentKind.LINEAR_BACKEND, device, dtype)

    def choose_backend(self, kind: ComponentKind, device: torch.device, dtype: torch.dtype) -> str:
        """Ask the plugins' `choose_<kind>` hook which backend of `kind` to use for "auto"; the default
        (`DEFAULT_BACKENDS`) when none has an opinion.

        Implementations are asked in pluggy's order (last registered first); one that raises is reported and
        skipped like a failing register hook.
        """
        hook_name = f"choose_{kind.value}"
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                choice = impl.function(device=device, dtype=dtype)
            except Exception as exc:
                info = self._info[impl.plugin_name]
                self._fail(info, f"plugin {info.name!r} raised in {hook_name}: {type(exc).__name__}: {exc}")
                continue
            if choice:
                return str(choice)
        return DEFAULT_BACKENDS[kind]

    def add_commands(self, subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Let each plugin add its `janus` commands (`register_commands`); one that raises is reported and
        skipped like a failing register hook, its half-added commands removed."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            before = set(subcommands.choices)
            try:
                impl.function(subcommands=subcommands)
            except Exception as exc:
                added = set(subcommands.choices) - before
                for name in added:
                    del subcommands.choices[name]
                listed = subcommands._choices_actions  # what `janus --help` lists
                listed[:] = [action for action in listed if action.dest not in added]
                info = self._info[impl.plugin_name]
                self._fail(
                    info, f"plugin {info.name!r} raised in register_commands: {type(exc).__name__}: {exc}"
                )

    def open_checkpoint_layout(self, directory: str | Path) -> CheckpointLayoutView:
        """Read a checkpoint directory in whatever layout a plugin recognises, else the official layout.

        Implementations are asked in pluggy's order (last registered first). A `JanusError` from one means the
        checkpoint is in its layout but unusable, and reaches the caller; any other exception is a plugin bug,
        reported and skipped like a failing register hook.
        """
        path = Path(directory)
        for impl in reversed(self.pm.hook.open_checkpoint_layout.get_hookimpls()):
            try:
                view = impl.function(directory=path)
            except JanusError:
                raise
            except Exception as exc:
                info = self._info[impl.plugin_name]
                self._fail(
                    info,
                    f"plugin {info.name!r} raised in open_checkpoint_layout: {type(exc).__name__}: {exc}",
                )
                continue
            if view is not None:
                if not isinstance(view, CheckpointLayoutView):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: open_checkpoint_layout returned "
                        f"{type(view).__name__}, not a CheckpointLayoutView"
                    )
                log.info("%s: layout read by plugin %r", path, impl.plugin_name)
                return view
        return official_layout(path)


_HOOK_NAMES = sorted(
    name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")
)


_default_host: PluginHost | None = None


def get_plugin_host() -> PluginHost:
    """The process-wide host, with entry points loaded on first use."""
    global _default_host
    if _default_host is None:
        host = PluginHost()
        host.load_entry_points()
        _default_host = host
    return _default_host


def get_registry() -> Registry:
    """The process-wide registry of components."""
    return get_plugin_host().registry


def get_component(kind: ComponentKind | str, name: str) -> Registration:
    """One component by kind and name or alias: ``get_component("visual_encoder", "CLIPVisionTower")``."""
    return get_registry().get(kind, name)


def attention_for(context: BuildContext) -> AttentionBackend:
    """The attention backend a component that attends should use: the pipeline's (`context.attention`), or,
    for a component built on its own, the default one (`DEFAULT_BACKENDS`: SDPA) found through the registry
    like any other, so that such a component depends on the interface and on no other plugin."""
    if context.attention is not None:
        return cast(AttentionBackend, context.attention)
    kind = ComponentKind.ATTENTION_BACKEND
    return cast(AttentionBackend, get_registry().get(kind, DEFAULT_BACKENDS[kind]).build({}, context))
