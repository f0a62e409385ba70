"""Chaos in CI (`make test-chaos-ci`, a few minutes on 2 cores).

The four services run on a Postgres and a RabbitMQ of this test's own
(scripts/servers.py), so the servers can be SIGKILLed and restarted too without
disturbing anyone. 12 runs receive events at a steady rate while 60 WebSocket
clients follow three run topics each. At seeded random moments (KHALA_CHAOS_SEED,
printed) runtime, projector, gateway and control are SIGKILLed and restarted,
RabbitMQ and Postgres are SIGKILLed whole and restarted on their data, the
projector dies inside a projection transaction (every write done, COMMIT not
sent) and runtime dies between outbox commit and publish confirm (test-only
hooks), and the gateway is drained with SIGTERM. The checker then requires, for
every client and topic, exactly seq 1..head with each frame equal to runtime's
record (chain hash included), a valid hash chain that every append receipt
matches, every accepted write in the log, and no HTTP 500 answer anywhere.
"""

from __future__ import annotations

import os

import pytest

from .conftest import ARTIFACTS
from .scenario import Scenario, run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.chaos_ci, pytest.mark.timeout(420)]

SEED = int(os.environ.get("KHALA_CHAOS_SEED", "17"))

CI = Scenario(
    runs=12,
    rate_per_run=4.0,
    subscribers=60,
    topics_per_subscriber=3,
    faults=[
        ("kill", "runtime"),
        ("commit-window", "projector"),
        ("crash", "rabbitmq"),
        ("kill", "gateway"),
        ("before-confirm", "runtime"),
        ("crash", "postgres"),
        ("kill", "projector"),
        ("kill", "control"),
        ("term", "gateway"),
    ],
    steady_s=4.0,
    settle_timeout_s=90.0,
    seed=SEED,
)


async def test_services_and_servers_killed_at_random_moments_lose_nothing(
    private_stack, private_servers
) -> None:
    outcome = await run_scenario(private_stack, CI, ARTIFACTS / "chaos_ci.json", private_servers)
    report = outcome.report
    print(
        f"\nchaos ci (seed {SEED}): {report['frames_checked']} frames checked against "
        f"{report['events_in_log']} events in runtime's log ({report['accepted_writes']} accepted "
        f"writes), {report['faults_injected']} faults injected, {report['http_500']} HTTP 500, "
        f"{report['clients']['connections']} connections, settled in {report['settle_s']} s, "
        f"timeline {report['timeline']}"
    )
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems[:20])
    assert report["faults_injected"] == len(CI.faults)
    assert all(f.get("crashed_itself", True) for f in report["timeline"]), report["timeline"]
    assert report["frames_checked"] > 5_000
