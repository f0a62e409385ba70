"""HTTP: orgs and memberships."""

from __future__ import annotations

from aiohttp import web

from khala_common.http import read_json_object
from khala_control.domain.roles import parse_role
from khala_control.handlers import decode, encode
from khala_control.handlers.bearer import principal
from khala_control.handlers.state import orgs_key

routes = web.RouteTableDef()
DEFAULT_AUDIT_PAGE = 100


@routes.post("/api/orgs")
async def create_org(request: web.Request) -> web.Response:
    """Create an org; the caller becomes its owner."""
    caller = await principal(request)
    body = await read_json_object(request)
    membership = await request.app[orgs_key].create(
        caller, decode.text(body, "org_id"), decode.text(body, "name")
    )
    return web.json_response(encode.membership(membership), status=201)


@routes.put("/api/orgs/{org_id}/members/{user_id}")
async def put_member(request: web.Request) -> web.Response:
    """Add a member or change their role (owners and admins)."""
    caller = await principal(request)
    body = await read_json_object(request)
    user_id = request.match_info["user_id"]
    membership = await request.app[orgs_key].set_member(
        caller, request.match_info["org_id"], user_id, parse_role(body.get("role"))
    )
    return web.json_response({"user_id": user_id, **encode.membership(membership)})


@routes.delete("/api/orgs/{org_id}/members/{user_id}")
async def delete_member(request: web.Request) -> web.Response:
    """Remove a member (owners and admins; anyone may remove themselves)."""
    caller = await principal(request)
    org_id, user_id = request.match_info["org_id"], request.match_info["user_id"]
    await request.app[orgs_key].remove_member(caller, org_id, user_id)
    return web.json_response({"org_id": org_id, "user_id": user_id, "removed": True})


@routes.get("/api/orgs/{org_id}/members")
async def list_members(request: web.Request) -> web.Response:
    """The org's members (any member)."""
    caller = await principal(request)
    org_id = request.match_info["org_id"]
    members = await request.app[orgs_key].members(caller, org_id)
    return web.json_response(
        {"org_id": org_id, "members": [encode.member(member) for member in members]}
    )


@routes.get("/api/orgs/{org_id}/audit")
async def read_audit(request: web.Request) -> web.Response:
    """One page of the org's audit log, newest first (owners and admins)."""
    caller = await principal(request)
    org_id = request.match_info["org_id"]
    page = await request.app[orgs_key].audit_page(
        caller,
        org_id,
        before=decode.query_int(request, "before", None),
        limit=decode.query_int(request, "limit", DEFAULT_AUDIT_PAGE) or 0,
    )
    return web.json_response(
        {
            "org_id": org_id,
            "entries": [encode.audit_entry(entry) for entry in page.entries],
            "next_before": page.next_before,
        }
    )
