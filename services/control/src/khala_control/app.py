"""Composition root of the control service.

`ControlApp.start()` wires everything in dependency order — HTTP socket (so the
bound port, and with it the default issuer, is known first), Postgres pool,
broker, signing keys, use cases, the revocation relay task, gRPC and HTTP
servers — and registers each on an exit stack; `stop()` unwinds it in reverse,
cancelling and awaiting the relay task. Tests build the same object with ports
0 and read `http_port`, `grpc_port` and `base_url` after `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from contextlib import AsyncExitStack
from types import TracebackType

import asyncpg
from aiohttp import web
from cryptography.fernet import Fernet, MultiFernet

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer
from khala_common.http import Readiness
from khala_common.logs import get_logger
from khala_common.topology import Topology
from khala_control.handlers.grpc_control import SERVICE_NAME, ControlServicer
from khala_control.handlers.http_app import build_http_app
from khala_control.settings import SCHEMA, Settings
from khala_control.usecases.dev_idp import ISSUER_PATH, DevIdentityProvider
from khala_control.usecases.identity import OidcVerifier
from khala_control.usecases.orgs import OrgService
from khala_control.usecases.revocations import RevocationRelay
from khala_control.usecases.sessions import SessionService, TokenSettings
from khala_control.usecases.signing import KeyRing
from khala_control.usecases.token_mint import SyncTokenMinter
from openagents.control.v1 import control_service_pb2_grpc

log = get_logger("app")
CONTROL_KEYS = "control"
DEV_IDP_KEYS = "dev_idp"


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def key_cipher(settings: Settings) -> MultiFernet:
    """Encrypts signing keys with the first key; decrypts with any."""
    return MultiFernet([Fernet(key) for key in settings.key_encryption_keys])


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class ControlApp:
    """The running control service: HTTP API, gRPC ControlService, revocation relay."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readiness = Readiness()
        self.http_port = 0
        self.grpc_port = 0
        self.issuer = ""
        self.pool: asyncpg.Pool | None = None
        self.keyring: KeyRing | None = None
        self._stack: AsyncExitStack | None = None

    @property
    def base_url(self) -> str:
        """The bound HTTP URL (`http://host:port`)."""
        return f"http://{_url_host(self.settings.bind_host)}:{self.http_port}"

    async def start(self) -> None:
        """Open every resource and start serving; on failure, close what was opened."""
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def stop(self) -> None:
        """Stop serving and close everything, in reverse start order."""
        self.readiness.draining = True
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
            log.info("control stopped")

    async def __aenter__(self) -> ControlApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _start(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        sock = _listen(settings.bind_host, settings.http_port)
        stack.callback(sock.close)
        self.http_port = sock.getsockname()[1]
        self.issuer = settings.token_issuer or self.base_url
        cipher = key_cipher(settings)
        if settings.uses_dev_key_encryption_key:
            log.warning(
                "signing keys are encrypted with the publicly known dev key; "
                "set KHALA_CONTROL_KEY_ENCRYPTION_KEY in production"
            )

        pool = await create_pool(settings.database_url, SCHEMA)
        stack.push_async_callback(pool.close)
        self.pool = pool
        topology = Topology(settings.amqp_prefix)
        broker = Broker(settings.amqp_url, topology)
        await broker.connect()
        stack.push_async_callback(broker.close)
        await broker.exchange(topology.control)

        keyring = KeyRing(pool, CONTROL_KEYS, cipher, refresh_s=settings.signing_key_refresh_s)
        await keyring.ensure_active()
        self.keyring = keyring
        dev_idp = await self._dev_idp(pool, cipher)
        issuers = [i for i in (settings.oidc_issuer, dev_idp and dev_idp.issuer) if i]
        if not issuers:
            log.warning("no identity provider is configured; nobody can sign in")
        identity = OidcVerifier(issuers, settings.oidc_audience)

        relay = RevocationRelay(pool, broker, topology.control, settings.revocation_poll_s)
        relay_task = asyncio.create_task(relay.run(), name="revocation-relay")
        stack.push_async_callback(_cancel, relay_task)

        tokens = TokenSettings(
            self.issuer, settings.access_token_ttl_s, settings.refresh_token_ttl_s
        )
        sessions = SessionService(pool, keyring, identity, settings.surfaces, relay, tokens)
        orgs = OrgService(pool)
        minter = SyncTokenMinter(
            pool, keyring, settings.surfaces, issuer=self.issuer, ttl_s=settings.sync_token_ttl_s
        )

        grpc_server = GrpcServer(settings.bind_host, settings.grpc_port, settings.service_token)
        grpc_server.add(
            control_service_pb2_grpc.add_ControlServiceServicer_to_server,
            ControlServicer(sessions, minter, keyring),
            [SERVICE_NAME],
        )
        await grpc_server.start()
        stack.push_async_callback(grpc_server.stop, 2.0)
        self.grpc_port = grpc_server.port

        self.readiness.add("postgres", lambda: check_pool(pool))
        self.readiness.add("broker", lambda: _check_broker(broker))
        app = build_http_app(
            self.readiness,
            sessions=sessions,
            orgs=orgs,
            minter=minter,
            keyring=keyring,
            dev_idp=dev_idp,
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, sock).start()
        log.info(
            "control started",
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            issuer=self.issuer,
            identity_providers=issuers,
        )

    async def _dev_idp(self, pool: asyncpg.Pool, cipher: MultiFernet) -> DevIdentityProvider | None:
        if not self.settings.dev_idp_enabled:
            return None
        keys = KeyRing(pool, DEV_IDP_KEYS, cipher, refresh_s=self.settings.signing_key_refresh_s)
        await keys.ensure_active()
        log.warning("the dev identity provider is enabled: anyone can sign in as anyone")
        return DevIdentityProvider(keys, self.issuer + ISSUER_PATH, self.settings.oidc_audience)


async def _check_broker(broker: Broker) -> None:
    if not broker.is_connected:
        raise ConnectionError("broker connection is closed")


async def rotate_signing_key(settings: Settings, purpose: str = CONTROL_KEYS) -> str:
    """Generate and activate a new signing key (CLI `rotate-key`); returns its kid."""
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        keyring = KeyRing(pool, purpose, key_cipher(settings))
        await keyring.ensure_active()
        return await keyring.rotate()
    finally:
        await pool.close()
