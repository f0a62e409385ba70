"""Prometheus counters of the control service (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

SESSIONS_CREATED = Counter(
    "khala_control_sessions_created_total", "Device sessions created", ["surface"]
)
TOKENS_MINTED = Counter(
    "khala_control_tokens_minted_total",
    "Tokens signed, by kind (access, sync, dev_id_token)",
    ["kind"],
)
DENIALS = Counter(
    "khala_control_denials_total",
    "Refused requests, by code (unauthorized, forbidden_topic, upgrade_required, ...)",
    ["code"],
)
REVOCATIONS = Counter("khala_control_revocations_total", "Sessions revoked, by reason", ["reason"])
REVOCATIONS_PUBLISHED = Counter(
    "khala_control_revocations_published_total", "Revocation messages confirmed by the broker"
)
