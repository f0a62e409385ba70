"""asyncpg SQL of the `control` schema; migrations live in `migrations/`."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
