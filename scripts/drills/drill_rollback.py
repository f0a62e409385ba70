"""Drill: stop a service with SIGTERM and start it again from the same code.

A local stand-in for rolling a Deployment back to the previous release
(`kubectl rollout undo`, or reverting the image tag): the pods of the old
release are terminated (SIGTERM, drain) and pods of the other release start on
the same, already migrated database. Here the "other release" is the same code,
so the drill proves the process-replacement path, not version compatibility
(migrations are forward-only and additive, so release N-1 runs on N's schema;
see docs/runbooks/rollback.md).

Under continuous appends to a few runs, two clients (proto and JSON) follow the
org's runs doc topic and every run topic:

1. the gateway gets SIGTERM (drain: Reconnect + close 1012) and is started
   again; the clients reconnect and resume from their cursors;
2. the projector gets SIGTERM while appends continue (runtime keeps accepting,
   the broker queues), and is started again.

Then every run topic must hold exactly 1..head for each client (nothing lost,
nothing duplicated across the reconnects), the runs documents must equal
runtime's state, and `khala-<svc> migrate`, run twice more for every service
against the live database, must succeed and leave the schemas unchanged.

Usage: `make drill-rollback`.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    JSON,
    PROTO,
    Follower,
    Settled,
    Writers,
    drill_env,
    exact,
    log,
    run_summary_diff,
    settle,
    signed_in,
    verdict,
)
from stack import Stack

RUNS = 3
SERVICES = ("control", "runtime", "projector", "gateway")
SCHEMA_QUERY = """
SELECT 'col', table_schema || '.' || table_name || '.' || column_name || ':' || data_type || ':' || is_nullable
  FROM information_schema.columns WHERE table_schema IN ('control', 'runtime', 'khala')
UNION ALL
SELECT 'idx', schemaname || '.' || indexname || ':' || indexdef
  FROM pg_indexes WHERE schemaname IN ('control', 'runtime', 'khala')
UNION ALL
SELECT 'con', n.nspname || '.' || c.conname || ':' || pg_get_constraintdef(c.oid)
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ('control', 'runtime', 'khala')
ORDER BY 1, 2
"""


async def schema_fingerprint(db_url: str) -> tuple[str, int]:
    """A hash of the columns, indexes and constraints of the three schemas, and their count."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(SCHEMA_QUERY)
    finally:
        await conn.close()
    text = "\n".join(f"{r[0]} {r[1]}" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16], len(rows)


async def replace(stack: Stack, service: str, timings: dict[str, float]) -> None:
    """SIGTERM `service` (the old release goes away), then start it again."""
    log(f"SIGTERM {service} (old release goes away)")
    started = time.monotonic()
    await asyncio.to_thread(stack.kill, service, signal.SIGTERM)
    timings[f"{service} stop"] = time.monotonic() - started
    await asyncio.sleep(1.5)  # traffic continues while it is down
    log(f"starting {service} again (the other release)")
    started = time.monotonic()
    await asyncio.to_thread(stack.start, service)
    await asyncio.to_thread(stack.wait_ready, service)
    timings[f"{service} start→ready"] = time.monotonic() - started
    await asyncio.sleep(2.0)


async def migrate_twice(stack: Stack) -> dict[str, list[int]]:
    """Every service's `migrate`, run twice against the live database: the exit codes."""
    migrate_rcs: dict[str, list[int]] = {}
    for service in SERVICES:
        for _ in range(2):
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", f"khala_{service}", "migrate"],
                env=stack.env(),
                capture_output=True,
            )
            migrate_rcs.setdefault(service, []).append(result.returncode)
            if result.returncode != 0:
                log(f"{service} migrate failed: {result.stderr.decode()[-500:]}")
    return migrate_rcs


def client_checks(
    f: Follower, end: Settled, runs_topic: str, run_topics: dict[str, str]
) -> list[tuple[str, bool, str]]:
    """One client's verdicts: drained and reconnected, exact run topics, no error, docs == runtime."""
    bad = [t for t in run_topics.values() if not exact(f.state[t].seqs, 1, end.heads[t])]
    docs = f.summaries(runs_topic)
    wrong = {
        rid: d
        for rid in run_topics
        if (d := run_summary_diff(docs.get(rid), end.runs[rid], end.logs[rid]))
    }
    return [
        (
            f"{f.name} client: drained by the gateway and reconnected",
            f.reconnects >= 1 and "drain" in f.reconnect_messages,
            f"{f.reconnects} reconnects, Reconnect reasons {f.reconnect_messages}, closes {f.closes[:2]}",
        ),
        (
            f"{f.name} client: run topics exactly 1..head across reconnects",
            end.caught[f.name] and not bad and not f.violations,
            f"{RUNS - len(bad)}/{RUNS} exact, heads {sorted(end.heads.values())}, {f.frames} frames, "
            f"{len(f.violations)} dup/gap {f.violations[:3]}",
        ),
        (
            f"{f.name} client: no stale_cursor, no error",
            not f.stale and not f.errors,
            f"stale {f.stale[:3]}, errors {f.errors[:3]}",
        ),
        (
            f"{f.name} client: RunSummary == runtime state",
            not wrong,
            f"{RUNS - len(wrong)}/{RUNS} equal; doc topic at {f.state[runs_topic].last}/{end.all_heads[runs_topic]} {wrong}",
        ),
    ]


async def drill() -> int:
    async with drill_env("rollback") as env, aiohttp.ClientSession() as http:
        stack = env.stack
        api, org = await signed_in(http, stack, env.tag)
        run_ids = [
            (await api.create_run(org, f"run-{env.tag}-{i}", title=f"run {i}"))["run_id"]
            for i in range(RUNS)
        ]
        runs_topic = f"org.{org}.runs"
        run_topics = {rid: f"org.{org}.run.{rid}" for rid in run_ids}
        topics = [runs_topic, *run_topics.values()]
        followers = [
            Follower("proto", http, api, topics, protocol=PROTO),
            Follower("json", http, api, topics, protocol=JSON),
        ]
        for f in followers:
            f.start(stack.ws_url)

        writers = Writers(api, run_ids)
        writers.start()
        await asyncio.sleep(2.0)
        timings: dict[str, float] = {}
        for service in ("gateway", "projector"):
            await replace(stack, service, timings)
        await writers.stop()
        end = await settle(api, stack.database_url, run_topics, topics, followers)

        # migrations: run every service's migrate twice more against the live database
        before = await schema_fingerprint(stack.database_url)
        migrate_rcs = await migrate_twice(stack)
        after = await schema_fingerprint(stack.database_url)

        appended = sum(writers.appended.values())
        checks: list[tuple[str, bool, str]] = [
            (
                "traffic during the drill",
                appended > 0,
                f"{appended} events over {RUNS} runs, {writers.retries} append retries; "
                + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
            ),
        ]
        for f in followers:
            checks += client_checks(f, end, runs_topic, run_topics)
        checks.append(
            (
                "`khala-<svc> migrate` twice more: exit 0 every time",
                all(rc == [0, 0] for rc in migrate_rcs.values()),
                f"{migrate_rcs}",
            )
        )
        checks.append(
            (
                "migrations idempotent: schemas unchanged",
                before == after,
                f"fingerprint {before[0]} ({before[1]} objects) → {after[0]} ({after[1]} objects)",
            )
        )
        return verdict("drill-rollback", checks)


def main() -> None:
    sys.exit(asyncio.run(asyncio.wait_for(drill(), 150)))


if __name__ == "__main__":
    main()
