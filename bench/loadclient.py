"""One load client for Khala and its peers: the same asyncio + aiohttp WebSocket
code path, message accounting and timing for every system, so ratios compare
servers rather than clients.

* `KhalaClient`: openagents.sync.v1 on `khala.v1+proto` (Hello, Subscribe with
  cursors, `frame` / `frames` batches).
* `NatsClient`: NATS core protocol over the NATS server's WebSocket listener
  (CONNECT, SUB, MSG; PUB for publishing).
* `SioClient`: Engine.IO 4 / Socket.IO 4 over a raw WebSocket (`40` connect with
  `pid`/`offset` for connectionStateRecovery, `42` events, `2`/`3` ping-pong).

Every received message goes to a `Sink`, which counts deliveries per topic,
keeps each client's last seq per topic, and optionally receive times for
latency. Peer payloads carry their seq in the first 12 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from openagents.sync.v1 import ws_pb2


@dataclass
class Sink:
    """Deliveries seen by all clients of one phase."""

    deliveries: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    times: dict[tuple[str, int], list[float]] | None = None  # (topic, seq) -> receive times
    stop_when: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def got(self, client: Client, topic: str, seq: int) -> None:
        now = time.perf_counter()
        if client.last.get(topic, 0) >= seq:
            client.duplicates += 1
            return
        client.last[topic] = seq
        self.deliveries += 1
        if not self.first_at:
            self.first_at = now
        self.last_at = now
        if self.times is not None:
            self.times.setdefault((topic, seq), []).append(now)
        if self.stop_when and self.deliveries >= self.stop_when:
            self.done.set()


class Client:
    """One connection of any system."""

    def __init__(self, http: aiohttp.ClientSession, url: str, sink: Sink) -> None:
        self.http = http
        self.url = url
        self.sink = sink
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.last: dict[str, int] = {}
        self.duplicates = 0
        self.ready: dict[str, asyncio.Event] = {}
        self.reader: asyncio.Task[None] | None = None

    def caught_up(self, heads: dict[str, int]) -> bool:
        return all(self.last.get(t, 0) >= h for t, h in heads.items())

    async def close(self, *, abrupt: bool = False) -> None:
        if self.ws is not None:
            conn = getattr(self.ws, "_conn", None)
            if (
                abrupt and conn is not None and conn.transport is not None
            ):  # drop TCP, no close frame
                conn.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(), 2)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader

    def _start_reader(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, asyncio.CancelledError):
            async for msg in self.ws:
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    await self.on_message(msg.data)
                else:
                    break

    async def on_message(self, data: bytes | str) -> None:
        raise NotImplementedError


class KhalaClient(Client):
    """openagents.sync.v1 over khala.v1+proto."""

    def __init__(self, http: aiohttp.ClientSession, url: str, sink: Sink, token: str) -> None:
        super().__init__(http, url, sink)
        self.token = token
        self.epochs: dict[str, str] = {}
        self.live: dict[str, asyncio.Event] = {}
        self.retries = 0
        self._later: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(
            self.url, protocols=("khala.v1+proto",), max_msg_size=0
        )
        await self.ws.send_bytes(
            ws_pb2.ClientMessage(
                hello=ws_pb2.Hello(token=self.token, client_name="bench", client_version="1.0.0")
            ).SerializeToString()
        )
        reply = ws_pb2.ServerMessage.FromString((await self.ws.receive(timeout=60)).data)
        if reply.WhichOneof("body") != "welcome":
            raise ConnectionError(f"no welcome: {reply}")
        self._start_reader()

    async def subscribe(self, topics: list[str], after: dict[str, int] | None = None) -> None:
        """Subscribe from `after` (or the client's own cursors, else fresh)."""
        assert self.ws is not None
        cursors = []
        for topic in topics:
            seq = (after or {}).get(topic, self.last.get(topic, 0))
            self.last[topic] = max(self.last.get(topic, 0), seq)
            self.live.setdefault(topic, asyncio.Event())
            cursors.append(
                ws_pb2.TopicCursor(topic=topic, epoch=self.epochs.get(topic, ""), after_seq=seq)
            )
        await self.ws.send_bytes(
            ws_pb2.ClientMessage(
                subscribe=ws_pb2.Subscribe(request_id="b", cursors=cursors)
            ).SerializeToString()
        )

    async def wait_live(self, timeout_s: float = 120) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.live.values())), timeout_s)

    def _resubscribe(self, topic: str) -> None:
        self._pending = asyncio.ensure_future(self.subscribe([topic]))

    async def on_message(self, data: bytes | str) -> None:
        message = ws_pb2.ServerMessage.FromString(data)  # type: ignore[arg-type]
        kind = message.WhichOneof("body")
        if kind == "frames":
            for frame in message.frames.frames:
                self.sink.got(self, frame.topic, frame.seq)
        elif kind == "frame":
            self.sink.got(self, message.frame.topic, message.frame.seq)
        elif kind == "watermark":
            event = self.live.get(message.watermark.topic)
            if event is not None:
                event.set()
        elif kind == "subscribed":
            self.epochs[message.subscribed.topic] = message.subscribed.epoch
        elif kind == "error":
            error = message.error
            if error.topic and error.retry_after_ms and error.code in ("stale_cursor", "internal"):
                # The gateway's cap on concurrent replays: resume that topic a bit later.
                self.retries += 1
                self._later = asyncio.get_running_loop().call_later(
                    error.retry_after_ms / 1000, self._resubscribe, error.topic
                )
                return
            raise ConnectionError(f"khala error {error.code}: {error.message}")


