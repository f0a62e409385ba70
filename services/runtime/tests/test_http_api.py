"""Integration: the HTTP command API over real Postgres (and the real app)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from khala_runtime.domain.chain import GENESIS, verify_chain
from khala_runtime.domain.model import CreateRun
from khala_runtime.handlers.context import service_key
from khala_runtime.handlers.schemas import parse_append
from openagents.runtime.v1.events_pb2 import RuntimeEvent

pytestmark = pytest.mark.integration


def to_proto(event: dict[str, Any]) -> RuntimeEvent:
    """Rebuild the proto from the HTTP form, to verify the chain client-side."""
    return RuntimeEvent(
        event_id=event["event_id"],
        stream_id=event["stream_id"],
        org_id=event["org_id"],
        subject_id=event["subject_id"],
        stream_seq=event["stream_seq"],
        type=event["type"],
        payload_json=json.dumps(
            event["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode(),
        idempotency_key=event["idempotency_key"] or "",
        occurred_at_ms=event["occurred_at_ms"],
        chain_hash=event["chain_hash"],
    )


async def make_run(api: Any, token: str, org: str, run_id: str, title: str = "t") -> dict[str, Any]:
    status, body, _ = await api.call(
        "POST", "/api/v1/runs", token, {"org_id": org, "run_id": run_id, "title": title}
    )
    assert status == 201, body
    return body


async def test_create_and_three_batches_are_gapless_and_chained(
    api: Any, identity: Any, unique: str
) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    run = await make_run(api, token, org, run_id, "Build the thing")
    assert (run["status"], run["last_seq"], run["stream_id"]) == ("created", 1, f"run:{run_id}")

    batches = [
        [{"type": "run.started", "payload": {}, "idempotency_key": f"{unique}-1"}],
        [{"type": "run.output", "payload": {"text": f"line {i}"}} for i in range(3)],
        [{"type": "run.paused"}, {"type": "run.resumed"}, {"type": "run.completed"}],
    ]
    receipts = []
    for batch in batches:
        status, receipt, headers = await api.call(
            "POST", f"/api/v1/runs/{run_id}/events", token, {"events": batch}
        )
        assert status == 201, receipt
        assert headers["Idempotent-Replayed"] == "false"
        receipts.append(receipt)
    assert [(r["first_seq"], r["last_seq"]) for r in receipts] == [(2, 2), (3, 5), (6, 8)]
    assert all(r["stream_id"] == f"run:{run_id}" for r in receipts)
    assert all(len(r["event_ids"]) == r["last_seq"] - r["first_seq"] + 1 for r in receipts)

    status, page, _ = await api.call("GET", f"/api/v1/runs/{run_id}/events", token)
    assert status == 200
    events = page["events"]
    assert [e["stream_seq"] for e in events] == list(range(1, 9))
    assert events[0]["type"] == "run.created" and events[0]["payload"] == {
        "title": "Build the thing"
    }
    assert [e["event_id"] for e in events[1:]] == [i for r in receipts for i in r["event_ids"]]
    assert verify_chain([to_proto(e) for e in events], GENESIS)
    assert receipts[-1]["chain_hash"] == events[-1]["chain_hash"]
    times = [e["occurred_at_ms"] for e in events]
    assert times == sorted(times)

    status, snapshot, _ = await api.call("GET", f"/api/v1/runs/{run_id}", token)
    assert status == 200
    assert (snapshot["status"], snapshot["last_seq"]) == ("succeeded", 8)
    assert snapshot["chain_hash"] == receipts[-1]["chain_hash"]

    status, page, _ = await api.call(
        "GET", f"/api/v1/runs/{run_id}/events?after_seq=3&limit=2", token
    )
    assert [e["stream_seq"] for e in page["events"]] == [4, 5]
    assert page["next_after_seq"] == 5 and page["last_seq"] == 8


async def test_generated_run_id_and_repeated_create(api: Any, identity: Any, unique: str) -> None:
    org = f"org{unique}"
    token = identity.login({org: "admin"})
    status, run, _ = await api.call("POST", "/api/v1/runs", token, {"org_id": org})
    assert status == 201 and run["run_id"].startswith("run_") and run["title"] == ""

    body = {"org_id": org, "run_id": f"r{unique}", "title": "same"}
    assert (await api.call("POST", "/api/v1/runs", token, body))[0] == 201
    status, again, _ = await api.call("POST", "/api/v1/runs", token, body)
    assert status == 200 and again["last_seq"] == 1
    status, err, _ = await api.call("POST", "/api/v1/runs", token, {**body, "title": "other"})
    assert status == 409 and err["error"]["code"] == "run_exists"

    other = f"other{unique}"
    other_token = identity.login({other: "owner"})
    status, err, _ = await api.call(
        "POST",
        "/api/v1/runs",
        other_token,
        {"org_id": other, "run_id": f"r{unique}", "title": "same"},
    )
    assert status == 409 and err["error"]["code"] == "run_exists"
    status, page, _ = await api.call("GET", f"/api/v1/runs/r{unique}/events", token)
    assert len(page["events"]) == 1  # repeats appended nothing


async def test_expected_seq_conflict(api: Any, identity: Any, unique: str) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"
    status, receipt, _ = await api.call(
        "POST", path, token, {"events": [{"type": "run.started"}], "expected_seq": 1}
    )
    assert status == 201 and receipt["first_seq"] == 2
    status, err, _ = await api.call(
        "POST", path, token, {"events": [{"type": "run.paused"}], "expected_seq": 1}
    )
    assert status == 409
    assert err["error"]["code"] == "seq_conflict" and err["error"]["current_seq"] == 2


async def test_idempotent_repeat_and_changed_body(api: Any, identity: Any, unique: str) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"
    body = {
        "events": [
            {"type": "run.started", "idempotency_key": "start"},
            {"type": "run.output", "payload": {"text": "hi"}, "idempotency_key": "o1"},
        ],
        "expected_seq": 1,
    }
    status, first, _ = await api.call("POST", path, token, body)
    assert status == 201
    status, again, headers = await api.call("POST", path, token, body)
    assert status == 200 and again == first and headers["Idempotent-Replayed"] == "true"

    changed = {
        "events": [
            {"type": "run.started", "idempotency_key": "start"},
            {"type": "run.output", "payload": {"text": "bye"}, "idempotency_key": "o1"},
        ]
    }
    status, err, _ = await api.call("POST", path, token, changed)
    assert status == 409 and err["error"]["code"] == "idempotency_conflict"
    status, err, _ = await api.call(
        "POST", path, token, {"events": [{"type": "run.output", "idempotency_key": "o1"}]}
    )
    assert status == 409 and err["error"]["code"] == "idempotency_conflict"

    status, snapshot, _ = await api.call("GET", f"/api/v1/runs/{run_id}", token)
    assert snapshot["last_seq"] == 3


async def test_state_machine_refusals(api: Any, identity: Any, unique: str) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"

    async def append(*types: str) -> tuple[int, Any]:
        status, body, _ = await api.call(
            "POST", path, token, {"events": [{"type": t} for t in types]}
        )
        return status, body

    status, err = await append("run.paused")
    assert status == 409 and err["error"]["code"] == "invalid_transition"
    status, err = await append("run.created")
    assert status == 409 and err["error"]["code"] == "invalid_transition"
    status, err = await append("run.started", "run.started")
    assert status == 409 and err["error"]["code"] == "invalid_transition"
    status, err = await append("run.warp")
    assert status == 422 and err["error"]["code"] == "unknown_event_type"
    assert (await append("run.started", "run.canceled"))[0] == 201
    status, err = await append("run.output")
    assert status == 409 and err["error"]["code"] == "terminal_state"
    status, snapshot, _ = await api.call("GET", f"/api/v1/runs/{run_id}", token)
    assert (snapshot["status"], snapshot["last_seq"]) == ("canceled", 3)


async def test_bad_requests(api: Any, identity: Any, unique: str) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"
    status, err, _ = await api.call("POST", path, token, data=b"{not json")
    assert status == 400 and err["error"]["code"] == "bad_request"
    status, err, _ = await api.call("POST", path, token, data=b"[1]")
    assert status == 400
    big = {"events": [{"type": "run.output", "payload": {"text": "x" * 70_000}}]}
    status, err, _ = await api.call("POST", path, token, big)
    assert status == 413 and err["error"]["code"] == "payload_too_large"
    status, err, _ = await api.call("POST", path, token, {"events": [{"payload": {}}]})
    assert status == 422 and err["error"]["code"] == "validation_error"
    assert err["error"]["field"] == "events[0].type"
    status, err, _ = await api.call(
        "POST", "/api/v1/runs/nope/events", token, {"events": [{"type": "run.started"}]}
    )
    assert status == 404 and err["error"]["code"] == "run_not_found"
    status, err, _ = await api.call("GET", f"/api/v1/runs/{run_id}/events?limit=0", token)
    assert status == 422 and err["error"]["field"] == "limit"
    status, err, _ = await api.call("GET", "/api/v1/runs", token)
    assert status == 422 and err["error"]["field"] == "org_id"


async def test_auth(api: Any, identity: Any, unique: str) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    member = identity.login({org: "member"})
    await make_run(api, member, org, run_id)
    path = f"/api/v1/runs/{run_id}"
    body = {"events": [{"type": "run.started"}]}

    status, err, _ = await api.call("GET", path, None)
    assert status == 401 and err["error"]["code"] == "unauthorized"
    status, err, _ = await api.call("GET", path, "garbage")
    assert status == 401 and err["error"]["code"] == "unauthorized"
    user = f"u{unique}"
    identity.control.sessions[f"s{unique}"] = type(
        "S", (), {"user_id": user, "active": True, "memberships": {org: "owner"}}
    )()
    expired = identity.token(user, f"s{unique}", ttl_s=-120)
    status, err, _ = await api.call("GET", path, expired)
    assert status == 401 and err["error"]["code"] == "token_expired"
    wrong_aud = identity.token(user, f"s{unique}", audience="khala-gateway")
    assert (await api.call("GET", path, wrong_aud))[0] == 401
    wrong_iss = identity.token(user, f"s{unique}", issuer="https://evil.test")
    assert (await api.call("GET", path, wrong_iss))[0] == 401
    revoked = identity.login({org: "owner"}, active=False)
    status, err, _ = await api.call("GET", path, revoked)
    assert status == 401 and err["error"]["code"] == "unauthorized"

    outsider = identity.login({f"else{unique}": "owner"})
    for method, sub, payload in [
        ("GET", f"/api/v1/runs?org_id={org}", None),
        ("POST", "/api/v1/runs", {"org_id": org}),
    ]:
        status, err, _ = await api.call(method, sub, outsider, payload)
        assert (status, err["error"]["code"]) == (403, "forbidden"), (method, sub)
    # Another org's run answers exactly like a run that does not exist (no probing).
    missing = f"/api/v1/runs/nosuch{unique}"
    for method, suffix, payload in [
        ("GET", "", None),
        ("GET", "/events", None),
        ("POST", "/events", body),
    ]:
        foreign = await api.call(method, f"{path}{suffix}", outsider, payload)
        unknown = await api.call(method, f"{missing}{suffix}", outsider, payload)
        assert foreign[0] == unknown[0] == 404, (method, suffix)
        assert foreign[1]["error"]["code"] == unknown[1]["error"]["code"] == "run_not_found"
        assert foreign[1]["error"]["message"] == unknown[1]["error"]["message"].replace(
            f"nosuch{unique}", run_id
        )

    viewer = identity.login({org: "viewer"})
    assert (await api.call("GET", path, viewer))[0] == 200
    assert (await api.call("GET", f"{path}/events", viewer))[0] == 200
    status, err, _ = await api.call("POST", f"{path}/events", viewer, body)
    assert (status, err["error"]["code"]) == (403, "forbidden")
    assert (await api.call("POST", f"{path}/events", member, body))[0] == 201


async def test_revocation_takes_effect_within_cache_ttl(
    api: Any, identity: Any, unique: str
) -> None:
    org = f"org{unique}"
    token = identity.login({org: "viewer"})
    path = f"/api/v1/runs?org_id={org}"
    assert (await api.call("GET", path, token))[0] == 200
    session = next(
        s for s in identity.control.sessions.values() if s.memberships == {org: "viewer"}
    )
    session.active = False
    await asyncio.sleep(2.1)
    assert (await api.call("GET", path, token))[0] == 401


async def test_list_runs_paginates_newest_first(api: Any, identity: Any, unique: str) -> None:
    org = f"org{unique}"
    token = identity.login({org: "member"})
    ids = []
    for i in range(5):
        ids.append((await make_run(api, token, org, f"r{i}{unique}"))["run_id"])
    seen: list[str] = []
    cursor = ""
    while True:
        status, page, _ = await api.call(
            "GET", f"/api/v1/runs?org_id={org}&limit=2&cursor={cursor}", token
        )
        assert status == 200
        seen += [r["run_id"] for r in page["runs"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(ids) and len(seen) == 5


async def test_concurrent_appends_stay_gapless(api: Any, identity: Any, unique: str) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"
    assert (await api.call("POST", path, token, {"events": [{"type": "run.started"}]}))[0] == 201
    results = await asyncio.gather(
        *(
            api.call(
                "POST",
                path,
                token,
                {"events": [{"type": "run.output", "payload": {"text": str(i)}}] * 3},
            )
            for i in range(20)
        )
    )
    assert all(status == 201 for status, _, _ in results)
    ranges = sorted((r["first_seq"], r["last_seq"]) for _, r, _ in results)
    assert ranges == [(3 + 3 * i, 5 + 3 * i) for i in range(20)]
    _, page, _ = await api.call("GET", f"{path}?limit=1000", token)
    assert [e["stream_seq"] for e in page["events"]] == list(range(1, 63))
    assert verify_chain([to_proto(e) for e in page["events"]])


async def test_hundred_event_append_is_one_gapless_receipt(
    api: Any, identity: Any, unique: str
) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"
    await api.call("POST", path, token, {"events": [{"type": "run.started"}]})
    batch = {
        "events": [
            {"type": "run.output", "payload": {"text": f"line {i}"}, "idempotency_key": f"k{i}"}
            for i in range(100)
        ]
    }
    status, receipt, _ = await api.call("POST", path, token, batch)
    assert status == 201 and (receipt["first_seq"], receipt["last_seq"]) == (3, 102)
    assert len(receipt["event_ids"]) == 100


async def test_operational_routes(api: Any) -> None:
    status, body, _ = await api.call("GET", "/healthz", None)
    assert (status, body) == (200, {"status": "ok"})
    for _ in range(50):
        status, body, _ = await api.call("GET", "/readyz", None)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert (status, body) == (200, {"status": "ready"})
    async with api.session.get(api.base + "/metrics") as response:
        text = await response.text()
    for name in (
        "khala_runtime_appends_total",
        "khala_runtime_events_appended_total",
        "khala_runtime_outbox_backlog",
        "khala_runtime_outbox_publish_latency_seconds",
    ):
        assert name in text


async def test_concurrent_repeats_of_one_keyed_request_append_once(
    api: Any, identity: Any, unique: str
) -> None:
    org, run_id = f"org{unique}", f"run{unique}"
    token = identity.login({org: "member"})
    await make_run(api, token, org, run_id)
    path = f"/api/v1/runs/{run_id}/events"
    await api.call("POST", path, token, {"events": [{"type": "run.started"}]})
    body = {
        "events": [
            {"type": "run.output", "payload": {"text": str(i)}, "idempotency_key": f"race-{i}"}
            for i in range(50)
        ]
    }
    results = await asyncio.gather(*(api.call("POST", path, token, body) for _ in range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 11 + [201], statuses
    assert len({json.dumps(receipt, sort_keys=True) for _, receipt, _ in results}) == 1
    _, snapshot, _ = await api.call("GET", f"/api/v1/runs/{run_id}", token)
    assert snapshot["last_seq"] == 52


async def test_key_race_in_process_appends_once(runtime: Any, unique: str) -> None:
    service = runtime.app[service_key]
    run_id = f"run{unique}"
    await service.create_run(CreateRun(f"org{unique}", run_id, ""))
    await service.append(
        run_id, parse_append({"events": [{"type": "run.started"}]})[0], expected_seq=None
    )
    inputs, _ = parse_append(
        {"events": [{"type": "run.output", "idempotency_key": f"k{i}"} for i in range(100)]}
    )
    for _ in range(3):  # the pool's connections are warm after the first round
        results = await asyncio.gather(
            *(service.append(run_id, inputs, expected_seq=None) for _ in range(8))
        )
        assert len({receipt.SerializeToString() for receipt, _ in results}) == 1
        assert sum(not replayed for _, replayed in results) <= 1
    assert (await service.get_run(run_id)).last_seq == 102
