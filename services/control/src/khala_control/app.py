"""Composition root of the control service.

`ControlApp.start()` wires everything in dependency order — HTTP socket (so the
bound port, and with it the default issuer, is known first), Postgres pool,
broker, signing keys, the audit writer, the background tasks (revocation relay,
audit flusher, membership listener), use cases, gRPC and HTTP servers — and
registers each on an exit stack; `stop()` unwinds it in reverse: servers stop,
tasks are cancelled and awaited, the audit buffer is flushed, then the broker
and pool close. Tests build the same object with ports
0 and read `http_port`, `grpc_port` and `base_url` after `start()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from contextlib import AsyncExitStack

import asyncpg
from aiohttp import web
from cryptography.fernet import Fernet, MultiFernet

from khala_common.broker import Broker
from khala_common.db import check_pool, create_pool
from khala_common.grpc_server import GrpcServer
from khala_common.http import Readiness
from khala_common.logs import get_logger
from khala_common.runner import StackedService
from khala_common.topology import Topology
from khala_control.handlers.grpc_control import CALLERS, SERVICE_NAME, ControlServicer
from khala_control.handlers.http_app import build_http_app
from khala_control.settings import SCHEMA, Settings
from khala_control.storage.keys import KeyStatus
from khala_control.usecases.audit_writer import AuditWriter
from khala_control.usecases.caches import MembershipCache, SessionCache
from khala_control.usecases.change_feed import ChangeFeed
from khala_control.usecases.dev_idp import ISSUER_PATH, DevIdentityProvider
from khala_control.usecases.identity import OidcVerifier
from khala_control.usecases.limits import RateLimiter
from khala_control.usecases.orgs import OrgService
from khala_control.usecases.revocations import RevocationRelay
from khala_control.usecases.sessions import SessionDeps, SessionService, TokenSettings
from khala_control.usecases.signing import KeyRing, Signer
from khala_control.usecases.signing_file import FileKeyRing
from khala_control.usecases.token_mint import SyncTokenMinter
from openagents.control.v1 import control_service_pb2_grpc

log = get_logger("app")
CONTROL_KEYS = "control"
DEV_IDP_KEYS = "dev_idp"
# How long start-up waits for the change feed (the caches are bypassed until it listens).
LISTENER_START_S = 5.0
# A revoked session stays listed this much longer than its longest token lifetime
# (verifiers accept up to 30 s of clock skew on `exp`).
REVOKED_SKEW_S = 60


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


class ControlApp(StackedService):
    """The running control service: HTTP API, gRPC ControlService, revocation relay."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readiness = Readiness()
        self.http_port = 0
        self.grpc_port = 0
        self.issuer = ""
        self.pool: asyncpg.Pool | None = None
        self.keyring: Signer | None = None
        self.audit: AuditWriter | None = None
        self.memberships: MembershipCache | None = None
        self.feed: ChangeFeed | None = None
        self.sessions: SessionService | None = None
        self.minter: SyncTokenMinter | None = None

    @property
    def base_url(self) -> str:
        """The bound HTTP URL (`http://host:port`)."""
        return f"http://{_url_host(self.settings.bind_host)}:{self.http_port}"

    async def stop(self) -> None:
        """Stop serving and close everything, in reverse start order."""
        self.readiness.draining = True
        if await self.close_stack():
            log.info("control stopped")

    async def _start(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        sock = _listen(settings.bind_host, settings.http_port)
        stack.callback(sock.close)
        self.http_port = sock.getsockname()[1]
        self.issuer = settings.token_issuer or self.base_url
        cipher = key_cipher(settings)
        if settings.uses_dev_key_encryption_key and settings.signing_key_file is None:
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

        signer = control_signer(settings, pool, cipher)
        await signer.ensure_active()
        self.keyring = signer
        dev_idp = await self._dev_idp(pool, cipher)
        issuers = [*settings.oidc_issuers, *([dev_idp.issuer] if dev_idp else [])]
        if not issuers:
            log.warning("no identity provider is configured; nobody can sign in")
        identity = OidcVerifier(
            issuers, settings.oidc_audience, jwks_min_refetch_s=settings.oidc_jwks_min_refetch_s
        )

        audit = AuditWriter(pool, flush_interval_s=settings.audit_flush_ms / 1000)
        stack.push_async_callback(audit.close)
        self.audit = audit
        feed = ChangeFeed(settings.database_url)
        memberships = MembershipCache(pool, feed, ttl_s=settings.cache_ttl_s)
        live_sessions = SessionCache(pool, feed, ttl_s=settings.cache_ttl_s)
        self.memberships, self.feed = memberships, feed
        relay = RevocationRelay(pool, broker, topology.control, settings.revocation_poll_s)
        for name, job in (
            ("revocation-relay", relay.run()),
            ("audit-writer", audit.run()),
            ("change-feed", feed.run()),
        ):
            stack.push_async_callback(_cancel, asyncio.create_task(job, name=name))
        if settings.cache_ttl_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.connected.wait(), LISTENER_START_S)

        limiter = RateLimiter(settings.rate_limits)
        tokens = TokenSettings(
            self.issuer, settings.access_token_ttl_s, settings.refresh_token_ttl_s
        )
        sessions = SessionService(
            pool,
            SessionDeps(signer, identity, settings.surfaces, relay, audit, limiter, live_sessions),
            tokens,
        )
        orgs = OrgService(pool, memberships, audit)
        minter = SyncTokenMinter(
            memberships,
            signer,
            settings.surfaces,
            audit,
            limiter,
            issuer=self.issuer,
            ttl_s=settings.sync_token_ttl_s,
        )
        self.sessions, self.minter = sessions, minter

        grpc_server = GrpcServer.serving(settings, settings.grpc_port, CALLERS)
        grpc_server.follow(self.readiness)
        grpc_server.add(
            control_service_pb2_grpc.add_ControlServiceServicer_to_server,
            ControlServicer(
                sessions,
                minter,
                signer,
                revoked_window_s=max(settings.access_token_ttl_s, settings.sync_token_ttl_s)
                + REVOKED_SKEW_S,
            ),
            [SERVICE_NAME],
        )
        await grpc_server.start()
        stack.push_async_callback(grpc_server.stop, 2.0)
        self.grpc_port = grpc_server.port

        self.readiness.add("postgres", lambda: check_pool(pool))
        # No broker check: control serves sign-in, sessions and tokens without
        # RabbitMQ; revocations wait in Postgres for the relay (RevocationRelay).
        app = build_http_app(
            self.readiness,
            sessions=sessions,
            orgs=orgs,
            minter=minter,
            keyring=signer,
            dev_idp=dev_idp,
            trusted_proxy_hops=settings.trusted_proxy_hops,
            runtime_url=settings.runtime_url,
            dashboard_dir=settings.dashboard_dir,
            admin_port=settings.admin_port,
            admin_host=settings.bind_host,
            surfaces=settings.surfaces.matrix,
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
            signing_keys="file" if settings.signing_key_file else "postgres",
        )

    async def _dev_idp(self, pool: asyncpg.Pool, cipher: MultiFernet) -> DevIdentityProvider | None:
        if not self.settings.dev_idp_enabled:
            return None
        keys = KeyRing(pool, DEV_IDP_KEYS, cipher, refresh_s=self.settings.signing_key_refresh_s)
        await keys.ensure_active()
        log.warning("the dev identity provider is enabled: anyone can sign in as anyone")
        return DevIdentityProvider(keys, self.issuer + ISSUER_PATH, self.settings.oidc_audience)


