"""HTTP routes of the worker command API (`/api/v1/workers...`): decode,
authorize, call WorkerService, encode."""

from __future__ import annotations

from aiohttp import web

from khala_common.http import read_json_object
from khala_runtime.domain.access import Action, require_access, require_surface, subject_guard
from khala_runtime.domain.actor import user_actor
from khala_runtime.domain.requests import make_cursor, parse_cursor
from khala_runtime.domain.worker_state import WORKER_HEARTBEAT, WORKER_RESUMED, WORKER_STOPPED
from khala_runtime.handlers.context import (
    optional_json_object,
    path_id,
    principal,
    worker_service_key,
)
from khala_runtime.handlers.encoding import event_json, worker_json
from khala_runtime.handlers.http_append import Handler, append_route
from khala_runtime.handlers.schemas import (
    EventsQuery,
    ListQuery,
    decode_query,
    parse_command,
    parse_create_worker,
    parse_worker_append,
)
from khala_runtime.usecases.workers import worker_not_found

_COMMANDS = {"heartbeat": WORKER_HEARTBEAT, "stop": WORKER_STOPPED, "resume": WORKER_RESUMED}


async def create_worker(request: web.Request) -> web.Response:
    """POST /api/v1/workers: 201 with a new worker, 200 when reattaching to it."""
    caller = await principal(request)
    create = parse_create_worker(await read_json_object(request))
    require_access(caller, create.org_id, Action.WRITE)
    view, created = await request.app[worker_service_key].create_or_reattach(
        create, actor=user_actor(caller)
    )
    return web.json_response(worker_json(view), status=201 if created else 200)


append_events = append_route(
    worker_service_key,
    "worker_id",
    read_json_object,
    parse_worker_append,
    unknown=worker_not_found,
)
"""POST /api/v1/workers/{worker_id}/events: 201 with a receipt, 200 for a replay."""


def command(event_type: str) -> Handler:
    """POST /api/v1/workers/{worker_id}/heartbeat|stop|resume: one `event_type` event."""
    return append_route(
        worker_service_key,
        "worker_id",
        optional_json_object,
        lambda body: parse_command(body, event_type),
        unknown=worker_not_found,
        action=Action.WRITE if event_type == WORKER_HEARTBEAT else Action.STOP,
    )


async def get_worker(request: web.Request) -> web.Response:
    """GET /api/v1/workers/{worker_id}: the worker snapshot."""
    caller = await principal(request)
    require_surface(caller, Action.READ_WORKERS)
    worker_id = path_id(request, "worker_id")
    view = await request.app[worker_service_key].snapshot(
        worker_id,
        authorize=subject_guard(caller, Action.READ_WORKERS, lambda: worker_not_found(worker_id)),
    )
    return web.json_response(worker_json(view))


async def read_events(request: web.Request) -> web.Response:
    """GET /api/v1/workers/{worker_id}/events?after_seq=&limit=: events in order
    (the same paging and authorization as a run's events)."""
    caller = await principal(request)
    require_surface(caller, Action.READ_WORKER_EVENTS)
    worker_id = path_id(request, "worker_id")
    query = decode_query(EventsQuery, request.query)
    after_seq = query.after_seq
    head, events = await request.app[worker_service_key].read_events(
        worker_id,
        after_seq=after_seq,
        limit=query.limit,
        authorize=subject_guard(
            caller, Action.READ_WORKER_EVENTS, lambda: worker_not_found(worker_id)
        ),
    )
    next_after = events[-1].stream_seq if events else after_seq
    return web.json_response(
        {
            "worker_id": head.worker_id,
            "stream_id": head.stream_id,
            "last_seq": head.last_seq,
            "events": [event_json(event) for event in events],
            "next_after_seq": next_after if next_after < head.last_seq else None,
        }
    )


async def list_workers(request: web.Request) -> web.Response:
    """GET /api/v1/workers?org_id=&limit=&cursor=: an org's workers, newest first."""
    caller = await principal(request)
    query = decode_query(ListQuery, request.query)
    require_access(caller, query.org_id, Action.READ_WORKERS)
    before = parse_cursor(query.cursor)
    views = await request.app[worker_service_key].list_snapshots(
        query.org_id, limit=query.limit, before=before
    )
    last = views[-1].head if len(views) == query.limit else None
    return web.json_response(
        {
            "workers": [worker_json(view) for view in views],
            "next_cursor": make_cursor(last.created_at_ms, last.worker_id) if last else None,
        }
    )


def add_routes(app: web.Application) -> None:
    """Mount the worker routes."""
    app.router.add_post("/api/v1/workers", create_worker)
    app.router.add_get("/api/v1/workers", list_workers)
    app.router.add_get("/api/v1/workers/{worker_id}", get_worker)
    app.router.add_post("/api/v1/workers/{worker_id}/events", append_events)
    app.router.add_get("/api/v1/workers/{worker_id}/events", read_events)
    for name, event_type in _COMMANDS.items():
        app.router.add_post(f"/api/v1/workers/{{worker_id}}/{name}", command(event_type))
