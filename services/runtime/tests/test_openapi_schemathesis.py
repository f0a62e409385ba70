"""Contract: the live runtime answers every operation of its OpenAPI document
as the document says (schemathesis): never a 5xx, only documented statuses,
the documented content types and headers, and bodies matching the schemas.

The runtime (with control and projector doubles) runs in its own thread and
event loop (`threaded_runtime`), because schemathesis calls it synchronously.
Requests carry a member's access token of one org. Generated ids would
almost never name something that exists, so part of the cases are steered
(deterministically) to the caller's org and to an existing run and worker of
that org or of another one: successes, 403s and 409s are exercised too.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from khala_runtime.handlers.openapi import SPEC

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_dict(SPEC)


def steer(case: Any, live: Any) -> None:
    """Point about two thirds of the cases at the caller's org and existing ids."""
    pick = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 3
    if pick == 2:
        return
    target = live.own if pick == 0 else live.foreign
    for name in ("run_id", "worker_id"):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = target[name]
    if isinstance(case.query, dict) and "org_id" in case.query:
        case.query["org_id"] = live.org_id
    if isinstance(case.body, dict) and "org_id" in case.body:
        case.body["org_id"] = live.org_id


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_runtime_conforms_to_its_openapi(case: Any, threaded_runtime: Any) -> None:
    steer(case, threaded_runtime)
    response = case.call(
        base_url=threaded_runtime.base_url,
        headers={"Authorization": f"Bearer {threaded_runtime.token}"},
        timeout=30,
    )
    case.validate_response(response, checks=CHECKS)
