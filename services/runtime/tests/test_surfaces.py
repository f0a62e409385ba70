"""Integration: the surface matrix over real HTTP, per surface (docs/runtime.md).

web and desktop may create, append and act; ios may read and stop/resume workers;
onyx may only read run summaries. Roles still apply on top (owner here)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

ALLOWED = {
    # action: surfaces that may do it
    "create_run": {"web", "desktop"},
    "append_run": {"web", "desktop"},
    "get_run": {"web", "desktop", "ios", "onyx"},
    "list_runs": {"web", "desktop", "ios", "onyx"},
    "run_events": {"desktop", "ios"},
    "create_worker": {"web", "desktop"},
    "get_worker": {"web", "desktop", "ios"},
    "list_workers": {"web", "desktop", "ios"},
    "worker_events": {"web", "desktop"},
    "read_worker_events": {"desktop", "ios"},
    "heartbeat": {"web", "desktop"},
    "stop": {"web", "desktop", "ios"},
    "resume": {"web", "desktop", "ios"},
}


@pytest.mark.parametrize("surface", ["web", "desktop", "ios", "onyx", "tv", ""])
async def test_surface_matrix(api: Any, identity: Any, unique: str, surface: str) -> None:
    org, run_id, wid = f"org{unique}", f"run{unique}", f"w{unique}"
    setup = identity.login({org: "owner"})
    assert (await api.call("POST", "/api/v1/runs", setup, {"org_id": org, "run_id": run_id}))[
        0
    ] == 201
    assert (await api.call("POST", "/api/v1/workers", setup, {"org_id": org, "worker_id": wid}))[
        0
    ] == 201
    token = identity.login({org: "owner"}, surface=surface)
    run, worker = f"/api/v1/runs/{run_id}", f"/api/v1/workers/{wid}"
    calls: dict[str, tuple[str, str, Any]] = {
        "create_run": ("POST", "/api/v1/runs", {"org_id": org, "run_id": f"n{unique}"}),
        "append_run": ("POST", f"{run}/events", {"events": [{"type": "run.started"}]}),
        "get_run": ("GET", run, None),
        "list_runs": ("GET", f"/api/v1/runs?org_id={org}", None),
        "run_events": ("GET", f"{run}/events", None),
        "create_worker": ("POST", "/api/v1/workers", {"org_id": org, "worker_id": f"n{unique}"}),
        "get_worker": ("GET", worker, None),
        "list_workers": ("GET", f"/api/v1/workers?org_id={org}", None),
        "worker_events": ("POST", f"{worker}/events", {"events": [{"type": "worker.event"}]}),
        "read_worker_events": ("GET", f"{worker}/events", None),
        "heartbeat": ("POST", f"{worker}/heartbeat", None),
        "stop": ("POST", f"{worker}/stop", None),
        "resume": ("POST", f"{worker}/resume", None),
    }
    for action, (method, path, body) in calls.items():
        status, answer, _ = await api.call(method, path, token, body)
        if surface in ALLOWED[action]:
            assert status in (200, 201), (surface, action, answer)
        else:
            assert (status, answer["error"]["code"]) == (403, "forbidden_surface"), (
                surface,
                action,
                answer,
            )


async def test_a_forbidden_surface_cannot_probe_ids(api: Any, identity: Any, unique: str) -> None:
    onyx = identity.login({f"org{unique}": "owner"}, surface="onyx")
    # The surface refusal comes before any lookup: a known and an unknown id look alike.
    for path in (f"/api/v1/workers/w{unique}", f"/api/v1/workers/nosuch{unique}"):
        status, answer, _ = await api.call("GET", path, onyx)
        assert (status, answer["error"]["code"]) == (403, "forbidden_surface")
