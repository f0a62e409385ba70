"""Integration: run and worker appends share one path, which counts every append
by outcome (appended, replayed, or the error code) and every committed event."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.integration

# Per stream kind: (create body without org, an accepted batch, a batch the state
# machine refuses once the first one is in, the refusal's code, the not-found code).
KINDS: dict[str, tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]], str, str]] = {
    "runs": (
        {"title": "t"},
        [{"type": "run.started", "idempotency_key": "k"}, {"type": "run.output"}],
        [{"type": "run.started"}],
        "invalid_transition",
        "run_not_found",
    ),
    "workers": (
        {},
        [{"type": "worker.started", "idempotency_key": "k"}, {"type": "worker.event"}],
        [{"type": "worker.stopped"}, {"type": "worker.event"}],
        "worker_stopped",
        "worker_not_found",
    ),
}


def counted() -> dict[str, float]:
    """The append counters by outcome, and the committed events under `events`."""
    values = {
        sample.labels["outcome"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "khala_runtime_appends"
        for sample in metric.samples
        if sample.name == "khala_runtime_appends_total"
    }
    values["events"] = REGISTRY.get_sample_value("khala_runtime_events_appended_total") or 0.0
    return values


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_appends_are_counted_by_outcome(
    api: Any, identity: Any, unique: str, kind: str
) -> None:
    create, accepted, refused, refused_code, not_found = KINDS[kind]
    org, subject = f"org{unique}", f"s{unique}"
    token = identity.login({org: "member"})
    id_field = "run_id" if kind == "runs" else "worker_id"
    body = {"org_id": org, id_field: subject, **create}
    assert (await api.call("POST", f"/api/v1/{kind}", token, body))[0] == 201
    path = f"/api/v1/{kind}/{subject}/events"
    steps = [
        (path, {"events": accepted}, 201, "appended", 2),
        (path, {"events": accepted}, 200, "replayed", 0),
        (path, {"events": refused, "expected_seq": 1}, 409, "seq_conflict", 0),
        (path, {"events": refused}, 409, refused_code, 0),
        (f"/api/v1/{kind}/none{unique}/events", {"events": accepted}, 404, not_found, 0),
    ]
    for step_path, step_body, status, outcome, events in steps:
        before = counted()
        got, reply, _ = await api.call("POST", step_path, token, step_body)
        assert got == status, reply
        after = counted()
        assert after.get(outcome, 0.0) - before.get(outcome, 0.0) == 1, outcome
        assert after["events"] - before["events"] == events, outcome
