"""`/v1/ws`: upgrade, Hello, then decode client messages and call the use cases
(admission and session_auth, subscribe, the connection's send buffer).

The handler task owns the socket: it reads, and on exit (client gone, close
requested, server shutdown) it shuts the connection down, which cancels and
awaits the connection's sender and feeder and releases its subscriptions.
"""

from __future__ import annotations

import secrets
import time

import structlog
from aiohttp import WSMsgType, hdrs, web

from khala_common.http import ApiError
from khala_common.logs import get_logger
from khala_gateway.domain import codes
from khala_gateway.domain.limits import (
    MAX_PRE_AUTH_BYTES,
    MAX_REQUEST_ID_CHARS,
    Limits,
    TokenBucket,
    hello_problem,
    nonce_problem,
    request_problem,
)
from khala_gateway.domain.wire import Codec, DecodeError, codec_for, error_message
from khala_gateway.handlers.ws_transport import TransportWriter, direct_writable
from khala_gateway.settings import Settings
from khala_gateway.usecases import session_auth, subscribe
from khala_gateway.usecases.admission import Admission, Refusal
from khala_gateway.usecases.connection import Connection
from khala_gateway.usecases.hub import Hub
from openagents.sync.v1 import ws_pb2

log = get_logger("khala_gateway.ws")

CLOSE_HANDSHAKE_TIMEOUT_S = 2.0
RATE_LIMIT_RETRY_MS = 5_000


def _offered_subprotocols(request: web.Request) -> list[str]:
    raw = request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
    return [p.strip() for p in raw.split(",") if p.strip()]


