"""Long chaos run (`make test-chaos`, about ten minutes on 2 cores; never part of `make test`).

Like test_chaos_ci.py with more load (40 runs at 4 events/s, 300 clients on
three topics each, at least 1M frames checked) and a longer seeded fault
schedule: every service SIGKILLed (some twice), the projector killed inside its
commit window and runtime between outbox commit and publish confirm, the
private RabbitMQ and Postgres SIGKILLed and restarted twice each, and the
gateway drained. The servers are the test's own (scripts/servers.py), so the
run disturbs nothing else. The same checker applies: per client and topic
exactly seq 1..head, each frame the event runtime's log holds there, a valid
hash chain matching every receipt, every accepted write in the log, no HTTP 500.
KHALA_CHAOS_FAULTS replaces the schedule (`kill:gateway,crash:rabbitmq,...`).
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from .conftest import ARTIFACTS
from .scenario import Scenario, run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(2400)]

LONG = Scenario(
    runs=40,
    rate_per_run=4.0,
    subscribers=300,
    topics_per_subscriber=3,
    faults=[
        ("kill", "runtime"),
        ("commit-window", "projector"),
        ("kill", "gateway"),
        ("crash", "rabbitmq"),
        ("kill", "control"),
        ("before-confirm", "runtime"),
        ("crash", "postgres"),
        ("term", "gateway"),
        ("kill", "projector"),
        ("crash", "rabbitmq"),
        ("commit-window", "projector"),
        ("kill", "runtime"),
        ("crash", "postgres"),
        ("before-confirm", "runtime"),
        ("kill", "gateway"),
    ],
    steady_s=12.0,
    settle_timeout_s=600.0,
    seed=int(os.environ.get("KHALA_CHAOS_SEED", "17")),
)


def _scenario() -> Scenario:
    """LONG, or the schedule in KHALA_CHAOS_FAULTS (`kill:gateway,crash:rabbitmq,term:gateway`)."""
    spec = os.environ.get("KHALA_CHAOS_FAULTS", "")
    if not spec:
        return LONG
    faults = [(part.partition(":")[0], part.partition(":")[2]) for part in spec.split(",") if part]
    return replace(LONG, faults=faults)


async def test_service_broker_and_postgres_crashes_lose_nothing(
    private_stack, private_servers
) -> None:
    scenario = _scenario()
    outcome = await run_scenario(
        private_stack, scenario, ARTIFACTS / "chaos_long.json", private_servers
    )
    report = outcome.report
    print(
        f"\nchaos long (seed {scenario.seed}): {report['frames_checked']} frames checked against "
        f"{report['events_in_log']} events in runtime's log ({report['accepted_writes']} accepted "
        f"writes), {report['faults_injected']} faults injected, {report['http_500']} HTTP 500, "
        f"{report['clients']['connections']} connections, projector backlog when writes stopped "
        f"{report['topic_log_lag_at_stop_events']} events, settled in {report['settle_s']} s, "
        f"timeline {report['timeline']}"
    )
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems[:20])
    if scenario is LONG:
        assert report["frames_checked"] >= 1_000_000
