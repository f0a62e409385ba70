"""Users, keyed by the identity provider's (issuer, subject)."""

from __future__ import annotations

import asyncpg

from khala_control.domain.models import User

_COLUMNS = "user_id, issuer, subject, email, name"


def _user(row: asyncpg.Record) -> User:
    return User(row["user_id"], row["issuer"], row["subject"], row["email"], row["name"])


async def upsert_user(
    conn: asyncpg.Connection, *, new_user_id: str, issuer: str, subject: str, email: str, name: str
) -> tuple[User, bool]:
    """The user for (issuer, subject), created on first sign-in; True if created.

    Email and name follow the latest ID token, unless it omits them.
    """
    row = await conn.fetchrow(
        f"""
        INSERT INTO users (user_id, issuer, subject, email, name)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (issuer, subject) DO UPDATE SET
            email = CASE WHEN EXCLUDED.email <> '' THEN EXCLUDED.email ELSE users.email END,
            name = CASE WHEN EXCLUDED.name <> '' THEN EXCLUDED.name ELSE users.name END,
            updated_at = now()
        RETURNING {_COLUMNS}, (xmax = 0) AS created
        """,
        new_user_id,
        issuer,
        subject,
        email,
        name,
    )
    return _user(row), bool(row["created"])


async def get_user(conn: asyncpg.Connection, user_id: str) -> User | None:
    """The user `user_id`, or None."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE user_id = $1", user_id)
    return _user(row) if row else None
