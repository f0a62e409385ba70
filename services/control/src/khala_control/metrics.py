"""Prometheus counters of the control service (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
RATE_LIMITED = Counter(
    "khala_control_rate_limited_total",
    "Requests refused with 429, by action (sign_in, refresh, mint)",
    ["action"],
)
AUDIT_PENDING = Gauge(
    "khala_control_audit_pending", "Audit entries buffered in memory, not yet in Postgres"
)
AUDIT_WRITTEN = Counter(
    "khala_control_audit_written_total", "Audit entries written by the buffered writer"
)
AUDIT_WRITE_FAILURES = Counter(
    "khala_control_audit_write_failures_total", "Failed batch writes of the audit writer (retried)"
)
AUDIT_LOST = Counter(
    "khala_control_audit_lost_total",
    "Audit entries that could not be written at shutdown (each is logged at error level)",
)
CACHE_LOOKUPS = Counter(
    "khala_control_cache_lookups_total",
    "Lookups of the session and membership caches, by result (hit, miss, bypass)",
    ["cache", "result"],
)
