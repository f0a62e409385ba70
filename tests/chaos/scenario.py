"""One chaos scenario: writers and subscribers run while faults are injected in
turn; afterwards the checker compares what every client saw with runtime's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from khala_client import KhalaApi
from khala_common.topics import run_topic

from .support import (
    Subscriber,
    TokenSource,
    Verdict,
    WriterStats,
    call_with_retry,
    check,
    restart_postgres,
    restart_rabbitmq_app,
    restart_service,
    runtime_log,
    stale_errors,
    summarize,
    writer,
)

# A fault is (kind, target): ("kill", service) SIGKILL + restart, ("term", service)
# SIGTERM (graceful drain) + restart, ("rabbitmq", "") stop_app/start_app and
# ("postgres", "") cluster restart of the machine's servers (long test only);
# on private servers (`servers` given): ("crash", "rabbitmq") / ("crash", "postgres")
# SIGKILL the whole server and start it again on the same data, ("commit-window",
# "projector") restarts the projector with KHALA_PROJECTOR_TEST_CRASH_IN_COMMIT so it
# SIGKILLs itself inside a projection transaction, and ("before-confirm", "runtime")
# restarts runtime with KHALA_RUNTIME_TEST_CRASH_BEFORE_CONFIRM so it SIGKILLs itself
# between outbox commit and publish confirm; both are then started normally again.
Fault = tuple[str, str]


@dataclass
class Scenario:
    """Load and fault schedule."""

    runs: int = 20
    rate_per_run: float = 3.0
    subscribers: int = 120
    topics_per_subscriber: int = 3
    faults: list[Fault] = field(default_factory=list)
    steady_s: float = 4.0
    settle_timeout_s: float = 90.0  # cap on waiting for clients after the writes stop
    stall_s: float = 30.0  # ... and on waiting while no client receives anything
    seed: int | None = None  # set: each pause before a fault is random in [0.5, 1.5] x steady_s


@dataclass
class Outcome:
    verdict: Verdict
    report: dict[str, Any]


async def run_scenario(
    stack: Any, scenario: Scenario, report_path: Path, servers: Any = None
) -> Outcome:
    """Run `scenario` against `stack` (whose private Postgres and RabbitMQ are `servers`, if
    any); returns the checker's verdict and a report (also written)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        return await _run(stack, scenario, report_path, http, servers)


