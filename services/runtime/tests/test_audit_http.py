"""Integration (real HTTP, real Postgres): every runtime write records its actor, and
an org's admins and owners read the org's audit (`GET /api/v1/audit`), only that org's,
while anyone else gets the same 403 whether the org exists or not."""

from __future__ import annotations

from typing import Any

import pytest
from grpc import aio

from openagents.runtime.v1 import events_pb2, runtime_service_pb2_grpc
from openagents.runtime.v1 import runtime_service_pb2 as pb

pytestmark = pytest.mark.integration


async def _audit(api: Any, token: str, org: str, **query: Any) -> tuple[int, Any]:
    params = "&".join(f"{name}={value}" for name, value in {"org_id": org, **query}.items())
    status, body, _ = await api.call("GET", f"/api/v1/audit?{params}", token)
    return status, body


async def _all_entries(api: Any, token: str, org: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        status, page = await _audit(api, token, org, **query)
        assert status == 200, page
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        after = page["next_after"]
        if after is None:
            return entries


async def test_writes_record_their_actor_and_admins_read_the_org_audit(
    api: Any, identity: Any, unique: str
) -> None:
    org, other = f"org{unique}", f"orx{unique}"
    desktop = identity.login({org: "member"}, surface="desktop")
    ios = identity.login({org: "member"}, surface="ios")
    admin = identity.login({org: "admin"}, surface="web")
    run, worker = f"run{unique}", f"w{unique}"
    assert (await api.call("POST", "/api/v1/runs", desktop, {"org_id": org, "run_id": run}))[
        0
    ] == 201
    assert (
        await api.call(
            "POST", f"/api/v1/runs/{run}/events", desktop, {"events": [{"type": "run.started"}]}
        )
    )[0] == 201
    assert (
        await api.call("POST", "/api/v1/workers", desktop, {"org_id": org, "worker_id": worker})
    )[0] == 201
    assert (await api.call("POST", f"/api/v1/workers/{worker}/stop", ios))[0] == 201
    # Another org's writes never show in this org's audit.
    stranger = identity.login({other: "owner"}, surface="web")
    assert (
        await api.call("POST", "/api/v1/runs", stranger, {"org_id": other, "run_id": f"x{unique}"})
    )[0] == 201

    entries = await _all_entries(api, admin, org, limit=1)
    assert [(e["subject_kind"], e["subject_id"], e["type"]) for e in entries] == [
        ("run", run, "run.created"),
        ("run", run, "run.started"),
        ("worker", worker, "worker.registered"),
        ("worker", worker, "worker.stopped"),
    ]
    desktop_user = entries[0]["actor"]
    assert desktop_user["kind"] == "user"
    assert desktop_user["surface"] == "desktop"
    assert desktop_user["device_id"] == "dev-1"
    assert desktop_user["session_id"].startswith("sess_")
    assert desktop_user["id"].startswith("user_")
    assert all(e["actor"] == desktop_user for e in entries[:3])
    stopper = entries[3]["actor"]
    assert (stopper["kind"], stopper["surface"]) == ("user", "ios")
    assert stopper["session_id"] != desktop_user["session_id"]
    assert {e["stream_id"] for e in entries} == {f"run:{run}", f"worker:{worker}"}

    # The other org's owner sees only the other org's events.
    theirs = await _all_entries(api, stranger, other, limit=100)
    assert [(e["subject_id"], e["type"]) for e in theirs] == [(f"x{unique}", "run.created")]


async def test_audit_is_for_org_admins_and_unknown_answers_like_forbidden(
    api: Any, identity: Any, unique: str
) -> None:
    org = f"org{unique}"
    owner = identity.login({org: "owner"}, surface="desktop")
    assert (await _audit(api, owner, org))[0] == 200
    refusals = [
        await _audit(api, identity.login({org: "member"}, surface="web"), org),
        await _audit(api, identity.login({org: "viewer"}, surface="web"), org),
        await _audit(api, identity.login({f"orx{unique}": "owner"}, surface="web"), org),
        await _audit(api, owner, f"nope{unique}"),
    ]
    assert [status for status, _ in refusals] == [403] * 4
    assert {body["error"]["code"] for _, body in refusals} == {"forbidden"}
    # The other org's refusal and the unknown org's say the same thing but the org id.
    assert refusals[2][1]["error"]["message"] == refusals[3][1]["error"]["message"].replace(
        f"nope{unique}", org
    )
    onyx = identity.login({org: "owner"}, surface="onyx")
    assert (await _audit(api, onyx, org))[1]["error"]["code"] == "forbidden_surface"
    assert (await api.call("GET", f"/api/v1/audit?org_id={org}", None))[0] == 401
    status, body = await _audit(api, owner, org, after="12.not-a-uuid")
    assert (status, body["error"]["field"]) == (422, "after")


async def test_service_writes_record_a_service_actor(
    api: Any, identity: Any, unique: str, grpc_target: str, service_metadata: Any
) -> None:
    org, run = f"org{unique}", f"run{unique}"
    owner = identity.login({org: "owner"}, surface="desktop")
    assert (await api.call("POST", "/api/v1/runs", owner, {"org_id": org, "run_id": run}))[0] == 201
    async with aio.insecure_channel(grpc_target) as channel:
        stub = runtime_service_pb2_grpc.RuntimeServiceStub(channel)
        request = pb.AppendEventsRequest(
            run_id=run, events=[events_pb2.EventInput(type="run.started")]
        )
        await stub.AppendEvents(request, metadata=service_metadata)
    status, page = await _audit(api, owner, org)
    assert status == 200
    assert [e["actor"]["kind"] for e in page["entries"]] == ["user", "service"]
    assert page["entries"][1]["actor"]["session_id"] == ""
