"""HTTP: orgs and memberships."""

from __future__ import annotations

from aiohttp import web

from khala_control.handlers import decode, encode
from khala_control.handlers.bearer import principal
from khala_control.handlers.schemas import (
    AuditQuery,
    CreateOrgRequest,
    InvitationRequest,
    MemberRequest,
)
from khala_control.handlers.state import orgs_key

routes = web.RouteTableDef()


@routes.post("/api/orgs")
async def create_org(request: web.Request) -> web.Response:
    """Create an org; the caller becomes its owner."""
    caller = await principal(request)
    body = await decode.body(request, CreateOrgRequest)
    membership = await request.app[orgs_key].create(caller, body.org_id, body.name)
    return web.json_response(encode.membership(membership), status=201)


@routes.put("/api/orgs/{org_id}/members/{user_id}")
async def put_member(request: web.Request) -> web.Response:
    """Change a member's role (owners and admins); a non-member is invited instead."""
    caller = await principal(request)
    body = await decode.body(request, MemberRequest)
    user_id = request.match_info["user_id"]
    membership = await request.app[orgs_key].set_member(
        caller, request.match_info["org_id"], user_id, body.role
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


@routes.post("/api/orgs/{org_id}/invitations")
async def invite(request: web.Request) -> web.Response:
    """Invite a user id or an email address (owners and admins): 201, pending."""
    caller = await principal(request)
    body = await decode.body(request, InvitationRequest)
    invitation = await request.app[orgs_key].invite(
        caller, request.match_info["org_id"], body.role, user_id=body.user_id, email=body.email
    )
    return web.json_response(encode.invitation(invitation), status=201)


@routes.get("/api/orgs/{org_id}/invitations")
async def org_invitations(request: web.Request) -> web.Response:
    """The org's open invitations (owners and admins)."""
    caller = await principal(request)
    org_id = request.match_info["org_id"]
    invitations = await request.app[orgs_key].org_invitations(caller, org_id)
    return web.json_response(
        {"org_id": org_id, "invitations": [encode.invitation(i) for i in invitations]}
    )


@routes.get("/api/invitations")
async def my_invitations(request: web.Request) -> web.Response:
    """The caller's open invitations."""
    caller = await principal(request)
    invitations = await request.app[orgs_key].invitations_for(caller)
    return web.json_response({"invitations": [encode.invitation(i) for i in invitations]})


@routes.post("/api/invitations/{invitation_id}/accept")
async def accept_invitation(request: web.Request) -> web.Response:
    """Accept one of the caller's invitations: the membership starts now."""
    caller = await principal(request)
    membership = await request.app[orgs_key].accept(caller, request.match_info["invitation_id"])
    return web.json_response({"user_id": caller.user_id, **encode.membership(membership)})


@routes.post("/api/invitations/{invitation_id}/decline")
async def decline_invitation(request: web.Request) -> web.Response:
    """Decline one of the caller's invitations."""
    caller = await principal(request)
    invitation = await request.app[orgs_key].decline(caller, request.match_info["invitation_id"])
    return web.json_response(encode.invitation(invitation, status="declined"))


@routes.get("/api/orgs/{org_id}/audit")
async def read_audit(request: web.Request) -> web.Response:
    """One page of the org's audit log, newest first (owners and admins)."""
    caller = await principal(request)
    org_id = request.match_info["org_id"]
    query = decode.query(request, AuditQuery)
    page = await request.app[orgs_key].audit_page(
        caller, org_id, before=query.before, limit=query.limit
    )
    return web.json_response(
        {
            "org_id": org_id,
            "entries": [encode.audit_entry(entry) for entry in page.entries],
            "next_before": page.next_before,
        }
    )
