"""The OpenAPI 3.1 description of the run command API, served at
`GET /api/v1/openapi.json` (DESIGN §6: "OpenAPI published")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khala_runtime.domain.requests import MAX_EVENTS_PER_APPEND, MAX_KEY_CHARS, MAX_TITLE_CHARS
from khala_runtime.domain.run_state import RUN_EVENT_TYPES, RunStatus

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_SEQ = {"type": "integer", "minimum": 0}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/Error"} for s in (401, 503, *statuses)}


_SCHEMAS: dict[str, Any] = {
    "Run": {
        "type": "object",
        "required": ["run_id", "org_id", "stream_id", "title", "status", "last_seq",
                     "chain_hash", "created_at_ms", "updated_at_ms"],
        "properties": {
            "run_id": _ID, "org_id": _ID, "stream_id": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in RunStatus]},
            "last_seq": _SEQ, "chain_hash": {"type": "string"},
            "created_at_ms": {"type": "integer"}, "updated_at_ms": {"type": "integer"},
        },
    },
    "EventInput": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": sorted(RUN_EVENT_TYPES - {"run.created"})},
            "payload": {"type": "object"},
            "idempotency_key": {"type": ["string", "null"], "maxLength": MAX_KEY_CHARS},
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "event_id": {"type": "string", "format": "uuid"}, "stream_id": {"type": "string"},
            "org_id": _ID, "subject_id": _ID, "stream_seq": _SEQ, "type": {"type": "string"},
            "payload": {"type": "object"}, "idempotency_key": {"type": ["string", "null"]},
            "occurred_at_ms": {"type": "integer"}, "chain_hash": {"type": "string"},
        },
    },
    "Receipt": {
        "type": "object",
        "required": ["stream_id", "first_seq", "last_seq", "event_ids", "chain_hash"],
        "properties": {
            "stream_id": {"type": "string"}, "first_seq": _SEQ, "last_seq": _SEQ,
            "event_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "chain_hash": {"type": "string"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"},
                                                "message": {"type": "string"}}}},
    },
}

_RUN_ID_PARAM = {"name": "run_id", "in": "path", "required": True, "schema": _ID}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Khala runtime command API", "version": "1"},
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": _SCHEMAS,
        "responses": {"Error": _json(_ref("Error"), "Refused; see docs/runtime.md for codes")},
    },
    "paths": {
        "/api/v1/runs": {
            "post": {
                "summary": "Create a run (appends run.created at stream_seq 1)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["org_id"], "additionalProperties": False,
                    "properties": {"org_id": _ID, "run_id": _ID,
                                   "title": {"type": "string", "maxLength": MAX_TITLE_CHARS}},
                }}}},
                "responses": {"201": _json(_ref("Run"), "Created"),
                              "200": _json(_ref("Run"), "Repeated identical create"),
                              **_errors(400, 403, 409, 413, 422)},
            },
            "get": {
                "summary": "List an org's runs, newest first",
                "parameters": [
                    {"name": "org_id", "in": "query", "required": True, "schema": _ID},
                    {"name": "limit", "in": "query", "schema": {"type": "integer",
                                                                "minimum": 1, "maximum": 1000}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "runs": {"type": "array", "items": _ref("Run")},
                    "next_cursor": {"type": ["string", "null"]}}}, "A page of runs"),
                    **_errors(403, 422)},
            },
        },
        "/api/v1/runs/{run_id}": {
            "get": {
                "summary": "Run snapshot",
                "parameters": [_RUN_ID_PARAM],
                "responses": {"200": _json(_ref("Run"), "The run"), **_errors(403, 404, 422)},
            },
        },
        "/api/v1/runs/{run_id}/events": {
            "post": {
                "summary": "Append events atomically",
                "parameters": [_RUN_ID_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["events"], "additionalProperties": False,
                    "properties": {
                        "events": {"type": "array", "minItems": 1,
                                   "maxItems": MAX_EVENTS_PER_APPEND,
                                   "items": _ref("EventInput")},
                        "expected_seq": {"type": ["integer", "null"], "minimum": 0},
                    },
                }}}},
                "responses": {"201": _json(_ref("Receipt"), "Appended"),
                              "200": _json(_ref("Receipt"), "Idempotent replay"),
                              **_errors(400, 403, 404, 409, 413, 422)},
            },
            "get": {
                "summary": "Read events after a seq",
                "parameters": [
                    _RUN_ID_PARAM,
                    {"name": "after_seq", "in": "query", "schema": _SEQ},
                    {"name": "limit", "in": "query", "schema": {"type": "integer",
                                                                "minimum": 1, "maximum": 1000}},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "run_id": _ID, "stream_id": {"type": "string"}, "last_seq": _SEQ,
                    "events": {"type": "array", "items": _ref("Event")},
                    "next_after_seq": {"type": ["integer", "null"]}}}, "A page of events"),
                    **_errors(403, 404, 422)},
            },
        },
    },
}


async def openapi(_: web.Request) -> web.Response:
    """GET /api/v1/openapi.json (no authentication)."""
    return web.json_response(SPEC)
