"""Unit: the published document carries the rules the code enforces, because both
come from the same models (handlers/schemas.py); a rule added to one cannot be
missing from the other."""

from __future__ import annotations

from typing import Any

import pytest

from khala_runtime.domain.errors import ValidationError
from khala_runtime.domain.requests import MAX_EVENTS_PER_APPEND, MAX_KEY_CHARS, MAX_SEQ
from khala_runtime.domain.run_state import RUN_EVENT_TYPES
from khala_runtime.domain.worker_state import INGEST_EVENT_TYPES
from khala_runtime.handlers.errors import HTTP_STATUS
from khala_runtime.handlers.openapi import SPEC
from khala_runtime.handlers.schemas import parse_create_run

SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]


def _nonnull(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop:
        return next(p for p in prop["anyOf"] if p.get("type") != "null")
    return prop


def test_org_id_pattern_is_documented_and_enforced() -> None:
    org_id = SCHEMAS["CreateRunBody"]["properties"]["org_id"]
    assert org_id["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert SCHEMAS["CreateRunBody"]["required"] == ["org_id"]
    assert SCHEMAS["CreateRunBody"]["additionalProperties"] is False
    query = SPEC["paths"]["/api/v1/runs"]["get"]["parameters"]
    assert {
        "name": "org_id",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "pattern": org_id["pattern"]},
    } in query


def test_event_rules_are_documented() -> None:
    events = SCHEMAS["RunAppendBody"]["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, MAX_EVENTS_PER_APPEND)
    assert set(events["items"]["discriminator"]["mapping"]) == RUN_EVENT_TYPES
    worker = SCHEMAS["WorkerAppendBody"]["properties"]["events"]["items"]
    assert set(worker["discriminator"]["mapping"]) == INGEST_EVENT_TYPES
    output = SCHEMAS[events["items"]["discriminator"]["mapping"]["run.output"].split("/")[-1]]
    assert output["additionalProperties"] is False
    key = _nonnull(output["properties"]["idempotency_key"])
    assert key["maxLength"] == MAX_KEY_CHARS and "\\u0000-\\u001f" in key["pattern"]
    payload = SCHEMAS[_nonnull(output["properties"]["payload"])["$ref"].split("/")[-1]]
    assert payload["properties"]["text"]["type"] == ["string", "null"]
    seq = _nonnull(SCHEMAS["RunAppendBody"]["properties"]["expected_seq"])
    assert (seq["minimum"], seq["maximum"]) == (0, MAX_SEQ)


def test_every_error_code_is_documented_at_its_status() -> None:
    operations = [op for ops in SPEC["paths"].values() for op in ops.values()]
    for code, status in HTTP_STATUS.items():
        described = [
            op["responses"][str(status)]["description"]
            for op in operations
            if str(status) in op["responses"]
        ]
        assert any(f"`{code}`" in text for text in described), code
    append = SPEC["paths"]["/api/v1/runs/{run_id}/events"]["post"]["responses"]
    assert "`frame_too_large`" in append["413"]["description"]


@pytest.mark.parametrize("bad", ["a.b", "", "x" * 65, "acme\n"])
def test_the_model_refuses_what_the_pattern_refuses(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_create_run({"org_id": bad}, lambda: "r")
    assert info.value.field == "org_id"
