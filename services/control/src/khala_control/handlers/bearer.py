"""`Authorization: Bearer <access token>` → the authenticated Principal."""

from __future__ import annotations

from aiohttp import web

from khala_control.domain.errors import ControlError
from khala_control.domain.models import Principal
from khala_control.handlers.state import sessions_key


async def principal(request: web.Request) -> Principal:
    """The caller, or 401 `unauthorized` / `token_expired`."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ControlError(
            "unauthorized", "an Authorization: Bearer <access token> header is required"
        )
    return await request.app[sessions_key].authenticate(token.strip())
