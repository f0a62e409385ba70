"""The WebSocket sync protocol (`openagents.sync.v1`) over aiohttp.

`SyncConnection.frames()` yields frames one by one whichever way the server
packed them (`frame` or `frames` batch) and tracks a cursor per topic; frames
at or below a topic's cursor are discarded, so applying is idempotent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from google.protobuf import json_format

from openagents.sync.v1 import frames_pb2, ws_pb2

PROTO = "khala.v1+proto"
JSON = "khala.v1+json"


@dataclass
class SyncConnection:
    """One open socket after Welcome."""

    ws: aiohttp.ClientWebSocketResponse
    protocol: str
    welcome: ws_pb2.Welcome
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)

    async def send(self, message: ws_pb2.ClientMessage) -> None:
        if self.protocol == JSON:
            await self.ws.send_str(json_format.MessageToJson(message, indent=None))
        else:
            await self.ws.send_bytes(message.SerializeToString())

    async def receive(self, timeout_s: float | None = None) -> ws_pb2.ServerMessage | None:
        """The next server message, or None once the socket is closed."""
        msg = await self.ws.receive(timeout=timeout_s)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return ws_pb2.ServerMessage.FromString(msg.data)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return json_format.Parse(msg.data, ws_pb2.ServerMessage())
        return None

    async def subscribe(
        self, topics: list[str], *, request_id: str = "sub-1", snapshot_if_stale: bool = False
    ) -> None:
        """Subscribe to `topics` from the stored cursors (fresh where none)."""
        cursors = []
        for topic in topics:
            epoch, after_seq = self.cursors.get(topic, ("", 0))
            cursors.append(ws_pb2.TopicCursor(topic=topic, epoch=epoch, after_seq=after_seq))
        await self.send(
            ws_pb2.ClientMessage(
                subscribe=ws_pb2.Subscribe(
                    request_id=request_id, cursors=cursors, snapshot_if_stale=snapshot_if_stale
                )
            )
        )

    async def messages(self, timeout_s: float | None = None) -> AsyncIterator[ws_pb2.ServerMessage]:
        """Server messages until the socket closes, with batches expanded to single frames."""
        while True:
            message = await self.receive(timeout_s)
            if message is None:
                return
            if message.WhichOneof("body") == "frames":
                for frame in message.frames.frames:
                    yield ws_pb2.ServerMessage(frame=frame)
            else:
                yield message

    def accept(self, frame: frames_pb2.KhalaFrame) -> bool:
        """Advance the topic's cursor; False for a frame already applied."""
        epoch, last = self.cursors.get(frame.topic, (frame.epoch, 0))
        if epoch == frame.epoch and frame.seq <= last:
            return False
        self.cursors[frame.topic] = (frame.epoch, frame.seq)
        return True

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


async def connect(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    protocol: str = PROTO,
    client_name: str = "khala-client-python",
    client_version: str = "0.1.0",
    timeout_s: float = 10.0,
) -> SyncConnection:
    """Open a socket, send Hello, and wait for Welcome (raises on an Error reply)."""
    ws = await http.ws_connect(url, protocols=(protocol,), max_msg_size=0)
    conn = SyncConnection(ws=ws, protocol=protocol, welcome=ws_pb2.Welcome())
    await conn.send(
        ws_pb2.ClientMessage(hello=ws_pb2.Hello(token=token, client_name=client_name, client_version=client_version))
    )
    reply = await conn.receive(timeout_s)
    if reply is None or reply.WhichOneof("body") != "welcome":
        detail = reply.error if reply is not None and reply.WhichOneof("body") == "error" else None
        await ws.close()
        raise ConnectionRefusedError(
            f"no welcome: {detail.code if detail else 'closed'} {detail.message if detail else ws.close_code}"
        )
    conn.welcome = reply.welcome
    return conn
