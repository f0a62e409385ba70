"""Postgres access (read-only) to the projector's topic logs."""
