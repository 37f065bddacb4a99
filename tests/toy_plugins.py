"""Toy plugins for the plugin-host, registry and CLI tests: a toy visual encoder and the plugin that registers
it, a plugin whose hook raises, fake entry points backed by modules written on the fly; `plugged` registers
plugins on a host for the length of a `with` block."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from janus_sdk.hookspecs import hookimpl
from janus_sdk.plugins import ENTRY_POINT_GROUP, PluginHost
from janus_sdk.registry import BuildContext, Register


class ToyConfig(BaseModel):
    """Options of the toy encoder."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=8, gt=0, description="Feature width.")


class ToyEncoder:
    """Satisfies VisualEncoder: 4 tokens of `width` features per image."""

    image_size = 32
    num_tokens = 4

    def __init__(self, width: int) -> None:
        self.feature_dim = width

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(pixel_values.shape[0], self.num_tokens, self.feature_dim)


def build_toy(config: ToyConfig, context: BuildContext) -> ToyEncoder:
    """A toy encoder."""
    return ToyEncoder(config.width)


class EncoderPlugin:
    """Registers one visual encoder under `name` (with `aliases`), optionally as an override."""

    def __init__(
        self,
        name: str = "toy",
        aliases: tuple[str, ...] = (),
        override: bool = False,
        factory: Any = build_toy,
    ) -> None:
        self.name, self.aliases, self.override, self.factory = name, aliases, override, factory

    @hookimpl
    def register_visual_encoders(self, register: Register) -> None:
        register(self.name, self.factory, config=ToyConfig, aliases=self.aliases, override=self.override)


@contextmanager
def plugged(host: PluginHost, *plugins: tuple[str, object]) -> Iterator[PluginHost]:
    """Register (name, plugin) pairs in this order on `host`; always unregister them again."""
    try:
        for name, plugin in plugins:
            host.register(plugin, name, distribution=f"{name}-dist", version="1.0")
        yield host
    finally:
        for name, _ in plugins:
            host.unregister(name)


class RaisingPlugin:
    """Raises in one hook, registers a sampler fine in another."""

    @hookimpl
    def register_visual_encoders(self, register: Register) -> None:
        raise RuntimeError("encoder table is corrupt")

    @hookimpl
    def register_samplers(self, register: Register) -> None:
        register(
            "toy-sampler",
            lambda config, context: lambda logits, generator: logits.argmax(-1),
            config=ToyConfig,
        )


# -- fake entry points ----------------------------------------------------------------------------------


@dataclass
class FakeEntryPoint:
    """What the host reads from an entry point: its name, value, distribution and `load()`."""

    name: str
    value: str
    dist: Any
    group: str = ENTRY_POINT_GROUP

    def load(self) -> Any:
        return metadata.EntryPoint(self.name, self.value, self.group).load()


def entry_point(tmp_path: Path, name: str, source: str, dist: str = "third-party") -> FakeEntryPoint:
    """An entry point `name` of distribution `dist` whose module has `source` as its code."""
    module = f"fake_plugin_{name}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return FakeEntryPoint(name, module, SimpleNamespace(name=dist, version="2.0"))
