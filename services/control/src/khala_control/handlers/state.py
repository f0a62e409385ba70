"""Typed aiohttp application state shared by the HTTP handlers."""

from __future__ import annotations

from aiohttp import web

from khala_control.usecases.dev_idp import DevIdentityProvider
from khala_control.usecases.orgs import OrgService
from khala_control.usecases.sessions import SessionService
from khala_control.usecases.signing import Signer
from khala_control.usecases.token_mint import SyncTokenMinter

sessions_key = web.AppKey("control_sessions", SessionService)
orgs_key = web.AppKey("control_orgs", OrgService)
minter_key = web.AppKey("control_minter", SyncTokenMinter)
keyring_key = web.AppKey("control_keyring", Signer)
dev_idp_key = web.AppKey("control_dev_idp", DevIdentityProvider)
proxy_hops_key = web.AppKey("control_proxy_hops", int)
