"""HTTP: sign-in, refresh, logout, device sessions, and the caller's profile."""

from __future__ import annotations

from aiohttp import web

from khala_control.handlers import decode, encode
from khala_control.handlers.bearer import principal
from khala_control.handlers.client import client_ip
from khala_control.handlers.schemas import RefreshRequest, SignInRequest
from khala_control.handlers.state import orgs_key, sessions_key

routes = web.RouteTableDef()


@routes.post("/api/auth/session")
async def sign_in(request: web.Request) -> web.Response:
    """Exchange an ID token for a device session."""
    body = await decode.body(request, SignInRequest)
    issued = await request.app[sessions_key].sign_in(
        id_token=body.id_token,
        device_id=body.device_id,
        surface=body.surface,
        client_version=body.client_version or "",
        client_ip=client_ip(request),
    )
    return web.json_response(encode.issued(issued))


@routes.post("/api/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Rotate a refresh token."""
    body = await decode.body(request, RefreshRequest)
    issued = await request.app[sessions_key].refresh(
        body.refresh_token, client_ip=client_ip(request)
    )
    return web.json_response(encode.issued(issued))


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    """Revoke the caller's own session."""
    caller = await principal(request)
    await request.app[sessions_key].logout(caller)
    return web.json_response({"session_id": caller.session_id, "revoked": True})


@routes.get("/api/auth/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """The caller's live device sessions."""
    caller = await principal(request)
    sessions = await request.app[sessions_key].list_sessions(caller)
    return web.json_response({"sessions": [encode.device_session(s, caller) for s in sessions]})


# Not "revoke-all": that path is the POST below, and its Allow header says POST only.
@routes.delete("/api/auth/sessions/{session_id:(?!revoke-all$)[^{}/]+}")
async def revoke_device(request: web.Request) -> web.Response:
    """Sign out the device of one of the caller's sessions (idempotent)."""
    caller = await principal(request)
    session_id = request.match_info["session_id"]
    device_id, revoked = await request.app[sessions_key].revoke_device(caller, session_id)
    return web.json_response(
        {
            "session_id": session_id,
            "device_id": device_id,
            "revoked": True,
            "revoked_session_ids": revoked,
        }
    )


@routes.post("/api/auth/sessions/revoke-all")
async def revoke_all(request: web.Request) -> web.Response:
    """Revoke every session of the caller, this one included."""
    caller = await principal(request)
    revoked = await request.app[sessions_key].revoke_all(caller)
    return web.json_response({"revoked_session_ids": revoked})


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    """The caller, their current session and their memberships."""
    caller = await principal(request)
    user, memberships = await request.app[orgs_key].profile(caller)
    return web.json_response(
        {
            "user": {"user_id": user.user_id, "email": user.email, "name": user.name},
            "session": {
                "session_id": caller.session_id,
                "device_id": caller.device_id,
                "surface": caller.surface,
            },
            "memberships": [encode.membership(m) for m in memberships],
        }
    )
