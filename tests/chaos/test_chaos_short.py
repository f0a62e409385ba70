"""Short chaos run (part of `make test`, about a minute and a half on 2 cores).

20 runs receive a few events per second each while 120 WebSocket clients follow
three run topics each. Meanwhile runtime, projector, gateway and control are
each killed with SIGKILL and restarted, and the gateway is also stopped
gracefully (drain: Reconnect + close 1012). Clients reconnect from their own
cursors. The checker then requires, for every client and topic, that the frames
of all its connections put together are exactly seq 1..head, each carrying the
event runtime's log holds at that position, and that every write runtime
accepted is in its log. The shared broker and Postgres are not touched here
(see test_chaos_long.py).
"""

from __future__ import annotations

import pytest

from .conftest import ARTIFACTS
from .scenario import Scenario, run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SHORT = Scenario(
    runs=20,
    rate_per_run=3.0,
    subscribers=120,
    topics_per_subscriber=3,
    faults=[
        ("kill", "runtime"),
        ("kill", "projector"),
        ("kill", "gateway"),
        ("kill", "control"),
        ("term", "gateway"),
    ],
    steady_s=4.0,
    settle_timeout_s=60.0,
)


async def test_kill_each_service_loses_duplicates_and_reorders_nothing(chaos_stack) -> None:
    outcome = await run_scenario(chaos_stack, SHORT, ARTIFACTS / "chaos_short.json")
    report = outcome.report
    print(
        f"\nchaos short: {report['frames_checked']} frames checked against "
        f"{report['events_in_log']} events in runtime's log ({report['accepted_writes']} accepted "
        f"writes), {report['clients']['connections']} connections, projector backlog when writes stopped "
        f"{report['topic_log_lag_at_stop_events']} events, settled in {report['settle_s']} s, "
        f"timeline {report['timeline']}"
    )
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems[:20])
    assert report["frames_checked"] > 10_000
    # Every client had to reconnect at least across the two gateway restarts.
    assert report["clients"]["connections"] >= 3 * SHORT.subscribers
