"""Khala delivery benchmarks against peers, in one run with one load client.

    uv run --no-sync python bench/run.py --quick   # make bench
    uv run --no-sync python bench/run.py --full    # make bench-full
    uv run --no-sync python bench/run.py --smoke   # seconds: checks the harness (no summary.md)

Starts the four Khala services as processes (scripts/stack.py, scratch database,
unique broker prefix), a NATS server with a WebSocket listener and a Socket.IO 4
server with connectionStateRecovery (bench/peers/), all on 127.0.0.1, and drives
them with bench/loadclient.py. Phases (sizes per mode in MODES):

* latency: Khala write -> client (runtime HTTP 2xx -> frame received) at set
  rates, subscribers spread over topics; peers: publish sent -> message received.
* fanout_one / fanout_many: N subscribers on one topic / on many topics; the same
  number of messages of the same size published at the same rate to every system.
  Delivered frames/s and server CPU microseconds per delivered frame (the server
  process's utime+stime from /proc/<pid>/stat before and after).
* idle: N subscribed idle sockets on one server process; RSS per socket
  (VmRSS delta / N). Limited by RLIMIT_NOFILE (the hard limit is reported).
* replay: a fresh subscription to a topic holding F frames, 1 and 10 clients;
  frames/s until the live Watermark (Khala only: the peers keep no log).
* storm: C clients on T topics drop their sockets, M frames per topic are
  written, then all reconnect at once from their cursors; seconds until every
  client has every frame. Socket.IO uses connectionStateRecovery; core NATS has
  no replay (n/a).
* runtime append throughput: taken from bench/runtime_append.py's latest result.

Writes bench/results/bench_<mode>.json (latest run + history),
bench/results/summary.md and, when matplotlib is importable, bench/results/summary.png.
The machine is shared and has 2 cores: numbers are indicative, ratios (same
run, same client, same message size) are the point.
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
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(HERE))

from loadclient import Client, KhalaClient, NatsClient, Sink, SioClient  # noqa: E402
from peers.servers import Peer, start_nats, start_socketio  # noqa: E402
from stack import Stack  # noqa: E402

from khala_client import KhalaApi  # noqa: E402
from khala_common.broker import delete_prefixed  # noqa: E402
from khala_common.topics import run_topic  # noqa: E402
from khala_common.topology import Topology  # noqa: E402

RESULTS = HERE / "results"
LOGS = ROOT / ".khala" / "bench-logs"
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODES: dict[str, dict[str, Any]] = {
    "smoke": {  # seconds; checks the harness itself
        "latency": [{"rate": 20, "subscribers": 10, "topics": 2, "seconds": 2}],
        "fanout_one": {"subscribers": 20, "messages": 10, "rate": 50},
        "fanout_many": {"subscribers": 20, "topics": 5, "messages": 4, "rate": 50},
        "idle": {"sockets": 200, "topics": 5},
        "replay": {"frames": 600, "clients": [1, 2]},
        "storm": {"clients": 20, "topics": 4, "missed": 10},
    },
    "quick": {
        "latency": [
            {"rate": 100, "subscribers": 100, "topics": 10, "seconds": 6},
            {"rate": 300, "subscribers": 300, "topics": 30, "seconds": 6},
        ],
        "fanout_one": {"subscribers": 1000, "messages": 300, "rate": 200},
        "fanout_many": {"subscribers": 1000, "topics": 100, "messages": 10, "rate": 200},
        "idle": {"sockets": 10_000, "topics": 100},
        "replay": {"frames": 20_000, "clients": [1, 10]},
        "storm": {"clients": 1000, "topics": 100, "missed": 100},
    },
    "full": {
        "latency": [
            {"rate": 100, "subscribers": 100, "topics": 10, "seconds": 15},
            {"rate": 1000, "subscribers": 1000, "topics": 100, "seconds": 15},
        ],
        "fanout_one": {"subscribers": 2000, "messages": 200, "rate": 500},
        "fanout_many": {"subscribers": 2000, "topics": 200, "messages": 20, "rate": 500},
        "idle": {"sockets": 50_000, "topics": 200},
        "replay": {"frames": 100_000, "clients": [1, 10]},
        "storm": {"clients": 10_000, "topics": 200, "missed": 100},
    },
}
TARGETS = {
    "cpu_vs_nats": "Khala gateway CPU per delivered frame <= NATS's",
    "cpu_vs_socketio": ">= 4x below Socket.IO's",
    "latency": "p50 <= 6 ms and p99 <= 25 ms at 1k events/s to 1k subscribers",
    "idle": "50k idle sockets at <= 15 KB each",
    "replay": ">= 200k frames/s",
    "storm": "10k clients x 100 missed frames caught up in <= 5 s",
}


# -- process accounting --------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


# -- the systems under test ------------------------------------------------------------


class System:
    """One server under test: how to make clients and publish to it."""

    name = ""
    pid = 0
    next_seq: dict[str, int]

    def client(self, http: aiohttp.ClientSession, sink: Sink) -> Client:
        raise NotImplementedError

    async def setup_topics(self, count: int) -> list[str]:
        raise NotImplementedError

    async def publish(self, topic: str, seq: int) -> tuple[int, float]:
        """Publish message `seq` to `topic`: the seq it got (Khala: runtime assigns it, and
        concurrent appends to one run may commit in any order) and when it counts as written."""
        raise NotImplementedError

    async def publish_batch(self, topic: str, first_seq: int, count: int) -> None:
        for seq in range(first_seq, first_seq + count):
            await self.publish(topic, seq)

    async def wait_written(self, heads: dict[str, int], timeout_s: float = 300) -> None:
        """Until the server holds `heads` (Khala: projected into the topic log)."""


class Khala(System):
    name = "khala"

    def __init__(self, stack: Stack, http: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.http = http
        self.pid = stack.procs["gateway"].pid
        self.api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        self.org = f"bench-{uuid.uuid4().hex[:6]}"
        self.tokens: dict[str, str] = {}
        self.next_seq: dict[str, int] = {}
        self.frame_bytes = 0
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        await self.api.sign_in_dev(f"{self.org}@example.com", "Bench", device_id="bench")
        await self.api.create_org(self.org, "Bench")
        self.pool = await asyncpg.create_pool(self.stack.database_url, min_size=1, max_size=2)

    async def setup_topics(self, count: int) -> list[str]:
        topics = []
        for _ in range(count):
            run_id = f"r{uuid.uuid4().hex[:10]}"
            await self.api.create_run(self.org, run_id)
            await self.api.append_events(
                run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]
            )
            topic = run_topic(self.org, run_id)
            self.next_seq[topic] = 3
            topics.append(topic)
        await self.refresh_tokens(topics)
        await self.wait_written({t: 2 for t in topics})
        return topics

    async def refresh_tokens(self, topics: list[str]) -> None:
        """Mint the sync tokens clients of `topics` connect with (they live 5 minutes)."""
        for i in range(0, len(topics), 200):
            chunk = topics[i : i + 200]
            token = (await self.api.sync_token(chunk))["token"]
            for topic in chunk:
                self.tokens[topic] = token

    def client(self, http: aiohttp.ClientSession, sink: Sink) -> Client:
        raise NotImplementedError  # Khala clients need a token: use khala_client()

    def khala_client(self, http: aiohttp.ClientSession, sink: Sink, topic: str) -> KhalaClient:
        return KhalaClient(http, self.stack.ws_url, sink, self.tokens[topic])

    @staticmethod
    def _event(seq: int) -> dict[str, Any]:
        return {
            "type": "run.output",
            "payload": {"seq": seq, "text": "x" * 64},
            "idempotency_key": f"b{seq}",
        }

    async def publish(self, topic: str, seq: int) -> tuple[int, float]:
        run_id = topic.rsplit(".", 1)[1]
        receipt = await self.api.append_events(run_id, [self._event(seq)])
        return int(receipt["first_seq"]), time.perf_counter()

    async def publish_batch(self, topic: str, first_seq: int, count: int) -> None:
        run_id = topic.rsplit(".", 1)[1]
        for start in range(first_seq, first_seq + count, 500):
            size = min(500, first_seq + count - start)
            await self.api.append_events(
                run_id, [self._event(s) for s in range(start, start + size)]
            )

    async def wait_written(self, heads: dict[str, int], timeout_s: float = 300) -> None:
        assert self.pool is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = await self.pool.fetch(
                "SELECT topic, head_seq FROM khala.topics WHERE topic = ANY($1::text[])",
                list(heads),
            )
            got = {r["topic"]: r["head_seq"] for r in rows}
            if all(got.get(t, 0) >= h for t, h in heads.items()):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("the projector did not catch up")

    async def backlog(self, heads: dict[str, int]) -> dict[str, int]:
        """Where written events wait: runtime's outbox (not yet published) and the projector
        (published, not yet in the topic log)."""
        assert self.pool is not None
        unpublished = await self.pool.fetchval(
            "SELECT count(*) FROM runtime.outbox WHERE published_at IS NULL"
        )
        rows = await self.pool.fetch(
            "SELECT topic, head_seq FROM khala.topics WHERE topic = ANY($1::text[])", list(heads)
        )
        in_log = sum(r["head_seq"] for r in rows)
        written = sum(heads.values())
        return {"runtime_outbox_unpublished": unpublished, "not_in_topic_log": written - in_log}

    async def measure_frame_bytes(self, topic: str) -> int:
        assert self.pool is not None
        data = await self.pool.fetchval(
            "SELECT frame_bytes FROM khala.frames WHERE topic = $1 AND seq = 2", topic
        )
        return len(data or b"")


class PeerSystem(System):
    """A peer server driven through its load-client class (in-memory pub/sub)."""

    client_class: type[NatsClient] | type[SioClient]

    def __init__(self, peer: Peer, size: int) -> None:
        self.peer = peer
        self.pid = peer.pid
        self.size = size
        self.next_seq = {}
        self.publisher: NatsClient | SioClient | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.publisher = self.client_class(http, self.peer.url, Sink())
        await self.publisher.connect()

    def client(self, http: aiohttp.ClientSession, sink: Sink) -> Client:
        return self.client_class(http, self.peer.url, sink)

    async def setup_topics(self, count: int) -> list[str]:
        return [f"bench.{uuid.uuid4().hex[:10]}" for _ in range(count)]

    async def publish(self, topic: str, seq: int) -> tuple[int, float]:
        assert self.publisher is not None
        sent = time.perf_counter()
        await self.publisher.publish(topic, seq, self.size)
        return seq, sent


class NatsSystem(PeerSystem):
    name = "nats"
    client_class = NatsClient


class SioSystem(PeerSystem):
    name = "socketio"
    client_class = SioClient


# -- helpers -----------------------------------------------------------------------------------


def session(local_addr: str) -> aiohttp.ClientSession:
    """A client session whose sockets use `local_addr` as source (spreads ephemeral ports)."""
    connector = aiohttp.TCPConnector(limit=0, local_addr=(local_addr, 0), force_close=False)
    return aiohttp.ClientSession(connector=connector)


async def open_clients(
    system: System,
    http: aiohttp.ClientSession,
    sink: Sink,
    assignment: list[list[str]],
    after: dict[str, int] | None = None,
    concurrency: int = 200,
) -> list[Client]:
    """Connect one client per entry of `assignment` and subscribe it to those topics; wait until live."""
    gate = asyncio.Semaphore(concurrency)

    async def one(topics: list[str]) -> Client:
        async with gate:
            if isinstance(system, Khala):
                client: Client = system.khala_client(http, sink, topics[0])
            else:
                client = system.client(http, sink)
            for attempt in range(5):
                try:
                    await client.connect()  # type: ignore[attr-defined]
                    break
                except (aiohttp.ClientError, OSError, TimeoutError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)
            await client.subscribe(topics, after)  # type: ignore[attr-defined]
            await client.wait_live()  # type: ignore[attr-defined]
            return client

    return list(await asyncio.gather(*(one(t) for t in assignment)))


def heads_of(system: System, topics: list[str]) -> dict[str, int]:
    """The last seq already written to each topic (Khala: run.created + run.started and later)."""
    return {t: system.next_seq.get(t, 1) - 1 for t in topics}


async def close_all(clients: list[Client], *, abrupt: bool = False) -> None:
    await asyncio.gather(*(c.close(abrupt=abrupt) for c in clients), return_exceptions=True)


async def paced(count: int, rate: float, job: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Start job(i) at i/rate seconds for i in range(count) (jobs overlap), and await all."""
    started = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(job(i)))
    await asyncio.gather(*tasks)


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# -- phases ----------------------------------------------------------------------------------------


