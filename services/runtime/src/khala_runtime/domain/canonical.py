"""Canonical JSON: the byte form of every stored payload and hashed content.

UTF-8, object keys sorted, no insignificant whitespace, non-ASCII characters
written as themselves, NaN and Infinity refused. The same value always gives
the same bytes, so hashes over them are stable.
"""

from __future__ import annotations

import json


def canonical_json(value: object) -> bytes:
    """The canonical UTF-8 JSON bytes of `value` (ValueError if not representable)."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")
