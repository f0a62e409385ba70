"""HTTP routes of the run command API (`/api/v1/runs...`): decode, authorize,
call RunService, encode."""

from __future__ import annotations

import uuid

from aiohttp import web

from khala_common.http import read_json_object
from khala_runtime.domain.access import Action, require_access, require_surface, subject_guard
from khala_runtime.domain.actor import user_actor
from khala_runtime.domain.requests import make_cursor, parse_cursor
from khala_runtime.handlers.context import path_id, principal, service_key
from khala_runtime.handlers.encoding import event_json, run_view_json
from khala_runtime.handlers.http_append import append_route
from khala_runtime.handlers.schemas import (
    EventsQuery,
    ListQuery,
    decode_query,
    parse_append,
    parse_create_run,
)
from khala_runtime.usecases.runs import run_not_found


def new_run_id() -> str:
    """A fresh run id (a valid topic segment)."""
    return f"run_{uuid.uuid4().hex}"


async def create_run(request: web.Request) -> web.Response:
    """POST /api/v1/runs: 201 with the new run, 200 for a repeated identical create."""
    caller = await principal(request)
    create = parse_create_run(await read_json_object(request), new_run_id)
    require_access(caller, create.org_id, Action.WRITE)
    service = request.app[service_key]
    head, created = await service.create_run(create, actor=user_actor(caller))
    view = await service.view_of(head)
    return web.json_response(run_view_json(view), status=201 if created else 200)


append_events = append_route(
    service_key, "run_id", read_json_object, parse_append, unknown=run_not_found
)
"""POST /api/v1/runs/{run_id}/events: 201 with a receipt, 200 for a replay."""


async def get_run(request: web.Request) -> web.Response:
    """GET /api/v1/runs/{run_id}: the run snapshot with its projection status."""
    caller = await principal(request)
    require_surface(caller, Action.READ_RUNS)
    run_id = path_id(request, "run_id")
    view = await request.app[service_key].snapshot(
        run_id,
        authorize=subject_guard(caller, Action.READ_RUNS, lambda: run_not_found(run_id)),
    )
    return web.json_response(run_view_json(view))


async def read_events(request: web.Request) -> web.Response:
    """GET /api/v1/runs/{run_id}/events?after_seq=&limit=: events in order."""
    caller = await principal(request)
    require_surface(caller, Action.READ_RUN_EVENTS)
    run_id = path_id(request, "run_id")
    query = decode_query(EventsQuery, request.query)
    after_seq = query.after_seq
    head, events = await request.app[service_key].read_events(
        run_id,
        after_seq=after_seq,
        limit=query.limit,
        authorize=subject_guard(caller, Action.READ_RUN_EVENTS, lambda: run_not_found(run_id)),
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
    caller = await principal(request)
    query = decode_query(ListQuery, request.query)
    require_access(caller, query.org_id, Action.READ_RUNS)
    before = parse_cursor(query.cursor)
    views = await request.app[service_key].list_snapshots(
        query.org_id, limit=query.limit, before=before
    )
    last = views[-1].head if len(views) == query.limit else None
    return web.json_response(
        {
            "runs": [run_view_json(view) for view in views],
            "next_cursor": make_cursor(last.created_at_ms, last.run_id) if last else None,
        }
    )


def add_routes(app: web.Application) -> None:
    """Mount the run routes."""
    app.router.add_post("/api/v1/runs", create_run)
    app.router.add_get("/api/v1/runs", list_runs)
    app.router.add_get("/api/v1/runs/{run_id}", get_run)
    app.router.add_post("/api/v1/runs/{run_id}/events", append_events)
    app.router.add_get("/api/v1/runs/{run_id}/events", read_events)
