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
    drill_env,
    event,
    exact,
    log,
    run_log,
    run_summary_diff,
    signed_in,
    topic_heads,
    verdict,
    wait_heads,
)

from khala_client import ApiError

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


async def drill() -> int:
    async with drill_env("rollback") as env, aiohttp.ClientSession() as http:
        stack = env.stack
        api, org = await signed_in(http, stack, env.tag)
        run_ids = [(await api.create_run(org, f"run-{env.tag}-{i}", title=f"run {i}"))["run_id"] for i in range(RUNS)]
        runs_topic = f"org.{org}.runs"
        run_topics = {rid: f"org.{org}.run.{rid}" for rid in run_ids}
        topics = [runs_topic, *run_topics.values()]
        followers = [Follower("proto", http, api, topics, protocol=PROTO), Follower("json", http, api, topics, protocol=JSON)]
        for f in followers:
            f.start(stack.ws_url)

        stop_writing = asyncio.Event()
        appended = {rid: 0 for rid in run_ids}
        retries = 0

        async def write(rid: str) -> None:
            nonlocal retries
            await api.append_events(rid, [event("run.started", "start")])
            i = 0
            while not stop_writing.is_set():
                i += 1
                batch = [event("run.output", f"o{i}", {"text": f"line {i}"})]
                while True:
                    try:
                        await api.append_events(rid, batch)
                        break
                    except ApiError:  # retried with the same idempotency key
                        retries += 1
                        await asyncio.sleep(0.2)
                appended[rid] += 1
                await asyncio.sleep(0.05)

        writers = [asyncio.create_task(write(rid)) for rid in run_ids]
        await asyncio.sleep(2.0)
        timings: dict[str, float] = {}
        for service in ("gateway", "projector"):
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
        stop_writing.set()
        await asyncio.gather(*writers)
        for rid in run_ids:
            await api.append_events(rid, [event("run.completed", "done")])

        runs = {rid: await api.get_run(rid) for rid in run_ids}
        logs = {rid: await run_log(api, rid) for rid in run_ids}
        heads = {run_topics[rid]: runs[rid]["last_seq"] for rid in run_ids}
        await wait_heads(stack.database_url, heads)
        final = await topic_heads(stack.database_url, topics)
        all_heads = {t: h for t, (_, h) in final.items()}
        caught = {f.name: await f.wait_for(all_heads, 30) for f in followers}
        for f in followers:
            await f.stop()

        # migrations: run every service's migrate twice more against the live database
        before = await schema_fingerprint(stack.database_url)
        migrate_rcs: dict[str, list[int]] = {}
        for service in SERVICES:
            for _ in range(2):
                result = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", f"khala_{service}", "migrate"],
                    env=stack.env(), capture_output=True,
                )
                migrate_rcs.setdefault(service, []).append(result.returncode)
                if result.returncode != 0:
                    log(f"{service} migrate failed: {result.stderr.decode()[-500:]}")
        after = await schema_fingerprint(stack.database_url)

        checks: list[tuple[str, bool, str]] = []
        checks.append(("traffic during the drill", sum(appended.values()) > 0,
                       f"{sum(appended.values())} events over {RUNS} runs, {retries} append retries; "
                       + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())))
        for f in followers:
            bad = [t for t in run_topics.values() if not exact(f.state[t].seqs, 1, heads[t])]
            checks.append((f"{f.name} client: drained by the gateway and reconnected",
                           f.reconnects >= 1 and "drain" in f.reconnect_messages,
                           f"{f.reconnects} reconnects, Reconnect reasons {f.reconnect_messages}, closes {f.closes[:2]}"))
            checks.append((f"{f.name} client: run topics exactly 1..head across reconnects",
                           caught[f.name] and not bad and not f.violations,
                           f"{RUNS - len(bad)}/{RUNS} exact, heads {sorted(heads.values())}, {f.frames} frames, "
                           f"{len(f.violations)} dup/gap {f.violations[:3]}"))
            checks.append((f"{f.name} client: no stale_cursor, no error", not f.stale and not f.errors,
                           f"stale {f.stale[:3]}, errors {f.errors[:3]}"))
            docs = f.summaries(runs_topic)
            wrong = {rid: d for rid in run_ids if (d := run_summary_diff(docs.get(rid), runs[rid], logs[rid]))}
            checks.append((f"{f.name} client: RunSummary == runtime state", not wrong,
                           f"{RUNS - len(wrong)}/{RUNS} equal; doc topic at {f.state[runs_topic].last}/{all_heads[runs_topic]} {wrong}"))
        checks.append(("`khala-<svc> migrate` twice more: exit 0 every time",
                       all(rc == [0, 0] for rc in migrate_rcs.values()), f"{migrate_rcs}"))
        checks.append(("migrations idempotent: schemas unchanged", before == after,
                       f"fingerprint {before[0]} ({before[1]} objects) → {after[0]} ({after[1]} objects)"))
        return verdict("drill-rollback", checks)


def main() -> None:
    sys.exit(asyncio.run(asyncio.wait_for(drill(), 150)))


if __name__ == "__main__":
    main()
