"""Components named in configs: `ComponentSpec` (a registered name and its params) and the registry that
validation looks components up in.

Shared by the pipeline's component slots (config/pipeline.py) and the strategy fields of the generation
settings (config/generation.py), which both check a spec's params against the component's own config model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

from janus_sdk.registry import Registry


class ComponentSpec(BaseModel):
    """A component by registered name (or alias, e.g. a checkpoint's own class name) and its parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registered name or alias of the component (see `janus plugins`).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Options, validated against the component's own config model."
    )


class NoOptions(BaseModel):
    """The params model of a component that takes none (`params: {}`), shared by every such plugin."""

    model_config = ConfigDict(extra="forbid")


def bare_name(value: Any) -> Any:
    """A bare string stands for the component of that name with no params (`sampler: min-p`)."""
    return {"name": value} if isinstance(value, str) else value


def registry_of(info: ValidationInfo) -> Registry:
    """The registry given as validation context (`parse(..., registry=...)`), else the global one."""
    context = info.context if isinstance(info.context, dict) else {}
    registry = context.get("registry")
    if isinstance(registry, Registry):
        return registry
    from janus_sdk.plugins import get_registry

    return get_registry()
