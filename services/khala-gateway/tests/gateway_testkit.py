"""Helpers of the gateway integration tests (imported by conftest and the tests)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format
from jwt.algorithms import ECAlgorithm

from khala_common.broker import Broker
from khala_common.topology import Topology, fanout_key
from khala_gateway.settings import Settings
from openagents.control.v1 import control_service_pb2, control_service_pb2_grpc
from openagents.sync.v1 import frames_pb2, ws_pb2

MIGRATIONS = (
    Path(__file__).resolve().parents[2]
    / "projector"
    / "src"
    / "khala_projector"
    / "storage"
    / "migrations"
)
ISSUER = "https://control.gateway-tests"
ADMIN_TOKEN = "test-admin-token"
SERVICE_TOKEN = "test-service-token"
EVENT = frames_pb2.FRAME_KIND_EVENT
UPSERT = frames_pb2.FRAME_KIND_DOC_UPSERT
DELETE = frames_pb2.FRAME_KIND_DOC_DELETE


class FrameWriter:
    """Writes topic-log rows exactly as the projector does, then publishes the bytes."""

    def __init__(self, pool: asyncpg.Pool, broker: Broker) -> None:
        self.pool = pool
        self.broker = broker

    async def append(
        self,
        topic: str,
        *,
        kind: int = EVENT,
        key: str = "",
        payload: bytes = b"",
        publish: bool = True,
    ) -> frames_pb2.KhalaFrame:
        """Commit the next frame of `topic` in one transaction; then publish it (unless told not to)."""
        is_doc = topic.endswith((".runs", ".workers"))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO topics (topic, epoch, is_doc) VALUES ($1, '1', $2)"
                " ON CONFLICT (topic) DO NOTHING",
                topic,
                is_doc,
            )
            row = await conn.fetchrow(
                "SELECT epoch, head_seq FROM topics WHERE topic = $1 FOR UPDATE", topic
            )
            seq = row["head_seq"] + 1
            frame = frames_pb2.KhalaFrame(
                topic=topic,
                seq=seq,
                kind=kind,  # type: ignore[arg-type]
                key=key or f"evt_{seq}",
                payload_bytes=payload or f"payload-{seq}".encode(),
                schema_version=(
                    "openagents.codex.v1.RunSummary@1"
                    if is_doc
                    else "openagents.runtime.v1.RuntimeEvent@1"
                ),
                epoch=row["epoch"],
                published_at_ms=int(time.time() * 1000),
            )
            data = frame.SerializeToString(deterministic=True)
            await conn.execute(
                "INSERT INTO frames (topic, epoch, seq, kind, key, frame_bytes, published_at_ms)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                topic,
                frame.epoch,
                seq,
                kind,
                frame.key,
                data,
                frame.published_at_ms,
            )
            await conn.execute(
                "UPDATE topics SET head_seq = $2,"
                " oldest_seq = CASE WHEN oldest_seq = 0 THEN $2 ELSE oldest_seq END"
                " WHERE topic = $1",
                topic,
                seq,
            )
        if publish:
            await self.publish(frame)
        return frame

    async def append_many(self, topic: str, count: int, payload_size: int = 0) -> None:
        """Commit `count` event frames in one transaction, without publishing (bulk setup)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO topics (topic, epoch, is_doc) VALUES ($1, '1', false)"
                " ON CONFLICT (topic) DO NOTHING",
                topic,
            )
            head = await conn.fetchval(
                "SELECT head_seq FROM topics WHERE topic = $1 FOR UPDATE", topic
            )
            rows = []
            for seq in range(head + 1, head + count + 1):
                frame = frames_pb2.KhalaFrame(
                    topic=topic,
                    seq=seq,
                    kind=EVENT,
                    key=f"evt_{seq}",
                    epoch="1",
                    payload_bytes=b"z" * payload_size
                    if payload_size
                    else f"payload-{seq}".encode(),
                    schema_version="openagents.runtime.v1.RuntimeEvent@1",
                )
                rows.append((topic, "1", seq, EVENT, frame.key, frame.SerializeToString(), 0))
            await conn.executemany(
                "INSERT INTO frames (topic, epoch, seq, kind, key, frame_bytes, published_at_ms)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                rows,
            )
            await conn.execute(
                "UPDATE topics SET head_seq = $2,"
                " oldest_seq = CASE WHEN oldest_seq = 0 THEN 1 ELSE oldest_seq END"
                " WHERE topic = $1",
                topic,
                head + count,
            )

    async def publish(self, frame: frames_pb2.KhalaFrame) -> None:
        """Publish a committed frame's bytes to khala.fanout as the projector does:
        a one-frame FanoutBatch, routing key `org.<org>`."""
        batch = frames_pb2.FanoutBatch(frames=[frame.SerializeToString(deterministic=True)])
        await self.broker.publish_raw(
            self.broker.topology.fanout,
            fanout_key(frame.topic),
            batch.SerializeToString(),
            type_name=batch.DESCRIPTOR.full_name,
            message_id=f"{frame.topic}/{frame.epoch}/{frame.seq}",
            persistent=False,
        )

    async def trim(self, topic: str, oldest_seq: int) -> None:
        """Retention: drop frames before `oldest_seq`."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM frames WHERE topic = $1 AND seq < $2", topic, oldest_seq
            )
            await conn.execute(
                "UPDATE topics SET oldest_seq = $2 WHERE topic = $1", topic, oldest_seq
            )

    async def compact(self, topic: str, oldest_seq: int) -> None:
        """Doc-topic retention: drop superseded versions before `oldest_seq`."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM frames f WHERE f.topic = $1 AND f.seq < $2 AND EXISTS ("
                " SELECT 1 FROM frames g WHERE g.topic = f.topic AND g.epoch = f.epoch"
                " AND g.key = f.key AND g.seq > f.seq)",
                topic,
                oldest_seq,
            )
            await conn.execute(
                "UPDATE topics SET oldest_seq = $2 WHERE topic = $1", topic, oldest_seq
            )

    async def new_epoch(self, topic: str, epoch: str) -> None:
        """A rebuild: the topic restarts empty in `epoch`."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE topics SET epoch = $2, head_seq = 0, oldest_seq = 0 WHERE topic = $1",
                topic,
                epoch,
            )


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class Issuer:
    """An ES256 key served as a JWKS by a real HTTP server; mints sync tokens."""

    def __init__(self) -> None:
        self.kid = f"test-{uuid.uuid4().hex[:6]}"
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        self.jwks = {"keys": [jwk]}
        self.url = ""
        # Control's gRPC ListRevokedSessions, as the issuer's fake control answers it.
        self.grpc_target = ""
        self.revoked: list[control_service_pb2.RevokedSession] = []
        self.revoked_list_calls = 0

    def claims(self, scope: list[str], **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": "khala-gateway",
            "sub": "user-1",
            "sid": f"sess-{uuid.uuid4().hex[:8]}",
            "did": "device-1",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "surface": "desktop",
            "scope": scope,
        }
        claims.update(overrides)
        return claims

    def mint(self, scope: list[str], **overrides: Any) -> str:
        """A valid sync token for `scope` (claims overridable)."""
        return jwt.encode(
            self.claims(scope, **overrides), self.key, algorithm="ES256", headers={"kid": self.kid}
        )

    def alg_none(self, scope: list[str]) -> str:
        """An unsigned token (alg none) with otherwise valid claims."""
        return (
            _b64({"alg": "none", "typ": "JWT", "kid": self.kid})
            + "."
            + _b64(self.claims(scope))
            + "."
        )

    def tampered(self, scope: list[str], wider_scope: list[str]) -> str:
        """A validly signed token whose payload was swapped for a wider scope."""
        header, _, signature = self.mint(scope).split(".")
        return f"{header}.{_b64(self.claims(wider_scope))}.{signature}"


class RevokedSessionsServicer(control_service_pb2_grpc.ControlServiceServicer):
    """Control's ListRevokedSessions over real gRPC, answering from `issuer.revoked`."""

    def __init__(self, issuer: Issuer) -> None:
        self._issuer = issuer

    async def ListRevokedSessions(
        self, request: control_service_pb2.ListRevokedSessionsRequest, context: Any
    ) -> control_service_pb2.ListRevokedSessionsResponse:
        self._issuer.revoked_list_calls += 1
        return control_service_pb2.ListRevokedSessionsResponse(
            sessions=self._issuer.revoked, as_of_ms=int(time.time() * 1000)
        )


