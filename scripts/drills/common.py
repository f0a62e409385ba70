"""Shared plumbing of the operational drills (`make drill-*`).

A drill gets its own database on the Postgres server of KHALA_DATABASE_URL, its
own broker prefix and free ports, starts the four real services with
`scripts/stack.py`, and always cleans up: stack stopped, database dropped,
prefixed exchanges and queues deleted.

`Writers` keeps appending to runs through outages (a failed append is retried
with its idempotency key), and `settle` ends a drill's traffic: runs completed,
the topic log caught up, every client caught up and stopped.

`Follower` is a WebSocket client that checks the delivery guarantee per topic:
inside one epoch, non-snapshot frames arrive exactly at `last + 1` (a duplicate
or a gap is recorded as a violation), across reconnects too. On
`stale_cursor` it records the reason, forgets the topic and subscribes again
from `after_seq 0` with an empty epoch, as protocol.md §6.1 tells clients to.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from stack import DEFAULT_AMQP_URL, Stack  # noqa: E402

from khala_client import ApiError, KhalaApi, SyncConnection, connect  # noqa: E402
from khala_client.ws import JSON, PROTO  # noqa: E402
from khala_common.broker import delete_prefixed  # noqa: E402
from khala_common.topology import Topology  # noqa: E402
from openagents.codex.v1 import summaries_pb2  # noqa: E402
from openagents.sync.v1 import frames_pb2, ws_pb2  # noqa: E402

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/"
# Control's sign-in / refresh / mint limits (services/control settings.py) are off in drills.
NO_RATE_LIMITS = {
    "KHALA_RATE_LIMIT_SIGN_IN": "off",
    "KHALA_RATE_LIMIT_REFRESH": "off",
    "KHALA_RATE_LIMIT_MINT": "off",
}
STATUS_NAMES = {
    v: k.removeprefix("RUN_STATUS_").lower() for k, v in summaries_pb2.RunStatus.items()
}


def log(message: str) -> None:
    """A timestamped progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def server_url() -> str:
    """The admin URL (database `postgres`) of KHALA_DATABASE_URL's server."""
    url = os.environ.get("KHALA_DATABASE_URL", DEFAULT_SERVER_URL)
    return urlsplit(url)._replace(path="/postgres").geturl()


def database_url(name: str) -> str:
    """The URL of database `name` on the drill's server."""
    return urlsplit(server_url())._replace(path=f"/{name}").geturl()


