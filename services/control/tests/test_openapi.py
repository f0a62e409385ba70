"""Integration: the OpenAPI document is served, unauthenticated, at both paths,
and describes the dev IdP only where it is enabled."""

from __future__ import annotations

import pytest

from khala_control.app import ControlApp
from khala_control.handlers.openapi import DEV_IDP_PATHS, SPEC

pytestmark = pytest.mark.integration


async def test_document_is_served_at_both_paths_without_credentials(client) -> None:
    async with client.http.get(client.base_url + "/openapi.json") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        served = await response.json()
    assert served == SPEC and served["openapi"] == "3.1.0"
    status, alias = await client.call("GET", "/api/v1/openapi.json")
    assert status == 200 and alias == served


async def test_the_alias_is_not_forwarded_to_runtime(client) -> None:
    # /api/v1/* goes to runtime; the alias answers every method itself.
    for method in ("POST", "DELETE", "PUT"):
        status, body = await client.call(method, "/api/v1/openapi.json")
        assert (status, body["error"]["code"]) == (405, "method_not_allowed"), method


async def test_without_the_dev_idp_its_operations_are_left_out(
    oidc_control: ControlApp, http, make_client
) -> None:
    client = make_client(oidc_control.base_url, http)
    status, served = await client.call("GET", "/openapi.json")
    assert status == 200
    assert set(served["paths"]) == set(SPEC["paths"]) - DEV_IDP_PATHS
    status, body = await client.call("POST", "/api/dev/id-token", {"email": "a@example.com"})
    assert (status, body["error"]["code"]) == (404, "not_found")
