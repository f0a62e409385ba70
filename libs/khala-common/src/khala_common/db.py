"""Postgres access: asyncpg pools bound to one service schema, and migrations.

Each service owns one schema (DESIGN invariant 6). A pool's connections have
`search_path` set to that schema only, so unqualified SQL can never touch
another service's tables; the gateway's pool is additionally read-only.
Migrations are plain SQL files applied by yoyo-migrations, which records them
in the same schema and serialises concurrent runs with a lock.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_schema(schema: str) -> str:
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def create_pool(
    dsn: str,
    schema: str,
    *,
    read_only: bool = False,
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """An asyncpg pool whose sessions see only `schema` (read-only if asked)."""
    settings = {"search_path": _check_schema(schema), "application_name": f"khala-{schema}"}
    if read_only:
        settings["default_transaction_read_only"] = "on"
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, server_settings=settings
    )
    assert pool is not None
    return pool


def _yoyo_url(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    scheme = "postgresql+psycopg"
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


def migrate(dsn: str, schema: str, migrations_dir: Path) -> int:
    """Create `schema` if needed and apply pending migrations; returns how many ran."""
    _check_schema(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    backend = get_backend(_yoyo_url(dsn, schema))
    migrations = read_migrations(str(migrations_dir))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return len(pending)


async def check_pool(pool: asyncpg.Pool) -> None:
    """Readiness probe: one round trip."""
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
