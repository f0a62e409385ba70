"""Per-service identity at control's real gRPC server: IntrospectSession takes
only runtime, ListRevokedSessions only the gateway; the JWKS is open to every
known caller; unknown tokens are refused."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest

from khala_common.grpc_server import ERROR_CODE_KEY, insecure_channel, service_metadata
from khala_control.app import ControlApp
from khala_control.settings import Settings
from openagents.control.v1 import control_service_pb2 as pb
from openagents.control.v1 import control_service_pb2_grpc

pytestmark = pytest.mark.integration

CREDENTIALS = (("runtime", "r-tok"), ("gateway", "g-tok"), ("projector", "p-tok"))
FORBIDDEN = (grpc.StatusCode.PERMISSION_DENIED, "forbidden")


@pytest.fixture(scope="module")
async def stub(
    control_settings: Settings,
) -> AsyncIterator[control_service_pb2_grpc.ControlServiceStub]:
    settings = dataclasses.replace(control_settings, service_credentials=CREDENTIALS)
    async with ControlApp(settings) as app:
        channel = insecure_channel(f"127.0.0.1:{app.grpc_port}")
        try:
            yield control_service_pb2_grpc.ControlServiceStub(channel)  # type: ignore[no-untyped-call]
        finally:
            await channel.close()


async def _refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    trailers = dict(refused.value.trailing_metadata() or ())
    return refused.value.code(), str(trailers.get(ERROR_CODE_KEY))


async def test_each_method_takes_only_its_callers(
    stub: control_service_pb2_grpc.ControlServiceStub,
) -> None:
    introspect = pb.IntrospectSessionRequest(session_id="ses_unknown")
    revoked = pb.ListRevokedSessionsRequest()
    reply = await stub.IntrospectSession(introspect, metadata=service_metadata("r-tok"))
    assert not reply.active
    await stub.ListRevokedSessions(revoked, metadata=service_metadata("g-tok"))
    for token in ("g-tok", "p-tok"):
        assert (
            await _refused(stub.IntrospectSession(introspect, metadata=service_metadata(token)))
            == FORBIDDEN
        )
    for token in ("r-tok", "p-tok"):
        assert (
            await _refused(stub.ListRevokedSessions(revoked, metadata=service_metadata(token)))
            == FORBIDDEN
        )
    assert (await stub.GetJwks(pb.GetJwksRequest(), metadata=service_metadata("p-tok"))).jwks_json
    for token in ("test-service-token", "nobody"):
        assert await _refused(
            stub.GetJwks(pb.GetJwksRequest(), metadata=service_metadata(token))
        ) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthorized",
        )