def gateway_settings(
    khala_dsn: str, amqp_url: str, topology: Topology, issuer: Issuer, **overrides: Any
) -> Settings:
    base: dict[str, Any] = {
        "database_url": khala_dsn,
        "amqp_url": amqp_url,
        "amqp_prefix": topology.prefix,
        "service_token": SERVICE_TOKEN,
        "http_port": 0,
        "grpc_port": 0,
        "control_url": issuer.url,
        "control_grpc_target": issuer.grpc_target,
        "token_issuer": ISSUER,
        "admin_token": ADMIN_TOKEN,
        "heartbeat_interval_ms": 1_000,
        "hello_timeout_s": 1.0,
        "max_frame_bytes": 64 * 1024,
        "max_subscriptions": 8,
        "replay_chunk": 100,
        "head_poll_interval_s": 0.3,
        "token_expiry_grace_s": 0.5,
        "drain_retry_ms": 500,
        "drain_jitter_ms": 1_000,
    }
    base.update(overrides)
    return Settings(**base)


class Closed(Exception):
    """The server closed the socket."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class Client:
    """A Khala protocol client over aiohttp, proto or JSON subprotocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, json_mode: bool) -> None:
        self.ws = ws
        self.json = json_mode
        self.heartbeats = 0
        self.ws_messages = 0

    async def send(self, message: ws_pb2.ClientMessage) -> None:
        if self.json:
            await self.ws.send_str(json_format.MessageToJson(message))
        else:
            await self.ws.send_bytes(message.SerializeToString())

    async def recv(self, within: float = 5.0, *, heartbeats: bool = False) -> ws_pb2.ServerMessage:
        """The next server message (heartbeats skipped unless asked); raises Closed."""
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no server message")
            msg = await self.ws.receive(timeout=remaining)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                raise Closed(self.ws.close_code)
            if msg.type is aiohttp.WSMsgType.ERROR:
                raise Closed(self.ws.close_code)
            self.ws_messages += 1
            if self.json:
                assert msg.type is aiohttp.WSMsgType.TEXT, msg.type
                message = json_format.Parse(msg.data, ws_pb2.ServerMessage())
            else:
                assert msg.type is aiohttp.WSMsgType.BINARY, msg.type
                message = ws_pb2.ServerMessage.FromString(msg.data)
            if message.WhichOneof("body") == "heartbeat" and not heartbeats:
                self.heartbeats += 1
                continue
            return message

    async def hello(self, token: str) -> ws_pb2.Welcome:
        await self.send(
            ws_pb2.ClientMessage(
                hello=ws_pb2.Hello(token=token, client_name="tests", client_version="1.0.0")
            )
        )
        message = await self.recv()
        assert message.WhichOneof("body") == "welcome", message
        return message.welcome

    async def subscribe(
        self,
        *cursors: tuple[str, str, int],
        request_id: str = "r1",
        snapshot_if_stale: bool = False,
    ) -> None:
        await self.send(
            ws_pb2.ClientMessage(
                subscribe=ws_pb2.Subscribe(
                    request_id=request_id,
                    cursors=[
                        ws_pb2.TopicCursor(topic=t, epoch=e, after_seq=a) for t, e, a in cursors
                    ],
                    snapshot_if_stale=snapshot_if_stale,
                )
            )
        )

    async def expect(self, body: str, within: float = 5.0) -> Any:
        """The next message, which must be of kind `body`; returns that field."""
        message = await self.recv(within)
        assert message.WhichOneof("body") == body, message
        return getattr(message, body)

    async def expect_close(self, within: float = 5.0) -> int | None:
        """Read until the server closes; returns the close code."""
        try:
            while True:
                await self.recv(within)
        except Closed as closed:
            return closed.code


