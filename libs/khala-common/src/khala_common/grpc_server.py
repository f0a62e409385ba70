"""gRPC servers and channels: health, reflection, service identity and TLS.

Every service-to-service call carries `authorization: Bearer <service token>`
metadata. A server knows each caller by name (`ServiceCredentials`: `name:token`
pairs, two tokens per name while one rotates) and refuses a call with no or an
unknown token (UNAUTHENTICATED, code `unauthorized`) and a call from a service
the method does not list in its callers table (PERMISSION_DENIED, code
`forbidden`); the standard health and reflection services stay open for probes.
A server built with one shared token only (no credentials) accepts that token
for every method (the single-token mode of tests and older deployments).

TLS (`TlsFiles`): the server presents its certificate and, with a CA configured,
requires and verifies client certificates (mutual TLS); clients verify the
server against the CA and present their own certificate. See docs/security.md.
"""

from __future__ import annotations

import hmac
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from khala_common.settings import CommonSettings

# RED metrics of every gRPC method (the standard health/reflection services included).
GRPC_REQUESTS = Counter(
    "khala_grpc_requests_total",
    "gRPC calls handled, by full method name and status code.",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "khala_grpc_request_duration_seconds",
    "Time to handle a gRPC call (streams: until the last message), by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Client channels: spread calls round_robin over every address of a headless
# Service (DNS A records), skip a backend whose health service answers NOT_SERVING
# (client-side health checking: a server's health follows its /readyz verdict,
# GrpcServer.follow), and keep idle connections alive through proxies and conntrack.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
}
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
)
# Servers accept those pings (no GOAWAY "too_many_pings").
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)

_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# Trailing metadata key naming the ErrorCode of a refusal (as runtime's handlers do).
ERROR_CODE_KEY = "khala-error-code"
# The caller name of the single shared token: allowed on every method.
ANY_CALLER = "*"


