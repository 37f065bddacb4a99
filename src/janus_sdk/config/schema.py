"""JSON Schema of PipelineConfig in which each component slot lists the components installed right now.

Pydantic's own schema only knows `params: object`; here each slot becomes a `oneOf` over the registered
components of its kind, each with its own params schema, so editors can complete and check a config file.
"""

from __future__ import annotations

from typing import Any

from janus_sdk.config.pipeline import AUTO, BACKEND_KINDS, SLOT_KINDS, PipelineConfig
from janus_sdk.registry import Registry


def pipeline_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a pipeline config file, given the installed plugins."""
    schema = PipelineConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for slot, kind in SLOT_KINDS.items():
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
    return schema