class Timeline:
    """Everything a client received, flattened: frames in arrival order and markers."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def add(self, message: ws_pb2.ServerMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "frame":
            self.items.append(("frame", message.frame))
        elif kind == "frames":
            self.items.extend(("frame", f) for f in message.frames.frames)
        else:
            self.items.append((kind or "", getattr(message, kind or "")))

    def frames(self, topic: str) -> list[frames_pb2.KhalaFrame]:
        return [f for k, f in self.items if k == "frame" and f.topic == topic]

    def seqs(self, topic: str) -> list[int]:
        return [f.seq for f in self.frames(topic)]

    def kinds(self, topic: str) -> list[str]:
        out = []
        for kind, value in self.items:
            if getattr(value, "topic", None) == topic:
                out.append(kind)
        return out


async def collect_until(
    client: Client,
    done: Callable[[Timeline], bool],
    within: float = 15.0,
    timeline: Timeline | None = None,
) -> Timeline:
    """Receive into a timeline until `done(timeline)` holds (TimeoutError otherwise)."""
    timeline = timeline or Timeline()
    deadline = time.monotonic() + within
    while not done(timeline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"gave up; got {timeline.items[-5:]}")
        timeline.add(await client.recv(remaining))
    return timeline


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `predicate` until true (TimeoutError otherwise)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)
