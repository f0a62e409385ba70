"""KhalaClient's reconnect, resume, refresh and re-bootstrap rules against a scripted
gateway running in process (a real aiohttp WebSocket server on 127.0.0.1, port 0).

Each connection is served by the next script; scripts see what the client sent.
The e2e tests (tests/e2e/test_clients_sdk.py) cover the same client against the
real gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from khala_client import (
    Backoff,
    Connected,
    Cursor,
    Disconnected,
    FrameApplied,
    KhalaClient,
    MemoryCursorStore,
    SessionRevoked,
    StaticTokenSource,
    SyncToken,
    TopicReset,
    Update,
    UpgradeRequired,
)
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2, ws_pb2

TOPIC = "org.a.run.r1"
SCHEMA = "openagents.runtime.v1.RuntimeEvent@1"


class Peer:
    """One server-side socket as a script sees it."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.received: list[ws_pb2.ClientMessage] = []

    async def recv(self, wait_s: float = 5.0) -> ws_pb2.ClientMessage:
        msg = await self.ws.receive(timeout=wait_s)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        message = ws_pb2.ClientMessage.FromString(msg.data)
        self.received.append(message)
        return message

    async def drain(self) -> None:
        """Read (and answer the close handshake) until the client goes away."""
        while not self.ws.closed:
            msg = await self.ws.receive(timeout=10)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                return

    async def send(self, **body: object) -> None:
        await self.ws.send_bytes(ws_pb2.ServerMessage(**body).SerializeToString())  # type: ignore[arg-type]

    async def welcome(self, *, expires_ms: int = 0, heartbeat_ms: int = 15_000) -> ws_pb2.Hello:
        hello = await self.recv()
        assert hello.WhichOneof("body") == "hello"
        await self.send(
            welcome=ws_pb2.Welcome(
                connection_id=f"c{id(self)}",
                heartbeat_interval_ms=heartbeat_ms,
                token_expires_at_ms=expires_ms,
            )
        )
        return hello.hello

    async def subscribed(
        self, epoch: str = "1", oldest: int = 1, head: int = 0
    ) -> ws_pb2.TopicCursor:
        sub = await self.recv()
        assert sub.WhichOneof("body") == "subscribe", sub
        cursor = sub.subscribe.cursors[0]
        await self.send(
            subscribed=ws_pb2.Subscribed(
                topic=cursor.topic, epoch=epoch, head_seq=head, oldest_seq=oldest
            )
        )
        return cursor

    async def frames(self, *seqs: int, epoch: str = "1") -> None:
        batch = [
            frames_pb2.KhalaFrame(
                topic=TOPIC,
                seq=s,
                kind=frames_pb2.FRAME_KIND_EVENT,
                key=f"e{s}",
                epoch=epoch,
                schema_version=SCHEMA,
                payload_bytes=events_pb2.RuntimeEvent(
                    stream_seq=s, type="run.output"
                ).SerializeToString(),
            )
            for s in seqs
        ]
        await self.send(frames=frames_pb2.FrameBatch(frames=batch))


Script = Callable[[Peer], Awaitable[None]]


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, list[Script], list[Peer]]]:
    scripts: list[Script] = []
    peers: list[Peer] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("khala.v1+proto",))
        await ws.prepare(request)
        peer = Peer(ws)
        peers.append(peer)
        if scripts:
            await scripts.pop(0)(peer)
        if not ws.closed:
            await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"ws://127.0.0.1:{port}/v1/ws", scripts, peers
    await runner.cleanup()


class Tokens:
    def __init__(self, lifetime_s: float = 300) -> None:
        self.calls = 0
        self.lifetime_s = lifetime_s

    async def __call__(self) -> SyncToken:
        self.calls += 1
        return SyncToken(f"tok-{self.calls}", int((time.time() + self.lifetime_s) * 1000))


async def collect(
    client: KhalaClient, until: Callable[[list[Update]], bool], limit_s: float = 10.0
) -> list[Update]:
    seen: list[Update] = []

    async def run() -> None:
        async for update in client.updates():
            seen.append(update)
            if until(seen):
                await client.close()

    await asyncio.wait_for(run(), limit_s)
    return seen


def seqs(updates: list[Update]) -> list[int]:
    return [u.seq for u in updates if isinstance(u, FrameApplied)]


def fast_client(url: str, **kwargs: object) -> KhalaClient:
    kwargs.setdefault("tokens", StaticTokenSource("t"))
    return KhalaClient(url, topics=[TOPIC], backoff=Backoff(base_s=0.05, cap_s=0.2), **kwargs)  # type: ignore[arg-type]


async def test_reconnect_honours_retry_after_and_resumes_from_the_cursor(gateway) -> None:
    url, scripts, _peers = gateway

    async def first(peer: Peer) -> None:
        await peer.welcome()
        await peer.subscribed()
        await peer.frames(1, 2)
        await peer.send(reconnect=ws_pb2.Reconnect(reason="drain", retry_after_ms=400))
        await peer.ws.close(code=1012)

    async def second(peer: Peer) -> None:
        await peer.welcome()
        cursor = await peer.subscribed()
        assert (cursor.epoch, cursor.after_seq) == ("1", 2)
        await peer.frames(2, 3)  # a duplicate, then new
        await peer.drain()

    scripts += [first, second]
    store = MemoryCursorStore()
    client = fast_client(url, store=store)
    updates = await collect(client, lambda u: 3 in seqs(u))
    assert seqs(updates) == [1, 2, 3]
    assert client.stats["duplicates"] == 1
    gone = next(u for u in updates if isinstance(u, Disconnected))
    assert 0.3 <= gone.retry_in_s <= 0.4 and gone.close_code == 1012
    assert store.load()[TOPIC] == Cursor("1", 3)


