"""gRPC `openagents.control.v1.ControlService` (service credential enforced by GrpcServer)."""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager

import grpc
from grpc import aio
from opentelemetry.trace import Span, SpanKind

from khala_common.telemetry import extract_context, tracer
from khala_control.domain.roles import Role
from khala_control.usecases.sessions import SessionService
from khala_control.usecases.signing import Signer
from khala_control.usecases.token_mint import SyncTokenMinter
from openagents.control.v1 import control_service_pb2 as pb
from openagents.control.v1 import control_service_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ControlService"].full_name
# Which services may call which method (docs/security.md "Service identity"):
# runtime introspects sessions, the gateway reloads revocations; the JWKS and
# topic checks are open to every known caller.
CALLERS = {
    f"/{SERVICE_NAME}/IntrospectSession": frozenset({"runtime", "operator"}),
    f"/{SERVICE_NAME}/ListRevokedSessions": frozenset({"gateway", "operator"}),
}
_ROLES = {
    Role.OWNER: pb.ROLE_OWNER,
    Role.ADMIN: pb.ROLE_ADMIN,
    Role.MEMBER: pb.ROLE_MEMBER,
    Role.VIEWER: pb.ROLE_VIEWER,
}
_tracer = tracer("khala_control.grpc")


def _span(context: aio.ServicerContext, name: str) -> AbstractContextManager[Span]:
    metadata = {key: value for key, value in (context.invocation_metadata() or ())}
    return _tracer.start_as_current_span(
        f"ControlService/{name}", context=extract_context(metadata), kind=SpanKind.SERVER
    )


class ControlServicer(control_service_pb2_grpc.ControlServiceServicer):
    """Session introspection, JWKS and topic access checks for other services."""

    def __init__(
        self,
        sessions: SessionService,
        minter: SyncTokenMinter,
        keyring: Signer,
        *,
        revoked_window_s: float,
    ) -> None:
        self._sessions = sessions
        self._minter = minter
        self._keyring = keyring
        self._revoked_window_s = revoked_window_s

    async def IntrospectSession(
        self, request: pb.IntrospectSessionRequest, context: aio.ServicerContext
    ) -> pb.IntrospectSessionResponse:
        """Whether the session is live, whose it is, and the user's memberships."""
        with _span(context, "IntrospectSession"):
            if not request.session_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session_id is required")
            session, memberships = await self._sessions.introspect(request.session_id)
            if session is None:
                return pb.IntrospectSessionResponse(active=False, session_id=request.session_id)
            return pb.IntrospectSessionResponse(
                active=session.active,
                session_id=session.session_id,
                user_id=session.user_id,
                device_id=session.device_id,
                memberships=[
                    pb.Membership(org_id=m.org_id, role=_ROLES[m.role]) for m in memberships
                ]
                if session.active
                else [],
            )

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: aio.ServicerContext
    ) -> pb.GetJwksResponse:
        """The JWKS that verifies control-issued tokens."""
        with _span(context, "GetJwks"):
            return pb.GetJwksResponse(jwks_json=json.dumps(await self._keyring.jwks()))

    async def CheckTopicAccess(
        self, request: pb.CheckTopicAccessRequest, context: aio.ServicerContext
    ) -> pb.CheckTopicAccessResponse:
        """Whether a user may read a topic on a surface (reason `<code>: <why>` if not)."""
        with _span(context, "CheckTopicAccess"):
            if not request.user_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is required")
            allowed, reason = await self._minter.check_access(
                request.user_id, request.surface, request.topic
            )
            return pb.CheckTopicAccessResponse(allowed=allowed, reason=reason)

    async def ListRevokedSessions(
        self, request: pb.ListRevokedSessionsRequest, context: aio.ServicerContext
    ) -> pb.ListRevokedSessionsResponse:
        """Sessions whose tokens may still verify although revoked, and until when."""
        with _span(context, "ListRevokedSessions"):
            as_of_ms = int(time.time() * 1000)
            window_ms = int(self._revoked_window_s * 1000)
            revoked = await self._sessions.recently_revoked(self._revoked_window_s)
            sessions = []
            for session_id, revoked_at in revoked:
                revoked_at_ms = int(revoked_at.timestamp() * 1000)
                sessions.append(
                    pb.RevokedSession(
                        session_id=session_id,
                        revoked_at_ms=revoked_at_ms,
                        refuse_until_ms=revoked_at_ms + window_ms,
                    )
                )
            return pb.ListRevokedSessionsResponse(sessions=sessions, as_of_ms=as_of_ms)
