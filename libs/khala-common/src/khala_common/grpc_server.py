"""gRPC servers and channels: health, reflection, and the service credential.

Every service-to-service call carries `authorization: Bearer <service token>`
metadata; the server interceptor refuses calls without it (UNAUTHENTICATED),
except the standard health and reflection services, which probes use.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServiceCredentialInterceptor(aio.ServerInterceptor):
    """Refuses calls whose bearer token is not the shared service credential."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

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
        if hmac.compare_digest(presented_bytes, self._expected):
            return await continuation(handler_call_details)
        return _deny


async def _deny_unary(request: Any, context: aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid service credential")


_deny = grpc.unary_unary_rpc_method_handler(_deny_unary)


class GrpcServer:
    """An aio gRPC server with health and reflection, owned by a composition root."""

    def __init__(self, host: str, port: int, service_token: str) -> None:
        self.server = aio.server(interceptors=[ServiceCredentialInterceptor(service_token)])
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._names: list[str] = [health.SERVICE_NAME]
        self.address = f"{host}:{port}"
        self.port = self.server.add_insecure_port(self.address)

    def add(self, register: Callable[[Any, aio.Server], None], servicer: Any, names: Iterable[str]) -> None:
        """Register a servicer and name it for reflection and health."""
        register(servicer, self.server)
        self._names.extend(names)

    async def start(self) -> None:
        reflection.enable_server_reflection([*self._names, reflection.SERVICE_NAME], self.server)
        await self.server.start()
        await self.set_serving(True)

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
    """A client channel to another Khala service."""
    return aio.insecure_channel(target)
