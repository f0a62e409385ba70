"""Canonical JSON: the byte form of every stored payload and hashed content.

UTF-8, object keys sorted, no insignificant whitespace, non-ASCII characters
written as themselves, NaN and Infinity refused. The same value always gives
the same bytes, so hashes over them are stable.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring

# One encoder, built once: json.dumps would rebuild it on every call (hot path).
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: object) -> bytes:
    """The canonical UTF-8 JSON bytes of `value` (ValueError if not representable)."""
    return _ENCODER.encode(value).encode("utf-8")


def canonical_string(text: str) -> bytes:
    """The canonical JSON bytes of one string (quoted and escaped exactly as
    `canonical_json` writes it inside a value)."""
    encoded: str = encode_basestring(text)
    return encoded.encode("utf-8")
