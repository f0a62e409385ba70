"""Device sessions and their refresh tokens (stored as hashes).

Revoking sessions notifies `SESSION_CHANNEL` with each session id, in the
revoking transaction (delivered at commit), so control processes can evict
their cached copies (`usecases/caches.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from khala_control.domain.models import DeviceSession

SESSION_CHANNEL = "khala_control_sessions"
_COLUMNS = (
    "session_id, user_id, device_id, surface, client_version, created_at, last_used_at, revoked_at"
)


def _session(row: asyncpg.Record) -> DeviceSession:
    return DeviceSession(
        session_id=row["session_id"],
        user_id=row["user_id"],
        device_id=row["device_id"],
        surface=row["surface"],
        client_version=row["client_version"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


@dataclass(frozen=True)
class RefreshTokenRow:
    """A stored refresh token and the session it renews."""

    session: DeviceSession
    expires_at: datetime
    used_at: datetime | None


async def insert_session(
    conn: asyncpg.Connection,
    *,
    session_id: str,
    user_id: str,
    device_id: str,
    surface: str,
    client_version: str,
) -> DeviceSession:
    """Create a live session."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO device_sessions (session_id, user_id, device_id, surface, client_version)
        VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}
        """,
        session_id,
        user_id,
        device_id,
        surface,
        client_version,
    )
    return _session(row)


async def get_session(conn: asyncpg.Connection, session_id: str) -> DeviceSession | None:
    """The session `session_id` (live or revoked), or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_sessions WHERE session_id = $1", session_id
    )
    return _session(row) if row else None


async def live_sessions(conn: asyncpg.Connection, user_id: str) -> list[DeviceSession]:
    """The user's unrevoked sessions, oldest first."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM device_sessions
        WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, session_id
        """,
        user_id,
    )
    return [_session(row) for row in rows]


async def revoke_sessions(
    conn: asyncpg.Connection,
    user_id: str,
    reason: str,
    *,
    session_ids: list[str] | None = None,
    device_id: str | None = None,
) -> list[DeviceSession]:
    """Revoke the user's live sessions: those listed, those of `device_id`, or all.

    Returns only the sessions this call revoked; already revoked ones are skipped.
    """
    rows = await conn.fetch(
        f"""
        UPDATE device_sessions SET revoked_at = now(), revoke_reason = $2
        WHERE user_id = $1 AND revoked_at IS NULL
          AND ($3::text[] IS NULL OR session_id = ANY($3::text[]))
          AND ($4::text IS NULL OR device_id = $4)
        RETURNING {_COLUMNS}
        """,
        user_id,
        reason,
        session_ids,
        device_id,
    )
    revoked = sorted((_session(row) for row in rows), key=lambda s: s.session_id)
    if revoked:
        await conn.execute(
            "SELECT pg_notify($1, session_id) FROM unnest($2::text[]) AS session_id",
            SESSION_CHANNEL,
            [session.session_id for session in revoked],
        )
    return revoked


async def revoked_since(
    conn: asyncpg.Connection, window_s: float, limit: int
) -> list[tuple[str, datetime]]:
    """`(session_id, revoked_at)` of sessions revoked in the last `window_s`, newest first."""
    rows = await conn.fetch(
        """
        SELECT session_id, revoked_at FROM device_sessions
        WHERE revoked_at IS NOT NULL AND revoked_at > now() - make_interval(secs => $1)
        ORDER BY revoked_at DESC LIMIT $2
        """,
        window_s,
        limit,
    )
    return [(row["session_id"], row["revoked_at"]) for row in rows]


async def touch_session(conn: asyncpg.Connection, session_id: str) -> None:
    """Record that the session was just renewed."""
    await conn.execute(
        "UPDATE device_sessions SET last_used_at = now() WHERE session_id = $1", session_id
    )


async def insert_refresh_token(
    conn: asyncpg.Connection, token_hash: bytes, session_id: str, expires_at: datetime
) -> None:
    """Store a new refresh token's hash."""
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        session_id,
        expires_at,
    )


async def lock_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> RefreshTokenRow | None:
    """The refresh token with this hash, row-locked until the transaction ends."""
    row = await conn.fetchrow(
        f"""
        SELECT r.expires_at AS token_expires_at, r.used_at AS token_used_at,
               {", ".join(f"s.{c.strip()}" for c in _COLUMNS.split(","))}
        FROM refresh_tokens r JOIN device_sessions s USING (session_id)
        WHERE r.token_hash = $1
        FOR UPDATE OF r
        """,
        token_hash,
    )
    if row is None:
        return None
    return RefreshTokenRow(_session(row), row["token_expires_at"], row["token_used_at"])


async def mark_refresh_token_used(conn: asyncpg.Connection, token_hash: bytes) -> None:
    """Spend a refresh token (it can never renew again)."""
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash
    )
