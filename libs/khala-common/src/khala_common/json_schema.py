"""JSON Schema helpers for the services' published OpenAPI documents."""

from __future__ import annotations

from typing import Any


def nullable_types(schema: Any) -> Any:
    """`anyOf: [{type: T, ...}, {type: null}]` (pydantic's `T | None`) as the
    equivalent `{type: [T, null], ...}`, which contract fuzzers read as one value
    space instead of two branches to violate one at a time."""
    if isinstance(schema, list):
        return [nullable_types(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: nullable_types(value) for key, value in schema.items()}
    branches = schema.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
        (typed,) = [b for b in branches if b != {"type": "null"}]
        if isinstance(typed.get("type"), str):
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**rest, **typed, "type": [typed["type"], "null"]}
    return schema
