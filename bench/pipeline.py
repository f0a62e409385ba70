"""The pipeline benchmark: durable appends -> runtime -> outbox relay -> projector -> gateway -> clients.

    uv run --no-sync python bench/pipeline.py --quick     # make bench / make bench-pipeline
    uv run --no-sync python bench/pipeline.py --full      # make bench-full
    uv run --no-sync python bench/pipeline.py --smoke     # seconds: checks the harness (CI)
    uv run --no-sync python bench/pipeline.py --quick --projectors 2 --gateways 2
    uv run --no-sync --with py-spy python bench/pipeline.py --profile baseline --profile-seconds 20

Starts the real stack as processes (bench/pipeline_stack.py: scratch database,
unique broker prefix, N projector and M gateway processes), signs in through
control's dev identity provider, creates the runs of two orgs (A: the load;
B: the fairness case), and opens the subscribers: `subs_per_run` WebSocket
clients per run topic on the binary subprotocol, spread over the gateways and
over a few receiver processes (bench/pipeline_recv.py). Every process of the load
generator runs on uvloop. The load is open loop
(bench/pipeline_load.py): single-event appends at a fixed rate, round-robin over
the runs, each carrying the time taken just before its request was sent.

Latency is frame arrival minus that send time, for every delivery to every
subscriber. A case PASSes only with 0 errors (any non-2xx, 429 included, or
exception), every 2xx event delivered to each subscriber of its run exactly once
and in order, p99 <= 50 ms, and the target rate achieved. CPU seconds of every
process carrying the load (services, the Postgres cluster, RabbitMQ, the load
generator) are taken over the send window plus the drain that follows.

Cases: a rate ladder; 2,000 ev/s for 10 s; fairness (A at 800 ev/s with B at
10 ev/s, B's p99 against B alone); the CPU table at 500 ev/s. Writes
bench/results/pipeline_<mode>[_<N>p<M>g].json (latest run + history) and
bench/results/pipeline.md. The machine has 2 cores shared with everything else,
the load generator included: read figures as this machine's, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline_recv  # noqa: E402
from pipeline_load import Appender, LoadResult  # noqa: E402
from pipeline_report import GOALS, case_verdict, latency_summary, render_markdown  # noqa: E402
from pipeline_stack import LOGS, BenchDeployment, CpuMeter  # noqa: E402

from khala_client import KhalaApi  # noqa: E402
from khala_common.topics import run_topic  # noqa: E402

RESULTS = HERE / "results"

MODES: dict[str, dict[str, Any]] = {
    "smoke": {  # seconds: proves the harness end to end
        "runs": 5,
        "subs_per_run": 4,
        "receivers": 1,
        "ladder": [50],
        "seconds": 3,
        "burst": {"rate": 100, "seconds": 2},
        "fairness": {"a_rate": 50, "b_rate": 5, "b_runs": 2, "seconds": 3},
        "cpu_rate": 50,
        "stop_after_fails": 0,
    },
    "quick": {
        "runs": 100,
        "subs_per_run": 10,
        "receivers": 2,
        "ladder": [250, 500, 750, 1000, 1250, 1500],
        "seconds": 10,
        "burst": {"rate": 2000, "seconds": 10},
        "fairness": {"a_rate": 800, "b_rate": 10, "b_runs": 10, "seconds": 15},
        "cpu_rate": 500,
        "stop_after_fails": 0,
    },
    "full": {
        "runs": 100,
        "subs_per_run": 10,
        "receivers": 2,
        "ladder": [250, 500, 750, 1000, 1250, 1500],
        "seconds": 60,
        "burst": {"rate": 2000, "seconds": 10},
        "fairness": {"a_rate": 800, "b_rate": 10, "b_runs": 10, "seconds": 60},
        # A failed rate leaves minutes of backlog at 60 s per step: two in a row end the ladder.
        "cpu_rate": 500,
        "stop_after_fails": 2,
    },
}
STALL_S = 20.0  # a drain with no new frame for this long ends the case (the rest is missing)


class Receivers:
    """The receiver processes and their command pipes."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=pipeline_recv.main, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> dict[str, int]:
        return {f"receiver-{i + 1}": p.pid for i, p in enumerate(self.procs) if p.pid is not None}

    async def ask(self, commands: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Send one command to each receiver; their replies, in order."""
        for conn, command in zip(self.conns, commands, strict=True):
            conn.send(command)
        return list(await asyncio.gather(*(asyncio.to_thread(conn.recv) for conn in self.conns)))

    async def ask_all(self, command: tuple[Any, ...]) -> list[dict[str, Any]]:
        return await self.ask([command] * len(self.conns))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask_all(("close",)), 30)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


class Bench:
    """One run of the pipeline benchmark against one deployment."""

    def __init__(self, mode: str, deployment: BenchDeployment, http: aiohttp.ClientSession) -> None:
        self.cfg = MODES[mode]
        self.deployment = deployment
        self.http = http
        stack = deployment.stack
        assert stack is not None
        self.api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        self.tag = uuid.uuid4().hex[:6]
        self.org_a, self.org_b = f"pipe-a-{self.tag}", f"pipe-b-{self.tag}"
        self.runs_a = [f"a{i}-{self.tag}" for i in range(self.cfg["runs"])]
        self.runs_b = [f"b{i}-{self.tag}" for i in range(self.cfg["fairness"]["b_runs"])]
        self.receivers = Receivers(self.cfg["receivers"])
        self.appender: Appender | None = None
        self.meter: CpuMeter | None = None

    def topic_of(self, run_id: str) -> str:
        return run_topic(self.org_a if run_id.startswith("a") else self.org_b, run_id)

    async def setup(self) -> dict[str, Any]:
        """Sign in, create both orgs' runs (run.created + run.started), open the subscribers."""
        api = self.api
        started = time.perf_counter()
        await api.sign_in_dev(f"pipe-{self.tag}@example.com", "Pipeline bench", device_id="bench")
        await api.create_org(self.org_a, "Pipeline A")
        await api.create_org(self.org_b, "Pipeline B")
        gate = asyncio.Semaphore(16)

        async def create(org: str, run_id: str) -> None:
            async with gate:
                await api.create_run(org, run_id)
                await api.append_events(
                    run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]
                )

        await asyncio.gather(
            *(create(self.org_a, r) for r in self.runs_a),
            *(create(self.org_b, r) for r in self.runs_b),
        )
        topics = [self.topic_of(r) for r in self.runs_a + self.runs_b]
        await self._wait_projected(topics, 2)
        tokens: dict[str, str] = {}
        for i in range(0, len(topics), 100):
            chunk = topics[i : i + 100]
            token = (await api.sync_token(chunk))["token"]
            tokens.update(dict.fromkeys(chunk, token))
        urls = self.deployment.gateway_ws_urls()
        specs: list[list[tuple[str, str, str, str, int]]] = [[] for _ in self.receivers.conns]
        index = 0
        for topic in topics:
            group = "a" if topic.startswith(f"org.{self.org_a}.") else "b"
            for _ in range(self.cfg["subs_per_run"]):
                specs[index % len(specs)].append(
                    (urls[index % len(urls)], tokens[topic], topic, group, 2)
                )
                index += 1
        opened = await self.receivers.ask([("open", s, 100) for s in specs])
        self.appender = Appender(self.http, self.api.runtime_url, await api.access_token())
        self.meter = CpuMeter(
            self.deployment.service_pids(),
            {"sender": os.getpid(), **self.receivers.pids},
            *self.deployment.server_ports(),
        )
        failed: dict[str, int] = {}
        for reply in opened:
            for name, n in reply["failed"].items():
                failed[name] = failed.get(name, 0) + n
        return {
            "runs_a": len(self.runs_a),
            "runs_b": len(self.runs_b),
            "subscribers": index,
            "subscribers_open": sum(r["opened"] for r in opened),
            "subscribe_failures": failed,
            "gateways": len(urls),
            "setup_seconds": round(time.perf_counter() - started, 1),
        }

    async def _wait_projected(self, topics: list[str], head: int, timeout_s: float = 120) -> None:
        conn = await asyncpg.connect(self.deployment.database_url)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                n = await conn.fetchval(
                    "SELECT count(*) FROM khala.topics WHERE topic = ANY($1::text[]) AND head_seq >= $2",
                    topics,
                    head,
                )
                if n == len(topics):
                    return
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        raise TimeoutError("the projector did not project the runs' first events")

    async def case(
        self, name: str, streams: list[tuple[str, list[str], float]], seconds: float
    ) -> dict[str, Any]:
        """Run the open-loop `streams` (group, runs, rate) together for `seconds`, then drain and check."""
        assert self.appender is not None and self.meter is not None
        print(
            f"{name}: {', '.join(f'{g} {r:g} ev/s' for g, _runs, r in streams)} for {seconds:g} s ...",
            flush=True,
        )
        await self.receivers.ask_all(("start",))
        self.appender.set_token(await self.api.access_token())
        before = self.meter.snapshot()
        started = time.perf_counter()
        loads: list[LoadResult] = await asyncio.gather(
            *(
                self.appender.open_loop(runs, rate, seconds, f"{name}-{group}")
                for group, runs, rate in streams
            )
        )
        expected: dict[str, list[int]] = {}
        for load in loads:
            for run_id, seqs in load.seqs.items():
                expected[self.topic_of(run_id)] = sorted(seqs)
        max_s = max(60.0, 4 * seconds)
        replies = await self.receivers.ask_all(("expect", expected, STALL_S, max_s))
        window = time.perf_counter() - started
        after = self.meter.snapshot()
        ok = sum(load.ok for load in loads)
        result: dict[str, Any] = {
            "case": name,
            "seconds": seconds,
            "window_seconds": round(window, 2),
            "stall_s": STALL_S,
            "streams": {
                group: load.summary()
                for (group, _r, _rate), load in zip(streams, loads, strict=True)
            },
            **_merge_deliveries(replies),
            "cpu": CpuMeter.table(before, after, ok),
            "services_exited": self.deployment.exited(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        }
        result["verdict"], result["fail_reasons"] = case_verdict(result)
        print(f"  {_one_line(result)}", flush=True)
        if result["missing"]:
            settle = await self.receivers.ask_all(("quiet", 5.0, 180.0))
            result["settle_seconds_after"] = max(r["waited_s"] for r in settle)
        return result

    async def ladder(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        fails = 0
        for rate in self.cfg["ladder"]:
            if self.cfg["stop_after_fails"] and fails >= self.cfg["stop_after_fails"]:
                steps.append(
                    {
                        "case": f"ladder-{rate}",
                        "rate": rate,
                        "verdict": "NOT RUN",
                        "fail_reasons": [f"the {fails} rates below failed"],
                    }
                )
                continue
            step = await self.case(
                f"ladder-{rate}", [("a", self.runs_a, rate)], self.cfg["seconds"]
            )
            step["rate"] = rate
            steps.append(step)
            fails = fails + 1 if step["verdict"] != "PASS" else 0
        return steps

    async def fairness(self) -> dict[str, Any]:
        c = self.cfg["fairness"]
        alone = await self.case("fairness-b-alone", [("b", self.runs_b, c["b_rate"])], c["seconds"])
        both = await self.case(
            "fairness-a-and-b",
            [("a", self.runs_a, c["a_rate"]), ("b", self.runs_b, c["b_rate"])],
            c["seconds"],
        )
        b_alone = alone["latency_ms"].get("b", {}).get("p99")
        b_loaded = both["latency_ms"].get("b", {}).get("p99")
        ratio = round(b_loaded / b_alone, 2) if b_alone and b_loaded is not None else None
        reasons = list(both["fail_reasons"]) + [
            r for r in alone["fail_reasons"] if r not in both["fail_reasons"]
        ]
        reasons = [r for r in reasons if not r.startswith("p99")]  # the goal here is the ratio
        if ratio is None or ratio > GOALS["fairness_ratio"]:
            reasons.append(
                f"B's p99 is {ratio}x its p99 alone (goal <= {GOALS['fairness_ratio']}x)"
            )
        return {
            "b_alone": alone,
            "a_and_b": both,
            "b_p99_alone_ms": b_alone,
            "b_p99_with_a_ms": b_loaded,
            "ratio": ratio,
            "verdict": "FAIL" if reasons else "PASS",
            "fail_reasons": reasons,
        }

    async def close(self) -> None:
        await self.receivers.close()


def _merge_deliveries(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the receivers' counts; percentiles over every delivery, per group."""
    merged: dict[str, Any] = {}
    for key in (
        "subscribers",
        "closed",
        "deliveries",
        "missing",
        "duplicates",
        "reorders",
        "unexpected",
        "earlier_case_frames",
        "frames_without_stamp",
    ):
        merged[key] = sum(r[key] for r in replies)
    errors: dict[str, int] = {}
    for reply in replies:
        for name, n in reply["errors"].items():
            errors[name] = errors.get(name, 0) + n
    merged["subscriber_errors"] = errors
    merged["drain_wait_s"] = max(r["drain_wait_s"] for r in replies)
    ends = {r["drain_ended"] for r in replies}
    merged["drain_ended"] = next(e for e in ("stalled", "deadline", "complete") if e in ends)
    groups: dict[str, list[bytes]] = {}
    for reply in replies:
        for group, raw in reply["latency_ms"].items():
            groups.setdefault(group, []).append(raw)
    merged["latency_ms"] = {group: latency_summary(raws) for group, raws in sorted(groups.items())}
    merged["latency_ms"]["all"] = latency_summary([raw for raws in groups.values() for raw in raws])
    return merged


def _one_line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]["all"]
    achieved = ", ".join(f"{g} {s['achieved_rate']}/s" for g, s in r["streams"].items())
    errors = sum(s["error_count"] for s in r["streams"].values())
    return (
        f"{r['verdict']}: achieved {achieved}; errors {errors}; deliveries {r['deliveries']}, "
        f"missing {r['missing']}, dup {r['duplicates']}, reorder {r['reorders']}; p50 {lat['p50']} "
        f"p99 {lat['p99']} max {lat['max']} ms; system {r['cpu']['system_ms_per_event']} ms/event"
        + (f"; {'; '.join(r['fail_reasons'])}" if r["fail_reasons"] else "")
    )


async def run(
    mode: str, projectors: int, gateways: int, ladder: list[int] | None = None
) -> dict[str, Any]:
    cfg = dict(MODES[mode])
    if ladder:  # an exploratory run: these rates only, no burst or fairness case
        cfg.update(ladder=ladder, cpu_rate=ladder[0])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "mode": mode,
        "projectors": projectors,
        "gateways": gateways,
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg(),
            "note": "2 cores shared with Postgres, RabbitMQ, the load generator and other users",
        },
        "config": cfg,
        "goals": GOALS,
        "code": _code_version(),
    }
    deployment = BenchDeployment(projectors=projectors, gateways=gateways)
    bench: Bench | None = None
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM (and SIGINT, which `uv run` may leave ignored) end the run through the cleanup below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    try:
        await deployment.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            bench = Bench(mode, deployment, http)
            bench.cfg = cfg
            result["setup"] = await bench.setup()
            print(f"setup: {result['setup']}", flush=True)
            result["ladder"] = await bench.ladder()
            if ladder:
                await bench.close()
                bench = None
                return result
            burst = cfg["burst"]
            result["burst"] = await bench.case(
                f"burst-{burst['rate']}", [("a", bench.runs_a, burst["rate"])], burst["seconds"]
            )
            result["burst"]["rate"] = burst["rate"]
            result["fairness"] = await bench.fairness()
            step = next(
                (s for s in result["ladder"] if s.get("rate") == cfg["cpu_rate"] and "cpu" in s),
                None,
            )
            if step is None:
                step = await bench.case(
                    f"cpu-{cfg['cpu_rate']}", [("a", bench.runs_a, cfg["cpu_rate"])], cfg["seconds"]
                )
            result["cpu_at_rate"] = {"rate": cfg["cpu_rate"], "case": step["case"], **step["cpu"]}
            await bench.close()
            bench = None
    finally:
        if bench is not None:
            await bench.close()
        await deployment.stop()
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    return result


