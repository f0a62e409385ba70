"""Contract: the live runtime answers every operation of its OpenAPI document
as the document says (schemathesis, every check it has): never a 5xx, only
documented statuses, the documented content types and headers, bodies matching
the schemas, schema-valid requests accepted and schema-invalid ones refused,
authentication enforced, unsupported methods answered 405.

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
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from khala_runtime.handlers.openapi import SPEC

pytestmark = pytest.mark.integration

load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())

CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            # A schema-valid request may still be refused by what no schema can state:
            # the stream's state machine or an expected_seq/idempotency conflict (409),
            # a subject another org owns or that does not exist (403/404, steering picks
            # them on purpose), an event's frame over the gateway's limit (413, the
            # document says so) and the org's append rate (429). Acceptance is anything
            # but a schema refusal (400/422).
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "413", "429"],
            },
        }
    }
)

schema = schemathesis.openapi.from_dict(SPEC, config=CONFIG)


def distinct_keys(case: Any) -> None:
    """Make a positive batch's idempotency keys distinct: a rule the document states in
    words (and answers 422) but JSON Schema cannot (uniqueness of one property)."""
    events = case.body.get("events") if isinstance(case.body, dict) else None
    if case.meta.generation.mode.is_negative or not isinstance(events, list):
        return
    seen: set[str] = set()
    for index, event in enumerate(events):
        key = event.get("idempotency_key") if isinstance(event, dict) else None
        if key:
            if key in seen:
                event["idempotency_key"] = key = f"{index}-{key}"[:255]
            seen.add(key)


def steer(case: Any, live: Any) -> None:
    """Point about two thirds of the cases at the caller's org and existing ids."""
    pick = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 3
    if pick == 2 or case.meta.generation.mode.is_negative:
        # A negative case's one invalid part may be the very value steering would
        # overwrite with a valid one (negative_data_rejection would then fail).
        return
    target = live.own if pick == 0 else live.foreign
    for name in ("run_id", "worker_id"):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = target[name]
    if isinstance(case.query, dict) and "org_id" in case.query:
        case.query["org_id"] = live.org_id
    if isinstance(case.body, dict) and "org_id" in case.body:
        case.body["org_id"] = live.org_id


def auth_headers(case: Any, token: str) -> dict[str, str]:
    """The member's token, unless the case is a negative one whose invalid part is
    a header (its missing or mangled Authorization must reach the service)."""
    mutations = getattr(case.meta.phase.data, "mutations", None) or ()
    if any(m.parameter_location.value == "header" for m in mutations):
        return {}
    return {"Authorization": f"Bearer {token}"}


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
    distinct_keys(case)
    response = case.call(
        base_url=threaded_runtime.base_url,
        headers=auth_headers(case, threaded_runtime.token),
        timeout=30,
    )
    case.validate_response(response, checks=ALL_CHECKS)
