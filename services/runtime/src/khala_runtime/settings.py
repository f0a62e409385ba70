"""Runtime settings, parsed once from the environment in `__main__`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from khala_common.settings import CommonSettings, Env


@dataclass(frozen=True, kw_only=True)
class Settings(CommonSettings):
    """Every runtime setting; one field per environment variable.

    The common fields (CommonSettings): runtime uses schema `runtime`, its outbox relay
    publishes to the AMQP URL, and the service token is required on RuntimeService and
    sent to ControlService.
    """

    log_level: str
    """KHALA_LOG_LEVEL: debug | info | warning | error."""
    http_port: int
    """KHALA_RUNTIME_HTTP_PORT: HTTP command API port (8082; 0 = ephemeral)."""
    grpc_port: int
    """KHALA_RUNTIME_GRPC_PORT: gRPC RuntimeService port (9082; 0 = ephemeral)."""
    control_url: str
    """KHALA_CONTROL_URL: control's base URL; JWKS at `<url>/.well-known/jwks.json`."""
    token_issuer: str
    """KHALA_TOKEN_ISSUER: expected `iss` of access tokens (default: KHALA_CONTROL_URL)."""
    control_grpc_target: str
    """KHALA_CONTROL_GRPC_TARGET: host:port of ControlService (IntrospectSession)."""
    max_body_bytes: int
    """KHALA_MAX_BODY_BYTES: largest accepted HTTP request body (1 MiB); larger is 413."""
    outbox_poll_interval_s: float
    """KHALA_OUTBOX_POLL_INTERVAL_S: relay poll interval when no NOTIFY arrives (1.0)."""
    outbox_linger_ms: float = 0.0
    """KHALA_OUTBOX_LINGER_MS: least time between the starts of two relay drains (0);
    under load a drain then carries that many milliseconds of commits in a few
    partition batches instead of one message per commit (docs/pipeline.md)."""
    group_commit_inflight: int = 2
    """KHALA_RUNTIME_GROUP_COMMIT_INFLIGHT: append transactions in flight per process
    and stream kind (2); appends arriving meanwhile form the next group."""
    projector_grpc_target: str
    """KHALA_PROJECTOR_GRPC_TARGET: host:port of ProjectorAdmin (GetProjectionStatus)."""
    projector_timeout_s: float
    """KHALA_PROJECTOR_TIMEOUT_S: deadline of a GetProjectionStatus call (0.5); past it
    snapshots report projection `unknown`."""
    heartbeat_stale_after_ms: int
    """KHALA_HEARTBEAT_STALE_AFTER_MS: a worker heartbeat older than this is `stale` (30000)."""
    db_pool_size: int
    """KHALA_DB_POOL_SIZE: largest number of Postgres connections of the request pool (10)."""
    append_rate_per_org: float = 5000.0
    """KHALA_RUNTIME_APPEND_RATE_PER_ORG: events per second one org may append (5000);
    above it appends get 429 `rate_limited` + Retry-After. 0 turns the limit off."""
    append_burst_per_org: int = 10_000
    """KHALA_RUNTIME_APPEND_BURST_PER_ORG: events one org may append at once (10000; at
    least 500, the largest append)."""
    test_crash_before_confirm: int = 0
    """KHALA_RUNTIME_TEST_CRASH_BEFORE_CONFIRM: FAULT INJECTION FOR TESTS ONLY. n > 0 makes
    `serve` SIGKILL itself while its outbox relay's nth publish awaits the broker's confirm
    (rows committed, not marked published). 0 (default) = off; never set it in a deployment."""

    @property
    def jwks_url(self) -> str:
        return f"{self.control_url.rstrip('/')}/.well-known/jwks.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and check every variable; SettingsError names the first bad one."""
        env = Env(environ)
        control_url = env.url(
            "KHALA_CONTROL_URL", "http://127.0.0.1:8081", schemes=("http", "https")
        )
        common = CommonSettings.read(environ, "runtime")
        return cls(
            **common.common_fields(),
            log_level=env.log_level(),
            http_port=env.port("KHALA_RUNTIME_HTTP_PORT", 8082),
            grpc_port=env.port("KHALA_RUNTIME_GRPC_PORT", 9082),
            control_url=control_url,
            token_issuer=env.string("KHALA_TOKEN_ISSUER", control_url),
            control_grpc_target=env.string("KHALA_CONTROL_GRPC_TARGET", "127.0.0.1:9081"),
            max_body_bytes=env.integer("KHALA_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            outbox_poll_interval_s=env.number("KHALA_OUTBOX_POLL_INTERVAL_S", 1.0, minimum=0.01),
            outbox_linger_ms=env.number("KHALA_OUTBOX_LINGER_MS", 0.0, minimum=0.0),
            group_commit_inflight=env.integer("KHALA_RUNTIME_GROUP_COMMIT_INFLIGHT", 2, minimum=1),
            projector_grpc_target=env.string("KHALA_PROJECTOR_GRPC_TARGET", "127.0.0.1:9083"),
            projector_timeout_s=env.number("KHALA_PROJECTOR_TIMEOUT_S", 0.5, minimum=0.01),
            heartbeat_stale_after_ms=env.integer(
                "KHALA_HEARTBEAT_STALE_AFTER_MS", 30_000, minimum=1
            ),
            db_pool_size=env.integer("KHALA_DB_POOL_SIZE", 10, minimum=1),
            append_rate_per_org=env.number(
                "KHALA_RUNTIME_APPEND_RATE_PER_ORG", 5000.0, minimum=0.0
            ),
            append_burst_per_org=env.integer(
                "KHALA_RUNTIME_APPEND_BURST_PER_ORG", 10_000, minimum=500
            ),
            test_crash_before_confirm=env.integer(
                "KHALA_RUNTIME_TEST_CRASH_BEFORE_CONFIRM", 0, minimum=0
            ),
        )
