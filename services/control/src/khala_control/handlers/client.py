"""The client's address, for per-address rate limits and the audit log."""

from __future__ import annotations

from aiohttp import web

from khala_control.handlers.state import proxy_hops_key


def client_ip(request: web.Request) -> str:
    """The TCP peer, or the X-Forwarded-For entry added by the outermost trusted proxy.

    With N trusted proxies, the last N entries of X-Forwarded-For were written
    by them; the N-th from the right is the address the first proxy saw. Entries
    further left are client-supplied and never trusted.
    """
    hops = request.app[proxy_hops_key]
    if hops > 0:
        forwarded = [
            part.strip()
            for header in request.headers.getall("X-Forwarded-For", [])
            for part in header.split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote or "unknown"
