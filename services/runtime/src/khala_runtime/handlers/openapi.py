"""The OpenAPI 3.1 description of runtime's HTTP API, served at
`GET /openapi.json` (and its alias `GET /api/v1/openapi.json`), DESIGN §6.

Every route is described, with every status it can answer; tests check the
live service against it with schemathesis.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khala_runtime.domain.heartbeat import HeartbeatState
from khala_runtime.domain.projection import ProjectionState
from khala_runtime.domain.requests import (
    MAX_EVENTS_PER_APPEND,
    MAX_KEY_CHARS,
    MAX_SEQ,
    MAX_TITLE_CHARS,
)
from khala_runtime.domain.run_state import RUN_CREATED, RUN_EVENT_TYPES, RunStatus
from khala_runtime.domain.worker_state import INGEST_EVENT_TYPES, WorkerStatus

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_SEQ = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                     "maximum": 1000}}
_CURSOR = {"name": "cursor", "in": "query", "schema": _STR}
_ORG_QUERY = {"name": "org_id", "in": "query", "required": True, "schema": _ID}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": _ID}
_WORKER_ID = {"name": "worker_id", "in": "path", "required": True, "schema": _ID}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}},
            **extra}


def _errors(*statuses: int) -> dict[str, Any]:
    """Refusals of an authenticated route: 401 and 503 always, plus `statuses`."""
    return {str(s): {"$ref": "#/components/responses/Error"} for s in (401, 503, *statuses)}


def _object(required: list[str], properties: dict[str, Any], *, closed: bool = False
            ) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_REPLAYED = {"headers": {"Idempotent-Replayed": {
    "description": "`true` when this is the original receipt of an idempotent replay",
    "schema": {"type": "string", "enum": ["true", "false"]}}}}


def _receipts() -> dict[str, Any]:
    return {"201": _json(_ref("Receipt"), "Appended", **_REPLAYED),
            "200": _json(_ref("Receipt"), "Idempotent replay: the original receipt",
                         **_REPLAYED)}


def _event_input(types: frozenset[str]) -> dict[str, Any]:
    return _object(["type"], {
        "type": {"type": "string", "enum": sorted(types)},
        "payload": {"type": ["object", "null"]},
        "idempotency_key": {"type": ["string", "null"], "maxLength": MAX_KEY_CHARS},
    }, closed=True)


def _append_body(item: str) -> dict[str, Any]:
    return _object(["events"], {
        "events": {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS_PER_APPEND,
                   "items": _ref(item)},
        "expected_seq": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEQ},
    }, closed=True)


_COMMAND_BODY = _object([], {
    "payload": {"type": ["object", "null"]},
    "idempotency_key": {"type": ["string", "null"], "maxLength": MAX_KEY_CHARS},
    "expected_seq": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEQ},
}, closed=True)

_SCHEMAS: dict[str, Any] = {
    "Projection": _object(["state", "lag_events"], {
        "state": {"type": "string", "enum": [s.value for s in ProjectionState]},
        "lag_events": {"type": ["integer", "null"], "minimum": 0},
    }),
    "Run": _object(
        ["run_id", "org_id", "stream_id", "title", "status", "last_seq", "chain_hash",
         "created_at_ms", "updated_at_ms", "projection"],
        {"run_id": _ID, "org_id": _ID, "stream_id": _STR, "title": _STR,
         "status": {"type": "string", "enum": [s.value for s in RunStatus]},
         "last_seq": _SEQ, "chain_hash": _STR, "created_at_ms": _INT, "updated_at_ms": _INT,
         "projection": _ref("Projection")},
    ),
    "Worker": _object(
        ["worker_id", "org_id", "stream_id", "status", "last_seq", "chain_hash",
         "last_heartbeat_at_ms", "heartbeat_state", "heartbeat_age_ms",
         "heartbeat_stale_after_ms", "created_at_ms", "updated_at_ms", "projection"],
        {"worker_id": _ID, "org_id": _ID, "stream_id": _STR,
         "status": {"type": "string", "enum": [s.value for s in WorkerStatus]},
         "last_seq": _SEQ, "chain_hash": _STR, "last_heartbeat_at_ms": _NULLABLE_INT,
         "heartbeat_state": {"type": "string", "enum": [s.value for s in HeartbeatState]},
         "heartbeat_age_ms": _NULLABLE_INT, "heartbeat_stale_after_ms": _INT,
         "created_at_ms": _INT, "updated_at_ms": _INT, "projection": _ref("Projection")},
    ),
    "RunEventInput": _event_input(RUN_EVENT_TYPES - {RUN_CREATED}),
    "WorkerEventInput": _event_input(INGEST_EVENT_TYPES),
    "Event": _object(
        ["event_id", "stream_id", "org_id", "subject_id", "stream_seq", "type", "payload",
         "idempotency_key", "occurred_at_ms", "chain_hash"],
        {"event_id": {"type": "string", "format": "uuid"}, "stream_id": _STR, "org_id": _ID,
         "subject_id": _ID, "stream_seq": _SEQ, "type": _STR, "payload": {"type": "object"},
         "idempotency_key": {"type": ["string", "null"]}, "occurred_at_ms": _INT,
         "chain_hash": _STR},
    ),
    "Receipt": _object(
        ["stream_id", "first_seq", "last_seq", "event_ids", "chain_hash"],
        {"stream_id": _STR, "first_seq": _SEQ, "last_seq": _SEQ,
         "event_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
         "chain_hash": _STR},
    ),
    "Error": _object(["error"], {"error": _object(["code", "message"], {
        "code": _STR, "message": _STR, "field": _STR, "current_seq": _SEQ,
        "keys": {"type": "array", "items": _STR}, "run_status": _STR, "worker_status": _STR,
    })}),
}


def _command(summary: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "parameters": [_WORKER_ID],
        "requestBody": _body(_COMMAND_BODY, required=False),
        "responses": {**_receipts(), **_errors(400, 403, 404, 409, 413, 422, 429)},
    }}


_OPEN: list[dict[str, list[str]]] = []  # no authentication
_PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "Liveness", "security": _OPEN, "responses": {
        "200": _json(_object(["status"], {"status": _STR}), "The process runs")}}},
    "/readyz": {"get": {"summary": "Readiness (Postgres, broker, not draining)",
                        "security": _OPEN, "responses": {
        "200": _json(_object(["status"], {"status": _STR}), "Ready"),
        "503": _json(_object(["status", "problems"], {
            "status": _STR, "problems": {"type": "array", "items": _STR}}), "Not ready")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "security": _OPEN, "responses": {
        "200": {"description": "Prometheus text format",
                "content": {"text/plain": {"schema": _STR}}}}}},
    "/openapi.json": {"get": {"summary": "This document", "security": _OPEN, "responses": {
        "200": _json({"type": "object"}, "The OpenAPI description")}}},
    "/api/v1/openapi.json": {"get": {"summary": "Alias of /openapi.json", "security": _OPEN,
                                     "responses": {"200": _json({"type": "object"},
                                                                "The OpenAPI description")}}},
    "/api/v1/runs": {
        "post": {
            "summary": "Create a run (appends run.created at stream_seq 1)",
            "requestBody": _body(_object(["org_id"], {
                "org_id": _ID, "run_id": _ID,
                "title": {"type": ["string", "null"], "maxLength": MAX_TITLE_CHARS}},
                closed=True)),
            "responses": {"201": _json(_ref("Run"), "Created"),
                          "200": _json(_ref("Run"), "Repeated identical create"),
                          **_errors(400, 403, 409, 413, 422)},
        },
        "get": {
            "summary": "List an org's runs, newest first",
            "parameters": [_ORG_QUERY, _LIMIT, _CURSOR],
            "responses": {"200": _json(_object(["runs", "next_cursor"], {
                "runs": {"type": "array", "items": _ref("Run")},
                "next_cursor": {"type": ["string", "null"]}}), "A page of runs"),
                **_errors(403, 422)},
        },
    },
    "/api/v1/runs/{run_id}": {"get": {
        "summary": "Run snapshot with projection status",
        "parameters": [_RUN_ID],
        "responses": {"200": _json(_ref("Run"), "The run"), **_errors(403, 404, 422)},
    }},
    "/api/v1/runs/{run_id}/events": {
        "post": {
            "summary": "Append events atomically",
            "parameters": [_RUN_ID],
            "requestBody": _body(_append_body("RunEventInput")),
            "responses": {**_receipts(), **_errors(400, 403, 404, 409, 413, 422, 429)},
        },
        "get": {
            "summary": "Read events after a seq",
            "parameters": [_RUN_ID, {"name": "after_seq", "in": "query", "schema": _SEQ},
                           _LIMIT],
            "responses": {"200": _json(_object(
                ["run_id", "stream_id", "last_seq", "events", "next_after_seq"], {
                    "run_id": _ID, "stream_id": _STR, "last_seq": _SEQ,
                    "events": {"type": "array", "items": _ref("Event")},
                    "next_after_seq": _NULLABLE_INT}), "A page of events"),
                **_errors(403, 404, 422)},
        },
    },
    "/api/v1/workers": {
        "post": {
            "summary": "Create or reattach a worker (idempotent by worker_id)",
            "requestBody": _body(_object(["org_id", "worker_id"],
                                         {"org_id": _ID, "worker_id": _ID}, closed=True)),
            "responses": {"201": _json(_ref("Worker"), "Registered"),
                          "200": _json(_ref("Worker"), "Reattached to the existing worker"),
                          **_errors(400, 403, 409, 413, 422)},
        },
        "get": {
            "summary": "List an org's workers, newest first",
            "parameters": [_ORG_QUERY, _LIMIT, _CURSOR],
            "responses": {"200": _json(_object(["workers", "next_cursor"], {
                "workers": {"type": "array", "items": _ref("Worker")},
                "next_cursor": {"type": ["string", "null"]}}), "A page of workers"),
                **_errors(403, 422)},
        },
    },
    "/api/v1/workers/{worker_id}": {"get": {
        "summary": "Worker snapshot with heartbeat and projection status",
        "parameters": [_WORKER_ID],
        "responses": {"200": _json(_ref("Worker"), "The worker"), **_errors(403, 404, 422)},
    }},
    "/api/v1/workers/{worker_id}/events": {
        "post": {
            "summary": "Ingest worker events atomically",
            "parameters": [_WORKER_ID],
            "requestBody": _body(_append_body("WorkerEventInput")),
            "responses": {**_receipts(), **_errors(400, 403, 404, 409, 413, 422, 429)},
        },
        "get": {
            "summary": "Read a worker's events after a seq",
            "parameters": [_WORKER_ID, {"name": "after_seq", "in": "query", "schema": _SEQ},
                           _LIMIT],
            "responses": {"200": _json(_object(
                ["worker_id", "stream_id", "last_seq", "events", "next_after_seq"], {
                    "worker_id": _ID, "stream_id": _STR, "last_seq": _SEQ,
                    "events": {"type": "array", "items": _ref("Event")},
                    "next_after_seq": _NULLABLE_INT}), "A page of events"),
                **_errors(403, 404, 422)},
        },
    },
    "/api/v1/workers/{worker_id}/heartbeat": _command("Append worker.heartbeat"),
    "/api/v1/workers/{worker_id}/stop": _command("Stop the worker (worker.stopped)"),
    "/api/v1/workers/{worker_id}/resume": _command("Resume a stopped worker (worker.resumed)"),
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Khala runtime API", "version": "1",
             "description": "Runs and codex workers; error codes in docs/runtime.md."},
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "bearerFormat": "JWT"}},
        "schemas": _SCHEMAS,
        "responses": {"Error": _json(_ref("Error"), "Refused; see docs/runtime.md for codes")},
    },
    "paths": _PATHS,
}


async def openapi(_: web.Request) -> web.Response:
    """GET /openapi.json (no authentication)."""
    return web.json_response(SPEC)


def add_routes(app: web.Application) -> None:
    """Mount the spec and its alias."""
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/api/v1/openapi.json", openapi)
