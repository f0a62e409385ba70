"""Where a written event waits on its way to a client, and what the busy process does.

    uv run --no-sync --with py-spy python bench/profile_pipeline.py --rate 150 --seconds 15

Starts the four services (scripts/stack.py, scratch database, unique broker
prefix), appends single-event batches to `--runs` runs at `--rate` appends/s
for `--seconds`, and every second samples the backlog: events in runtime's
outbox not yet published (outbox relay behind) and events published but not yet
in the topic log (projector behind). With py-spy installed it also records the
chosen processes (`--profile projector,runtime`) while the load runs and writes
their hottest functions (by own samples) to bench/results/profile_<service>.txt.
Also reports each service's CPU seconds during the load.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
sys.path.insert(0, str(HERE))

from run import LOGS, RESULTS, cpu_seconds, paced  # noqa: E402
from stack import Stack  # noqa: E402

from khala_client import KhalaApi  # noqa: E402
from khala_common.broker import delete_prefixed  # noqa: E402
from khala_common.topology import Topology  # noqa: E402


def top_functions(raw: Path, limit: int = 25) -> list[str]:
    """The functions with the most own samples in a py-spy `--format raw` (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        own[stack.split(";")[-1]] += n
    return [f"{100 * n / max(1, total):5.1f}%  {frame}" for frame, n in own.most_common(limit)]


def top_inclusive(raw: Path, package: str, limit: int = 25) -> list[str]:
    """Frames of `package` by inclusive samples (time in them and everything they call)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            if package in frame:
                inclusive[frame] += n
    return [
        f"{100 * n / max(1, total):5.1f}%  {frame}" for frame, n in inclusive.most_common(limit)
    ]


# A py-spy recording: the service it records, the py-spy process, its raw output.
Spy = tuple[str, "subprocess.Popen[bytes]", Path]


def _start_spies(stack: Stack, names: list[str], seconds: float, spies: list[Spy]) -> None:
    """Add to `spies` a py-spy recording each named service for `seconds` (none if
    py-spy is not installed); each is added as it starts, so the finally block
    still collects the ones started before a failure."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    for name in names:
        if not Path(pyspy).exists():
            break
        raw = RESULTS / f"profile_{name}.raw"
        proc = subprocess.Popen(  # runs alongside the load
            [
                pyspy,
                "record",
                "-p",
                str(stack.procs[name].pid),
                "-d",
                str(int(seconds)),
                "-r",
                "100",
                "--gil",
                "--format",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        spies.append((name, proc, raw))


def _write_profiles(spies: list[Spy], args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Wait for each recording and write its hottest functions to profile_<service>.txt."""
    for name, proc, raw in spies:
        try:
            proc.wait(timeout=args.seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if raw.exists():
            lines = top_functions(raw)
            package = f"khala_{name}"
            (RESULTS / f"profile_{name}.txt").write_text(
                f"py-spy, {name}, {args.rate} appends/s for {args.seconds} s: functions by own samples\n"
                + "\n".join(lines)
                + f"\n\n{package} frames by inclusive samples\n"
                + "\n".join(top_inclusive(raw, package))
                + "\n"
            )
            raw.replace(LOGS / raw.name)
            out.setdefault("profiles", {})[name] = lines[:10]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    pg = os.environ.get("KHALA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    amqp = os.environ.get("KHALA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    db = f"khala_prof_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg)
    await conn.execute(f'CREATE DATABASE "{db}"')
    await conn.close()
    prefix = f"prof.{uuid.uuid4().hex[:6]}."
    stack = Stack.with_free_ports(
        database_url=f"{pg.rpartition('/')[0]}/{db}",
        amqp_url=amqp,
        amqp_prefix=prefix,
        log_dir=LOGS,
        extra_env={"KHALA_LOG_LEVEL": "warning", "KHALA_RATE_LIMIT_MINT": "off"},
    )
    out: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "runs": args.runs,
        "samples": [],
    }
    spies: list[Spy] = []
    try:
        await asyncio.to_thread(stack.start_all)
        pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
        async with aiohttp.ClientSession() as http:
            api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
            tag = uuid.uuid4().hex[:6]
            await api.sign_in_dev(f"p-{tag}@example.com", "Prof", device_id="p")
            await api.create_org(f"p-{tag}", "Prof")
            runs = [f"r{i}-{tag}" for i in range(args.runs)]
            for run_id in runs:
                await api.create_run(f"p-{tag}", run_id)
                await api.append_events(
                    run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]
                )
            written = 2 * len(runs)
            _start_spies(stack, [s for s in args.profile.split(",") if s], args.seconds, spies)
            cpu0 = {n: cpu_seconds(p.pid) for n, p in stack.procs.items()}
            count = int(args.rate * args.seconds)

            async def job(i: int) -> None:
                nonlocal written
                run_id = runs[i % len(runs)]
                await api.append_events(
                    run_id,
                    [{"type": "run.output", "payload": {"i": i}, "idempotency_key": f"k{i}"}],
                )
                written += 1

            async def sampler() -> None:
                started = time.monotonic()
                while True:
                    await asyncio.sleep(1)
                    unpublished = await pool.fetchval(
                        "SELECT count(*) FROM runtime.outbox WHERE published_at IS NULL"
                    )
                    in_log = await pool.fetchval(
                        "SELECT coalesce(sum(head_seq), 0) FROM khala.topics WHERE topic LIKE '%.run.%'"
                    )
                    out["samples"].append(
                        {
                            "t": round(time.monotonic() - started, 1),
                            "written": written,
                            "outbox_unpublished": unpublished,
                            "not_in_topic_log": written - int(in_log),
                        }
                    )

            sampling = asyncio.create_task(sampler())
            await paced(count, args.rate, job)
            cpu1 = {n: cpu_seconds(p.pid) for n, p in stack.procs.items()}
            drained_at = time.monotonic()
            while (  # noqa: ASYNC110
                out["samples"]
                and out["samples"][-1]["not_in_topic_log"] > 0
                and time.monotonic() - drained_at < 60
            ):
                await asyncio.sleep(0.5)
            out["drain_seconds_after_writes"] = round(time.monotonic() - drained_at, 1)
            sampling.cancel()
            out["cpu_seconds_during_load"] = {n: round(cpu1[n] - cpu0[n], 2) for n in cpu0}
        await pool.close()
    finally:
        _write_profiles(spies, args, out)
        await asyncio.to_thread(stack.stop_all)
        await delete_prefixed(amqp, Topology(prefix))
        conn = await asyncpg.connect(pg)
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        await conn.close()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=150)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--profile", default="projector,runtime")
    result = asyncio.run(main(parser.parse_args()))
    (RESULTS / "pipeline_profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))
