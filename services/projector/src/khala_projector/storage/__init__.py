"""Postgres access of the projector (schema `khala`) and its migrations."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