class ServiceCredentials:
    """The callers a server accepts: token -> service name.

    Parsed from `name:token,name:token,...`; a name may appear twice (the old and
    the new token during a rotation), a token only once.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._by_token: dict[bytes, str] = {}
        for name, token in pairs:
            if not name or not token:
                raise ValueError("a service credential needs a name and a token")
            self._by_token[token.encode()] = name

    @classmethod
    def parse(cls, text: str) -> ServiceCredentials:
        """`name:token` pairs separated by commas (ValueError if one is malformed)."""
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, token = item.partition(":")
            if not sep:
                raise ValueError(f"{item[:20]!r}... is not name:token")
            pairs.append((name.strip(), token.strip()))
        return cls(pairs)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_token.values())

    def tokens(self) -> frozenset[str]:
        return frozenset(token.decode() for token in self._by_token)

    def caller(self, presented: bytes) -> str | None:
        """The service whose token `presented` is (compared in constant time)."""
        found = None
        for token, name in self._by_token.items():
            if hmac.compare_digest(presented, token):
                found = name
        return found


class ServiceCredentialInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Refuses calls from unknown callers, and from services a method does not allow.

    `callers` maps a full method name (`/pkg.Service/Method`) to the service
    names allowed to call it; a method it does not name is open to every known
    caller.
    """

    def __init__(
        self,
        token: str = "",
        *,
        credentials: ServiceCredentials | None = None,
        callers: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._credentials = credentials or ServiceCredentials([(ANY_CALLER, token)])
        self._callers = dict(callers or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        presented = metadata.get("authorization", "")
        presented_bytes = presented.encode() if isinstance(presented, str) else presented
        scheme, _, token = presented_bytes.partition(b" ")
        caller = self._credentials.caller(token) if scheme == b"Bearer" else None
        if caller is None:
            return _deny_unauthenticated
        allowed = self._callers.get(method)
        if caller != ANY_CALLER and allowed is not None and caller not in allowed:
            return _deny_forbidden
        return await continuation(handler_call_details)


async def _deny_unary(request: Any, context: aio.ServicerContext) -> Any:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or invalid service credential",
        trailing_metadata=((ERROR_CODE_KEY, "unauthorized"),),
    )


async def _forbid_unary(request: Any, context: aio.ServicerContext) -> Any:
    await context.abort(
        grpc.StatusCode.PERMISSION_DENIED,
        "this service may not call this method",
        trailing_metadata=((ERROR_CODE_KEY, "forbidden"),),
    )


_deny_unauthenticated = grpc.unary_unary_rpc_method_handler(_deny_unary)
_deny_forbidden = grpc.unary_unary_rpc_method_handler(_forbid_unary)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a service's gRPC TLS: its certificate and key (served to
    clients and presented to servers) and the CA that verifies peers (on a
    server, a CA makes client certificates required: mutual TLS)."""

    cert: str
    key: str
    ca: str = ""

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        ca = Path(self.ca).read_bytes() if self.ca else None
        return Path(self.key).read_bytes(), Path(self.cert).read_bytes(), ca

    def server_credentials(self) -> grpc.ServerCredentials:
        key, cert, ca = self._read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        key, cert, ca = self._read()
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


def _code_of(context: aio.ServicerContext, failed: BaseException | None) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if failed is not None:
        return (
            "CANCELLED"
            if isinstance(failed, BaseException) and not isinstance(failed, Exception)
            else "UNKNOWN"
        )
    return "OK"


class RedMetricsInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Counts and times every call by method and status code (rate, errors, duration)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method or "unknown"
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _timed_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _timed_unary_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _timed_unary(method: str, inner: Any) -> Callable[[Any, aio.ServicerContext], Awaitable[Any]]:
    """`inner` (a unary-unary behaviour), observed by the RED metrics."""

    async def unary_unary(request: Any, context: aio.ServicerContext) -> Any:
        started = time.perf_counter()
        failed: BaseException | None = None
        try:
            result = inner(request, context)
            return await result if inspect.isawaitable(result) else result
        except BaseException as exc:
            failed = exc
            raise
        finally:
            _observe(method, context, failed, started)

    return unary_unary


def _timed_unary_stream(method: str, inner: Any) -> Callable[[Any, aio.ServicerContext], Any]:
    """`inner` (a unary-stream behaviour: an async generator, or a coroutine that
    streams with context.write()), observed by the RED metrics."""

    async def generator(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        failed: BaseException | None = None
        try:
            async for message in inner(request, context):
                yield message
        except BaseException as exc:
            failed = exc
            raise
        finally:
            _observe(method, context, failed, started)

    async def writer(request: Any, context: aio.ServicerContext) -> None:
        # a handler that streams with context.write() (the health Watch)
        started = time.perf_counter()
        failed: BaseException | None = None
        try:
            result = inner(request, context)
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:
            failed = exc
            raise
        finally:
            _observe(method, context, failed, started)

    return generator if inspect.isasyncgenfunction(inner) else writer


def _observe(
    method: str, context: aio.ServicerContext, failed: BaseException | None, started: float
) -> None:
    GRPC_REQUESTS.labels(method, _code_of(context, failed)).inc()
    GRPC_DURATION.labels(method).observe(time.perf_counter() - started)


class GrpcServer:
    """An aio gRPC server with health and reflection, owned by a composition root."""

    def __init__(
        self,
        host: str,
        port: int,
        service_token: str,
        *,
        credentials: ServiceCredentials | None = None,
        callers: Mapping[str, frozenset[str]] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        guard = ServiceCredentialInterceptor(
            service_token, credentials=credentials, callers=callers
        )
        self.server = aio.server(
            interceptors=[RedMetricsInterceptor(), guard], options=SERVER_OPTIONS
        )
        self.health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._names: list[str] = [health.SERVICE_NAME]
        self.address = f"{host}:{port}"
        self.port = (
            self.server.add_secure_port(self.address, tls.server_credentials())
            if tls is not None
            else self.server.add_insecure_port(self.address)
        )

    @classmethod
    def serving(
        cls,
        settings: CommonSettings,
        port: int,
        callers: Mapping[str, frozenset[str]] | None = None,
    ) -> GrpcServer:
        """A server on `settings`' bind host, credentials and TLS, checking `callers`."""
        return cls(
            settings.bind_host,
            port,
            settings.service_token,
            credentials=credentials_of(settings),
            callers=callers,
            tls=tls_of(settings),
        )

    def add(
        self, register: Callable[[Any, aio.Server], None], servicer: Any, names: Iterable[str]
    ) -> None:
        """Register a servicer and name it for reflection and health."""
        register(servicer, self.server)
        self._names.extend(names)

    async def start(self) -> None:
        reflection.enable_server_reflection([*self._names, reflection.SERVICE_NAME], self.server)
        await self.server.start()
        await self.set_serving(True)

    def follow(self, readiness: Any) -> None:
        """Report SERVING / NOT_SERVING as `readiness` (khala_common.http.Readiness)
        changes its verdict, so round_robin clients skip a pod that is not ready."""
        readiness.listeners.append(self.set_serving)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._names):
            result = self.health.set(name, status)
            if isinstance(result, Awaitable):
                await result

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace_s)


def service_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the service credential."""
    return (("authorization", f"Bearer {token}"),)


def insecure_channel(target: str) -> aio.Channel:
    """A client channel to another Khala service: round_robin over every address
    `target` resolves to (use `dns:///<headless service>:<port>` in Kubernetes)
    with keepalive pings (CHANNEL_OPTIONS)."""
    return aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def channel(target: str, tls: TlsFiles | None = None) -> aio.Channel:
    """A client channel to another Khala service (insecure_channel's balancing and
    keepalive), over TLS when `tls` is given."""
    if tls is None:
        return insecure_channel(target)
    return aio.secure_channel(target, tls.channel_credentials(), options=CHANNEL_OPTIONS)


def tls_of(settings: CommonSettings) -> TlsFiles | None:
    """The gRPC TLS files `settings` name (None: plaintext)."""
    if not settings.grpc_tls_cert:
        return None
    return TlsFiles(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_ca)


def credentials_of(settings: CommonSettings) -> ServiceCredentials | None:
    """The callers `settings` accept (None: the single shared service token)."""
    return (
        ServiceCredentials(settings.service_credentials) if settings.service_credentials else None
    )
