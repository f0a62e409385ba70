"""Integration: `GET /api/v1/workers/{id}/events` pages like a run's events.

Regression: the route answered 405 although docs/protocol.md sends clients to
runtime's HTTP API to backfill a worker topic's events.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


async def test_worker_events_page_in_order_with_the_run_events_shape(
    api: Any, identity: Any, unique: str
) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    token = identity.login({org: "member"})
    status, worker, _ = await api.call(
        "POST", "/api/v1/workers", token, {"org_id": org, "worker_id": wid}
    )
    assert status == 201, worker
    events = [{"type": "worker.started"}] + [
        {"type": "worker.event", "payload": {"n": i}, "idempotency_key": f"k{i}"} for i in range(6)
    ]
    status, receipt, _ = await api.call(
        "POST", f"/api/v1/workers/{wid}/events", token, {"events": events}
    )
    assert status == 201 and receipt["last_seq"] == 8

    path = f"/api/v1/workers/{wid}/events"
    seen: list[dict[str, Any]] = []
    after: int | None = 0
    pages = 0
    while after is not None:
        status, page, _ = await api.call("GET", f"{path}?after_seq={after}&limit=3", token)
        assert status == 200, page
        assert (page["worker_id"], page["stream_id"], page["last_seq"]) == (wid, f"worker:{wid}", 8)
        seen.extend(page["events"])
        after = page["next_after_seq"]
        pages += 1
    assert pages == 3
    assert [e["stream_seq"] for e in seen] == list(range(1, 9))
    assert [e["type"] for e in seen[:2]] == ["worker.registered", "worker.started"]
    assert seen[3]["payload"] == {"n": 1} and seen[3]["idempotency_key"] == "k1"
    assert {e["subject_id"] for e in seen} == {wid} and {e["org_id"] for e in seen} == {org}

    # The same page answer as a run's: default limit, past the head, bad parameters.
    status, page, _ = await api.call("GET", path, token)
    assert status == 200 and len(page["events"]) == 8 and page["next_after_seq"] is None
    status, page, _ = await api.call("GET", f"{path}?after_seq=8", token)
    assert status == 200 and page["events"] == [] and page["next_after_seq"] is None
    for query in ("after_seq=-1", "after_seq=x", "limit=0", "limit=1001"):
        status, err, _ = await api.call("GET", f"{path}?{query}", token)
        assert (status, err["error"]["code"]) == (422, "validation_error"), query


async def test_worker_events_authorization(api: Any, identity: Any, unique: str) -> None:
    org, wid = f"org{unique}", f"w{unique}"
    owner = identity.login({org: "owner"})
    assert (await api.call("POST", "/api/v1/workers", owner, {"org_id": org, "worker_id": wid}))[
        0
    ] == 201
    path = f"/api/v1/workers/{wid}/events"
    viewer = identity.login({org: "viewer"}, surface="ios")
    assert (await api.call("GET", path, viewer))[0] == 200
    stranger = identity.login({f"other{unique}": "owner"})
    for who, target in ((stranger, path), (owner, f"/api/v1/workers/nosuch{unique}/events")):
        status, err, _ = await api.call("GET", target, who)
        assert (status, err["error"]["code"]) == (404, "worker_not_found")
    web = identity.login({org: "owner"}, surface="web")
    status, err, _ = await api.call("GET", path, web)
    assert (status, err["error"]["code"]) == (403, "forbidden_surface")
    status, err, _ = await api.call("GET", path, None)
    assert status == 401
