"""Chaos harness: sustained writers, many reconnecting WebSocket subscribers, faults,
and an independent checker.

Delivery guarantee under test (DESIGN §1 invariants 5 and 7): every event runtime
accepted (HTTP 2xx) is in runtime's log, and every subscriber sees, per topic, the
concatenation of all its connections' frames equal to exactly seq 1..head of that
topic, each frame carrying the event runtime recorded at that position (same
event id, type and payload hash): nothing lost, duplicated or reordered, whatever
process, broker or database restarts happen meanwhile.

The harness never trusts the gateway's or the SDK's own bookkeeping: a subscriber
records every frame exactly as received (a duplicate is recorded, not skipped)
and only uses its own cursor dict to resume after a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp

from khala_client import ApiError, KhalaApi, connect
from khala_common.topics import run_topic
from khala_runtime.domain.canonical import canonical_json
from khala_runtime.domain.chain import GENESIS, event_content, link
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import ws_pb2


def canonical_digest(
    event_id: str, stream_seq: int, event_type: str, payload: Any, chain_hash: str = ""
) -> str:
    """One event's identity: sha256 of id, position, type, canonical payload JSON and chain link."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(
        f"{event_id}|{stream_seq}|{event_type}|{body}|{chain_hash}".encode()
    ).hexdigest()


_FRAME_DIGESTS: dict[bytes, str] = {}


def frame_digest(payload_bytes: bytes) -> str:
    """The digest of the RuntimeEvent a frame carries (cached: all subscribers share bytes)."""
    digest = _FRAME_DIGESTS.get(payload_bytes)
    if digest is None:
        event = events_pb2.RuntimeEvent.FromString(payload_bytes)
        digest = canonical_digest(
            event.event_id,
            event.stream_seq,
            event.type,
            json.loads(event.payload_json or b"{}"),
            event.chain_hash,
        )
        _FRAME_DIGESTS[payload_bytes] = digest
    return digest


# -- writers ---------------------------------------------------------------------


@dataclass
class WriterStats:
    """What the writers did: accepted receipts and the failures they retried through."""

    accepted: dict[str, dict[str, int]] = field(default_factory=dict)  # run -> key -> seq
    retries: dict[str, int] = field(default_factory=dict)  # error kind -> count
    latencies: list[float] = field(default_factory=list)
    accepted_at: dict[str, list[tuple[float, int]]] = field(
        default_factory=dict
    )  # run -> (t, last seq)
    receipt_chain: dict[str, dict[int, str]] = field(
        default_factory=dict
    )  # run -> last_seq -> chain_hash
    server_errors: list[str] = field(default_factory=list)  # every HTTP 500 answer (a failure)

    def retry(self, kind: str) -> None:
        self.retries[kind] = self.retries.get(kind, 0) + 1


