"""`POST /task` in /openapi, per function: its input schema and a ready-to-send example."""

from __future__ import annotations

from typing import Any

import msgspec

from .registry import FUNCTIONS

_REF = "#/components/schemas/{name}"


def document_function_inputs(operation: dict, schemas: dict) -> None:
    """Each typed function's input schema as a component, the table of functions (`x-functions`:
    contract, group, input schema; `{}` is any JSON) and one Swagger UI example per function.

    The request schema itself stays `TaskRequest`: a variant per function would only slow a
    schema fuzzer down without checking more."""
    specs = sorted(FUNCTIONS.values(), key=lambda spec: spec.name)
    types = list(dict.fromkeys(spec.input_type for spec in specs if spec.input_type is not None))
    input_schema: dict[Any, dict] = {}
    if types:
        refs, components = msgspec.json.schema_components(types, ref_template=_REF)
        schemas.update(components)
        input_schema = dict(zip(types, refs))
    content = operation["requestBody"]["content"]["application/json"]
    functions, examples = {}, {}
    for spec in specs:
        schema = input_schema.get(spec.input_type, {})
        functions[spec.name] = {"contract": spec.contract, "group": spec.group, "streaming": spec.streaming,
                                "input": schema}
        examples[spec.name] = {
            "summary": f"{spec.name} (group {spec.group})",
            "value": {"function": spec.name, "contract": spec.contract, "input": example_of(schema, schemas)},
        }
    operation["x-functions"] = functions
    content["examples"] = examples


def example_of(schema: dict, schemas: dict, depth: int = 0) -> Any:
    """A plausible value for `schema`: defaults first, else the simplest value of each type."""
    if depth > 8:
        return None
    if "$ref" in schema:
        return example_of(schemas.get(schema["$ref"].rsplit("/", 1)[-1], {}), schemas, depth + 1)
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [s for s in schema.get(key, []) if s.get("type") != "null"]
        if options:
            return example_of(options[0], schemas, depth + 1)
    kind = schema.get("type")
    if kind == "object":
        return {name: example_of(prop, schemas, depth + 1) for name, prop in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_of(schema.get("items", {}), schemas, depth + 1)]
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0))
    return {"string": "string", "boolean": False, "null": None}.get(kind, {})
