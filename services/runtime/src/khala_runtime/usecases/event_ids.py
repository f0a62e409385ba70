"""Fresh event ids: random (version 4) UUIDs in their text form, made in bulk."""

from __future__ import annotations

import os


def uuid4_strings(count: int) -> list[str]:
    """`count` random version-4 UUIDs as canonical lowercase text."""
    raw = bytearray(os.urandom(16 * count))
    out: list[str] = []
    for start in range(0, 16 * count, 16):
        raw[start + 6] = (raw[start + 6] & 0x0F) | 0x40  # version 4
        raw[start + 8] = (raw[start + 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw[start : start + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out
