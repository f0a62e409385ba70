"""Integration: the worker command API over real Postgres and RabbitMQ."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from khala_common.settings import DEFAULT_PARTITIONS
from khala_common.topology import partition_of
from openagents.runtime.v1.events_pb2 import STREAM_KIND_WORKER

pytestmark = pytest.mark.integration


async def make_worker(api: Any, token: str, org: str, worker_id: str) -> dict[str, Any]:
    status, body, _ = await api.call(
        "POST", "/api/v1/workers", token, {"org_id": org, "worker_id": worker_id}
    )
    assert status == 201, body
    return body


async def test_register_heartbeat_events_stop_resume(
    api: Any, identity: Any, unique: str, projector: Any
) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    worker = await make_worker(api, token, org, wid)
    assert (worker["status"], worker["last_seq"], worker["stream_id"]) == (
        "registered",
        1,
        f"worker:{wid}",
    )
    assert (
        worker["heartbeat_state"],
        worker["heartbeat_age_ms"],
        worker["last_heartbeat_at_ms"],
    ) == ("missing", None, None)
    assert worker["heartbeat_stale_after_ms"] == 60_000
    assert worker["projection"] == {"state": "lagging", "lag_events": 1}

    base = f"/api/v1/workers/{wid}"
    status, receipt, headers = await api.call("POST", f"{base}/heartbeat", token)
    assert status == 201 and (receipt["first_seq"], receipt["last_seq"]) == (2, 2)
    assert headers["Idempotent-Replayed"] == "false"
    status, snap, _ = await api.call("GET", base, token)
    assert status == 200 and snap["heartbeat_state"] == "fresh"
    assert snap["heartbeat_age_ms"] >= 0 and snap["last_heartbeat_at_ms"] > 0

    events = [
        {"type": "worker.started"},
        {"type": "worker.event", "payload": {"n": 1}},
        {"type": "worker.request.received", "payload": {"id": "r1"}},
        {"type": "worker.error", "payload": {"error": "boom"}},
    ]
    status, receipt, _ = await api.call("POST", f"{base}/events", token, {"events": events})
    assert status == 201 and (receipt["first_seq"], receipt["last_seq"]) == (3, 6)
    assert (await api.call("GET", base, token))[1]["status"] == "error"

    status, receipt, _ = await api.call(
        "POST", f"{base}/stop", token, {"payload": {"reason": "done"}}
    )
    assert status == 201 and receipt["last_seq"] == 7
    for path, body in [
        (f"{base}/heartbeat", None),
        (f"{base}/stop", None),
        (f"{base}/events", {"events": [{"type": "worker.event"}]}),
        (f"{base}/events", {"events": [{"type": "worker.started"}]}),
    ]:
        status, err, _ = await api.call("POST", path, token, body)
        assert (status, err["error"]["code"]) == (409, "worker_stopped"), path
    status, snap, _ = await api.call("GET", base, token)
    assert (snap["status"], snap["last_seq"]) == ("stopped", 7)

    status, receipt, _ = await api.call("POST", f"{base}/resume", token)
    assert status == 201 and receipt["last_seq"] == 8
    status, err, _ = await api.call("POST", f"{base}/resume", token)
    assert (status, err["error"]["code"]) == (409, "invalid_transition")
    assert (await api.call("GET", base, token))[1]["status"] == "running"

    projector[0].checkpoints[f"worker:{wid}"] = 8
    status, snap, _ = await api.call("GET", base, token)
    assert snap["projection"] == {"state": "in_sync", "lag_events": 0}


async def test_create_or_reattach_is_idempotent_by_worker_id(
    api: Any, identity: Any, unique: str
) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    first = await make_worker(api, token, org, wid)
    await api.call("POST", f"/api/v1/workers/{wid}/heartbeat", token)
    status, again, _ = await api.call(
        "POST", "/api/v1/workers", token, {"org_id": org, "worker_id": wid}
    )
    assert status == 200 and again["last_seq"] == 2
    assert again["created_at_ms"] == first["created_at_ms"]
    other = f"other{unique}"
    status, err, _ = await api.call(
        "POST",
        "/api/v1/workers",
        identity.login({other: "owner"}),
        {"org_id": other, "worker_id": wid},
    )
    assert (status, err["error"]["code"]) == (409, "worker_exists")
    token_viewer = identity.login({org: "viewer"})
    _, listing, _ = await api.call("GET", f"/api/v1/workers?org_id={org}", token_viewer)
    assert [w["worker_id"] for w in listing["workers"]] == [wid]


async def test_idempotency_and_expected_seq(api: Any, identity: Any, unique: str) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    await make_worker(api, token, org, wid)
    path = f"/api/v1/workers/{wid}/events"
    body = {
        "events": [
            {"type": "worker.started", "idempotency_key": "s"},
            {"type": "worker.event", "payload": {"x": 1}, "idempotency_key": "e"},
        ],
        "expected_seq": 1,
    }
    status, first, _ = await api.call("POST", path, token, body)
    assert status == 201
    status, again, headers = await api.call("POST", path, token, body)
    assert status == 200 and again == first and headers["Idempotent-Replayed"] == "true"
    changed = {
        "events": [
            {"type": "worker.started", "idempotency_key": "s"},
            {"type": "worker.event", "payload": {"x": 2}, "idempotency_key": "e"},
        ]
    }
    status, err, _ = await api.call("POST", path, token, changed)
    assert (status, err["error"]["code"]) == (409, "idempotency_conflict")
    assert err["error"]["keys"] == ["e", "s"]
    status, err, _ = await api.call(
        "POST", path, token, {"events": [{"type": "worker.event"}], "expected_seq": 1}
    )
    assert (status, err["error"]["code"], err["error"]["current_seq"]) == (409, "seq_conflict", 3)

    stop = {"idempotency_key": "stop-1"}
    status, stopped, _ = await api.call("POST", f"/api/v1/workers/{wid}/stop", token, stop)
    assert status == 201
    # A retried stop with its key replays the receipt although the worker is stopped now.
    status, replay, _ = await api.call("POST", f"/api/v1/workers/{wid}/stop", token, stop)
    assert status == 200 and replay == stopped
    status, err, _ = await api.call(
        "POST", f"/api/v1/workers/{wid}/heartbeat", token, {"expected_seq": 4}
    )
    assert (status, err["error"]["code"]) == (409, "worker_stopped")


async def test_heartbeat_state_goes_stale(
    api: Any, identity: Any, unique: str, migrated: str
) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    await make_worker(api, token, org, wid)
    await api.call("POST", f"/api/v1/workers/{wid}/heartbeat", token)
    conn = await asyncpg.connect(migrated)
    try:  # as if the last heartbeat arrived 61 s ago (stale after 60 s in these tests)
        await conn.execute(
            "UPDATE runtime.workers SET last_heartbeat_at_ms = last_heartbeat_at_ms - 61000 "
            "WHERE worker_id = $1",
            wid,
        )
    finally:
        await conn.close()
    status, snap, _ = await api.call("GET", f"/api/v1/workers/{wid}", token)
    assert status == 200 and snap["heartbeat_state"] == "stale"
    assert snap["heartbeat_age_ms"] > 60_000


async def test_projection_unknown_when_projector_fails(
    api: Any, identity: Any, unique: str, projector: Any
) -> None:
    org, wid, run_id = f"org{unique}", f"w{unique}", f"r{unique}"
    token = identity.login({org: "member"})
    await make_worker(api, token, org, wid)
    await api.call("POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id})
    projector[0].failing = True
    try:
        for path in (f"/api/v1/workers/{wid}", f"/api/v1/runs/{run_id}"):
            status, snap, _ = await api.call("GET", path, token)
            assert status == 200 and snap["projection"] == {"state": "unknown", "lag_events": None}
        status, listing, _ = await api.call("GET", f"/api/v1/workers?org_id={org}", token)
        assert status == 200 and listing["workers"][0]["projection"]["state"] == "unknown"
    finally:
        projector[0].failing = False
    projector[0].checkpoints[f"run:{run_id}"] = 1
    _, runs, _ = await api.call("GET", f"/api/v1/runs?org_id={org}", token)
    assert runs["runs"][0]["projection"] == {"state": "in_sync", "lag_events": 0}
    # One projector call per list, carrying runtime's head of each stream.
    last = projector[0].requests[-1]
    assert [(h.stream_id, h.head_seq) for h in last.streams] == [(f"run:{run_id}", 1)]


async def test_list_workers_paginates(api: Any, identity: Any, unique: str) -> None:
    org = f"org{unique}"
    token = identity.login({org: "admin"})
    ids = [(await make_worker(api, token, org, f"w{i}{unique}"))["worker_id"] for i in range(5)]
    seen: list[str] = []
    cursor = ""
    while True:
        status, page, _ = await api.call(
            "GET", f"/api/v1/workers?org_id={org}&limit=2&cursor={cursor}", token
        )
        assert status == 200
        seen += [w["worker_id"] for w in page["workers"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(ids) and len(seen) == 5


async def test_worker_authorization(api: Any, identity: Any, unique: str) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    member = identity.login({org: "member"})
    await make_worker(api, member, org, wid)
    base = f"/api/v1/workers/{wid}"
    writes = [
        ("POST", "/api/v1/workers", {"org_id": org, "worker_id": f"x{unique}"}),
        ("POST", f"{base}/heartbeat", None),
        ("POST", f"{base}/stop", None),
        ("POST", f"{base}/resume", None),
        ("POST", f"{base}/events", {"events": [{"type": "worker.event"}]}),
    ]
    reads = [("GET", base, None), ("GET", f"/api/v1/workers?org_id={org}", None)]

    for method, path, body in writes + reads:
        status, err, _ = await api.call(method, path, None, body)
        assert (status, err["error"]["code"]) == (401, "unauthorized"), path
    outsider = identity.login({f"else{unique}": "owner"})
    for method, path, body in writes + reads:
        status, err, _ = await api.call(method, path, outsider, body)
        # Another org's worker answers exactly like one that does not exist.
        expected = (404, "worker_not_found") if path.startswith(base) else (403, "forbidden")
        assert (status, err["error"]["code"]) == expected, path
        if path.startswith(base):
            unknown = await api.call(method, path.replace(wid, f"nosuch{unique}"), outsider, body)
            assert (unknown[0], unknown[1]["error"]["code"]) == expected, path
    viewer = identity.login({org: "viewer"})
    for method, path, body in writes:
        status, err, _ = await api.call(method, path, viewer, body)
        assert (status, err["error"]["code"]) == (403, "forbidden"), path
    for method, path, body in reads:
        assert (await api.call(method, path, viewer, body))[0] == 200, path
    owner = identity.login({org: "owner"})
    assert (await api.call("POST", f"{base}/heartbeat", owner))[0] == 201


async def test_worker_input_hygiene(api: Any, identity: Any, unique: str) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    await make_worker(api, token, org, wid)
    base = f"/api/v1/workers/{wid}"
    cases: list[tuple[str, str, Any, bytes | None, int, str, str | None]] = [
        ("POST", "/api/v1/workers", None, b"{oops", 400, "bad_request", None),
        ("POST", "/api/v1/workers", None, b"[]", 400, "bad_request", None),
        ("POST", "/api/v1/workers", {"org_id": org}, None, 422, "validation_error", "worker_id"),
        (
            "POST",
            "/api/v1/workers",
            {"org_id": org, "worker_id": "a b"},
            None,
            422,
            "validation_error",
            "worker_id",
        ),
        ("POST", f"{base}/events", {"events": []}, None, 422, "validation_error", "events"),
        (
            "POST",
            f"{base}/events",
            {"events": [{"type": "worker.registered"}]},
            None,
            422,
            "unknown_event_type",
            "events[0].type",
        ),
        (
            "POST",
            f"{base}/events",
            {"events": [{"type": "worker.error", "payload": {"error": 1}}]},
            None,
            422,
            "validation_error",
            "events[0].payload.error",
        ),
        (
            "POST",
            f"{base}/events",
            {"events": [{"type": "worker.event", "extra": 1}]},
            None,
            422,
            "validation_error",
            "events[0].extra",
        ),
        ("POST", f"{base}/heartbeat", {"payload": "x"}, None, 422, "validation_error", "payload"),
        ("POST", f"{base}/heartbeat", None, b"{bad", 400, "bad_request", None),
        (
            "POST",
            f"{base}/stop",
            {"idempotency_key": "\u0000"},
            None,
            422,
            "validation_error",
            "idempotency_key",
        ),
        ("POST", "/api/v1/workers/nope/heartbeat", None, None, 404, "worker_not_found", None),
        ("GET", "/api/v1/workers/nope", None, None, 404, "worker_not_found", None),
        ("GET", "/api/v1/workers/b%20d", None, None, 422, "validation_error", "worker_id"),
        ("GET", "/api/v1/workers", None, None, 422, "validation_error", "org_id"),
        (
            "GET",
            f"/api/v1/workers?org_id={org}&cursor=x",
            None,
            None,
            422,
            "validation_error",
            "cursor",
        ),
        (
            "GET",
            f"/api/v1/workers?org_id={org}&cursor=99999999999999999999.w",
            None,
            None,
            422,
            "validation_error",
            "cursor",
        ),
        (
            "GET",
            f"/api/v1/workers?org_id={org}&limit=5000",
            None,
            None,
            422,
            "validation_error",
            "limit",
        ),
    ]
    for method, path, body, data, status, code, field in cases:
        got, err, _ = await api.call(method, path, token, body, data=data)
        assert (got, err["error"]["code"]) == (status, code), (path, body, data, err)
        assert err["error"].get("field") == field, (path, err)
    big = {"events": [{"type": "worker.event", "payload": {"blob": "x" * 70_000}}]}
    status, err, _ = await api.call("POST", f"{base}/events", token, big)
    assert (status, err["error"]["code"]) == (413, "payload_too_large")
    status, snap, _ = await api.call("GET", base, token)
    assert snap["last_seq"] == 1  # nothing refused was appended


async def test_worker_events_are_published_in_order(
    api: Any, identity: Any, unique: str, open_tap: Any
) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    tap = await open_tap("partition.*", org=org)
    token = identity.login({org: "member"})
    await make_worker(api, token, org, wid)
    base = f"/api/v1/workers/{wid}"
    await api.call(
        "POST",
        f"{base}/events",
        token,
        {
            "events": [{"type": "worker.started"}]
            + [{"type": "worker.event", "payload": {"i": i}} for i in range(30)]
        },
    )
    await api.call("POST", f"{base}/heartbeat", token)
    await api.call("POST", f"{base}/stop", token)
    await api.call("POST", f"{base}/resume", token)
    received = await tap.take(35)
    assert [e.stream_seq for e in received] == list(range(1, 36))
    assert {(e.stream_id, e.org_id, e.stream_kind) for e in received} == {
        (f"worker:{wid}", org, STREAM_KIND_WORKER)
    }
    assert [e.type for e in received[-4:]] == [
        "worker.event",
        "worker.heartbeat",
        "worker.stopped",
        "worker.resumed",
    ]
    assert received[0].type == "worker.registered"
    partition = partition_of(f"worker:{wid}", DEFAULT_PARTITIONS)
    assert tap.carriers[0].routing_key == f"partition.{partition}"