async def call_with_retry(
    op: Callable[[], Awaitable[Any]],
    stats: WriterStats,
    *,
    deadline_s: float,
    on_unauthorized: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """Call `op` until it succeeds; transient failures (connection errors, 5xx,
    401 while control restarts) are retried. Anything else is a test failure."""
    deadline = time.monotonic() + deadline_s
    delay = 0.1
    while True:
        try:
            return await asyncio.wait_for(op(), 10)
        except ApiError as exc:
            if exc.status == 401 and on_unauthorized is not None:
                stats.retry("401")
                with contextlib.suppress(Exception):
                    await on_unauthorized()
            elif exc.status == 0 or exc.status >= 500 or exc.status == 429:  # 0: unreachable
                stats.retry(str(exc.status))
                if exc.status == 500:  # an outage must answer 503, never an internal error
                    stats.server_errors.append(str(exc)[:200])
            else:
                raise
        except (aiohttp.ClientError, TimeoutError, OSError, json.JSONDecodeError) as exc:
            stats.retry(type(exc).__name__)
        if time.monotonic() > deadline:
            raise TimeoutError(f"call still failing after {deadline_s}s: {stats.retries}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def writer(
    api: KhalaApi,
    run_id: str,
    rate_per_s: float,
    stop: asyncio.Event,
    stats: WriterStats,
    reauth: Callable[[], Awaitable[None]],
    *,
    batch: int = 1,
) -> None:
    """Append `run.output` events to `run_id` at about `rate_per_s` until `stop`.

    Every append carries fresh idempotency keys, and a failed append is retried
    with the same keys, so a request that committed before its process died is
    answered with the original receipt instead of being appended twice.
    """
    accepted = stats.accepted.setdefault(run_id, {})
    n = 0
    period = batch / rate_per_s
    next_at = time.monotonic() + random.random() * period
    while not stop.is_set():
        keys = [f"w{n + i}" for i in range(batch)]
        events = [
            {
                "type": "run.output",
                "payload": {"n": n + i, "run": run_id, "pad": "x" * 32},
                "idempotency_key": key,
            }
            for i, key in enumerate(keys)
        ]
        started = time.monotonic()
        receipt = await call_with_retry(
            partial(api.append_events, run_id, events),
            stats,
            deadline_s=120,
            on_unauthorized=reauth,
        )
        stats.latencies.append(time.monotonic() - started)
        first = int(receipt["first_seq"])
        for i, key in enumerate(keys):
            accepted[key] = first + i
        stats.receipt_chain.setdefault(run_id, {})[int(receipt["last_seq"])] = receipt["chain_hash"]
        stats.accepted_at.setdefault(run_id, []).append((time.monotonic(), first + batch - 1))
        n += batch
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


# -- subscribers -------------------------------------------------------------------


class TokenSource:
    """A sync token for all chaos topics, re-minted when old or rejected."""

    def __init__(self, api: KhalaApi, topics: list[str], max_age_s: float = 120.0) -> None:
        self.api = api
        self.topics = topics
        self.max_age_s = max_age_s
        self._token = ""
        self._minted_at = 0.0
        self._lock = asyncio.Lock()
        self.mints = 0

    def invalidate(self) -> None:
        self._minted_at = 0.0

    async def get(self) -> str:
        """A token that is younger than max_age_s (mints one if needed; raises if control is down)."""
        async with self._lock:
            if not self._token or time.monotonic() - self._minted_at > self.max_age_s:
                issued = await asyncio.wait_for(self.api.sync_token(self.topics), 10)
                self._token = issued["token"]
                self._minted_at = time.monotonic()
                self.mints += 1
            return self._token


@dataclass
class Subscriber:
    """One client following `topics`, reconnecting from its own cursors whenever closed."""

    index: int
    topics: list[str]
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)
    received: dict[str, list[tuple[int, str]]] = field(
        default_factory=dict
    )  # topic -> (seq, digest)
    connections: int = 0
    connect_failures: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    resubscribes: int = 0

    def caught_up(self, heads: dict[str, int]) -> bool:
        return all(self.cursors.get(t, ("", 0))[1] >= heads[t] for t in self.topics)

    def _record(self, frame: Any) -> None:
        topic = frame.topic
        self.received.setdefault(topic, []).append((frame.seq, frame_digest(frame.payload_bytes)))
        epoch, last = self.cursors.get(topic, ("", 0))
        if frame.seq > last or epoch != frame.epoch:
            self.cursors[topic] = (frame.epoch, frame.seq)

    async def run(
        self,
        http: aiohttp.ClientSession,
        ws_url: Callable[[], str],
        tokens: TokenSource,
        done: Callable[[Subscriber], bool],
    ) -> None:
        """Connect, subscribe from the cursors, record frames; repeat until `done(self)`."""
        backoff = 0.1
        while not done(self):
            try:
                token = await tokens.get()
                conn = await connect(http, ws_url(), token, timeout_s=5)
            except (
                ConnectionRefusedError,
                aiohttp.ClientError,
                OSError,
                TimeoutError,
                ApiError,
            ) as exc:
                self.connect_failures += 1
                if isinstance(exc, ConnectionRefusedError) and getattr(exc, "code", "") in (
                    "token_expired",
                    "unauthorized",
                ):
                    tokens.invalidate()
                await asyncio.sleep(backoff + random.random() * backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self.connections += 1
            try:
                await self._serve(conn, tokens, done)
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError):
                pass
            finally:
                code = "teardown" if done(self) else str(conn.close_code)
                self.close_codes[code] = self.close_codes.get(code, 0) + 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)

    async def _serve(
        self, conn: Any, tokens: TokenSource, done: Callable[[Subscriber], bool]
    ) -> None:
        conn.cursors = dict(self.cursors)
        await conn.subscribe(self.topics, request_id=f"s{self.index}-{self.connections}")

        async def resubscribe(topic: str) -> None:
            conn.cursors = dict(self.cursors)
            self.resubscribes += 1
            with contextlib.suppress(Exception):
                await conn.subscribe([topic], request_id=f"r{self.index}-{self.resubscribes}")

        pending: set[asyncio.Task[None]] = set()
        try:
            while not done(self):
                # Heartbeats keep an idle socket talking; 20 s of silence means a dead peer.
                message = await conn.receive(timeout_s=20)
                if message is None:
                    return
                kind = message.WhichOneof("body")
                if kind == "frame":
                    self._record(message.frame)
                elif kind == "frames":
                    for frame in message.frames.frames:
                        self._record(frame)
                elif kind == "error":
                    self._on_error(message.error, tokens, resubscribe, pending)
        finally:
            for task in pending:
                task.cancel()

    def _on_error(
        self,
        error: ws_pb2.Error,
        tokens: TokenSource,
        resubscribe: Callable[[str], Awaitable[None]],
        pending: set[asyncio.Task[None]],
    ) -> None:
        """Record a server error: a topic's `internal` error is resubscribed after its
        retry_after (at least 200 ms), a token error makes the next connect mint anew."""
        self.errors.append(f"{error.code}:{error.reason}:{error.topic}")
        if error.topic and error.code == "internal":
            delay = max(error.retry_after_ms, 200) / 1000
            task = asyncio.create_task(_later(delay, resubscribe(error.topic)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        elif error.code in ("token_expired", "unauthorized"):
            tokens.invalidate()


async def _later(delay_s: float, coro: Awaitable[None]) -> None:
    await asyncio.sleep(delay_s)
    await coro


# -- faults --------------------------------------------------------------------------


async def restart_service(
    stack: Any, name: str, sig: int = signal.SIGKILL, down_s: float = 0.5
) -> float:
    """Kill `name` with `sig`, keep it down `down_s`, start it and wait for readiness; seconds taken."""
    started = time.monotonic()
    await asyncio.to_thread(stack.kill, name, sig)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(stack.start, name)
    await asyncio.to_thread(stack.wait_ready, name, 60.0)
    return time.monotonic() - started


async def restart_rabbitmq_app() -> float:
    """`rabbitmqctl stop_app && start_app` (long chaos test only: the broker is shared)."""
    started = time.monotonic()
    for action in ("stop_app", "start_app"):
        await asyncio.to_thread(
            subprocess.run, ["rabbitmqctl", action], check=True, capture_output=True, timeout=120
        )
    await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "await_startup"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.monotonic() - started


async def restart_postgres() -> float:
    """Restart the machine's Postgres cluster (long chaos test only: it is shared)."""
    started = time.monotonic()
    version = (
        await asyncio.to_thread(
            subprocess.run, ["ls", "/etc/postgresql"], check=True, capture_output=True, text=True
        )
    ).stdout.split()[0]
    await asyncio.to_thread(
        subprocess.run,
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.monotonic() - started


# -- the independent checker ---------------------------------------------------------------


@dataclass
class Verdict:
    """The checker's findings; `ok` when nothing was lost, duplicated or reordered."""

    frames_checked: int = 0
    events_in_log: int = 0
    accepted_writes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def runtime_log(api: KhalaApi, run_id: str, stats: WriterStats) -> list[dict[str, Any]]:
    """Every event of `run_id`, read page by page from runtime's HTTP API."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await call_with_retry(
            partial(api.read_events, run_id, after_seq=after, limit=1000), stats, deadline_s=60
        )
        events.extend(page["events"])
        if page.get("next_after_seq") is None or not page["events"]:
            return events
        after = page["next_after_seq"]


def check(
    org_id: str,
    logs: dict[str, list[dict[str, Any]]],
    stats: WriterStats,
    subscribers: list[Subscriber],
) -> Verdict:
    """Compare every subscriber's frames and every accepted write with runtime's log."""
    verdict = Verdict()
    expected: dict[str, list[str]] = {}
    for run_id, events in logs.items():
        seqs = [e["stream_seq"] for e in events]
        if seqs != list(range(1, len(events) + 1)):
            verdict.problems.append(f"runtime log of {run_id} is not gapless: {seqs[:5]}…")
        verdict.events_in_log += len(events)
        by_key = {e["idempotency_key"]: e["stream_seq"] for e in events if e["idempotency_key"]}
        for key, seq in stats.accepted.get(run_id, {}).items():
            verdict.accepted_writes += 1
            if by_key.get(key) != seq:
                verdict.problems.append(
                    f"accepted write {run_id}/{key} (receipt seq {seq}) is at {by_key.get(key)} in the log"
                )
        verdict.problems.extend(check_chain(run_id, events, stats.receipt_chain.get(run_id, {})))
        expected[run_topic(org_id, run_id)] = [
            canonical_digest(
                e["event_id"], e["stream_seq"], e["type"], e["payload"], e["chain_hash"]
            )
            for e in events
        ]
    for sub in subscribers:
        for topic in sub.topics:
            want = expected[topic]
            got = sub.received.get(topic, [])
            verdict.frames_checked += len(got)
            seqs = [s for s, _ in got]
            if seqs != list(range(1, len(want) + 1)):
                verdict.problems.append(
                    f"subscriber {sub.index} {topic}: {describe(seqs, len(want))}"
                )
                continue
            wrong = [s for s, digest in got if digest != want[s - 1]]
            if wrong:
                verdict.problems.append(
                    f"subscriber {sub.index} {topic}: payload differs from runtime's log at {wrong[:5]}"
                )
    return verdict


def check_chain(run_id: str, events: list[dict[str, Any]], receipts: dict[int, str]) -> list[str]:
    """Problems with `run_id`'s hash chain: every link recomputed from the log, and every
    append receipt's chain_hash equal to the log's link at the receipt's last_seq."""
    problems: list[str] = []
    prev = GENESIS
    links: dict[int, str] = {}
    for e in events:
        event = events_pb2.RuntimeEvent(
            event_id=e["event_id"],
            idempotency_key=e["idempotency_key"] or "",
            occurred_at_ms=e["occurred_at_ms"],
            org_id=e["org_id"],
            payload_json=canonical_json(e["payload"]),
            stream_id=e["stream_id"],
            stream_seq=e["stream_seq"],
            type=e["type"],
        )
        prev = link(prev, event_content(event))
        if e["chain_hash"] != prev:
            problems.append(f"runtime log of {run_id}: chain broken at seq {e['stream_seq']}")
            break
        links[e["stream_seq"]] = prev
    for seq, chain_hash in sorted(receipts.items()):
        if links.get(seq, chain_hash) != chain_hash:
            problems.append(f"receipt of {run_id} at seq {seq}: chain_hash differs from the log")
    return problems


def describe(seqs: list[int], head: int) -> str:
    """Why `seqs` is not 1..head: missing, duplicated and out-of-order seqs."""
    counts: dict[int, int] = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1
    dups = sorted(s for s, n in counts.items() if n > 1)
    missing = sorted(set(range(1, head + 1)) - set(seqs))
    reordered = [b for a, b in itertools.pairwise(seqs) if b < a]
    return (
        f"{len(seqs)} frames for head {head}: missing {missing[:10]} ({len(missing)}), "
        f"duplicated {dups[:10]} ({len(dups)}), out of order {reordered[:10]} ({len(reordered)})"
    )


def summarize(subscribers: list[Subscriber]) -> dict[str, Any]:
    """Connection statistics of all subscribers."""
    codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for sub in subscribers:
        for code, n in sub.close_codes.items():
            codes[code] = codes.get(code, 0) + n
        for err in sub.errors:
            errors[err.split(":")[0]] = errors.get(err.split(":")[0], 0) + 1
    return {
        "subscribers": len(subscribers),
        "connections": sum(s.connections for s in subscribers),
        "connect_failures": sum(s.connect_failures for s in subscribers),
        "close_codes": codes,
        "errors": errors,
        "resubscribes": sum(s.resubscribes for s in subscribers),
    }


def stale_errors(subscribers: list[Subscriber]) -> list[str]:
    """stale_cursor errors: a resume from a valid cursor must never be stale."""
    return [f"{s.index}:{e}" for s in subscribers for e in s.errors if e.startswith("stale_cursor")]