def peer_payload(seq: int, size: int) -> str:
    """A peer message body of `size` bytes whose first 12 carry the seq."""
    head = f"{seq:012d}"
    return head + "x" * max(0, size - len(head))


class NatsClient(Client):
    """NATS core over the server's WebSocket listener."""

    def __init__(self, http: aiohttp.ClientSession, url: str, sink: Sink) -> None:
        super().__init__(http, url, sink)
        self._buf = b""
        self._pong = asyncio.Event()
        self._sids: dict[str, str] = {}

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        info = await self.ws.receive(timeout=30)
        if not bytes(info.data if isinstance(info.data, bytes) else info.data.encode()).startswith(
            b"INFO"
        ):
            raise ConnectionError(f"no INFO: {info.data!r}")
        connect = {
            "verbose": False,
            "pedantic": False,
            "protocol": 1,
            "headers": False,
            "name": "bench",
        }
        await self.ws.send_bytes(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        self._start_reader()

    async def subscribe(self, topics: list[str], after: dict[str, int] | None = None) -> None:
        assert self.ws is not None
        ops = b""
        for topic in topics:
            sid = str(len(self._sids) + 1)
            self._sids[sid] = topic
            ops += f"SUB {topic} {sid}\r\n".encode()
        self._pong.clear()
        await self.ws.send_bytes(ops + b"PING\r\n")

    async def wait_live(self, timeout_s: float = 120) -> None:
        await asyncio.wait_for(self._pong.wait(), timeout_s)

    async def publish(self, topic: str, seq: int, size: int) -> None:
        assert self.ws is not None
        body = peer_payload(seq, size).encode()
        await self.ws.send_bytes(f"PUB {topic} {len(body)}\r\n".encode() + body + b"\r\n")

    async def publish_many(self, items: list[tuple[str, int]], size: int) -> None:
        assert self.ws is not None
        parts = []
        for topic, seq in items:
            body = peer_payload(seq, size).encode()
            parts.append(f"PUB {topic} {len(body)}\r\n".encode() + body + b"\r\n")
        await self.ws.send_bytes(b"".join(parts))

    async def on_message(self, data: bytes | str) -> None:
        buf = self._buf + (data if isinstance(data, bytes) else data.encode())
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            line = buf[pos:end]
            if line.startswith(b"MSG "):
                parts = line.split()
                size = int(parts[-1])
                if len(buf) < end + 2 + size + 2:
                    break
                body = buf[end + 2 : end + 2 + size]
                self.sink.got(
                    self, self._sids.get(parts[2].decode(), parts[1].decode()), int(body[:12])
                )
                pos = end + 2 + size + 2
                continue
            if line == b"PING":
                assert self.ws is not None
                await self.ws.send_bytes(b"PONG\r\n")
            elif line == b"PONG":
                self._pong.set()
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode())
            pos = end + 2
        self._buf = buf[pos:]


class SioClient(Client):
    """Socket.IO 4 (Engine.IO 4) over a raw WebSocket, with connection-state recovery."""

    def __init__(self, http: aiohttp.ClientSession, url: str, sink: Sink) -> None:
        super().__init__(http, url, sink)
        self.pid = ""
        self.offset = ""
        self.recovered = False
        self._connected = asyncio.Event()
        self._acks: dict[int, asyncio.Event] = {}
        self._next_ack = 0

    async def connect(self) -> None:
        self._connected.clear()
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        opened = await self.ws.receive(timeout=30)
        if not str(opened.data).startswith("0"):
            raise ConnectionError(f"no engine.io open: {opened.data!r}")
        auth = {"pid": self.pid, "offset": self.offset} if self.pid else None
        await self.ws.send_str("40" + (json.dumps(auth) if auth else ""))
        self._start_reader()
        await asyncio.wait_for(self._connected.wait(), 60)

    async def subscribe(self, topics: list[str], after: dict[str, int] | None = None) -> None:
        assert self.ws is not None
        self._next_ack += 1
        ack = self._next_ack
        self._acks[ack] = asyncio.Event()
        await self.ws.send_str(f"42{ack}" + json.dumps(["subscribe", topics]))

    async def wait_live(self, timeout_s: float = 120) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._acks.values())), timeout_s)

    async def publish(self, topic: str, seq: int, size: int) -> None:
        assert self.ws is not None
        await self.ws.send_str("42" + json.dumps(["publish", topic, seq, peer_payload(seq, size)]))

    async def on_message(self, data: bytes | str) -> None:
        text = data if isinstance(data, str) else data.decode()
        if text.startswith("42"):
            event = json.loads(text[2:])
            if event[0] == "frame":
                self.sink.got(self, event[1], int(event[2]))
                if len(event) > 4:
                    self.offset = event[4]
        elif text == "2":
            assert self.ws is not None
            await self.ws.send_str("3")
        elif text.startswith("43"):
            body = text[2:]
            ack = int(body[: body.index("[")])
            event = self._acks.get(ack)
            if event is not None:
                event.set()
        elif text.startswith("40"):
            info: dict[str, Any] = json.loads(text[2:] or "{}")
            if info.get("pid"):
                self.recovered = self.pid == info["pid"]
                self.pid = info["pid"]
            self._connected.set()
        elif text.startswith("44"):
            raise ConnectionError(f"socket.io connect error {text}")
