"""Reading typed fields out of a JSON request body (400 `bad_request` otherwise)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from khala_common.http import ApiError

MAX_QUERY_DIGITS = 18  # any such number fits a Postgres bigint


def text(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    """A string field (missing and optional: empty string)."""
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(400, "bad_request", f"{name} must be a non-empty string")
    return value


def text_list(body: dict[str, Any], name: str) -> list[str]:
    """A list-of-strings field (missing: empty list)."""
    value = body.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, "bad_request", f"{name} must be a list of strings")
    return value


def query_int(request: web.Request, name: str, default: int | None) -> int | None:
    """A non-negative integer query parameter in ASCII digits (missing: `default`)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    # str.isdigit() alone also accepts digits int() refuses, such as "²".
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_QUERY_DIGITS:
        raise ApiError(400, "bad_request", f"{name} must be a non-negative integer")
    return int(raw)
