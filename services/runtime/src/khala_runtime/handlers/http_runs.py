"""HTTP routes of the run command API (`/api/v1/runs...`): decode, authorize,
call RunService, encode."""

from __future__ import annotations

import uuid

from aiohttp import web

from khala_common.http import read_json_object
from khala_runtime.auth import Authenticator
from khala_runtime.domain.access import Principal, require_access
from khala_runtime.domain.errors import ValidationError
from khala_runtime.domain.ids import is_valid_segment
from khala_runtime.domain.requests import (
    int_param,
    make_cursor,
    parse_append,
    parse_create_run,
    parse_cursor,
)
from khala_runtime.handlers.encoding import event_json, receipt_json, run_json
from khala_runtime.handlers.openapi import openapi
from khala_runtime.service import RunService

service_key = web.AppKey("runtime_service", RunService)
auth_key = web.AppKey("runtime_auth", Authenticator)

MAX_PAGE = 1000
REPLAY_HEADER = "Idempotent-Replayed"


def new_run_id() -> str:
    """A fresh run id (a valid topic segment)."""
    return f"run_{uuid.uuid4().hex}"


async def _principal(request: web.Request) -> Principal:
    return await request.app[auth_key].authenticate(request.headers.get("Authorization"))


def _run_id(request: web.Request) -> str:
    run_id = request.match_info["run_id"]
    if not is_valid_segment(run_id):
        raise ValidationError("run_id", "must match [A-Za-z0-9_-]{1,64}")
    return run_id


async def create_run(request: web.Request) -> web.Response:
    """POST /api/v1/runs: 201 with the new run, 200 for a repeated identical create."""
    principal = await _principal(request)
    create = parse_create_run(await read_json_object(request), new_run_id)
    require_access(principal, create.org_id, write=True)
    head, created = await request.app[service_key].create_run(create)
    return web.json_response(run_json(head), status=201 if created else 200)


async def append_events(request: web.Request) -> web.Response:
    """POST /api/v1/runs/{run_id}/events: 201 with a receipt, 200 for a replay."""
    principal = await _principal(request)
    run_id = _run_id(request)
    inputs, expected_seq = parse_append(await read_json_object(request))

    def authorize(org_id: str) -> None:
        require_access(principal, org_id, write=True)

    receipt, replayed = await request.app[service_key].append(
        run_id, inputs, expected_seq=expected_seq, authorize=authorize
    )
    response = web.json_response(receipt_json(receipt), status=200 if replayed else 201)
    response.headers[REPLAY_HEADER] = "true" if replayed else "false"
    return response


async def get_run(request: web.Request) -> web.Response:
    """GET /api/v1/runs/{run_id}: the run snapshot."""
    principal = await _principal(request)
    head = await request.app[service_key].get_run(
        _run_id(request), authorize=lambda org: require_access(principal, org, write=False)
    )
    return web.json_response(run_json(head))


async def read_events(request: web.Request) -> web.Response:
    """GET /api/v1/runs/{run_id}/events?after_seq=&limit=: events in order."""
    principal = await _principal(request)
    run_id = _run_id(request)
    query = request.query
    after_seq = int_param(query.get("after_seq"), "after_seq", default=0, minimum=0,
                          maximum=2**63 - 1)
    limit = int_param(query.get("limit"), "limit", default=100, minimum=1, maximum=MAX_PAGE)
    head, events = await request.app[service_key].read_events(
        run_id,
        after_seq=after_seq,
        limit=limit,
        authorize=lambda org: require_access(principal, org, write=False),
    )
    next_after = events[-1].stream_seq if events else after_seq
    return web.json_response(
        {
            "run_id": head.run_id,
            "stream_id": head.stream_id,
            "last_seq": head.last_seq,
            "events": [event_json(event) for event in events],
            "next_after_seq": next_after if next_after < head.last_seq else None,
        }
    )


async def list_runs(request: web.Request) -> web.Response:
    """GET /api/v1/runs?org_id=&limit=&cursor=: an org's runs, newest first."""
    principal = await _principal(request)
    org_id = request.query.get("org_id")
    if not is_valid_segment(org_id):
        raise ValidationError("org_id", "required; must match [A-Za-z0-9_-]{1,64}")
    assert org_id is not None
    require_access(principal, org_id, write=False)
    limit = int_param(request.query.get("limit"), "limit", default=100, minimum=1,
                      maximum=MAX_PAGE)
    before = parse_cursor(request.query.get("cursor"))
    runs = await request.app[service_key].list_runs(org_id, limit=limit, before=before)
    last = runs[-1] if len(runs) == limit else None
    return web.json_response(
        {
            "runs": [run_json(head) for head in runs],
            "next_cursor": make_cursor(last.created_at_ms, last.run_id) if last else None,
        }
    )


def add_routes(app: web.Application) -> None:
    """Mount the run routes."""
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/runs", create_run)
    app.router.add_get("/api/v1/runs", list_runs)
    app.router.add_get("/api/v1/runs/{run_id}", get_run)
    app.router.add_post("/api/v1/runs/{run_id}/events", append_events)
    app.router.add_get("/api/v1/runs/{run_id}/events", read_events)
