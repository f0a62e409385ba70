"""HTTP: sync tokens for the WebSocket gateway, and control's JWKS."""

from __future__ import annotations

from aiohttp import web

from khala_control.handlers import decode, encode
from khala_control.handlers.bearer import principal
from khala_control.handlers.schemas import SyncTokenRequest
from khala_control.handlers.state import keyring_key, minter_key

routes = web.RouteTableDef()


@routes.post("/api/sync/token")
async def mint_sync_token(request: web.Request) -> web.Response:
    """Mint a sync token: `{token, expires_at, scope, kid}`."""
    caller = await principal(request)
    body = await decode.body(request, SyncTokenRequest)
    minted = await request.app[minter_key].mint(
        caller, body.topics or [], body.surface or "", body.client_version or ""
    )
    return web.json_response(
        {
            "token": minted.token,
            "expires_at": encode.iso(minted.expires_at),
            "expires_at_ms": minted.expires_at * 1000,
            "scope": list(minted.scope),
            "kid": minted.kid,
        }
    )


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    """Public keys that verify control's access and sync tokens."""
    return web.json_response(await request.app[keyring_key].jwks())
