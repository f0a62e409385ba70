"""The OpenAPI document against the app's route table and error mapping (no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from khala_common.http import Readiness
from khala_control.handlers.errors import HTTP_STATUS
from khala_control.handlers.http_app import build_http_app
from khala_control.handlers.openapi import ALIAS, DEV_IDP_PATHS, SPEC, UNDESCRIBED, document

# Codes answered by khala_common's error middleware rather than ControlError.
COMMON_CODES = {"bad_request": 400, "not_found": 404, "payload_too_large": 413}
METHODS = {"get", "put", "post", "delete", "patch"}


def _app(*, dev_idp: bool, dashboard: Path | None) -> web.Application:
    # The route table is all these tests read: no service behind the routes is called.
    unused = cast(Any, object())
    return build_http_app(
        Readiness(),
        sessions=unused,
        orgs=unused,
        minter=unused,
        keyring=unused,
        dev_idp=unused if dev_idp else None,
        dashboard_dir=str(dashboard) if dashboard else None,
    )


def _served(app: web.Application) -> set[tuple[str, str]]:
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    # The alias takes every method (so none reaches the /api/v1 proxy) and serves GET.
    assert ("*", ALIAS) in served
    return (served - {("*", ALIAS)}) | {("get", ALIAS)}


def _described(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in spec["paths"].items() for method in ops}


@pytest.mark.parametrize("dev_idp", [True, False])
def test_every_route_is_described_and_every_operation_is_routed(
    tmp_path: Path, dev_idp: bool
) -> None:
    served = _served(_app(dev_idp=dev_idp, dashboard=tmp_path))
    left_out = {(method, path) for method, path in served if path in UNDESCRIBED}
    assert {path for _, path in left_out} == UNDESCRIBED  # each exclusion names a real route
    assert served - left_out == _described(document(dev_idp=dev_idp))


def test_without_dev_idp_its_operations_are_not_described() -> None:
    paths = set(document(dev_idp=False)["paths"])
    assert DEV_IDP_PATHS <= set(SPEC["paths"])
    assert not paths & DEV_IDP_PATHS
    assert paths | DEV_IDP_PATHS == set(SPEC["paths"])
    assert _served(_app(dev_idp=False, dashboard=None)) == _described(document(dev_idp=False)) | {
        ("*", "/api/v1/{tail}")
    }


def _refusals() -> list[tuple[str, str, int, str]]:
    found = []
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                schema = response["content"].get("application/json", {}).get("schema", {})
                error = schema.get("properties", {}).get("error")
                for code in (error or {}).get("properties", {}).get("code", {}).get("enum", []):
                    found.append((method, path, int(status), code))
    return found


def test_each_documented_error_code_has_its_mapped_status() -> None:
    refusals = _refusals()
    assert len(refusals) > 40
    for method, path, status, code in refusals:
        assert HTTP_STATUS.get(code, COMMON_CODES.get(code)) == status, (method, path, code)
        assert status >= 400


def test_every_control_error_code_is_documented_somewhere() -> None:
    documented = {code for *_, code in _refusals()}
    assert set(HTTP_STATUS) <= documented
    assert set(COMMON_CODES) <= documented


def test_refusal_headers_and_authentication() -> None:
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            assert method in METHODS
            responses = op["responses"]
            if "401" in responses:
                assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
            if "429" in responses:
                assert "Retry-After" in responses["429"]["headers"], (method, path)
            if op.get("security") != []:
                # Authenticated: the bearer token is checked before anything else.
                assert set(
                    responses["401"]["content"]["application/json"]["schema"]["properties"][
                        "error"
                    ]["properties"]["code"]["enum"]
                ) == {"unauthorized", "token_expired"}, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= set(responses), (method, path)


def test_rules_the_code_enforces_are_in_the_document() -> None:
    """The document and the decoding share the models: a rule in one is in the other."""
    from khala_common.http import ApiError
    from khala_control.domain.validation import EMAIL_PATTERN, MAX_DEVICE_ID
    from khala_control.handlers.decode import decode

    schemas = SPEC["components"]["schemas"]
    org_id = schemas["CreateOrgRequest"]["properties"]["org_id"]
    assert org_id["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert schemas["IdTokenRequest"]["properties"]["email"]["pattern"] == EMAIL_PATTERN
    device_id = schemas["SignInRequest"]["properties"]["device_id"]
    assert device_id["maxLength"] == MAX_DEVICE_ID and "\\u0000" in device_id["pattern"]
    assert set(schemas["SignInRequest"]["properties"]["surface"]["enum"]) == {
        "web",
        "desktop",
        "ios",
        "onyx",
    }
    audit = SPEC["paths"]["/api/orgs/{org_id}/audit"]["get"]["parameters"]
    limit = next(p for p in audit if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
    from khala_control.handlers.schemas import CreateOrgRequest

    for bad in ("a.b", "", "x" * 65, "acme\n"):
        with pytest.raises(ApiError):
            decode(CreateOrgRequest, {"org_id": bad, "name": "N"})


def test_the_served_document_lists_the_deployments_surfaces() -> None:
    spec = document(dev_idp=False, surfaces={"web", "kiosk"})
    surface = spec["components"]["schemas"]["SyncTokenRequest"]["properties"]["surface"]
    assert surface["enum"] == ["kiosk", "web", None]
