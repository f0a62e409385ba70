"""Signing keys (private halves encrypted by the caller before they get here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
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
        INSERT INTO signing_keys (kid, purpose, status, private_key_enc, public_jwk, activated_at)
        VALUES ($1, $2, 'active', $3, $4::jsonb, now())
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
    """Public JWKs of the active, next and previous keys (active first)."""
    rows = await conn.fetch(
        """
        SELECT public_jwk::text AS jwk FROM signing_keys
        WHERE purpose = $1 AND status IN ('active', 'next', 'previous')
        ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END
        """,
        purpose,
    )
    return [json.loads(row["jwk"]) for row in rows]


@dataclass(frozen=True)
class KeyStatus:
    """One key's lifecycle state (for `khala-control keys list`)."""

    kid: str
    purpose: str
    status: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None


async def list_keys(conn: asyncpg.Connection, purpose: str) -> list[KeyStatus]:
    """Every key of `purpose`, oldest first."""
    rows = await conn.fetch(
        """
        SELECT kid, purpose, status, created_at, activated_at, retired_at FROM signing_keys
        WHERE purpose = $1 ORDER BY created_at, kid
        """,
        purpose,
    )
    return [KeyStatus(**dict(row)) for row in rows]


async def lock_rotation(conn: asyncpg.Connection, purpose: str) -> None:
    """Serialise rotations of `purpose` until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('khala.control.keys.' || $1))", purpose
    )


async def staged_key(conn: asyncpg.Connection, purpose: str) -> tuple[str, float] | None:
    """The staged ('next') key's kid and how many seconds ago it was published."""
    row = await conn.fetchrow(
        """
        SELECT kid, extract(epoch FROM now() - created_at)::float8 AS age_s FROM signing_keys
        WHERE purpose = $1 AND status = 'next'
        """,
        purpose,
    )
    return (row["kid"], row["age_s"]) if row else None


async def stage(conn: asyncpg.Connection, key: StoredKey) -> None:
    """Publish `key` as 'next' (in the JWKS, not signing yet)."""
    await conn.execute(
        """
        INSERT INTO signing_keys (kid, purpose, status, private_key_enc, public_jwk)
        VALUES ($1, $2, 'next', $3, $4::jsonb)
        """,
        key.kid,
        key.purpose,
        key.private_key_enc,
        json.dumps(key.public_jwk),
    )


async def promote(conn: asyncpg.Connection, purpose: str, kid: str) -> bool:
    """Retire 'previous', demote 'active', activate the staged key `kid`.

    Must run in a transaction holding `lock_rotation`; False if `kid` is no
    longer staged (another rotation promoted it first).
    """
    staged = await conn.fetchval(
        "SELECT 1 FROM signing_keys WHERE purpose = $1 AND kid = $2 AND status = 'next'",
        purpose,
        kid,
    )
    if staged is None:
        return False
    await conn.execute(
        """
        UPDATE signing_keys SET status = 'retired', retired_at = now()
        WHERE purpose = $1 AND status = 'previous'
        """,
        purpose,
    )
    await conn.execute(
        "UPDATE signing_keys SET status = 'previous' WHERE purpose = $1 AND status = 'active'",
        purpose,
    )
    await conn.execute(
        "UPDATE signing_keys SET status = 'active', activated_at = now() WHERE kid = $1", kid
    )
    return True