def control_signer(settings: Settings, pool: asyncpg.Pool, cipher: MultiFernet) -> Signer:
    """The signer of access and sync tokens: the key file if configured, else Postgres."""
    if settings.signing_key_file:
        return FileKeyRing(settings.signing_key_file, refresh_s=settings.signing_key_refresh_s)
    return KeyRing(pool, CONTROL_KEYS, cipher, refresh_s=settings.signing_key_refresh_s)


class KeyFileInUse(Exception):
    """Keys come from KHALA_CONTROL_SIGNING_KEY_FILE; Postgres keys cannot be rotated."""


async def rotate_signing_key(
    settings: Settings, purpose: str = CONTROL_KEYS, *, publish_delay_s: float = 10.0
) -> str:
    """Stage, publish for `publish_delay_s`, then activate a new key (CLI `keys rotate`)."""
    if purpose == CONTROL_KEYS and settings.signing_key_file:
        raise KeyFileInUse(
            f"signing keys come from {settings.signing_key_file}; "
            "rotate them by updating that file (see docs/control.md)"
        )
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        keyring = KeyRing(pool, purpose, key_cipher(settings))
        await keyring.ensure_active()
        return await keyring.rotate(publish_delay_s)
    finally:
        await pool.close()


async def list_signing_keys(settings: Settings, purpose: str = CONTROL_KEYS) -> list[KeyStatus]:
    """Every stored key of `purpose` with its status (CLI `keys list`)."""
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        return await KeyRing(pool, purpose, key_cipher(settings)).list()
    finally:
        await pool.close()
