"""The WebSocket sync protocol (`openagents.sync.v1`) over aiohttp.

`SyncConnection.frames()` yields frames one by one whichever way the server
packed them (`frame` or `frames` batch) and tracks a cursor per topic; frames
at or below a topic's cursor are discarded, so applying is idempotent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from khala_client.codec import JSON, PROTO, decode_server_message, encode_client_message
from openagents.sync.v1 import frames_pb2, ws_pb2

__all__ = ["JSON", "PROTO", "HelloRefused", "SyncConnection", "connect"]


class HelloRefused(ConnectionRefusedError):
    """The gateway answered Hello with an Error (or closed) instead of Welcome."""

    def __init__(
        self, code: str, message: str, close_code: int | None, retry_after_ms: int = 0
    ) -> None:
        super().__init__(f"no welcome: {code or 'closed'} {message or close_code}")
        self.code = code
        self.message = message
        self.close_code = close_code
        self.retry_after_ms = retry_after_ms


@dataclass
class SyncConnection:
    """One open socket after Welcome."""

    ws: aiohttp.ClientWebSocketResponse
    protocol: str
    welcome: ws_pb2.Welcome
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)
    close_reason: str = ""

    async def send(self, message: ws_pb2.ClientMessage) -> None:
        """Encode for the negotiated subprotocol and send."""
        data = encode_client_message(message, self.protocol)
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def receive(self, timeout_s: float | None = None) -> ws_pb2.ServerMessage | None:
        """The next server message, or None once the socket is closed."""
        msg = await self.ws.receive(timeout=timeout_s)
        if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            return decode_server_message(msg.data)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            self.close_reason = str(msg.extra or "")
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

    async def subscribe_cursors(
        self, request_id: str, cursors: list[ws_pb2.TopicCursor], *, snapshot_if_stale: bool = False
    ) -> None:
        """Send one Subscribe with explicit cursors."""
        await self.send(
            ws_pb2.ClientMessage(
                subscribe=ws_pb2.Subscribe(
                    request_id=request_id, cursors=cursors, snapshot_if_stale=snapshot_if_stale
                )
            )
        )

    async def unsubscribe(self, topics: list[str], *, request_id: str = "unsub-1") -> None:
        """End subscriptions (frames already in flight may still arrive)."""
        await self.send(
            ws_pb2.ClientMessage(
                unsubscribe=ws_pb2.Unsubscribe(request_id=request_id, topics=topics)
            )
        )

    async def refresh_auth(self, token: str) -> None:
        """Swap in a fresh sync token on this socket."""
        await self.send(ws_pb2.ClientMessage(refresh_auth=ws_pb2.RefreshAuth(token=token)))

    async def ping(self, nonce: str) -> None:
        """Ask for a Pong with the same nonce."""
        await self.send(ws_pb2.ClientMessage(ping=ws_pb2.Ping(nonce=nonce)))

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
        """The WebSocket close code once closed."""
        return self.ws.close_code

    @property
    def closed(self) -> bool:
        """Whether the socket is closed."""
        return self.ws.closed

    async def close(self, code: int = 1000) -> None:
        """Close the socket."""
        await self.ws.close(code=code)


async def connect(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    protocol: str = PROTO,
    client_name: str = "khala-client-python",
    client_version: str = "0.1.0",
    timeout_s: float = 10.0,
    close_timeout_s: float = 2.0,
) -> SyncConnection:
    """Open a socket, send Hello, and wait for Welcome (raises on an Error reply)."""
    ws = await http.ws_connect(
        url,
        protocols=(protocol,),
        max_msg_size=0,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=close_timeout_s),
    )
    conn = SyncConnection(ws=ws, protocol=protocol, welcome=ws_pb2.Welcome())
    await conn.send(
        ws_pb2.ClientMessage(
            hello=ws_pb2.Hello(token=token, client_name=client_name, client_version=client_version)
        )
    )
    try:
        reply = await conn.receive(timeout_s)
    except BaseException:
        await ws.close()
        raise
    if reply is None or reply.WhichOneof("body") != "welcome":
        detail = reply.error if reply is not None and reply.WhichOneof("body") == "error" else None
        if detail is not None:
            try:  # the close frame that follows carries the close code
                await ws.receive(timeout=2)
            except (TimeoutError, aiohttp.ClientError):
                pass
        await ws.close()
        raise HelloRefused(
            detail.code if detail else "",
            detail.message if detail else "",
            ws.close_code,
            detail.retry_after_ms if detail else 0,
        )
    conn.welcome = reply.welcome
    return conn