async def test_session_revoked_stops_the_client(gateway) -> None:
    url, scripts, _ = gateway

    async def revoke(peer: Peer) -> None:
        await peer.welcome()
        await peer.send(error=ws_pb2.Error(code="reauth_required", message="session revoked"))
        await peer.ws.close(code=4009)

    scripts.append(revoke)
    with pytest.raises(SessionRevoked):
        await collect(fast_client(url), lambda u: False)


async def test_upgrade_required_at_hello_stops_the_client(gateway) -> None:
    url, scripts, _ = gateway

    async def refuse(peer: Peer) -> None:
        await peer.recv()
        await peer.send(error=ws_pb2.Error(code="upgrade_required", message="minimum 2.0.0"))
        await peer.ws.close(code=4010)

    scripts.append(refuse)
    with pytest.raises(UpgradeRequired, match=r"2\.0\.0"):
        await collect(fast_client(url), lambda u: False)


async def test_unauthorized_mints_a_new_token_and_rate_limit_delays(gateway) -> None:
    url, scripts, peers = gateway

    async def expire(peer: Peer) -> None:
        await peer.welcome()
        await peer.send(error=ws_pb2.Error(code="token_expired", message="expired"))
        await peer.ws.close(code=4001)

    async def rate_limit(peer: Peer) -> None:
        await peer.welcome()
        await peer.send(
            error=ws_pb2.Error(code="rate_limited", message="slow down", retry_after_ms=500)
        )
        await peer.ws.close(code=4029)

    async def serve(peer: Peer) -> None:
        await peer.welcome()
        await peer.subscribed()
        await peer.frames(1)
        await peer.drain()

    scripts += [expire, rate_limit, serve]
    tokens = Tokens()
    updates = await collect(fast_client(url, tokens=tokens), lambda u: seqs(u) == [1])
    hellos = [p.received[0].hello.token for p in peers]
    assert hellos == ["tok-1", "tok-2", "tok-2"]  # a new token after 4001 only
    delays = [u.retry_in_s for u in updates if isinstance(u, Disconnected)]
    assert delays[1] >= 0.5


async def test_stale_cursor_resets_and_resubscribes_fresh(gateway) -> None:
    url, scripts, _ = gateway

    async def serve(peer: Peer) -> None:
        await peer.welcome()
        sub = await peer.recv()
        assert sub.subscribe.cursors[0].epoch == "old" and sub.subscribe.cursors[0].after_seq == 7
        await peer.send(
            error=ws_pb2.Error(
                code="stale_cursor",
                topic=TOPIC,
                reason="epoch_changed",
                request_id=sub.subscribe.request_id,
            )
        )
        cursor = await peer.subscribed(epoch="2", oldest=1)
        assert (cursor.epoch, cursor.after_seq) == ("", 0)
        await peer.frames(1, 2, epoch="2")
        await peer.drain()

    scripts.append(serve)
    store = MemoryCursorStore({TOPIC: Cursor("old", 7)})
    updates = await collect(fast_client(url, store=store), lambda u: seqs(u) == [1, 2])
    assert [u for u in updates if isinstance(u, TopicReset)] == [TopicReset(TOPIC, "epoch_changed")]


async def test_a_gap_is_healed_by_resubscribing_from_the_cursor(gateway) -> None:
    url, scripts, _ = gateway

    async def serve(peer: Peer) -> None:
        await peer.welcome()
        await peer.subscribed()
        await peer.frames(1, 2, 4)  # 3 is missing
        unsub = await peer.recv()
        assert unsub.WhichOneof("body") == "unsubscribe"
        cursor = await peer.subscribed()
        assert cursor.after_seq == 2
        await peer.frames(3, 4)
        await peer.drain()

    scripts.append(serve)
    client = fast_client(url)
    updates = await collect(client, lambda u: seqs(u)[-1:] == [4])
    assert seqs(updates) == [1, 2, 3, 4] and client.stats["gaps"] == 1


async def test_a_silent_socket_is_dropped_after_two_heartbeat_intervals(gateway) -> None:
    url, scripts, _peers = gateway

    async def silent(peer: Peer) -> None:
        await peer.welcome(heartbeat_ms=100)
        await peer.subscribed()
        await asyncio.sleep(3)  # silent: no heartbeat, and no close handshake either

    async def serve(peer: Peer) -> None:
        await peer.welcome()
        await peer.subscribed()
        await peer.frames(1)
        await peer.drain()

    scripts += [silent, serve]
    started = time.monotonic()
    updates = await collect(fast_client(url), lambda u: seqs(u) == [1])
    assert time.monotonic() - started < 2.5
    assert any(isinstance(u, Disconnected) and "heartbeat_timeout" in u.reason for u in updates)


async def test_the_token_is_renewed_over_refresh_auth(gateway) -> None:
    url, scripts, _peers = gateway
    renewed = asyncio.Event()

    async def serve(peer: Peer) -> None:
        await peer.welcome()
        await peer.subscribed()
        message = await peer.recv(wait_s=5)
        assert message.WhichOneof("body") == "refresh_auth"
        assert message.refresh_auth.token == "tok-2"
        renewed.set()
        await peer.frames(1)
        await peer.drain()

    scripts.append(serve)
    tokens = Tokens(lifetime_s=4)  # margin = half the lifetime: refresh after ~2 s
    client = fast_client(url, tokens=tokens)
    updates = await collect(client, lambda u: seqs(u) == [1])
    assert renewed.is_set() and client.stats["refreshes"] == 1
    assert len([u for u in updates if isinstance(u, Connected)]) == 1
