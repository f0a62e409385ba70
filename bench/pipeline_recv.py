"""A receiver process of the pipeline benchmark: WebSocket subscribers on `khala.v1+proto`.

The orchestrator (bench/pipeline.py) starts a few of these with multiprocessing
(spawn) and drives each over a pipe; every process runs its own uvloop. Per
subscriber it keeps what a correct client must see: each frame of its topic
exactly once and in order. Per WebSocket message it parses the ServerMessage
(protobuf, C) and, per frame, finds the send timestamp the load generator put in
the event payload with one bytes search: no JSON or base64 work per frame.

Commands (tuples over the pipe), each answered by one reply:

* ("open", [(ws_url, token, topic, group, after_seq), ...], concurrency):
  connect, Hello, Subscribe from `after_seq`, wait for the live Watermark.
* ("start",): a new case begins; forget the last case's frames.
* ("expect", {topic: [seq, ...]}, stall_s, max_s): wait until every subscriber
  has every expected seq of its topic (or no frame arrived for `stall_s`, or
  `max_s` passed), then report counts and latencies (ms, per group).
* ("quiet", seconds, max_s): wait until no frame arrived for `seconds`.
* ("close",): close every socket and exit.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import uvloop

from openagents.sync.v1 import ws_pb2

# The load generator writes `"khala_bench_sent_ns":"<20 digits>"` into each event's
# payload (canonical JSON inside the frame's RuntimeEvent bytes).
MARKER = b'"khala_bench_sent_ns":"'
SENT_DIGITS = 20
ServerMessage = ws_pb2.ServerMessage


@dataclass(slots=True)
class Sub:
    """One subscriber: one socket, one topic."""

    topic: str
    group: str
    base: int  # frames at or below this seq belong to earlier cases
    seen: set[int] = field(default_factory=set)
    max_seq: int = 0
    duplicates: int = 0
    reorders: int = 0
    missing: set[int] | None = None
    live: asyncio.Event = field(default_factory=asyncio.Event)
    ws: aiohttp.ClientWebSocketResponse | None = None
    closed: bool = False


class Receiver:
    """The subscribers of one process and their accounting."""

    def __init__(self) -> None:
        self.subs: list[Sub] = []
        self.readers: list[asyncio.Task[None]] = []
        self.latency: dict[str, array.array[float]] = collections.defaultdict(
            lambda: array.array("d")
        )
        self.errors: collections.Counter[str] = collections.Counter()
        self.earlier = 0  # frames of an earlier case that arrived late
        self.no_stamp = 0
        self.incomplete = 0
        self.complete = asyncio.Event()
        self.last_frame_ns = time.monotonic_ns()
        self.http: aiohttp.ClientSession | None = None

    # -- frames --------------------------------------------------------------------------

    def on_frame(self, sub: Sub, seq: int, payload: bytes, now_ns: int) -> None:
        self.last_frame_ns = now_ns
        if seq <= sub.base:
            self.earlier += 1
            return
        seen = sub.seen
        if seq in seen:
            sub.duplicates += 1
            return
        seen.add(seq)
        if seq < sub.max_seq:
            sub.reorders += 1
        else:
            sub.max_seq = seq
        at = payload.find(MARKER)
        if at >= 0:
            start = at + len(MARKER)
            self.latency[sub.group].append(
                (now_ns - int(payload[start : start + SENT_DIGITS])) / 1e6
            )
        else:
            self.no_stamp += 1
        missing = sub.missing
        if missing is not None and seq in missing:
            missing.discard(seq)
            if not missing:
                self.incomplete -= 1
                if self.incomplete == 0:
                    self.complete.set()

    def on_message(self, sub: Sub, data: bytes, now_ns: int) -> None:
        message = ServerMessage.FromString(data)
        kind = message.WhichOneof("body")
        if kind == "frame":
            frame = message.frame
            self.on_frame(sub, frame.seq, frame.payload_bytes, now_ns)
        elif kind == "frames":
            for frame in message.frames.frames:
                self.on_frame(sub, frame.seq, frame.payload_bytes, now_ns)
        elif kind == "watermark":
            if message.watermark.live:
                sub.live.set()
        elif kind == "error":
            self.errors[f"ws error {message.error.code}"] += 1
        elif kind == "reconnect":
            self.errors["ws reconnect"] += 1

    async def read(self, sub: Sub) -> None:
        ws = sub.ws
        assert ws is not None
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.on_message(sub, msg.data, time.monotonic_ns())
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    self.errors[f"ws closed {ws.close_code}"] += 1
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    self.errors[f"ws {type(ws.exception()).__name__}"] += 1
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors[f"reader {type(exc).__name__}"] += 1
        sub.closed = True
        sub.live.set()

    # -- commands ------------------------------------------------------------------------

    async def open(
        self, specs: list[tuple[str, str, str, str, int]], concurrency: int
    ) -> dict[str, Any]:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        gate = asyncio.Semaphore(concurrency)

        async def one(ws_url: str, token: str, topic: str, group: str, after: int) -> None:
            sub = Sub(topic=topic, group=group, base=after, max_seq=after)
            async with gate:
                assert self.http is not None
                ws = await self.http.ws_connect(
                    ws_url, protocols=("khala.v1+proto",), max_msg_size=0
                )
                hello = ws_pb2.Hello(token=token, client_name="bench", client_version="1.0.0")
                await ws.send_bytes(ws_pb2.ClientMessage(hello=hello).SerializeToString())
                reply = ServerMessage.FromString((await ws.receive(timeout=60)).data)
                if reply.WhichOneof("body") != "welcome":
                    raise ConnectionError(f"no welcome: {reply}")
                sub.ws = ws
                self.subs.append(sub)
                self.readers.append(asyncio.create_task(self.read(sub)))
                cursor = ws_pb2.TopicCursor(topic=topic, after_seq=after)
                subscribe = ws_pb2.Subscribe(request_id="b", cursors=[cursor])
                await ws.send_bytes(ws_pb2.ClientMessage(subscribe=subscribe).SerializeToString())
                await asyncio.wait_for(sub.live.wait(), 120)

        results = await asyncio.gather(*(one(*spec) for spec in specs), return_exceptions=True)
        failures = collections.Counter(
            type(r).__name__ for r in results if isinstance(r, BaseException)
        )
        return {"opened": sum(1 for s in self.subs if not s.closed), "failed": dict(failures)}

    def start(self) -> dict[str, Any]:
        for sub in self.subs:
            sub.base = max(sub.base, sub.max_seq)
            sub.max_seq = sub.base
            sub.seen = set()
            sub.duplicates = sub.reorders = 0
            sub.missing = None
        self.latency.clear()
        self.errors.clear()
        self.earlier = self.no_stamp = 0
        self.complete.clear()
        return {"subscribers": len(self.subs)}

    async def expect(
        self, expected: dict[str, list[int]], stall_s: float, max_s: float
    ) -> dict[str, Any]:
        self.incomplete = 0
        self.complete.clear()
        for sub in self.subs:
            sub.missing = set(expected.get(sub.topic, ())) - sub.seen
            if sub.missing:
                self.incomplete += 1
        if self.incomplete == 0:
            self.complete.set()
        started = time.monotonic()
        ended = "complete"
        while not self.complete.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.complete.wait(), 0.5)
            if (time.monotonic_ns() - self.last_frame_ns) / 1e9 > stall_s:
                ended = "stalled"  # nothing arrived for stall_s: what is missing is not coming
                break
            if time.monotonic() - started > max_s:
                ended = "deadline"  # frames still arriving: what is missing is late (or lost)
                break
        report = self.report(expected, time.monotonic() - started)
        report["drain_ended"] = "complete" if self.complete.is_set() else ended
        return report

    def report(self, expected: dict[str, list[int]], waited_s: float) -> dict[str, Any]:
        unexpected = 0
        for sub in self.subs:
            unexpected += len(sub.seen.difference(expected.get(sub.topic, ())))
        return {
            "subscribers": len(self.subs),
            "closed": sum(1 for s in self.subs if s.closed),
            "deliveries": sum(len(s.seen) for s in self.subs),
            "missing": sum(len(s.missing or ()) for s in self.subs),
            "duplicates": sum(s.duplicates for s in self.subs),
            "reorders": sum(s.reorders for s in self.subs),
            "unexpected": unexpected,
            "earlier_case_frames": self.earlier,
            "frames_without_stamp": self.no_stamp,
            "errors": dict(self.errors),
            "drain_wait_s": round(waited_s, 2),
            "latency_ms": {group: values.tobytes() for group, values in self.latency.items()},
        }

    def _quiet_for(self) -> float:
        return (time.monotonic_ns() - self.last_frame_ns) / 1e9

    async def quiet(self, seconds: float, max_s: float) -> dict[str, Any]:
        started = time.monotonic()
        # Frames, not an event, end the wait: poll until the stream has been quiet.
        while self._quiet_for() < seconds and time.monotonic() - started < max_s:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return {"waited_s": round(time.monotonic() - started, 1)}

    async def close(self) -> None:
        for sub in self.subs:
            if sub.ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.ws.close(), 2)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        if self.http is not None:
            await self.http.close()


async def serve(conn: Connection) -> None:
    """Answer the orchestrator's commands until `close`."""
    receiver = Receiver()
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        name = command[0]
        if name == "open":
            conn.send(await receiver.open(command[1], command[2]))
        elif name == "start":
            conn.send(receiver.start())
        elif name == "expect":
            conn.send(await receiver.expect(command[1], command[2], command[3]))
        elif name == "quiet":
            conn.send(await receiver.quiet(command[1], command[2]))
        elif name == "close":
            await receiver.close()
            conn.send({"closed": True})
            return


def main(conn: Connection) -> None:
    """Entry point of a receiver process."""
    uvloop.run(serve(conn))
