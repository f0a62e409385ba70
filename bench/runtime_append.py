"""Runtime append throughput: durable events/s through runtime's real write path,
against a raw asyncpg multi-row insert of the same rows, in the same run.

    uv run python bench/runtime_append.py --seconds 20

What is measured (each phase runs `--seconds`):

* service: `--appenders` concurrent tasks, each owning its share of `--streams`
  runs, call the same code an HTTP append runs after authentication: the JSON
  body is validated and canonicalised (`parse_append`), then
  `RunService.append` runs the whole transaction (lock the run row,
  idempotency keys, state machine, gapless seq, hash chain, events + outbox
  rows, head update, NOTIFY, commit). Every event carries an idempotency key.
  In process, over one asyncpg pool of `--appenders` connections: no HTTP
  server, no token check, no broker (the outbox relay is not running, so the
  outbox only fills; publishing is measured elsewhere).
* raw: the same concurrency, batch size and streams; each batch is one
  transaction of two multi-row `INSERT ... SELECT FROM unnest(...)`
  statements writing the same event and outbox rows (precomputed, so no
  validation, hashing, locking or head update).

"Durable" means committed to Postgres: once a call returns, its events are on
disk with the server's durability settings. Writes JSON to
bench/results/runtime_append.json (the latest run plus a history of runs) and
a markdown table to bench/results/runtime_append.md.

Postgres comes from KHALA_BENCH_DATABASE_URL, else KHALA_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres; each phase runs on a scratch
database created there (and dropped after it), so the second phase does not
inherit the first one's table growth, checkpoints or vacuum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from results_file import RESULTS, record

from khala_common.db import create_pool, migrate
from khala_runtime.domain.model import CreateRun
from khala_runtime.handlers.schemas import parse_append
from khala_runtime.storage import MIGRATIONS_DIR, SCHEMA
from khala_runtime.usecases.runs import RunService

GOAL_EVENTS_PER_S = 20_000
GOAL_RATIO = 0.5


def _database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class Phase:
    """Counts committed events and per-call latencies of one phase."""

    def __init__(self) -> None:
        self.events = 0
        self.calls = 0
        self.latencies: list[float] = []

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

        return {
            "events": self.events,
            "calls": self.calls,
            "seconds": round(seconds, 2),
            "events_per_s": round(self.events / seconds),
            "calls_per_s": round(self.calls / seconds),
            "latency_ms_p50": pct(0.50),
            "latency_ms_p99": pct(0.99),
            "latency_ms_mean": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        }


async def _drive(
    appenders: int, seconds: float, one: Callable[[int, int], Awaitable[int]]
) -> dict[str, Any]:
    """Run `one(appender, iteration)` in `appenders` loops until `seconds` pass."""
    phase = Phase()
    deadline = time.perf_counter() + seconds

    async def loop(index: int) -> None:
        iteration = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            # Not `phase.events += await ...`: that reads the counter before awaiting
            # and would drop other tasks' increments.
            count = await one(index, iteration)
            phase.events += count
            phase.latencies.append(time.perf_counter() - started)
            phase.calls += 1
            iteration += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(appenders)))
    return phase.summary(time.perf_counter() - started)


def _body(stream_no: int, iteration: int, batch: int, payload_bytes: int) -> dict[str, Any]:
    filler = "x" * payload_bytes
    return {
        "events": [
            {
                "type": "run.output",
                "payload": {"text": filler, "line": i},
                "idempotency_key": f"{stream_no}-{iteration}-{i}",
            }
            for i in range(batch)
        ]
    }


async def service_phase(pool: asyncpg.Pool, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """Appends through parse_append + RunService.append."""
    service = RunService(pool)
    runs = [f"bench-{tag}-{i}" for i in range(args.streams)]
    for run_id in runs:
        await service.create_run(CreateRun(org_id="bench", run_id=run_id, title=""))
        await service.append(
            run_id, parse_append({"events": [{"type": "run.started"}]})[0], expected_seq=None
        )

    async def one(appender: int, iteration: int) -> int:
        mine = runs[appender :: args.appenders]
        stream_no = appender + (iteration % len(mine)) * args.appenders
        inputs, expected = parse_append(_body(stream_no, iteration, args.batch, args.payload_bytes))
        await service.append(runs[stream_no], inputs, expected_seq=expected)
        return len(inputs)

    return await _drive(args.appenders, args.seconds, one)


_RAW_EVENTS = (
    "INSERT INTO events (stream_id, stream_seq, event_id, org_id, stream_kind, subject_id, "
    "type, payload_json, idempotency_key, occurred_at_ms, chain_hash) SELECT * FROM unnest("
    "$1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::smallint[], $6::text[], "
    "$7::text[], $8::bytea[], $9::text[], $10::bigint[], $11::text[])"
)
_RAW_OUTBOX = (
    "INSERT INTO outbox (event_id, routing_key, body, created_at_ms) "
    "SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bigint[])"
)


async def raw_phase(pool: asyncpg.Pool, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """The same rows, precomputed, as two multi-row inserts per transaction."""
    payload = json.dumps(
        {"line": 0, "text": "x" * args.payload_bytes}, separators=(",", ":")
    ).encode()
    body = b"\x00" * (len(payload) + 200)  # a RuntimeEvent of that payload is about this big
    chain = "0" * 64
    now = int(time.time() * 1000)
    next_seq = [1] * args.streams

    async def one(appender: int, iteration: int) -> int:
        mine = list(range(appender, args.streams, args.appenders))
        stream_no = mine[iteration % len(mine)]
        first = next_seq[stream_no]
        next_seq[stream_no] += args.batch
        stream_id = f"run:raw-{tag}-{stream_no}"
        ids = [uuid.uuid4() for _ in range(args.batch)]
        n = args.batch
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _RAW_EVENTS,
                [stream_id] * n,
                list(range(first, first + n)),
                ids,
                ["bench"] * n,
                [1] * n,
                [f"raw-{tag}-{stream_no}"] * n,
                ["run.output"] * n,
                [payload] * n,
                [f"{stream_no}-{iteration}-{i}" for i in range(n)],
                [now] * n,
                [chain] * n,
            )
            await conn.execute(_RAW_OUTBOX, ids, ["bench.run"] * n, [body] * n, [now] * n)
        return n

    return await _drive(args.appenders, args.seconds, one)


def _markdown(history: list[dict[str, Any]]) -> str:
    latest = history[-1]
    lines = [
        "# Runtime append throughput",
        "",
        "Generated by `bench/runtime_append.py` (see its docstring for what is measured).",
        f"Goal: service >= {GOAL_EVENTS_PER_S:,} events/s and >= {GOAL_RATIO:.0%} of the raw "
        "insert rate, measured in the same run. The machine has 2 cores shared with",
        "Postgres and with other engineers' test runs, so numbers are noisy.",
        "",
        "| when (UTC) | label | streams | appenders | batch | service events/s | "
        "service p50 / p99 ms | raw events/s | service / raw | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in history:
        cfg, svc, raw = run["config"], run["service"], run["raw"]
        lines.append(
            f"| {run['at']} | {run.get('label', '')} | {cfg['streams']} | {cfg['appenders']} | "
            f"{cfg['batch']} | {svc['events_per_s']:,} | {svc['latency_ms_p50']} / "
            f"{svc['latency_ms_p99']} | {raw['events_per_s']:,} | {run['ratio']:.2f} | "
            f"{'met' if run['goal_met'] else 'missed'} |"
        )
    lines += ["", "Latest run:", "", "```json", json.dumps(latest, indent=2), "```", ""]
    notes = RESULTS / "runtime_append_notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


async def _scratch_phase(server: str, phase: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one phase on a database of its own (created, migrated, dropped), so that
    neither phase inherits the other's table growth, checkpoints or vacuum."""
    name = f"khala_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _database(server, name)
    try:
        await asyncio.to_thread(migrate, url, SCHEMA, MIGRATIONS_DIR)
        pool = await create_pool(url, SCHEMA, min_size=args.appenders, max_size=args.appenders)
        try:
            runner = service_phase if phase == "service" else raw_phase
            return await runner(pool, args, uuid.uuid4().hex[:6])
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both phases, each on a scratch database; the result record."""
    server = (
        os.environ.get("KHALA_BENCH_DATABASE_URL")
        or os.environ.get("KHALA_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    results: dict[str, Any] = {}
    for phase in ["raw", "service"] if args.raw_first else ["service", "raw"]:
        results[phase] = await _scratch_phase(server, phase, args)
        print(
            f"{phase:8s} {results[phase]['events_per_s']:>8,} events/s "
            f"(p50 {results[phase]['latency_ms_p50']} ms, "
            f"p99 {results[phase]['latency_ms_p99']} ms)",
            flush=True,
        )
    ratio = results["service"]["events_per_s"] / max(1, results["raw"]["events_per_s"])
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "label": args.label,
        "config": {
            "streams": args.streams,
            "appenders": args.appenders,
            "batch": args.batch,
            "payload_bytes": args.payload_bytes,
            "seconds_per_phase": args.seconds,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "service": results["service"],
        "raw": results["raw"],
        "ratio": round(ratio, 3),
        "goal_met": results["service"]["events_per_s"] >= GOAL_EVENTS_PER_S and ratio >= GOAL_RATIO,
    }


def main() -> int:
    """Parse arguments, run the bench, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each phase")
    parser.add_argument("--streams", type=int, default=256, help="distinct runs written")
    parser.add_argument("--appenders", type=int, default=16, help="concurrent appenders")
    parser.add_argument("--batch", type=int, default=100, help="events per append")
    parser.add_argument("--payload-bytes", type=int, default=64, help="text size per event")
    parser.add_argument("--label", default="", help="a label for this run in the history")
    parser.add_argument("--raw-first", action="store_true", help="run the raw phase first")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.streams < args.appenders:
        parser.error("--streams must be >= --appenders (each appender owns its streams)")
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.no_write:
        return 0
    record("runtime_append", result, _markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