async def phase_fanout(
    system: System,
    http: aiohttp.ClientSession,
    subscribers: int,
    topics_n: int,
    messages: int,
    rate: float,
) -> dict[str, Any]:
    """N subscribers over `topics_n` topics; `messages` per topic published at `rate` total."""
    topics = await system.setup_topics(topics_n)
    sink = Sink()
    base = heads_of(system, topics)
    clients = await open_clients(
        system, http, sink, [[topics[i % topics_n]] for i in range(subscribers)], base
    )
    expected = subscribers * messages
    sink.stop_when = expected
    order = [(t, base[t] + 1 + m) for m in range(messages) for t in topics]
    cpu0, wall0 = cpu_seconds(system.pid), time.perf_counter()
    print(f"  {subscribers} subscribers connected; publishing", flush=True)

    async def job(i: int) -> None:
        await system.publish(*order[i])

    await paced(len(order), rate, job)
    complete = await wait_for(sink.done.is_set, 120)
    cpu1, wall1 = cpu_seconds(system.pid), time.perf_counter()
    for t in topics:
        system.next_seq[t] = base[t] + messages + 1
    await close_all(clients)
    delivered = sink.deliveries
    seconds = (sink.last_at or wall1) - wall0
    return {
        "subscribers": subscribers,
        "topics": topics_n,
        "messages_per_topic": messages,
        "publish_rate": rate,
        "expected": expected,
        "delivered": delivered,
        "complete": complete,
        "duplicates": sum(c.duplicates for c in clients),
        "seconds": round(seconds, 3),
        "frames_per_s": round(delivered / seconds) if seconds > 0 else 0,
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_us_per_frame": round((cpu1 - cpu0) * 1e6 / delivered, 2) if delivered else None,
    }