async def _run(
    stack: Any, scenario: Scenario, report_path: Path, http: aiohttp.ClientSession, servers: Any
) -> Outcome:
    tag = uuid.uuid4().hex[:8]
    stats = WriterStats()
    api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
    email = f"chaos-{tag}@example.com"
    org_id = f"chaos-{tag}"
    await call_with_retry(
        lambda: api.sign_in_dev(email, "Chaos", device_id=f"d-{tag}"), stats, deadline_s=60
    )
    await call_with_retry(lambda: api.create_org(org_id, "Chaos"), stats, deadline_s=60)
    last_sign_in = [time.monotonic()]
    sign_in_lock = asyncio.Lock()

    async def reauth() -> None:
        async with sign_in_lock:
            if time.monotonic() - last_sign_in[0] < 2:
                return
            await api.sign_in_dev(email, "Chaos", device_id=f"d-{tag}")
            last_sign_in[0] = time.monotonic()

    run_ids = [f"r{i}-{tag}" for i in range(scenario.runs)]
    for run_id in run_ids:
        started_event = [{"type": "run.started", "payload": {}, "idempotency_key": "start"}]
        await call_with_retry(partial(api.create_run, org_id, run_id), stats, deadline_s=60)
        await call_with_retry(
            partial(api.append_events, run_id, started_event), stats, deadline_s=60
        )
        stats.accepted.setdefault(run_id, {})["start"] = 2
    topics = [run_topic(org_id, r) for r in run_ids]
    tokens = TokenSource(api, topics)

    finished = asyncio.Event()
    subscribers = [
        Subscriber(
            index=i,
            topics=sorted(
                {
                    topics[(i * scenario.topics_per_subscriber + j) % len(topics)]
                    for j in range(scenario.topics_per_subscriber)
                }
            ),
        )
        for i in range(scenario.subscribers)
    ]
    sub_tasks = [
        asyncio.create_task(
            sub.run(http, lambda: stack.ws_url, tokens, lambda _s: finished.is_set())
        )
        for sub in subscribers
    ]
    stop_writers = asyncio.Event()
    writer_tasks: list[asyncio.Task[None]] = []
    timeline: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        await _until(lambda: all(s.connections > 0 for s in subscribers), 30)
        writer_tasks = [
            asyncio.create_task(
                writer(api, run_id, scenario.rate_per_run, stop_writers, stats, reauth)
            )
            for run_id in run_ids
        ]
        await _inject_faults(stack, scenario, servers, writer_tasks, started, timeline)
        await asyncio.sleep(scenario.steady_s)
        stop_writers.set()
        await asyncio.gather(*writer_tasks)

        logs = {r: await runtime_log(api, r, stats) for r in run_ids}
        heads = {run_topic(org_id, r): len(events) for r, events in logs.items()}
        lag_at_stop = await _topic_log_lag(stack, heads)
        settle_started = time.monotonic()
        await _settle(subscribers, heads, scenario.settle_timeout_s, scenario.stall_s)
        settle_s = time.monotonic() - settle_started
        diagnostics = {}
        if not all(s.caught_up(heads) for s in subscribers):
            diagnostics = await _diagnose(stack, http, heads, subscribers, stats, started)
    finally:
        stop_writers.set()
        finished.set()
        for task in [*sub_tasks, *writer_tasks]:
            task.cancel()
        for task in [*sub_tasks, *writer_tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    verdict = check(org_id, logs, stats, subscribers)
    verdict.problems.extend(_run_problems(stack, stats, subscribers))
    latencies = sorted(stats.latencies)
    report = {
        "scenario": asdict(scenario),
        "elapsed_s": round(time.monotonic() - started, 1),
        "settle_s": round(settle_s, 2),
        "topic_log_lag_at_stop_events": lag_at_stop,
        "frames_checked": verdict.frames_checked,
        "events_in_log": verdict.events_in_log,
        "accepted_writes": verdict.accepted_writes,
        "write_retries": stats.retries,
        "write_latency_ms_p50": round(latencies[len(latencies) // 2] * 1000, 1)
        if latencies
        else None,
        "write_latency_ms_max": round(latencies[-1] * 1000, 1) if latencies else None,
        "token_mints": tokens.mints,
        "seed": scenario.seed,
        "faults_injected": len(timeline),
        "http_500": len(stats.server_errors),
        "timeline": timeline,
        "clients": summarize(subscribers),
        "diagnostics": diagnostics,
        "problems": verdict.problems[:50],
        "ok": verdict.ok,
    }
    await asyncio.to_thread(_write, report_path, report)
    return Outcome(verdict, report)


async def _inject_faults(
    stack: Any,
    scenario: Scenario,
    servers: Any,
    writer_tasks: list[asyncio.Task[None]],
    started: float,
    timeline: list[dict[str, Any]],
) -> None:
    """The fault schedule: a pause (randomized when seeded), then the next fault,
    recorded in `timeline`; a writer that failed ends the scenario."""
    rng = random.Random(scenario.seed)
    for kind, target in scenario.faults:
        pause = scenario.steady_s
        if scenario.seed is not None:
            pause *= rng.uniform(0.5, 1.5)
        await asyncio.sleep(pause)
        _raise_if_failed(writer_tasks)
        at = round(time.monotonic() - started, 1)
        took, detail = await _inject(stack, kind, target, servers, rng)
        timeline.append(
            {"at_s": at, "fault": kind, "target": target, "took_s": round(took, 2), **detail}
        )


def _run_problems(stack: Any, stats: WriterStats, subscribers: list[Subscriber]) -> list[str]:
    """What went wrong besides the delivered frames: stale cursors on resume,
    services that exited on their own, HTTP 500 answers."""
    problems = []
    stale = stale_errors(subscribers)
    if stale:
        problems.append(f"stale_cursor on resume: {stale[:5]} ({len(stale)})")
    crashed = dict(stack.exited())
    if crashed:
        problems.append(f"services exited on their own: {crashed}")
    if stats.server_errors:
        problems.append(
            f"HTTP 500 answers: {len(stats.server_errors)}, first {stats.server_errors[:3]}"
        )
    return problems


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


async def _settle(
    subscribers: list[Subscriber], heads: dict[str, int], timeout_s: float, stall_s: float
) -> None:
    """Until every client has every frame; gives up after `timeout_s`, or earlier when no
    client received anything for `stall_s` (a backlog that drains is waited for)."""
    started = last_progress = time.monotonic()
    seen = -1
    while not all(s.caught_up(heads) for s in subscribers):
        now = time.monotonic()
        total = sum(len(frames) for s in subscribers for frames in s.received.values())
        if total != seen:
            seen, last_progress = total, now
        if now - started > timeout_s or now - last_progress > stall_s:
            return
        await asyncio.sleep(0.25)


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll `condition` (state of other tasks, no event to wait on) until true or timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def _topic_log_lag(stack: Any, heads: dict[str, int]) -> int | None:
    """Events in runtime's log not yet in the topic log, summed over the runs (None if unreadable)."""
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(stack.database_url)
        try:
            rows = await conn.fetch(
                "SELECT topic, head_seq FROM khala.topics WHERE topic = ANY($1::text[])",
                list(heads),
            )
        finally:
            await conn.close()
        got = {r["topic"]: r["head_seq"] for r in rows}
        return sum(h - got.get(t, 0) for t, h in heads.items())
    return None


async def _diagnose(
    stack: Any,
    http: aiohttp.ClientSession,
    heads: dict[str, int],
    subscribers: list[Subscriber],
    stats: WriterStats,
    started: float,
) -> dict[str, Any]:
    """Where the missing frames are stuck: runtime's outbox, the topic log, or the gateway."""
    found: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(stack.database_url)
        try:
            found["runtime_outbox_unpublished"] = await conn.fetchval(
                "SELECT count(*) FROM runtime.outbox WHERE published_at IS NULL"
            )
            rows = await conn.fetch(
                "SELECT topic, head_seq FROM khala.topics WHERE topic = ANY($1::text[])",
                list(heads),
            )
            log_heads = {r["topic"]: r["head_seq"] for r in rows}
            found["topic_log_behind_runtime"] = {
                t: h - log_heads.get(t, 0) for t, h in heads.items() if log_heads.get(t, 0) != h
            }
            checkpoints = await conn.fetch("SELECT stream_id, last_seq FROM khala.checkpoints")
            found["projector_checkpoints_sample"] = {
                r["stream_id"]: r["last_seq"] for r in checkpoints[:3]
            }
            found["fanout_unpublished_frames"] = await conn.fetchval(
                "SELECT count(*) FROM khala.frames WHERE frame_id > "
                "(SELECT last_frame_id FROM khala.publish_cursor)"
            )
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        async with http.get(
            f"{stack.url('gateway')}/internal/v1/khala/fanout/metrics?topic_limit=5",
            headers={"Authorization": "Bearer khala-dev-admin-token"},
        ) as response:
            found["gateway_fanout_metrics"] = await response.json()
    with contextlib.suppress(Exception):
        queues = await asyncio.to_thread(
            subprocess.run,
            [
                "rabbitmqctl",
                "list_queues",
                "-q",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "--formatter",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        prefix = stack.amqp_prefix
        found["broker_queues"] = [
            q for q in json.loads(queues.stdout) if q["name"].startswith(prefix)
        ]
    with contextlib.suppress(Exception):
        async with http.get(f"{stack.url('projector')}/metrics") as response:
            text = await response.text()
        found["projector_metrics"] = [
            line
            for line in text.splitlines()
            if line.startswith("khala_projector")
            and not line.endswith(" 0.0")
            and "bucket" not in line
        ][:40]
    behind = [
        {
            "sub": s.index,
            "cursors": {t: c[1] for t, c in s.cursors.items()},
            "connections": s.connections,
        }
        for s in subscribers
        if not s.caught_up(heads)
    ]
    found["subscribers_behind"] = len(behind)
    if behind:
        run_id = next(iter(stats.accepted_at))
        topic = next(t for t in heads if t.endswith(f".run.{run_id}"))
        cursor = min(s.cursors.get(topic, ("", 0))[1] for s in subscribers if topic in s.topics)
        accepted = [round(t - started, 1) for t, seq in stats.accepted_at[run_id] if seq > cursor]
        found["first_undelivered_write_at_s"] = {topic: accepted[:1]}
    found["behind_sample"] = behind[:3]
    found["at_s"] = round(time.monotonic() - started, 1)
    return found


def _raise_if_failed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _inject(
    stack: Any, kind: str, target: str, servers: Any, rng: random.Random
) -> tuple[float, dict[str, Any]]:
    """Inject one fault; seconds it took and what was done."""
    if kind == "kill":
        return await restart_service(stack, target, signal.SIGKILL), {}
    if kind == "term":
        return await restart_service(stack, target, signal.SIGTERM), {}
    if kind == "rabbitmq":
        return await restart_rabbitmq_app(), {}
    if kind == "postgres":
        return await restart_postgres(), {}
    if kind == "crash":
        started = time.monotonic()
        await asyncio.to_thread(getattr(servers, target).restart)
        return time.monotonic() - started, {}
    if kind in SELF_CRASHES:
        service, variable = SELF_CRASHES[kind]
        nth = rng.randint(1, 5)
        took, crashed = await self_crash(stack, service, {variable: str(nth)})
        return took, {"nth": nth, "crashed_itself": crashed}
    raise ValueError(f"unknown fault {kind}")


# Test-only fault hooks: the fault kind -> (service, setting whose value n picks the nth
# projection transaction / relay publish to die in).
SELF_CRASHES = {
    "commit-window": ("projector", "KHALA_PROJECTOR_TEST_CRASH_IN_COMMIT"),
    "before-confirm": ("runtime", "KHALA_RUNTIME_TEST_CRASH_BEFORE_CONFIRM"),
}


async def self_crash(
    stack: Any, service: str, fault_env: dict[str, str], timeout_s: float = 30.0
) -> tuple[float, bool]:
    """Restart `service` with a fault hook set, wait until it SIGKILLs itself (or `timeout_s`,
    then SIGKILL it), and start it again without the hook; (seconds, whether it crashed itself)."""
    started = time.monotonic()
    await asyncio.to_thread(stack.kill, service, signal.SIGKILL)
    stack.extra_env.update(fault_env)
    try:
        await asyncio.to_thread(stack.start, service)
    finally:
        for name in fault_env:
            stack.extra_env.pop(name, None)
    proc = stack.procs[service]
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    crashed = proc.poll() == -signal.SIGKILL
    await asyncio.to_thread(stack.kill, service, signal.SIGKILL)
    await asyncio.to_thread(stack.start, service)
    await asyncio.to_thread(stack.wait_ready, service, 60.0)
    return time.monotonic() - started, crashed
