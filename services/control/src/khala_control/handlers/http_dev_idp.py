"""HTTP: the dev identity provider (routes exist only when it is enabled)."""

from __future__ import annotations

from aiohttp import web

from khala_control.handlers import decode
from khala_control.handlers.schemas import IdTokenRequest
from khala_control.handlers.state import dev_idp_key
from khala_control.usecases.dev_idp import ISSUER_PATH

routes = web.RouteTableDef()


@routes.post("/api/dev/id-token")
async def issue_id_token(request: web.Request) -> web.Response:
    """An ID token for any email: `{id_token}`."""
    body = await decode.body(request, IdTokenRequest)
    token = await request.app[dev_idp_key].issue(body.email, body.name or "")
    return web.json_response({"id_token": token})


@routes.get(f"{ISSUER_PATH}/.well-known/openid-configuration")
async def discovery(request: web.Request) -> web.Response:
    """The dev issuer's OpenID discovery document."""
    return web.json_response(request.app[dev_idp_key].discovery())


@routes.get(f"{ISSUER_PATH}/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    """The dev issuer's public keys."""
    return web.json_response(await request.app[dev_idp_key].jwks())
