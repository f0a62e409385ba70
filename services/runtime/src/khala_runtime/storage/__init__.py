"""Runtime's Postgres storage (schema `runtime`): SQL and migrations."""

from pathlib import Path

SCHEMA = "runtime"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
