"""Client of an OpenID provider's discovery document (`/.well-known/openid-configuration`)."""

from __future__ import annotations

from typing import Any

import aiohttp


async def fetch_discovery(issuer: str, timeout_s: float) -> dict[str, Any]:
    """The issuer's OpenID discovery document (raises on HTTP or shape errors)."""
    url = f"{issuer}/.well-known/openid-configuration"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        response.raise_for_status()
        document = await response.json(content_type=None)
    if not isinstance(document, dict):
        raise ValueError("discovery document is not a JSON object")
    if document.get("issuer") != issuer:
        raise ValueError(f"discovery document names issuer {document.get('issuer')!r}")
    if not isinstance(document.get("jwks_uri"), str):
        raise ValueError("discovery document has no jwks_uri")
    return document
