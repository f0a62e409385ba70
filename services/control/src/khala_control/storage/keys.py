"""Signing keys (private halves encrypted by the caller before they get here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class StoredKey:
    """One signing key row: encrypted private PEM and public JWK."""

    kid: str
    purpose: str
    private_key_enc: bytes
    public_jwk: dict[str, Any]


def _key(row: asyncpg.Record) -> StoredKey:
    return StoredKey(row["kid"], row["purpose"], row["private_key_enc"], json.loads(row["jwk"]))


async def insert_active_if_none(conn: asyncpg.Connection, key: StoredKey) -> bool:
    """Make `key` the active key unless one exists; True if it was inserted.

    The partial unique index on (purpose) WHERE status = 'active' makes this
    safe when several processes start at once: exactly one insert wins.
    """
    status = await conn.execute(
        """
        INSERT INTO signing_keys (kid, purpose, status, private_key_enc, public_jwk)
        VALUES ($1, $2, 'active', $3, $4::jsonb)
        ON CONFLICT (purpose) WHERE status = 'active' DO NOTHING
        """,
        key.kid,
        key.purpose,
        key.private_key_enc,
        json.dumps(key.public_jwk),
    )
    return bool(status.endswith(" 1"))


async def active_key(conn: asyncpg.Connection, purpose: str) -> StoredKey | None:
    """The key that signs for `purpose`, or None."""
    row = await conn.fetchrow(
        """
        SELECT kid, purpose, private_key_enc, public_jwk::text AS jwk FROM signing_keys
        WHERE purpose = $1 AND status = 'active'
        """,
        purpose,
    )
    return _key(row) if row else None


async def published_jwks(conn: asyncpg.Connection, purpose: str) -> list[dict[str, Any]]:
    """Public JWKs of the active and previous keys, active first."""
    rows = await conn.fetch(
        """
        SELECT public_jwk::text AS jwk FROM signing_keys
        WHERE purpose = $1 AND status IN ('active', 'previous')
        ORDER BY status = 'active' DESC, created_at DESC
        """,
        purpose,
    )
    return [json.loads(row["jwk"]) for row in rows]


async def rotate(conn: asyncpg.Connection, new_key: StoredKey) -> None:
    """Retire the previous key, demote the active one, activate `new_key`.

    Must run in a transaction; an advisory lock serialises concurrent rotations.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('khala.control.keys.' || $1))", new_key.purpose
    )
    await conn.execute(
        """
        UPDATE signing_keys SET status = 'retired', retired_at = now()
        WHERE purpose = $1 AND status = 'previous'
        """,
        new_key.purpose,
    )
    await conn.execute(
        "UPDATE signing_keys SET status = 'previous' WHERE purpose = $1 AND status = 'active'",
        new_key.purpose,
    )
    inserted = await insert_active_if_none(conn, new_key)
    if not inserted:
        raise RuntimeError("rotation lost the active slot; the transaction must roll back")