class WsHandler:
    """Serves the WebSocket endpoint of openagents.sync.v1."""

    def __init__(
        self, hub: Hub, admission: Admission, settings: Settings, server_version: str
    ) -> None:
        self._hub = hub
        self._admission = admission
        self._settings = settings
        self._version = server_version
        self._limits = Limits(
            max_frame_bytes=settings.max_frame_bytes,
            max_subscriptions=settings.max_subscriptions,
            send_queue_frames=settings.send_queue_frames,
            send_queue_bytes=settings.send_queue_bytes,
            replay_chunk=settings.replay_chunk,
            replay_budget=settings.replay_budget,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade and serve one socket until it closes."""
        if self._hub.draining:
            raise ApiError(503, "unavailable", "the gateway is draining; reconnect")
        offered = _offered_subprotocols(request)
        if offered and not any(p in codes.SUBPROTOCOLS for p in offered):
            raise ApiError(
                400,
                "bad_request",
                f"unsupported subprotocol; offer one of {', '.join(codes.SUBPROTOCOLS)}",
            )
        ws = web.WebSocketResponse(
            protocols=codes.SUBPROTOCOLS,
            compress=False,
            max_msg_size=max(self._settings.max_frame_bytes * 4, 4 * 1024 * 1024),
            timeout=CLOSE_HANDSHAKE_TIMEOUT_S,
        )
        await ws.prepare(request)
        codec = codec_for(ws.ws_protocol or codes.PROTO_SUBPROTOCOL)

        async def send(data: bytes | str) -> None:
            """One WebSocket message of the codec's type."""
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_str(data)

        async def close_socket(code: int, reason: str) -> bool:
            """Close frame with `code`, then the close handshake."""
            return await ws.close(code=code, message=reason.encode()[:120])

        def abort() -> None:
            """Drop the TCP connection (a peer that does not take the close)."""
            if request.transport is not None:
                request.transport.abort()

        transport = request.transport
        conn = Connection(
            f"c-{secrets.token_hex(6)}",
            self._hub,
            codec,
            send,
            close_socket,
            abort,
            self._limits,
            direct=(
                TransportWriter(transport, request.protocol)
                if transport is not None and direct_writable(transport)
                else None
            ),
            flushes=self._hub.flushes,
        )
        self._hub.register(conn)
        structlog.contextvars.bind_contextvars(connection_id=conn.connection_id)
        try:
            origin = request.headers.get(hdrs.ORIGIN)
            allowed = self._settings.allowed_origins
            if origin and allowed and origin not in allowed:
                conn.request_close(codes.CLOSE_FORBIDDEN, reason="origin not allowed")
            elif await self._hello(ws, conn, codec):
                await self._serve(ws, conn, codec)
        finally:
            try:
                await conn.shutdown()
            finally:
                self._hub.unregister(conn)
                structlog.contextvars.unbind_contextvars("connection_id")
        return ws

    async def _hello(self, ws: web.WebSocketResponse, conn: Connection, codec: Codec) -> bool:
        try:
            msg = await ws.receive(timeout=self._settings.hello_timeout_s)
        except TimeoutError:
            self._reject(conn, codes.UNAUTHORIZED, "no Hello within the hello timeout")
            return False
        if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            return False
        conn.last_inbound = time.monotonic()
        data = msg.data
        if len(data) > MAX_PRE_AUTH_BYTES:  # str: chars <= bytes, checked again below
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > MAX_PRE_AUTH_BYTES:
                conn.request_close(
                    codes.CLOSE_MESSAGE_TOO_BIG,
                    [
                        error_message(
                            codes.PAYLOAD_TOO_LARGE,
                            f"messages before Hello is accepted are at most {MAX_PRE_AUTH_BYTES} bytes",
                        )
                    ],
                    reason="payload too large",
                )
                return False
        try:
            message = codec.decode(data)
        except DecodeError:
            message = ws_pb2.ClientMessage()
        if message.WhichOneof("body") != "hello":
            self._reject(conn, codes.UNAUTHORIZED, "the first message must be Hello")
            return False
        problem = hello_problem(message.hello.client_name, message.hello.client_version)
        if problem is not None:
            self._reject(conn, codes.BAD_REQUEST, problem)
            return False
        admitted = await self._admission.hello(message.hello)
        if isinstance(admitted, Refusal):
            session_auth.refuse(conn, admitted)
            return False
        if conn.closing:
            return False
        principal = admitted
        conn.start(
            principal,
            ws_pb2.Welcome(
                connection_id=conn.connection_id,
                server_version=self._version,
                heartbeat_interval_ms=self._settings.heartbeat_interval_ms,
                max_frame_bytes=self._settings.max_frame_bytes,
                token_expires_at_ms=principal.expires_at_ms,
            ),
        )
        self._hub.authenticated(conn)
        log.info(
            "connection authenticated",
            user_id=principal.user_id,
            session_id=principal.session_id,
            client_name=message.hello.client_name,
            client_version=message.hello.client_version,
        )
        return True

    def _reject(self, conn: Connection, code: str, message: str) -> None:
        session_auth.refuse(conn, Refusal.unauthorized(code, message))

    async def _serve(self, ws: web.WebSocketResponse, conn: Connection, codec: Codec) -> None:
        limit = self._settings.max_frame_bytes
        bucket = TokenBucket(
            self._settings.max_messages_per_s, self._settings.message_burst, time.monotonic()
        )
        async for msg in ws:
            if conn.closing:
                break
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            now = time.monotonic()
            conn.last_inbound = now
            if not bucket.allow(now):
                conn.request_close(
                    codes.CLOSE_RATE_LIMITED,
                    [
                        error_message(
                            codes.RATE_LIMITED,
                            "too many messages per second",
                            retry_after_ms=RATE_LIMIT_RETRY_MS,
                        )
                    ],
                    reason="rate limited",
                )
                break
            data = msg.data
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > limit:
                conn.request_close(
                    codes.CLOSE_MESSAGE_TOO_BIG,
                    [error_message(codes.PAYLOAD_TOO_LARGE, f"message larger than {limit} bytes")],
                    reason="payload too large",
                )
                break
            try:
                message = codec.decode(data)
            except DecodeError as exc:
                conn.push_control(error_message(codes.BAD_REQUEST, str(exc)[:200]))
                continue
            await self._dispatch(conn, message)

    async def _dispatch(self, conn: Connection, message: ws_pb2.ClientMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "subscribe":
            request = message.subscribe
            if self._refused(conn, request.request_id, [c.topic for c in request.cursors]):
                return
            await subscribe.subscribe(conn, request)
        elif kind == "unsubscribe":
            topics = list(message.unsubscribe.topics)
            if self._refused(conn, message.unsubscribe.request_id, topics):
                return
            await subscribe.unsubscribe(conn, topics)
        elif kind == "ping":
            problem = nonce_problem(message.ping.nonce)
            if problem is not None:
                conn.push_control(error_message(codes.BAD_REQUEST, problem))
                return
            conn.push_control(ws_pb2.ServerMessage(pong=ws_pb2.Pong(nonce=message.ping.nonce)))
        elif kind == "refresh_auth":
            await session_auth.refresh(conn, self._admission, message.refresh_auth.token)
        elif kind == "hello":
            conn.push_control(error_message(codes.BAD_REQUEST, "Hello was already received"))
        else:
            conn.push_control(error_message(codes.BAD_REQUEST, "empty or unknown message"))

    def _refused(self, conn: Connection, request_id: str, topics: list[str]) -> bool:
        """Refuse an over-limit Subscribe/Unsubscribe with one error for the whole message."""
        problem = request_problem(request_id, topics, self._settings.max_subscriptions)
        if problem is None:
            return False
        code, text = problem
        echo = request_id if len(request_id) <= MAX_REQUEST_ID_CHARS else ""
        conn.push_control(error_message(code, text, request_id=echo))
        return True
