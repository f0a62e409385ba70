"""The aiohttp application: operational routes, middleware and every API route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from aiohttp import web
from opentelemetry.trace import SpanKind

from khala_common.http import Readiness, make_app
from khala_common.telemetry import extract_context, tracer
from khala_control.handlers import http_auth, http_dev_idp, http_orgs, http_sync, openapi
from khala_control.handlers.errors import control_error_middleware
from khala_control.handlers.http_dashboard import add_dashboard
from khala_control.handlers.state import (
    dev_idp_key,
    keyring_key,
    minter_key,
    orgs_key,
    proxy_hops_key,
    sessions_key,
)
from khala_control.usecases.dev_idp import DevIdentityProvider
from khala_control.usecases.orgs import OrgService
from khala_control.usecases.sessions import SessionService
from khala_control.usecases.signing import Signer
from khala_control.usecases.token_mint import SyncTokenMinter

_tracer = tracer("khala_control.http")


@web.middleware
async def tracing_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One server span per request, continuing the caller's W3C trace context."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    with _tracer.start_as_current_span(
        f"{request.method} {route}", context=extract_context(request.headers), kind=SpanKind.SERVER
    ):
        return await handler(request)


def build_http_app(
    readiness: Readiness,
    *,
    sessions: SessionService,
    orgs: OrgService,
    minter: SyncTokenMinter,
    keyring: Signer,
    dev_idp: DevIdentityProvider | None,
    trusted_proxy_hops: int = 0,
    runtime_url: str = "http://127.0.0.1:8082",
    dashboard_dir: str | None = None,
    admin_port: int = 0,
    admin_host: str = "127.0.0.1",
    surfaces: Collection[str] = openapi.DEFAULT_SURFACES,
) -> web.Application:
    """The HTTP app; the dev identity provider's routes exist only if it is given."""
    app = make_app(readiness, admin_port=admin_port, admin_host=admin_host)
    app.middlewares.append(tracing_middleware)
    app.middlewares.append(control_error_middleware)
    app[sessions_key] = sessions
    app[orgs_key] = orgs
    app[minter_key] = minter
    app[keyring_key] = keyring
    app[proxy_hops_key] = trusted_proxy_hops
    for routes in (http_auth.routes, http_orgs.routes, http_sync.routes):
        app.router.add_routes(routes)
    if dev_idp is not None:
        app[dev_idp_key] = dev_idp
        app.router.add_routes(http_dev_idp.routes)
    # Before the dashboard's /api/v1/* proxy: /api/v1/openapi.json is control's own.
    openapi.add_routes(app, dev_idp=dev_idp is not None, surfaces=surfaces)
    add_dashboard(app, Path(dashboard_dir) if dashboard_dir else None, runtime_url)
    return app