def _code_version() -> str:
    """The commit the services ran from, and whether the working tree differed from it."""
    root = HERE.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "services", "libs"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes in services/libs' if dirty else ''}"


def results_name(mode: str, projectors: int, gateways: int) -> str:
    variant = f"_{projectors}p{gateways}g" if (projectors, gateways) != (1, 1) else ""
    return f"pipeline_{mode}{variant}"


def write_results(result: dict[str, Any], out: Path) -> Path:
    """Latest run + history in `<name>.json`; bench/results/pipeline.md from every pipeline JSON there."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{results_name(result['mode'], result['projectors'], result['gateways'])}.json"
    history: list[dict[str, Any]] = []
    if path.exists():
        history = json.loads(path.read_text()).get("history", [])
    history.append({k: v for k, v in result.items() if k not in ("config", "goals")})
    path.write_text(json.dumps({"latest": result, "history": history[-20:]}, indent=2) + "\n")
    latest = [
        json.loads(p.read_text())["latest"]
        for p in sorted(out.glob("pipeline_*.json"))
        if p.stem.split("_")[1] in ("quick", "full")
    ]
    if latest:
        (out / "pipeline.md").write_text(render_markdown(latest))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick", action="store_true", help="10 s per rate (make bench, make bench-pipeline)"
    )
    group.add_argument("--full", action="store_true", help="60 s per rate (make bench-full)")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness")
    group.add_argument(
        "--profile",
        metavar="NAME",
        help="py-spy every service at 500 ev/s; see pipeline_profile.py",
    )
    parser.add_argument("--profile-seconds", type=float, default=20)
    parser.add_argument("--projectors", type=int, default=1, help="projector processes (default 1)")
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes; subscribers spread over them"
    )
    parser.add_argument(
        "--ladder",
        default="",
        help="exploration: comma-separated rates only (no burst/fairness; written to --out)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default bench/results; smoke: .khala/bench-logs/pipeline)",
    )
    args = parser.parse_args()
    if args.profile:
        from pipeline_profile import profile

        uvloop.run(profile(args.profile, args.profile_seconds, args.projectors, args.gateways))
        return
    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    out = args.out or (LOGS if mode == "smoke" else RESULTS)
    started = time.monotonic()
    ladder = [int(r) for r in args.ladder.split(",") if r]
    if ladder and args.out is None:
        parser.error("--ladder needs --out (exploratory runs never overwrite bench/results)")
    result = uvloop.run(run(mode, args.projectors, args.gateways, ladder or None))
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    if ladder:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"pipeline_ladder_{int(time.time())}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {path}")
        return
    path = write_results(result, out)
    print(render_markdown([result]))
    print(f"results: {path} ({result['elapsed_s']} s)")


if __name__ == "__main__":
    main()
