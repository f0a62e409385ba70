"""Long chaos run (`make test-chaos`; never part of `make test`).

Like test_chaos_short.py with more load (40 runs at 2 events/s, 300 clients on
three topics each) and a longer fault schedule that also restarts the RabbitMQ
application (`rabbitmqctl stop_app && start_app`) and the Postgres cluster
(`pg_ctlcluster ... restart`). Both servers are shared with everything else on
the machine, which is why this test runs only when selected with `-m chaos`.
The same checker applies: per client and topic exactly seq 1..head, each frame
the event runtime's log holds there, and every accepted write in the log.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from .conftest import ARTIFACTS
from .scenario import Scenario, run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(1500)]

LONG = Scenario(
    runs=40,
    rate_per_run=2.0,
    subscribers=300,
    topics_per_subscriber=3,
    faults=[
        ("kill", "runtime"),
        ("kill", "projector"),
        ("kill", "gateway"),
        ("kill", "control"),
        ("rabbitmq", ""),
        ("term", "gateway"),
        ("postgres", ""),
        ("kill", "projector"),
        ("kill", "runtime"),
        ("kill", "gateway"),
    ],
    steady_s=8.0,
    settle_timeout_s=600.0,
)


def _scenario() -> Scenario:
    """LONG, or the schedule in KHALA_CHAOS_FAULTS (`kill:gateway,rabbitmq,postgres,term:gateway`)."""
    spec = os.environ.get("KHALA_CHAOS_FAULTS", "")
    if not spec:
        return LONG
    faults = [(part.partition(":")[0], part.partition(":")[2]) for part in spec.split(",") if part]
    return replace(LONG, faults=faults)


async def test_service_broker_and_postgres_restarts_lose_nothing(chaos_stack) -> None:
    outcome = await run_scenario(chaos_stack, _scenario(), ARTIFACTS / "chaos_long.json")
    report = outcome.report
    print(
        f"\nchaos long: {report['frames_checked']} frames checked against "
        f"{report['events_in_log']} events in runtime's log ({report['accepted_writes']} accepted "
        f"writes), {report['clients']['connections']} connections, projector backlog when writes stopped "
        f"{report['topic_log_lag_at_stop_events']} events, settled in {report['settle_s']} s, "
        f"timeline {report['timeline']}"
    )
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems[:20])
    assert report["frames_checked"] > 100_000
