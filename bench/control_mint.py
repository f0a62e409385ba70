"""Control sync-token mint throughput: mints per second of one process,
through the real mint code path, in process and over HTTP.

    uv run python bench/control_mint.py --seconds 10

Phases (each runs `--seconds`, `--concurrency` concurrent callers, `--users`
users round robin, each a member of its own org; every mint asks for two
concrete topics of that org, so the scope check runs in full):

* inproc: `SyncTokenMinter.mint(principal, topics, surface, client_version)`,
  the call the HTTP route makes after authentication, with production
  defaults: memberships from the NOTIFY-invalidated cache, signing key in
  memory, audit entries through the buffered writer (50 ms batches). The
  rate limiter is in the path with its limits off.
* inproc_sync_audit: the same, with `KHALA_AUDIT_FLUSH_MS=0` (each mint writes
  its audit row before returning).
* inproc_uncached: also without the membership cache (one Postgres read per
  mint) — the mint path as it was before this optimisation.
* http: `POST /api/sync/token` against `python -m khala_control serve` in a
  child process (production defaults, rate limits off), driven from this
  process over keep-alive connections. Includes access-token verification
  (cached after the first check) and the session liveness read per request.

Each phase reports mints/s, latency percentiles and the CPU seconds the
minting process spent (the child's for `http`), so that mints per CPU-second
can be compared on a machine shared with other work. Every minted token is
checked to parse; a sample is verified against the JWKS.

Writes bench/results/control_mint.json (latest run plus history) and
bench/results/control_mint.md. Postgres comes from KHALA_BENCH_DATABASE_URL,
else KHALA_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres
(a scratch database is created and dropped); RabbitMQ (for the child process)
from KHALA_BENCH_AMQP_URL, else KHALA_AMQP_URL, else the local default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import jwt
from cryptography.fernet import Fernet, MultiFernet
from results_file import RESULTS, record

from khala_common.db import create_pool, migrate
from khala_common.jwt_verify import JwksCache, TokenVerifier
from khala_control.domain.models import Principal
from khala_control.domain.rate_limit import RateLimitSettings
from khala_control.domain.surfaces import DEFAULT_MATRIX_SPEC, SurfacePolicy
from khala_control.settings import DEV_KEY_ENCRYPTION_KEY, SCHEMA
from khala_control.storage import MIGRATIONS_DIR, users
from khala_control.storage import sessions as session_store
from khala_control.usecases.audit_writer import AuditWriter
from khala_control.usecases.caches import MembershipCache
from khala_control.usecases.change_feed import ChangeFeed
from khala_control.usecases.limits import RateLimiter
from khala_control.usecases.orgs import OrgService
from khala_control.usecases.signing import KeyRing
from khala_control.usecases.token_mint import SyncTokenMinter

GOAL_MINTS_PER_S = 5_000
ISSUER = "http://bench.invalid"


def _database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class Phase:
    """Counts mints and per-call latencies of one phase."""

    def __init__(self) -> None:
        self.mints = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.latencies: list[float] = []

    def summary(self, seconds: float, cpu_s: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else 0.0

        return {
            "mints": self.mints,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "seconds": round(seconds, 2),
            "mints_per_s": round(self.mints / seconds),
            "cpu_s": round(cpu_s, 2),
            "mints_per_cpu_s": round(self.mints / cpu_s) if cpu_s > 0 else None,
            "latency_ms_p50": pct(0.50),
            "latency_ms_p99": pct(0.99),
            "latency_ms_mean": round(statistics.fmean(lat) * 1000, 3) if lat else 0.0,
        }


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(
    concurrency: int,
    seconds: float,
    one: Callable[[int, int], Awaitable[str]],
    cpu: Callable[[], float],
) -> tuple[dict[str, Any], list[str]]:
    """Run `one(worker, iteration)` in `concurrency` loops until `seconds` pass."""
    phase = Phase()
    samples: list[str] = []
    deadline = time.perf_counter() + seconds

    async def loop(index: int) -> None:
        iteration = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                token = await one(index, iteration)
            except Exception as exc:
                phase.errors += 1
                kind = f"{type(exc).__name__}: {str(exc)[:80]}"
                phase.error_kinds[kind] = phase.error_kinds.get(kind, 0) + 1
                await asyncio.sleep(0)
                continue
            phase.latencies.append(time.perf_counter() - started)
            phase.mints += 1
            if iteration % 500 == 0:
                samples.append(token)
            iteration += 1
            # A mint with warm caches never suspends; a server yields between requests.
            # Without this, one loop would run alone and starve the audit flusher.
            await asyncio.sleep(0)

    cpu_before = cpu()
    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return phase.summary(elapsed, cpu() - cpu_before), samples


async def _users(pool: asyncpg.Pool, orgs: OrgService, count: int, tag: str) -> list[Principal]:
    """`count` users, each with a session and an org of their own."""
    principals: list[Principal] = []
    for i in range(count):
        async with pool.acquire() as conn:
            user, _ = await users.upsert_user(
                conn,
                new_user_id=f"usr_bench_{tag}_{i}",
                issuer=ISSUER,
                subject=f"{tag}-{i}",
                email=f"bench{i}@example.com",
                name="Bench",
            )
            session = await session_store.insert_session(
                conn,
                session_id=f"ses_bench_{tag}_{i}",
                user_id=user.user_id,
                device_id=f"dev-{i}",
                surface="desktop",
                client_version="1.0.0",
            )
        principal = Principal(user.user_id, session.session_id, session.device_id, "desktop")
        await orgs.create(principal, f"bench-{tag}-{i}", "Bench org")
        principals.append(principal)
    return principals


def _topics(principal: Principal, tag: str, iteration: int) -> list[str]:
    org = f"bench-{tag}-{principal.user_id.rsplit('_', 1)[1]}"
    return [f"org.{org}.runs", f"org.{org}.run.run_{iteration % 1000}"]


async def inproc_phase(
    url: str, args: argparse.Namespace, *, flush_ms: int, cache_ttl_s: float
) -> dict[str, Any]:
    """Mints through SyncTokenMinter.mint, wired as app.py wires it."""
    tag = uuid.uuid4().hex[:6]
    pool = await create_pool(url, SCHEMA, min_size=args.concurrency, max_size=args.concurrency)
    cipher = MultiFernet([Fernet(DEV_KEY_ENCRYPTION_KEY)])
    keyring = KeyRing(pool, "control", cipher)
    await keyring.ensure_active()
    audit = AuditWriter(pool, flush_interval_s=flush_ms / 1000)
    feed = ChangeFeed(url)
    cache = MembershipCache(pool, feed, ttl_s=cache_ttl_s)
    tasks = [asyncio.create_task(audit.run()), asyncio.create_task(feed.run())]
    try:
        if cache.enabled:
            await asyncio.wait_for(feed.connected.wait(), 10)
        minter = SyncTokenMinter(
            cache,
            keyring,
            SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC),
            audit,
            RateLimiter(RateLimitSettings()),
            issuer=ISSUER,
            ttl_s=300,
        )
        principals = await _users(pool, OrgService(pool, cache, audit), args.users, tag)

        async def one(worker: int, iteration: int) -> str:
            principal = principals[(worker + iteration * args.concurrency) % len(principals)]
            minted = await minter.mint(principal, _topics(principal, tag, iteration), "", "1.0.0")
            return minted.token

        result, samples = await _drive(args.concurrency, args.seconds, one, _own_cpu_s)
        await audit.flush()
        audited = await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'sync_token.minted' AND user_id LIKE $1",
            f"usr_bench_{tag}_%",
        )
        result["audited"] = audited
        verifier = TokenVerifier(JwksCache(keyring.jwks), issuer=ISSUER, audience="khala-gateway")
        for token in samples:
            await verifier.verify(token)
        result["verified_samples"] = len(samples)
        return result
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await audit.close()
        await pool.close()


async def _start_child(
    url: str, amqp_url: str, profile: str | None
) -> tuple[asyncio.subprocess.Process, str]:
    env = {
        **os.environ,
        "KHALA_DATABASE_URL": url,
        "KHALA_AMQP_URL": amqp_url,
        "KHALA_AMQP_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
        "KHALA_CONTROL_HTTP_PORT": "0",
        "KHALA_CONTROL_GRPC_PORT": "0",
        "KHALA_DEV_IDP_ENABLED": "true",
        "KHALA_RATE_LIMIT_SIGN_IN": "off",
        "KHALA_RATE_LIMIT_REFRESH": "off",
        "KHALA_RATE_LIMIT_MINT": "off",
        "KHALA_LOG_LEVEL": "info",
    }
    for name in ("KHALA_TOKEN_ISSUER", "KHALA_CONTROL_URL", "KHALA_CONTROL_SIGNING_KEY_FILE"):
        env.pop(name, None)
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *profiler,
        "-m",
        "khala_control",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = await child.stdout.readline()
            if not line:
                raise RuntimeError("control exited before it started")
            entry = json.loads(line)
            if entry.get("msg") == "control started":
                return child, f"http://127.0.0.1:{entry['http_port']}"


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def http_phase(url: str, amqp_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """POST /api/sync/token against a child `khala-control serve`."""
    child, base = await _start_child(url, amqp_url, args.profile_http)
    assert child.stdout is not None
    drain = asyncio.create_task(_discard(child.stdout))
    tag = uuid.uuid4().hex[:6]
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            sessions: list[tuple[str, str]] = []
            for i in range(args.users):
                async with http.post(
                    f"{base}/api/dev/id-token", json={"email": f"b{i}-{tag}@example.com"}
                ) as response:
                    id_token = (await response.json())["id_token"]
                async with http.post(
                    f"{base}/api/auth/session",
                    json={"id_token": id_token, "device_id": "d", "surface": "desktop"},
                ) as response:
                    access = (await response.json())["access_token"]
                org = f"bench-{tag}-{i}"
                async with http.post(
                    f"{base}/api/orgs",
                    json={"org_id": org, "name": "Bench"},
                    headers={"Authorization": f"Bearer {access}"},
                ) as response:
                    assert response.status == 201, await response.text()
                sessions.append((access, org))

            async def one(worker: int, iteration: int) -> str:
                access, org = sessions[(worker + iteration * args.concurrency) % len(sessions)]
                body = {"topics": [f"org.{org}.runs", f"org.{org}.run.run_{iteration % 1000}"]}
                async with http.post(
                    f"{base}/api/sync/token",
                    json=body,
                    headers={"Authorization": f"Bearer {access}"},
                ) as response:
                    if response.status != 200:
                        raise RuntimeError(await response.text())
                    return str((await response.json())["token"])

            result, samples = await _drive(
                args.concurrency, args.seconds, one, lambda: _child_cpu_s(child.pid)
            )
            async with http.get(f"{base}/.well-known/jwks.json") as response:
                jwks = await response.json()
        keys = JwksCache.parse(jwks)
        for token in samples:
            header = jwt.get_unverified_header(token)
            jwt.decode(
                token, keys[header["kid"]].key, algorithms=["ES256"], audience="khala-gateway"
            )
        result["verified_samples"] = len(samples)
        return result
    finally:
        child.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 15)
        if child.returncode is None:
            child.kill()
            await child.wait()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create a scratch database, run every phase, drop it."""
    server = (
        os.environ.get("KHALA_BENCH_DATABASE_URL")
        or os.environ.get("KHALA_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    amqp_url = (
        os.environ.get("KHALA_BENCH_AMQP_URL")
        or os.environ.get("KHALA_AMQP_URL")
        or "amqp://guest:guest@127.0.0.1:5672/"
    )
    name = f"khala_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _database(server, name)
    results: dict[str, Any] = {}
    try:
        await asyncio.to_thread(migrate, url, SCHEMA, MIGRATIONS_DIR)
        phases: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("inproc", lambda: inproc_phase(url, args, flush_ms=50, cache_ttl_s=30.0)),
            ("inproc_sync_audit", lambda: inproc_phase(url, args, flush_ms=0, cache_ttl_s=30.0)),
            ("inproc_uncached", lambda: inproc_phase(url, args, flush_ms=0, cache_ttl_s=0.0)),
        ]
        if not args.skip_http:
            phases.append(("http", lambda: http_phase(url, amqp_url, args)))
        for phase, runner in phases:
            results[phase] = await runner()
            r = results[phase]
            print(
                f"{phase:18s} {r['mints_per_s']:>7,} mints/s  "
                f"{r['mints_per_cpu_s'] or 0:>7,} /cpu-s  "
                f"p50 {r['latency_ms_p50']} ms  p99 {r['latency_ms_p99']} ms  "
                f"errors {r['errors']}",
                flush=True,
            )
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "label": args.label,
        "config": {
            "seconds_per_phase": args.seconds,
            "concurrency": args.concurrency,
            "users": args.users,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        **results,
        "goal_mints_per_s": GOAL_MINTS_PER_S,
        "goal_met": results["inproc"]["mints_per_s"] >= GOAL_MINTS_PER_S,
    }


