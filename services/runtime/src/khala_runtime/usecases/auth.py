"""Who is calling: access token verification plus session introspection.

A request is authenticated when its `Authorization: Bearer` access token
verifies against control's JWKS (alg, kid, iss, aud `khala-api`, exp, nbf)
and control reports its session (`sid`) active for the token's user. The
caller's org roles come from that introspection, not from the token; the
client surface (`surface`, the session's) from the token, which control signs.
"""

from __future__ import annotations

from khala_common.jwt_verify import TokenError, TokenVerifier
from khala_runtime.adapters.control_client import ControlClient, ControlUnavailable
from khala_runtime.domain.access import Principal, Role

ACCESS_AUDIENCE = "khala-api"


class AuthError(Exception):
    """Authentication failed; `code` is `unauthorized` or `token_expired`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Authenticator:
    """Turns an Authorization header into a Principal."""

    def __init__(self, verifier: TokenVerifier, control: ControlClient) -> None:
        self._verifier = verifier
        self._control = control

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller, or AuthError; ControlUnavailable if control cannot answer."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("unauthorized", "missing bearer access token")
        try:
            claims = await self._verifier.verify(token.strip())
        except TokenError as exc:
            raise AuthError(exc.code, exc.message) from None
        session_id = claims.get("sid")
        user_id = claims.get("sub")
        if not isinstance(session_id, str) or not session_id or not isinstance(user_id, str):
            raise AuthError("unauthorized", "token has no session")
        session = await self._control.introspect(session_id)
        if not session.active or session.user_id != user_id:
            raise AuthError("unauthorized", "session is not active")
        roles: dict[str, Role] = {}
        for membership in session.memberships:
            if membership.role in Role._value2member_map_:
                roles[membership.org_id] = Role(membership.role)
        surface = claims.get("surface")
        device_id = claims.get("did")
        return Principal(
            user_id=user_id,
            session_id=session_id,
            roles=roles,
            surface=surface if isinstance(surface, str) else "",
            device_id=device_id if isinstance(device_id, str) else "",
        )


__all__ = ["AuthError", "Authenticator", "ControlUnavailable"]
