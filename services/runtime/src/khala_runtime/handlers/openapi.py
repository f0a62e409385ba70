"""The OpenAPI 3.1 description of runtime's HTTP API, served at
`GET /openapi.json` (and its alias `GET /api/v1/openapi.json`), DESIGN §6.

Generated, not written: every schema comes from the pydantic models the routes
decode through (handlers/schemas.py), and the operations from one table below.
Refusals a schema cannot state are documented per status with their error
codes (from errors.HTTP_STATUS): an event's frame size (413), the state
machines and seq/idempotency conflicts (409), the rate limit (429). Tests check
the live service against it with schemathesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from khala_common.json_schema import nullable_types
from khala_runtime.handlers.errors import HTTP_STATUS
from khala_runtime.handlers.schemas import (
    SEGMENT_PATTERN,
    AuditPage,
    AuditQuery,
    CommandBody,
    CreateRunBody,
    CreateWorkerBody,
    Error,
    EventsQuery,
    Health,
    ListQuery,
    Receipt,
    Run,
    RunAppendBody,
    RunEvents,
    RunPage,
    Worker,
    WorkerAppendBody,
    WorkerEvents,
    WorkerPage,
)

_REF = "#/components/schemas/{model}"
# Codes raised outside the domain (khala_common, the authenticator, the edges).
_EDGE_CODES: dict[int, tuple[str, ...]] = {
    400: ("bad_request",),
    401: ("unauthorized", "token_expired", "token_revoked"),
    413: ("payload_too_large",),
    429: ("rate_limited",),
    503: ("control_unavailable",),
}
_WHY: dict[int, str] = {
    400: "The body is not a JSON object",
    401: "No valid access token",
    403: "The caller may not do this, or not in this org",
    404: "No such run or worker (or not in the caller's orgs)",
    409: "A state transition, expected_seq or idempotency-key conflict",
    413: "The body is too large, or an event's frame could exceed the gateway's "
    "max_frame_bytes on khala.v1+json",
    422: "The request breaks the schema (or names an unknown event type)",
    429: "The org's append rate is exceeded (Retry-After says when to retry)",
    503: "The session cannot be verified right now",
}
_PAGE_REFUSALS = (403, 422)
_WRITE_REFUSALS = (400, 403, 409, 413, 422)
_APPEND_REFUSALS = (*_WRITE_REFUSALS, 404, 429)
_REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the original receipt of an idempotent replay",
        "schema": {"type": "string", "enum": ["true", "false"]},
    }
}


@dataclass(frozen=True)
class Op:
    """One operation: its models, its answers and its refusals."""

    method: str
    path: str
    summary: str
    ok: dict[int, tuple[type[BaseModel] | None, str]]
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    refusals: tuple[int, ...] = ()
    public: bool = False
    headers: dict[str, Any] = field(default_factory=dict)


def _receipt(what: str) -> dict[int, tuple[type[BaseModel] | None, str]]:
    return {201: (Receipt, what), 200: (Receipt, "Idempotent replay: the original receipt")}


def _command(name: str, summary: str) -> Op:
    return Op(
        "post",
        f"/api/v1/workers/{{worker_id}}/{name}",
        summary,
        _receipt("Appended"),
        body=CommandBody,
        body_required=False,
        refusals=_APPEND_REFUSALS,
        headers=_REPLAYED_HEADER,
    )


OPERATIONS: tuple[Op, ...] = (
    Op("get", "/healthz", "Liveness", {200: (Health, "The process runs")}, public=True),
    Op(
        "get",
        "/readyz",
        "Readiness (Postgres, broker, not draining)",
        {200: (Health, "Ready"), 503: (Health, "Not ready")},
        public=True,
    ),
    Op(
        "get",
        "/metrics",
        "Prometheus metrics",
        {200: (None, "Prometheus text format")},
        public=True,
    ),
    Op(
        "get",
        "/openapi.json",
        "This document",
        {200: (None, "The OpenAPI description")},
        public=True,
    ),
    Op(
        "get",
        "/api/v1/openapi.json",
        "Alias of /openapi.json",
        {200: (None, "The OpenAPI description")},
        public=True,
    ),
    Op(
        "post",
        "/api/v1/runs",
        "Create a run (appends run.created at stream_seq 1)",
        {201: (Run, "Created"), 200: (Run, "Repeated identical create")},
        body=CreateRunBody,
        refusals=_WRITE_REFUSALS,
    ),
    Op(
        "get",
        "/api/v1/runs",
        "List an org's runs, newest first",
        {200: (RunPage, "A page of runs")},
        query=ListQuery,
        refusals=_PAGE_REFUSALS,
    ),
    Op(
        "get",
        "/api/v1/runs/{run_id}",
        "Run snapshot with projection status",
        {200: (Run, "The run")},
        refusals=(403, 404, 422),
    ),
    Op(
        "post",
        "/api/v1/runs/{run_id}/events",
        "Append events atomically",
        _receipt("Appended"),
        body=RunAppendBody,
        refusals=_APPEND_REFUSALS,
        headers=_REPLAYED_HEADER,
    ),
    Op(
        "get",
        "/api/v1/runs/{run_id}/events",
        "Read events after a seq",
        {200: (RunEvents, "A page of events")},
        query=EventsQuery,
        refusals=(403, 404, 422),
    ),
    Op(
        "post",
        "/api/v1/workers",
        "Create or reattach a worker (idempotent by worker_id)",
        {201: (Worker, "Registered"), 200: (Worker, "Reattached to the existing worker")},
        body=CreateWorkerBody,
        refusals=_WRITE_REFUSALS,
    ),
    Op(
        "get",
        "/api/v1/workers",
        "List an org's workers, newest first",
        {200: (WorkerPage, "A page of workers")},
        query=ListQuery,
        refusals=_PAGE_REFUSALS,
    ),
    Op(
        "get",
        "/api/v1/workers/{worker_id}",
        "Worker snapshot with heartbeat and projection status",
        {200: (Worker, "The worker")},
        refusals=(403, 404, 422),
    ),
    Op(
        "post",
        "/api/v1/workers/{worker_id}/events",
        "Ingest worker events atomically",
        _receipt("Appended"),
        body=WorkerAppendBody,
        refusals=_APPEND_REFUSALS,
        headers=_REPLAYED_HEADER,
    ),
    Op(
        "get",
        "/api/v1/workers/{worker_id}/events",
        "Read a worker's events after a seq",
        {200: (WorkerEvents, "A page of events")},
        query=EventsQuery,
        refusals=(403, 404, 422),
    ),
    _command("heartbeat", "Append worker.heartbeat"),
    _command("stop", "Stop the worker (worker.stopped)"),
    _command("resume", "Resume a stopped worker (worker.resumed)"),
    Op(
        "get",
        "/api/v1/audit",
        "An org's runtime actions with their actors (org admins and owners)",
        {200: (AuditPage, "A page of the audit, oldest first")},
        query=AuditQuery,
        refusals=_PAGE_REFUSALS,
    ),
)


def _models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"Error": Error}
    for op in OPERATIONS:
        for model in (op.body, *(m for m, _ in op.ok.values())):
            if model is not None:
                seen[model.__name__] = model
    return list(seen.values())


def _schemas() -> dict[str, Any]:
    models = _models()
    # Request models (closed or lax) as read, response models as written.
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if m.model_config.get("extra") else "serialization") for m in models
    ]
    _, top = models_json_schema(keyed, ref_template=_REF)
    return {name: nullable_types(schema) for name, schema in top["$defs"].items()}


def _codes(status: int) -> list[str]:
    domain = [code for code, s in HTTP_STATUS.items() if s == status]
    return sorted({*domain, *_EDGE_CODES.get(status, ())})


def _refusal(status: int) -> dict[str, Any]:
    codes = ", ".join(f"`{code}`" for code in _codes(status))
    response: dict[str, Any] = {
        "description": f"{_WHY[status]}. Codes: {codes} (docs/runtime.md).",
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def _answer(op: Op, model: type[BaseModel] | None, description: str) -> dict[str, Any]:
    if model is None:
        media = "text/plain" if op.path == "/metrics" else "application/json"
        schema: dict[str, Any] = {"type": "string" if media == "text/plain" else "object"}
    else:
        media, schema = "application/json", {"$ref": _REF.format(model=model.__name__)}
    answer: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if op.headers:
        answer["headers"] = op.headers
    return answer


def _parameters(op: Op) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": SEGMENT_PATTERN},
        }
        for name in ("run_id", "worker_id")
        if f"{{{name}}}" in op.path
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=_REF)
        for name, prop in schema["properties"].items():
            # A query value is a string or absent, never JSON null.
            prop = next((p for p in prop.get("anyOf", []) if p.get("type") != "null"), prop)
            prop = {k: v for k, v in prop.items() if k not in ("title", "anyOf")}
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", ()),
                    "schema": prop,
                }
            )
    return params


def _operation(op: Op) -> dict[str, Any]:
    refusals = () if op.public else (401, 503, *op.refusals)
    operation: dict[str, Any] = {
        "summary": op.summary,
        "responses": {
            **{str(s): _answer(op, m, d) for s, (m, d) in op.ok.items()},
            **{str(s): _refusal(s) for s in sorted(refusals)},
        },
    }
    if op.public:
        operation["security"] = []
    if params := _parameters(op):
        operation["parameters"] = params
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=op.body.__name__)}}
            },
        }
    return operation


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return paths


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Khala runtime API",
        "version": "1",
        "description": "Runs and codex workers; error codes in docs/runtime.md.",
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": _schemas(),
    },
    "paths": _paths(),
}


async def openapi(_: web.Request) -> web.Response:
    """GET /openapi.json (no authentication)."""
    return web.json_response(SPEC)


def add_routes(app: web.Application) -> None:
    """Mount the spec and its alias."""
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/api/v1/openapi.json", openapi)