def _markdown(history: list[dict[str, Any]]) -> str:
    lines = [
        "# Control sync-token mint throughput",
        "",
        "Generated by `bench/control_mint.py` (see its docstring for what is measured).",
        f"Goal: >= {GOAL_MINTS_PER_S:,} mints/s per process (in-process use case). The machine",
        "has 2 cores shared with Postgres, the load generator and other engineers' test runs,",
        "so numbers are noisy; mints per CPU-second is the steadier figure.",
        "",
        "| when (UTC) | label | conc. | inproc mints/s (/cpu-s) | p50 / p99 ms | "
        "sync audit | uncached | http mints/s (/cpu-s) | http p50 / p99 ms | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in history:
        inproc, sync, uncached = run["inproc"], run["inproc_sync_audit"], run["inproc_uncached"]
        http = run.get("http")
        http_cells = (
            f"{http['mints_per_s']:,} ({http['mints_per_cpu_s']:,}) | "
            f"{http['latency_ms_p50']} / {http['latency_ms_p99']}"
            if http
            else "- | -"
        )
        lines.append(
            f"| {run['at']} | {run.get('label', '')} | {run['config']['concurrency']} | "
            f"{inproc['mints_per_s']:,} ({inproc['mints_per_cpu_s']:,}) | "
            f"{inproc['latency_ms_p50']} / {inproc['latency_ms_p99']} | "
            f"{sync['mints_per_s']:,} | {uncached['mints_per_s']:,} | {http_cells} | "
            f"{'met' if run['goal_met'] else 'missed'} |"
        )
    lines += ["", "Latest run:", "", "```json", json.dumps(history[-1], indent=2), "```", ""]
    notes = RESULTS / "control_mint_notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def main() -> int:
    """Parse arguments, run the bench, write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers")
    parser.add_argument("--users", type=int, default=64, help="distinct users (round robin)")
    parser.add_argument("--label", default="", help="a label for this run in the history")
    parser.add_argument("--skip-http", action="store_true", help="in-process phases only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--profile-http", metavar="PATH", help="cProfile the child into PATH")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.no_write:
        return 0
    record("control_mint", result, _markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
