"""Integration: the served OpenAPI document describes every route of the app."""

from __future__ import annotations

from typing import Any

import pytest

from khala_runtime.app import Started

pytestmark = pytest.mark.integration


async def test_spec_is_served_at_both_paths(api: Any) -> None:
    status, spec, headers = await api.call("GET", "/openapi.json", None)
    assert status == 200 and spec["openapi"].startswith("3.1")
    assert headers["Content-Type"].startswith("application/json")
    status, alias, _ = await api.call("GET", "/api/v1/openapi.json", None)
    assert status == 200 and alias == spec


async def test_every_route_is_described(api: Any, runtime: Started) -> None:
    _, spec, _ = await api.call("GET", "/openapi.json", None)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in runtime.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == described
    worker_paths = {path for _, path in described if path.startswith("/api/v1/workers")}
    assert worker_paths == {
        "/api/v1/workers",
        "/api/v1/workers/{worker_id}",
        "/api/v1/workers/{worker_id}/events",
        "/api/v1/workers/{worker_id}/heartbeat",
        "/api/v1/workers/{worker_id}/stop",
        "/api/v1/workers/{worker_id}/resume",
    }


async def test_every_authenticated_operation_documents_its_refusals(api: Any) -> None:
    _, spec, _ = await api.call("GET", "/openapi.json", None)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if op.get("security") == []:
                continue
            codes = set(op["responses"])
            assert {"401", "403", "422", "503"} <= codes, (method, path)
            if method == "post":
                assert {"400", "413"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
