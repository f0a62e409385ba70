"""The auth lifecycle of an open socket: refusal, RefreshAuth, token expiry and
revocation (protocol.md §3, §6; DESIGN §8 Auth).

A socket is admitted once (Admission.hello); afterwards its principal changes
only through a RefreshAuth of the same user, which may narrow its scope (the
subscriptions it no longer allows end with `forbidden_topic`). A token that
expired more than the grace ago without a RefreshAuth closes the socket with
`token_expired` / 4001; a revocation covering the socket closes it with
`reauth_required` / 4009 as the message arrives.
"""

from __future__ import annotations

from collections.abc import Iterable

from khala_gateway.domain import codes
from khala_gateway.domain.principal import Principal, revocation_matches
from khala_gateway.domain.wire import error_message
from khala_gateway.usecases.admission import Admission, Refusal
from khala_gateway.usecases.connection import Connection
from openagents.sync.v1 import ws_pb2


def refuse(conn: Connection, refusal: Refusal) -> None:
    """Close the socket as `refusal` says (after its error, if any)."""
    final = [] if refusal.error is None else [ws_pb2.ServerMessage(error=refusal.error)]
    conn.request_close(refusal.close_code, final, reason=refusal.reason)


async def refresh(conn: Connection, admission: Admission, token: str) -> None:
    """A RefreshAuth: take the new principal, or close the socket."""
    assert conn.principal is not None
    refreshed = await admission.refresh(conn.principal, token)
    if isinstance(refreshed, Refusal):
        refuse(conn, refreshed)
    else:
        await replace_principal(conn, refreshed)


async def replace_principal(conn: Connection, principal: Principal) -> None:
    """A RefreshAuth succeeded: new scope and expiry; drop what it no longer allows."""
    conn.principal = principal
    for topic, sub in list(conn.subs.items()):
        if not principal.may_read(topic):
            await conn.end(
                sub,
                ws_pb2.Error(
                    code=codes.FORBIDDEN_TOPIC,
                    message="the refreshed token's scope no longer allows this topic",
                    topic=topic,
                ),
            )


def token_expired(principal: Principal, now_ms: int, grace_s: float) -> bool:
    """Whether the token expired more than `grace_s` ago (no RefreshAuth came)."""
    return now_ms > principal.expires_at_ms + grace_s * 1000


def close_expired(conn: Connection) -> None:
    """Close a socket whose token expired with `token_expired` / 4001."""
    conn.request_close(
        codes.CLOSE_UNAUTHORIZED,
        [error_message(codes.TOKEN_EXPIRED, "token expired and no RefreshAuth arrived")],
        reason="token expired",
    )


def revoke(
    connections: Iterable[Connection],
    kind: int,
    session_ids: tuple[str, ...],
    user_id: str,
    device_id: str,
) -> int:
    """Close the sockets a revocation covers with reauth_required / 4009; how many."""
    closed = 0
    for conn in tuple(connections):
        principal = conn.principal
        if principal is None or conn.closing:
            continue
        if revocation_matches(
            principal, kind=kind, session_ids=session_ids, user_id=user_id, device_id=device_id
        ):
            conn.request_close(
                codes.CLOSE_REAUTH_REQUIRED,
                [error_message(codes.REAUTH_REQUIRED, "session revoked; sign in again")],
                reason="revoked",
            )
            closed += 1
    return closed
