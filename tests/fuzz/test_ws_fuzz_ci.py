"""Seeded live WebSocket fuzz slice (`make test-fuzz-ci`, 90 s; `make test-fuzz` runs 1M messages).

The four services run as processes. For KHALA_FUZZ_SECONDS (90) or until
KHALA_FUZZ_MESSAGES are sent, FUZZ_WORKERS concurrent fuzz clients open
connections on both subprotocols and send, from a seeded generator
(KHALA_FUZZ_SEED, printed): a valid Hello (most connections) or garbage first,
then a mix of valid client messages (subscribe to allowed, forbidden and
malformed topics with random cursors, unsubscribe, ping, refresh with good and
bad tokens), mutated serializations (bit flips, inserted/deleted bytes,
truncation), random bytes, and messages of the wrong WebSocket type. Each
connection ends with a Ping whose Pong (or the close) marks the end of the
gateway's answers; every answer is checked as in test_ws_fuzz_live.py
(decodes, documented error and close codes, never `internal`, per-topic
increasing seq).

Beside the fuzzers, normal clients follow two run topics while a writer appends
to them; the chaos checker then requires each of their streams to be exactly
seq 1..head with runtime's events. The gateway's RSS is sampled every second and
must stay bounded; the gateway must stay up and log no unhandled exception.
Counts go to test-artifacts/fuzz/ws_fuzz_ci.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from khala_client import KhalaApi
from khala_common.topics import run_topic
from openagents.sync.v1 import ws_pb2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.chaos.support import (  # noqa: E402
    Subscriber,
    TokenSource,
    WriterStats,
    check,
    runtime_log,
    writer,
)

from .test_ws_fuzz_live import (  # noqa: E402
    ARTIFACTS,
    JSON,
    PROTO,
    Tally,
    _assert_healthy_and_clean,
    _one,
    _prepare,
    fuzz_stack,
)

pytestmark = [pytest.mark.fuzz_ci, pytest.mark.e2e, pytest.mark.timeout(1800)]
__all__ = ["fuzz_stack"]  # the live fuzz module's stack fixture, shared

SEED = int(os.environ.get("KHALA_FUZZ_SEED", "7"))
SECONDS = float(os.environ.get("KHALA_FUZZ_SECONDS", "90"))
MESSAGES = int(os.environ.get("KHALA_FUZZ_MESSAGES", "0"))  # 0: until SECONDS
MIN_MESSAGES = int(os.environ.get("KHALA_FUZZ_MIN_MESSAGES", "20000"))
FUZZ_WORKERS = 12
NORMAL_CLIENTS = 6
RSS_LIMIT_MB = 600  # the gateway idles near 100 MB; a leak per message would pass this


class Generator:
    """Client messages from a seeded RNG: valid, mutated, random or of the wrong type."""

    def __init__(self, rng: random.Random, ctx: dict[str, Any]) -> None:
        self.rng = rng
        self.ctx = ctx

    def text(self, n: int = 30) -> str:
        alphabet = "abcXYZ019.*-_ /\\\"'{}[]:\x00\u00e9\u4e2d\U0001f600"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, n)))

    def token(self) -> str:
        good: str = self.ctx["token"]
        i = self.rng.randrange(len(good))
        return self.rng.choice(
            [
                good,
                self.ctx["narrow"],
                self.ctx["foreign"],
                good[: len(good) // 2],
                self.text(),
                "e30.e30.",
                good[:i] + self.rng.choice("AZaz09-_.=") + good[i + 1 :],
            ]
        )

    def topic(self) -> str:
        org = self.ctx["org"]
        return self.rng.choice(
            [
                *self.ctx["allowed"],
                *self.ctx["forbidden"],
                f"org.{org}.*",
                f"org.{org}.run.r1.x",
                "org",
                "",
                "a" * 300,
                f"org.{org}.workers",
                f"org.{org}.run.nope",
                self.text(),
            ]
        )

    def cursor(self) -> ws_pb2.TopicCursor:
        after = self.rng.choice([0, 1, 3, 6, 7, 1000, 2**63, 2**64 - 1, self.rng.randrange(2**64)])
        epoch = self.rng.choice(["", "1", "2", "x", self.text(8)])
        return ws_pb2.TopicCursor(topic=self.topic(), epoch=epoch, after_seq=after)

    def message(self) -> ws_pb2.ClientMessage:
        kind = self.rng.randrange(6)
        if kind == 0:
            return ws_pb2.ClientMessage(
                subscribe=ws_pb2.Subscribe(
                    request_id=self.text(8),
                    cursors=[self.cursor() for _ in range(self.rng.randint(0, 4))],
                    snapshot_if_stale=self.rng.random() < 0.5,
                )
            )
        if kind == 1:
            return ws_pb2.ClientMessage(
                unsubscribe=ws_pb2.Unsubscribe(
                    request_id=self.text(8),
                    topics=[self.topic() for _ in range(self.rng.randint(0, 3))],
                )
            )
        if kind == 2:
            return ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce=self.text(8)))
        if kind == 3:
            return ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=self.token()))
        if kind == 4:
            return ws_pb2.ClientMessage(hello=ws_pb2.Hello(token=self.token()))
        return ws_pb2.ClientMessage()

    def wire(self, protocol: str) -> bytes | str:
        """One WebSocket message of `protocol`: valid (half), mutated, random, or wrong type."""
        from .test_ws_fuzz_live import _encode

        data = _encode(self.message(), protocol, self.rng.random() < 0.5)
        roll = self.rng.random()
        if roll < 0.5:
            return data
        if roll < 0.65:
            if protocol == PROTO:
                return self.rng.randbytes(self.rng.randint(0, 200))
            return self.text(200)
        if roll < 0.75:
            return data.encode() if isinstance(data, str) else data.hex()
        raw = bytearray(data.encode() if isinstance(data, str) else data)
        for _ in range(self.rng.randint(1, 4)):
            if not raw:
                break
            pos = self.rng.randrange(len(raw))
            op = self.rng.randrange(4)
            if op == 0:
                raw[pos] ^= 1 << self.rng.randrange(8)
            elif op == 1:
                raw[pos:pos] = self.rng.randbytes(self.rng.randint(1, 4))
            elif op == 2:
                del raw[pos]
            else:
                del raw[pos:]
        return bytes(raw).decode("utf-8", "replace") if protocol == JSON else bytes(raw)

    def connection(self) -> tuple[str, list[bytes | str], bool]:
        """(subprotocol, messages, whether the first is a valid Hello)."""
        from .test_ws_fuzz_live import _encode

        protocol = self.rng.choice([PROTO, JSON])
        valid_hello = self.rng.random() < 0.8
        if valid_hello:
            hello = ws_pb2.ClientMessage(
                hello=ws_pb2.Hello(
                    token=self.ctx["token"],
                    client_name=self.text(10),
                    client_version=self.rng.choice(["1.0.0", "0", "", self.text(6)]),
                )
            )
            first: bytes | str = _encode(hello, protocol)
        else:
            first = self.wire(protocol)
        return (
            protocol,
            [first, *(self.wire(protocol) for _ in range(self.rng.randint(10, 40)))],
            valid_hello,
        )


@dataclass
class FuzzCounts:
    """Messages sent and, of those, the ones sent after a valid Hello on their connection."""

    sent: int = 0
    after_valid_hello: int = 0
    binary: int = 0
    text: int = 0
    failures: list[str] = field(default_factory=list)


async def _fuzz_worker(
    url: str, gen: Generator, tally: Tally, counts: FuzzCounts, stop: asyncio.Event
) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            protocol, messages, valid_hello = gen.connection()
            one = Tally()  # this connection's counts (workers run concurrently)
            try:
                await _one(http, url, protocol, messages, one)
            except AssertionError as exc:
                counts.failures.append(str(exc)[:300])
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                counts.failures.append(f"transport: {exc!r}"[:300])
            _merge(tally, one)
            sent = one.messages
            counts.sent += sent
            if valid_hello:
                counts.after_valid_hello += max(0, sent - 2)  # not the Hello, not the end Ping
            if protocol == PROTO:
                counts.binary += sent
            else:
                counts.text += sent
            if MESSAGES and counts.sent >= MESSAGES:
                stop.set()


def _merge(total: Tally, one: Tally) -> None:
    total.connections += one.connections
    total.messages += one.messages
    total.replies += one.replies
    for table, part in ((total.codes, one.codes), (total.closes, one.closes)):
        for key, n in part.items():
            table[key] = table.get(key, 0) + n


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _sample_rss(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            samples.append(_rss_mb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _fuzz(stack: Any) -> dict[str, Any]:
    ctx = await _prepare(stack)
    rng = random.Random(SEED)
    tally, counts = Tally(), FuzzCounts()
    stop, writers_stop, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    rss: list[float] = []
    stats = WriterStats()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        api = KhalaApi(stack.url("control"), stack.url("runtime"), http)
        tag = uuid.uuid4().hex[:8]
        await api.sign_in_dev(f"normal-{tag}@example.com", "Normal", device_id=f"n-{tag}")
        org = f"normal-{tag}"
        await api.create_org(org, "Normal")
        runs = ["n1", "n2"]
        for run_id in runs:
            await api.create_run(org, run_id)
            started_event = [{"type": "run.started", "payload": {}, "idempotency_key": "start"}]
            await api.append_events(run_id, started_event)
            stats.accepted.setdefault(run_id, {})["start"] = 2
        topics = [run_topic(org, r) for r in runs]
        tokens = TokenSource(api, topics)
        normals = [Subscriber(index=i, topics=topics) for i in range(NORMAL_CLIENTS)]
        normal_tasks = [
            asyncio.create_task(s.run(http, lambda: stack.ws_url, tokens, lambda _s: done.is_set()))
            for s in normals
        ]

        async def reauth() -> None:
            await api.sign_in_dev(f"normal-{tag}@example.com", "Normal", device_id=f"n-{tag}")

        writer_tasks = [
            asyncio.create_task(writer(api, r, 5.0, writers_stop, stats, reauth)) for r in runs
        ]
        gateway_pid = stack.procs["gateway"].pid
        sampler = asyncio.create_task(_sample_rss(gateway_pid, rss, stop))
        started = time.monotonic()
        workers = [
            asyncio.create_task(
                _fuzz_worker(
                    stack.ws_url,
                    Generator(random.Random(rng.getrandbits(64)), ctx),
                    tally,
                    counts,
                    stop,
                )
            )
            for _ in range(FUZZ_WORKERS)
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SECONDS)
        stop.set()
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
        writers_stop.set()
        await asyncio.gather(*writer_tasks)
        logs = {r: await runtime_log(api, r, stats) for r in runs}
        heads = {run_topic(org, r): len(events) for r, events in logs.items()}
        deadline = time.monotonic() + 60
        while not all(s.caught_up(heads) for s in normals) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        done.set()
        for task in [*normal_tasks, sampler]:
            task.cancel()
        for task in [*normal_tasks, sampler]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    verdict = check(org, logs, stats, normals)
    return {
        "seed": SEED,
        "seconds": round(elapsed, 1),
        "messages": counts.sent,
        "messages_per_s": round(counts.sent / elapsed),
        "after_valid_hello": counts.after_valid_hello,
        "binary": counts.binary,
        "json": counts.text,
        "connections": tally.connections,
        "replies": tally.replies,
        "error_codes": tally.codes,
        "close_codes": tally.closes,
        "failures": counts.failures[:20],
        "failure_count": len(counts.failures),
        "normal_clients": NORMAL_CLIENTS,
        "normal_frames_checked": verdict.frames_checked,
        "normal_problems": verdict.problems[:20],
        "gateway_rss_mb": {
            "first": round(rss[0], 1) if rss else None,
            "max": round(max(rss), 1) if rss else None,
            "last": round(rss[-1], 1) if rss else None,
            "samples": len(rss),
        },
    }


def test_seeded_fuzz_slice_beside_normal_clients(fuzz_stack) -> None:
    report = asyncio.run(_fuzz(fuzz_stack))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ws_fuzz_ci.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nws fuzz slice: {json.dumps(report)}")
    assert report["failure_count"] == 0, report["failures"]
    assert fuzz_stack.exited() == {}, "a service exited"
    _assert_healthy_and_clean(fuzz_stack)
    assert not report["normal_problems"], report["normal_problems"]
    assert report["normal_frames_checked"] > 0
    assert report["messages"] >= MIN_MESSAGES, report["messages"]
    assert report["after_valid_hello"] * 2 >= report["messages"], report
    assert report["binary"] > 0 and report["json"] > 0
    assert report["gateway_rss_mb"]["max"] < RSS_LIMIT_MB, report["gateway_rss_mb"]
