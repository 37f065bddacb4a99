"""JSON Schema of PipelineConfig in which each component slot lists the components installed right now.

Pydantic's own schema only knows `params: object`; here each slot (and the sampler and guidance of the
settings) becomes a `oneOf` over the registered components of its kind, each with its own params schema, so
editors can complete and check a config file.
"""

from __future__ import annotations

from typing import Any

from janus_sdk.config.pipeline import AUTO, BACKEND_KINDS, SLOT_KINDS, PipelineConfig
from janus_sdk.kinds import ComponentKind
from janus_sdk.registry import Registry

#: The strategy fields of the settings sections: (section model, field) -> kind. Each takes a spec, a bare
#: name, or null (the built-in its shorthand fields describe).
STRATEGY_FIELDS: dict[tuple[str, str], ComponentKind] = {
    ("GenerationConfig", "sampler"): ComponentKind.SAMPLER,
    ("ImageGenerationConfig", "sampler"): ComponentKind.SAMPLER,
    ("ImageGenerationConfig", "guidance"): ComponentKind.GUIDANCE,
}


def pipeline_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a pipeline config file, given the installed plugins."""
    schema = PipelineConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for slot, kind in SLOT_KINDS.items():
        choices = _choices(registry, kind, defs)
        if kind in BACKEND_KINDS:
            choices.append(
                {
                    "type": "object",
                    "title": AUTO,
                    "description": f"the {kind.value} the installed plugins choose for the device and dtype",
                    "properties": {
                        "name": {"enum": [AUTO]},
                        "params": {"type": "object", "maxProperties": 0},
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                }
            )
        prop = schema["properties"][slot]
        schema["properties"][slot] = {
            "description": prop.get("description", ""),
            "oneOf": choices,
        }
    for (section, field), kind in STRATEGY_FIELDS.items():
        names = [name for reg in registry.all(kind) for name in reg.names]
        bare = {"type": "string", "title": "name", "enum": names, "description": f"a {kind.value}'s name"}
        properties = defs[section]["properties"]
        properties[field] = {
            "description": properties[field].get("description", ""),
            "oneOf": [*_choices(registry, kind, defs), bare, {"type": "null"}],
        }
    return schema


def _choices(registry: Registry, kind: ComponentKind, defs: dict[str, Any]) -> list[dict[str, Any]]:
    """One `{name, params}` object schema per registered component of `kind`, params schemas added to defs."""
    choices = []
    for reg in registry.all(kind):
        params_schema = reg.config.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(params_schema.pop("$defs", {}))
        ref = f"{reg.kind.value}.{reg.name}"
        defs[ref] = params_schema
        choices.append(
            {
                "type": "object",
                "title": reg.name,
                "description": reg.description or f"{reg.kind.value} from plugin {reg.plugin}",
                "properties": {
                    "name": {"enum": [reg.name, *reg.aliases]},
                    "params": {"$ref": f"#/$defs/{ref}"},
                },
                "required": ["name"],
                "additionalProperties": False,
            }
        )
    return choices