async def phase_latency(
    system: System,
    http: aiohttp.ClientSession,
    rate: float,
    subscribers: int,
    topics_n: int,
    seconds: float,
) -> dict[str, Any]:
    topics = await system.setup_topics(topics_n)
    sink = Sink(times={})
    base = heads_of(system, topics)
    clients = await open_clients(
        system, http, sink, [[topics[i % topics_n]] for i in range(subscribers)], base
    )
    count = int(rate * seconds)
    written: dict[tuple[str, int], float] = {}
    per_topic = {t: 0 for t in topics}
    order = []
    for i in range(count):
        topic = topics[i % topics_n]
        per_topic[topic] += 1
        order.append((topic, base[topic] + per_topic[topic]))
    sink.stop_when = count * (subscribers // topics_n)
    errors = 0

    async def job(i: int) -> None:
        nonlocal errors
        topic, seq = order[i]
        try:
            got, at = await system.publish(topic, seq)
            written[(topic, got)] = at
        except Exception:
            errors += 1

    started = time.perf_counter()
    await paced(count, rate, job)
    achieved = count / (time.perf_counter() - started)
    backlog = (
        await system.backlog({t: base[t] + per_topic[t] for t in topics})
        if isinstance(system, Khala)
        else None
    )
    complete = await wait_for(sink.done.is_set, 60)
    for t in topics:
        system.next_seq[t] = base[t] + per_topic[t] + 1
    await close_all(clients)
    samples = [
        (received - written[key]) * 1000
        for key, times in (sink.times or {}).items()
        if key in written
        for received in times
    ]
    return {
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "subscribers": subscribers,
        "topics": topics_n,
        "messages": count,
        "deliveries": len(samples),
        "complete": complete,
        "publish_errors": errors,
        "p50_ms": round(pct(samples, 0.50), 2),
        "p99_ms": round(pct(samples, 0.99), 2),
        "mean_ms": round(statistics.fmean(samples), 2) if samples else None,
        "measured_from": "runtime HTTP 2xx" if isinstance(system, Khala) else "publish sent",
        "backlog_when_writes_ended": backlog,
    }


async def phase_idle(
    system: System, local_addr: str, sockets: int, topics_n: int
) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    headroom = min(soft, hard) - 500
    if sockets > headroom:
        return {
            "sockets": sockets,
            "skipped": f"RLIMIT_NOFILE is {soft}/{hard} (soft/hard): "
            f"{sockets} sockets need more file descriptors than one process may hold here",
        }
    topics = await system.setup_topics(topics_n)
    sink = Sink()
    async with session(local_addr) as http:
        await asyncio.sleep(1)
        rss0 = rss_bytes(system.pid)
        started = time.perf_counter()
        clients = await open_clients(
            system, http, sink, [[topics[i % topics_n]] for i in range(sockets)]
        )
        open_s = time.perf_counter() - started
        await asyncio.sleep(3)
        rss1 = rss_bytes(system.pid)
        await close_all(clients, abrupt=True)
    return {
        "sockets": sockets,
        "topics": topics_n,
        "open_seconds": round(open_s, 1),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_per_socket_kb": round((rss1 - rss0) / sockets / 1024, 2),
    }


async def phase_replay(
    khala: Khala, http: aiohttp.ClientSession, frames: int, clients_list: list[int]
) -> dict[str, Any]:
    (topic,) = await khala.setup_topics(1)
    started = time.perf_counter()
    await khala.publish_batch(topic, 3, frames - 2)
    await khala.wait_written({topic: frames})
    load_s = time.perf_counter() - started
    await khala.refresh_tokens([topic])  # loading a big topic can outlast the first token
    out: dict[str, Any] = {"frames": frames, "load_seconds": round(load_s, 1), "runs": []}
    for n in clients_list:
        sink = Sink(stop_when=n * frames)
        cpu0, t0 = cpu_seconds(khala.pid), time.perf_counter()
        clients = await open_clients(khala, http, sink, [[topic]] * n, concurrency=n)
        done = await wait_for(sink.done.is_set, 300)
        seconds = time.perf_counter() - t0
        cpu1 = cpu_seconds(khala.pid)
        await close_all(clients)
        out["runs"].append(
            {
                "clients": n,
                "complete": done,
                "seconds": round(seconds, 3),
                "frames_per_s": round(sink.deliveries / seconds),
                "server_cpu_us_per_frame": round((cpu1 - cpu0) * 1e6 / max(1, sink.deliveries), 2),
            }
        )
    return out


async def phase_storm(
    system: System, local_addr: str, clients_n: int, topics_n: int, missed: int
) -> dict[str, Any]:
    topics = await system.setup_topics(topics_n)
    assignment = [[topics[i % topics_n]] for i in range(clients_n)]
    sink = Sink()
    async with session(local_addr) as http:
        base = heads_of(system, topics)
        clients = await open_clients(system, http, sink, assignment, base)
        # One frame per topic first: every client then holds a cursor (Socket.IO: an offset).
        await asyncio.gather(*(system.publish(t, base[t] + 1) for t in topics))
        warm = {t: base[t] + 1 for t in topics}
        if not await wait_for(
            lambda: all(
                c.caught_up({a[0]: warm[a[0]]}) for c, a in zip(clients, assignment, strict=True)
            ),
            60,
        ):
            raise TimeoutError("storm warm-up frame did not reach every client")
        for t in topics:
            system.next_seq[t] = warm[t] + 1
        cursors = [dict(c.last) for c in clients]
        await close_all(clients, abrupt=True)
        sink.deliveries = 0
        base = heads_of(system, topics)
        await asyncio.gather(*(system.publish_batch(t, base[t] + 1, missed) for t in topics))
        heads = {t: base[t] + missed for t in topics}
        await system.wait_written(heads)
        for t in topics:
            system.next_seq[t] = heads[t] + 1
        for client, cursor in zip(clients, cursors, strict=True):
            client.last = dict(cursor)
        gate = asyncio.Semaphore(500)
        cpu0, t0 = cpu_seconds(system.pid), time.perf_counter()

        async def reconnect(client: Client, topic_list: list[str]) -> None:
            async with gate:
                client.ws = None
                await client.connect()  # type: ignore[attr-defined]
                if not isinstance(client, SioClient):  # recovery restores rooms
                    await client.subscribe(topic_list)  # type: ignore[attr-defined]

        await asyncio.gather(*(reconnect(c, a) for c, a in zip(clients, assignment, strict=True)))
        caught = await wait_for(
            lambda: all(
                c.caught_up({a[0]: heads[a[0]]}) for c, a in zip(clients, assignment, strict=True)
            ),
            120,
        )
        seconds = time.perf_counter() - t0
        cpu1 = cpu_seconds(system.pid)
        recovered = sum(1 for c in clients if getattr(c, "recovered", True))
        behind = sum(
            1
            for c, a in zip(clients, assignment, strict=True)
            if not c.caught_up({a[0]: heads[a[0]]})
        )
        await close_all(clients, abrupt=True)
    return {
        "clients": clients_n,
        "topics": topics_n,
        "missed_per_client": missed,
        "caught_up": caught,
        "seconds": round(seconds, 3),
        "frames": sink.deliveries,
        "clients_behind": behind,
        "recovered_sessions": recovered,
        "server_cpu_s": round(cpu1 - cpu0, 2),
    }


# -- the run ------------------------------------------------------------------------------------


async def run(mode: str, only: set[str]) -> dict[str, Any]:
    cfg = MODES[mode]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pg = os.environ.get(
        "KHALA_BENCH_DATABASE_URL",
        os.environ.get("KHALA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    amqp = os.environ.get(
        "KHALA_BENCH_AMQP_URL",
        os.environ.get("KHALA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    db = f"khala_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg)
    await conn.execute(f'CREATE DATABASE "{db}"')
    await conn.close()
    prefix = f"bench.{uuid.uuid4().hex[:6]}."
    stack = _stack(f"{pg.rpartition('/')[0]}/{db}", amqp, prefix)
    peers: list[Peer] = []
    khala: Khala | None = None
    result: dict[str, Any] = {
        "mode": mode,
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        },
        "config": cfg,
    }
    try:
        await asyncio.to_thread(stack.start_all)
        peers = [start_nats(LOGS), start_socketio(LOGS)]
        async with session("127.0.0.1") as http:
            khala = Khala(stack, http)
            await khala.start()
            (probe,) = await khala.setup_topics(1)
            size = await khala.measure_frame_bytes(probe)
            result["message_bytes"] = size
            nats, sio = NatsSystem(peers[0], size), SioSystem(peers[1], size)
            await nats.start(http)
            await sio.start(http)
            await _phases(result, cfg, only, http, khala, nats, sio)
        result["runtime_append"] = _runtime_append()
        result["machine"]["load_avg_at_end"] = os.getloadavg()
        return result
    finally:
        if khala is not None and khala.pool is not None:
            await khala.pool.close()
        for peer in peers:
            peer.stop()
        await asyncio.to_thread(stack.stop_all)
        await _drop_bench_state(pg, db, amqp, prefix)


def _stack(database_url: str, amqp: str, prefix: str) -> Stack:
    """The four services on free ports, with the limits a benchmark must not hit lifted."""
    return Stack.with_free_ports(
        database_url=database_url,
        amqp_url=amqp,
        amqp_prefix=prefix,
        log_dir=LOGS,
        extra_env={
            "KHALA_GATEWAY_MAX_CONNECTIONS_PER_USER": "1000000",
            "KHALA_RATE_LIMIT_MINT": "off",
            "KHALA_RATE_LIMIT_SIGN_IN": "off",
            "KHALA_RATE_LIMIT_REFRESH": "off",
            "KHALA_LOG_LEVEL": "warning",
            "KHALA_GATEWAY_HEARTBEAT_INTERVAL_MS": "30000",
            # The full replay phase reads a 100k-frame topic: more than the default
            # per-topic retention (10k frames) would keep.
            "KHALA_PROJECTOR_EVENT_RETAIN_FRAMES": "0",
            # Setup loads topics in bulk (the replay topics); the per-org append
            # limit is the pipeline benchmark's business, not these phases'.
            "KHALA_RUNTIME_APPEND_RATE_PER_ORG": "0",
        },
    )


async def _drop_bench_state(pg: str, db: str, amqp: str, prefix: str) -> None:
    """Best effort: the run's broker objects and its database go."""
    with contextlib.suppress(Exception):
        await delete_prefixed(amqp, Topology(prefix))
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(pg)
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        await conn.close()


async def _phases(
    result: dict[str, Any],
    cfg: dict[str, Any],
    only: set[str],
    http: aiohttp.ClientSession,
    khala: Khala,
    nats: NatsSystem,
    sio: SioSystem,
) -> None:
    """Run the phases `only` names (all when empty), in a fixed order, into `result`."""
    systems: list[System] = [khala, nats, sio]
    if not only or "fanout" in only:
        await _fanout_phases(result, cfg, systems, http)
    if not only or "latency" in only:
        await _latency_phases(result, cfg, systems, http)
    if not only or "replay" in only:
        print("replay khala ...", flush=True)
        c = cfg["replay"]
        result["replay"] = {"khala": await phase_replay(khala, http, c["frames"], c["clients"])}
        print(f"  {result['replay']}", flush=True)
    if not only or "storm" in only:
        await _storm_phases(result, cfg, [khala, sio])
    if not only or "idle" in only:
        await _idle_phases(result, cfg, systems)


async def _fanout_phases(
    result: dict[str, Any], cfg: dict[str, Any], systems: list[System], http: aiohttp.ClientSession
) -> None:
    for key in ("fanout_one", "fanout_many"):
        c = cfg[key]
        result[key] = {}
        for system in systems:
            print(f"{key} {system.name} ...", flush=True)
            result[key][system.name] = await phase_fanout(
                system, http, c["subscribers"], c.get("topics", 1), c["messages"], c["rate"]
            )
            print(f"  {result[key][system.name]}", flush=True)


async def _latency_phases(
    result: dict[str, Any], cfg: dict[str, Any], systems: list[System], http: aiohttp.ClientSession
) -> None:
    result["latency"] = {s.name: [] for s in systems}
    for c in cfg["latency"]:
        for system in systems:
            print(f"latency {system.name} {c} ...", flush=True)
            r = await phase_latency(
                system, http, c["rate"], c["subscribers"], c["topics"], c["seconds"]
            )
            result["latency"][system.name].append(r)
            print(f"  {r}", flush=True)


async def _storm_phases(result: dict[str, Any], cfg: dict[str, Any], systems: list[System]) -> None:
    c = cfg["storm"]
    result["storm"] = {"nats": {"skipped": "core NATS keeps no log: nothing to resume from"}}
    for i, system in enumerate(systems):
        print(f"storm {system.name} ...", flush=True)
        result["storm"][system.name] = await phase_storm(
            system, f"127.0.0.{10 + i}", c["clients"], c["topics"], c["missed"]
        )
        print(f"  {result['storm'][system.name]}", flush=True)


async def _idle_phases(result: dict[str, Any], cfg: dict[str, Any], systems: list[System]) -> None:
    c = cfg["idle"]
    result["idle"] = {}
    for i, system in enumerate(systems):
        print(f"idle {system.name} ...", flush=True)
        result["idle"][system.name] = await phase_idle(
            system, f"127.0.0.{2 + i}", c["sockets"], c["topics"]
        )
        print(f"  {result['idle'][system.name]}", flush=True)


def _runtime_append() -> dict[str, Any] | None:
    path = RESULTS / "runtime_append.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    latest = data.get("latest", data)
    service = latest.get("service", {})
    return {
        "events_per_s": service.get("events_per_s"),
        "at": latest.get("at"),
        "ratio_to_raw_insert": latest.get("ratio"),
        "source": "bench/results/runtime_append.json",
    }


# -- reporting ----------------------------------------------------------------------------------------

from report import write_reports  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a few minutes (make bench)")
    group.add_argument("--full", action="store_true", help="bigger sizes (make bench-full)")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument(
        "--only", default="", help="comma-separated phases: fanout,latency,replay,storm,idle"
    )
    args = parser.parse_args()
    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    only = {p for p in args.only.split(",") if p}
    started = time.monotonic()
    result = asyncio.run(run(mode, only))
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    if only or mode == "smoke":  # partial and smoke runs must not replace the published summary
        path = RESULTS / f"bench_{mode}{'_partial' if only else ''}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {path} ({result['elapsed_s']} s)")
        return
    write_reports(result, RESULTS)
    print(f"results: {RESULTS}/bench_{mode}.json, summary.md ({result['elapsed_s']} s)")


if __name__ == "__main__":
    main()