async def create_database(name: str) -> str:
    """Create database `name`; returns its URL."""
    conn = await asyncpg.connect(server_url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(name)


async def drop_database(name: str) -> None:
    """Drop database `name` (terminating its connections); never raises."""
    try:
        conn = await asyncpg.connect(server_url())
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()
    except Exception as exc:  # cleanup must not hide the verdict
        log(f"warning: could not drop database {name}: {exc}")


@dataclass
class DrillEnv:
    """One drill's isolated deployment."""

    name: str
    tag: str
    amqp_url: str
    prefix: str
    stack: Stack
    databases: list[str] = field(default_factory=list)

    def new_stack(self, db_url: str) -> Stack:
        """A stack over `db_url` on the same ports (tokens name control's URL as issuer), prefix and log dir."""
        return Stack(
            ports=dict(self.stack.ports),
            database_url=db_url,
            amqp_url=self.amqp_url,
            amqp_prefix=self.prefix,
            log_dir=self.stack.log_dir,
            extra_env=dict(NO_RATE_LIMITS),
        )


@asynccontextmanager
async def drill_env(name: str) -> AsyncIterator[DrillEnv]:
    """Database + prefix + running stack; everything removed on exit."""
    tag = uuid.uuid4().hex[:8]
    amqp_url = os.environ.get("KHALA_AMQP_URL", DEFAULT_AMQP_URL)
    db_name = f"khala_drill_{tag}"
    prefix = f"drill.{tag}."
    log_dir = ROOT / "test-artifacts" / "drills" / f"{name}-{tag}"
    db_url = await create_database(db_name)
    stack = Stack.with_free_ports(
        database_url=db_url,
        amqp_url=amqp_url,
        amqp_prefix=prefix,
        log_dir=log_dir,
        extra_env=dict(NO_RATE_LIMITS),
    )
    env = DrillEnv(name, tag, amqp_url, prefix, stack, [db_name])
    log(f"drill {name}: database {db_name}, prefix {prefix!r}, logs {log_dir}")
    try:
        await start_quietly(stack)
        yield env
    finally:
        await asyncio.to_thread(env.stack.stop_all)
        for db in env.databases:
            await drop_database(db)
        try:
            await delete_prefixed(amqp_url, Topology(prefix))
        except Exception as exc:
            log(f"warning: could not delete broker objects of {prefix!r}: {exc}")
        log("cleaned up (stack stopped, databases dropped, broker objects deleted)")


async def start_quietly(stack: Stack) -> None:
    """`stack.start_all()` with the migrations' output sent to <log_dir>/migrate.log."""
    await asyncio.to_thread(_start_all_quietly, stack)


def _start_all_quietly(stack: Stack) -> None:
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(stack.log_dir / "migrate.log", "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            stack.start_all()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


async def signed_in(http: aiohttp.ClientSession, stack: Stack, tag: str) -> tuple[KhalaApi, str]:
    """A dev user with an org of their own: (api, org_id)."""
    api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
    await api.sign_in_dev(f"drill-{tag}@example.com", f"Drill {tag}", device_id=f"drill-{tag}")
    org = f"drill-{tag}"
    await api.create_org(org, "Drill org")
    return api, org


def event(kind: str, key: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """One event to append."""
    return {"type": kind, "payload": payload or {}, "idempotency_key": key}


@dataclass
class TopicState:
    """What one client knows of one topic."""

    epoch: str = ""
    last: int = 0
    seqs: list[int] = field(default_factory=list)  # non-snapshot seqs of the current epoch
    in_snapshot: bool = False
    as_of: int = 0
    docs: dict[str, bytes] = field(default_factory=dict)  # doc topics: key -> payload


class Follower:
    """A checking WebSocket client that reconnects and resumes from its cursors."""

    def __init__(
        self,
        name: str,
        http: aiohttp.ClientSession,
        api: KhalaApi,
        topics: list[str],
        *,
        protocol: str = PROTO,
    ):
        self.name = name
        self.http = http
        self.api = api
        self.topics = list(topics)
        self.protocol = protocol
        self.ws_url = ""
        self.state: dict[str, TopicState] = {t: TopicState() for t in topics}
        self.violations: list[str] = []
        self.stale: list[tuple[str, str]] = []  # (topic, reason)
        self.stale_heads: dict[str, int] = {}  # topic -> head_seq of its last stale_cursor
        self.errors: list[str] = []
        self.reconnects = 0
        self.reconnect_messages: list[str] = []  # Reconnect{reason} received (drain)
        self.closes: list[str] = []
        self.frames = 0
        self.conn: SyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = False
        self._req = 0
        self.auto_resubscribe = True

    # -- lifecycle --------------------------------------------------------

    def start(self, ws_url: str) -> None:
        """Connect (retrying) and follow in the background."""
        self.ws_url = ws_url
        self._task = asyncio.create_task(self._run(), name=f"follower-{self.name}")

    async def stop(self) -> None:
        """Close the socket and end the background task."""
        self._stop = True
        if self.conn is not None and not self.conn.closed:
            await self.conn.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        first = True
        while not self._stop:
            try:
                token = (await self.api.sync_token(self.topics))["token"]
                self.conn = await connect(self.http, self.ws_url, token, protocol=self.protocol)
            except Exception:
                await asyncio.sleep(0.3)
                continue
            if not first:
                self.reconnects += 1
            first = False
            await self._subscribe(self.topics)
            try:
                async for message in self.conn.messages():
                    self._handle(message)
            except Exception as exc:
                self.closes.append(f"receive error {exc!r}")
            self.closes.append(f"{self.conn.close_code} {self.conn.close_reason}")
            await asyncio.sleep(0.2)

    async def _subscribe(self, topics: list[str]) -> None:
        assert self.conn is not None
        self._req += 1
        cursors = []
        for topic in topics:
            st = self.state[topic]
            cursors.append(ws_pb2.TopicCursor(topic=topic, epoch=st.epoch, after_seq=st.last))
        await self.conn.subscribe_cursors(f"{self.name}-{self._req}", cursors)

    async def resubscribe_fresh(self, topic: str) -> None:
        """Forget `topic` and subscribe from after_seq 0 with an empty epoch."""
        self.state[topic] = TopicState()
        if self.conn is not None and not self.conn.closed:
            await self._subscribe([topic])

    # -- checking ---------------------------------------------------------

    def _handle(self, message: ws_pb2.ServerMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "frame":
            self._frame(message.frame)
        elif kind == "snapshot_begin":
            b = message.snapshot_begin
            st = self.state[b.topic]
            st.epoch, st.in_snapshot, st.as_of, st.last, st.seqs, st.docs = (
                b.epoch,
                True,
                b.as_of_seq,
                0,
                [],
                {},
            )
        elif kind == "snapshot_end":
            st = self.state[message.snapshot_end.topic]
            st.in_snapshot = False
            st.last = message.snapshot_end.as_of_seq
        elif kind == "reconnect":
            self.reconnect_messages.append(message.reconnect.reason)
        elif kind == "error":
            err = message.error
            if err.code == "stale_cursor":
                self.stale.append((err.topic, err.reason))
                self.stale_heads[err.topic] = err.head_seq
                if self.auto_resubscribe:
                    asyncio.get_running_loop().create_task(self.resubscribe_fresh(err.topic))
            else:
                self.errors.append(f"{err.code}:{err.reason}:{err.topic}:{err.message}")

    def _frame(self, frame: frames_pb2.KhalaFrame) -> None:
        self.frames += 1
        st = self.state.get(frame.topic)
        if st is None:
            self.violations.append(f"frame of unsubscribed topic {frame.topic}")
            return
        if st.epoch and frame.epoch != st.epoch:
            self.violations.append(
                f"{frame.topic}: frame of epoch {frame.epoch} inside epoch {st.epoch}"
            )
            return
        st.epoch = frame.epoch
        if st.in_snapshot:
            if not (st.last < frame.seq <= st.as_of):
                self.violations.append(
                    f"{frame.topic}: snapshot seq {frame.seq} after {st.last} (as_of {st.as_of})"
                )
            st.last = frame.seq
        else:
            if frame.seq != st.last + 1:
                what = "duplicate" if frame.seq <= st.last else "gap"
                self.violations.append(f"{frame.topic}: {what} seq {frame.seq} after {st.last}")
                if frame.seq <= st.last:
                    return
            st.last = frame.seq
            st.seqs.append(frame.seq)
        if frame.kind == frames_pb2.FRAME_KIND_DOC_UPSERT:
            st.docs[frame.key] = frame.payload_bytes
        elif frame.kind == frames_pb2.FRAME_KIND_DOC_DELETE:
            st.docs.pop(frame.key, None)

    async def wait_for(self, heads: dict[str, int], timeout_s: float) -> bool:
        """Wait until every topic's cursor reaches its head; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(
                self.state[t].last >= h and not self.state[t].in_snapshot for t, h in heads.items()
            ):
                return True
            await asyncio.sleep(0.1)
        return False

    def summaries(self, topic: str) -> dict[str, summaries_pb2.RunSummary]:
        """The RunSummary documents of a doc topic, by run_id."""
        return {
            k: summaries_pb2.RunSummary.FromString(v) for k, v in self.state[topic].docs.items()
        }


async def wait_heads(
    db_url: str, expected: dict[str, int], timeout_s: float = 30.0
) -> dict[str, tuple[str, int]]:
    """Wait until khala.topics reaches `expected` heads; returns {topic: (epoch, head_seq)} of those topics."""
    conn = await asyncpg.connect(db_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = await conn.fetch(
                "SELECT topic, epoch, head_seq FROM khala.topics WHERE topic = ANY($1::text[])",
                list(expected),
            )
            found = {r["topic"]: (r["epoch"], int(r["head_seq"])) for r in rows}
            done = all(found.get(t, ("", 0))[1] >= h for t, h in expected.items())
            if done or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def topic_heads(db_url: str, topics: list[str]) -> dict[str, tuple[str, int]]:
    """{topic: (epoch, head_seq)} as khala.topics holds them now."""
    return await wait_heads(db_url, {t: 0 for t in topics}, 0)


def run_summary_diff(
    doc: summaries_pb2.RunSummary | None, run: dict[str, Any], events: list[dict[str, Any]]
) -> list[str]:
    """Fields where the projected RunSummary differs from runtime's run snapshot and event log."""
    if doc is None:
        return ["missing document"]
    outputs = [e for e in events if e["type"] == "run.output"]
    expected: dict[str, Any] = {
        "run_id": run["run_id"],
        "org_id": run["org_id"],
        "title": run["title"],
        "status": run["status"],
        "last_seq": run["last_seq"],
        "event_count": len(events),
        "output_count": len(outputs),
        "last_event_type": events[-1]["type"] if events else "",
        "last_output": str(outputs[-1]["payload"].get("text", "")) if outputs else "",
        "created_at_ms": events[0]["occurred_at_ms"] if events else 0,
        "updated_at_ms": events[-1]["occurred_at_ms"] if events else 0,
    }
    diffs = []
    if len(events) != run["last_seq"]:
        diffs.append(f"runtime log has {len(events)} events, last_seq {run['last_seq']}")
    for key, want in expected.items():
        got: Any = getattr(doc, key)
        if key == "status":
            got = STATUS_NAMES.get(doc.status, str(doc.status))
        if got != want:
            diffs.append(f"{key}: doc={got!r} runtime={want!r}")
    return diffs


async def run_log(api: KhalaApi, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run from runtime, in order."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await api.read_events(run_id, after_seq=after, limit=1000)
        events.extend(page["events"])
        if page.get("next_after_seq") is None:
            return events
        after = page["next_after_seq"]


class Writers:
    """Appends `run.output` events to every run until stopped. A failed append is
    retried with the same idempotency key, so an outage loses or doubles nothing."""

    def __init__(self, api: KhalaApi, run_ids: list[str]) -> None:
        self.api = api
        self.appended = {rid: 0 for rid in run_ids}
        self.retries = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(rid)) for rid in self.appended]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, rid: str) -> None:
        await self.api.append_events(rid, [event("run.started", "start")])
        i = 0
        while not self._stop.is_set():
            i += 1
            await self._append(rid, [event("run.output", f"o{i}", {"text": f"line {i}"})])
            self.appended[rid] += 1
            await asyncio.sleep(0.05)

    async def _append(self, rid: str, batch: list[dict[str, Any]]) -> None:
        while True:
            try:
                await self.api.append_events(rid, batch)
                return
            except ApiError:  # retried with the same idempotency key
                self.retries += 1
                await asyncio.sleep(0.2)


@dataclass
class Settled:
    """The runs once the writes stopped, and what the clients caught up to."""

    runs: dict[str, dict[str, Any]]  # run id -> runtime's run
    logs: dict[str, list[dict[str, Any]]]  # run id -> its events
    heads: dict[str, int]  # run topic -> last seq
    all_heads: dict[str, int]  # every followed topic -> head seq
    caught: dict[str, bool]  # client -> caught up with all_heads


async def settle(
    api: KhalaApi,
    db_url: str,
    run_topics: dict[str, str],
    topics: list[str],
    followers: list[Follower],
) -> Settled:
    """Complete the runs, wait for the topic log, let every client catch up, stop them."""
    for rid in run_topics:
        await api.append_events(rid, [event("run.completed", "done")])
    runs = {rid: await api.get_run(rid) for rid in run_topics}
    logs = {rid: await run_log(api, rid) for rid in run_topics}
    heads = {run_topics[rid]: runs[rid]["last_seq"] for rid in run_topics}
    await wait_heads(db_url, heads)
    final = await topic_heads(db_url, topics)
    all_heads = {t: h for t, (_, h) in final.items()}
    caught = {f.name: await f.wait_for(all_heads, 30) for f in followers}
    for f in followers:
        await f.stop()
    return Settled(runs, logs, heads, all_heads, caught)


def exact(seqs: list[int], first: int, last: int) -> bool:
    """Whether `seqs` is exactly first..last."""
    return seqs == list(range(first, last + 1))


def verdict(name: str, checks: list[tuple[str, bool, str]]) -> int:
    """Print the PASS/FAIL table; returns the exit code."""
    print(f"\n===== {name} =====")
    ok = True
    for label, passed, detail in checks:
        ok = ok and passed
        print(f"  [{'PASS' if passed else 'FAIL'}] {label}: {detail}")
    print(f"===== {name}: {'PASS' if ok else 'FAIL'} =====", flush=True)
    return 0 if ok else 1


__all__ = [
    "JSON",
    "PROTO",
    "DrillEnv",
    "Follower",
    "TopicState",
    "create_database",
    "drill_env",
    "event",
    "exact",
    "log",
    "run_log",
    "run_summary_diff",
    "signed_in",
    "start_quietly",
    "topic_heads",
    "verdict",
    "wait_heads",
]
