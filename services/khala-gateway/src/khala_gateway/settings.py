"""Gateway configuration, parsed once from the environment (docs/gateway.md lists it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from khala_common.frame_limits import DEFAULT_MAX_FRAME_BYTES
from khala_common.settings import (
    CommonSettings,
    Env,
    SettingsError,
    refuse_dev_defaults,
)
from khala_common.versions import parse_version

DEFAULT_CONTROL_URL = "http://127.0.0.1:8081"
DEV_ADMIN_TOKEN = "khala-dev-admin-token"


@dataclass(frozen=True, kw_only=True)
class Settings(CommonSettings):
    """Every knob of the gateway; one field per environment variable.

    The common fields (CommonSettings): the gateway reads schema `khala` through a
    read-only pool, consumes `khala.fanout` and `khala.control`, requires the service
    token on gRPC calls (GatewayAdmin) and serves HTTP/WebSocket and gRPC on bind_host.
    """

    # KHALA_LOG_LEVEL: debug | info | warning | error.
    log_level: str = "info"
    # KHALA_GATEWAY_HTTP_PORT: WebSocket, health, metrics and admin HTTP (0 = ephemeral).
    http_port: int = 8084
    # KHALA_GATEWAY_GRPC_PORT: gRPC GatewayAdmin, health and reflection (0 = ephemeral).
    grpc_port: int = 9084
    # KHALA_CONTROL_URL: control's base URL; the JWKS is `<url>/.well-known/jwks.json`.
    control_url: str = DEFAULT_CONTROL_URL
    # KHALA_TOKEN_ISSUER: expected `iss` of sync tokens (default: KHALA_CONTROL_URL).
    token_issuer: str = DEFAULT_CONTROL_URL
    # KHALA_CONTROL_GRPC_TARGET: control's gRPC (ListRevokedSessions at start and reconnect).
    control_grpc_target: str = "127.0.0.1:9081"
    # KHALA_GATEWAY_REVOKED_RETENTION_S: how long a revocation from the broker is remembered;
    # at least the longest token lifetime at control plus skew (default 900 s + 60 s).
    revoked_retention_s: float = 3600.0
    # KHALA_GATEWAY_ADMIN_TOKEN: bearer token of GET /internal/v1/khala/fanout/metrics.
    admin_token: str = "khala-dev-admin-token"
    # KHALA_GATEWAY_HEARTBEAT_INTERVAL_MS: Heartbeat period (also sent in Welcome).
    heartbeat_interval_ms: int = 15_000
    # KHALA_GATEWAY_HELLO_TIMEOUT_S: Hello must arrive this soon after the upgrade.
    hello_timeout_s: float = 5.0
    # KHALA_GATEWAY_IDLE_TIMEOUT_S: close (4002) a socket that sent no message (Ping counts)
    # for this long; 0 disables it (clients must Ping at least this often when it is on).
    idle_timeout_s: float = 0.0
    # KHALA_GATEWAY_MAX_FRAME_BYTES: largest WebSocket message either side sends (Welcome);
    # at least runtime's limit (khala_common.frame_limits), so every accepted event fits.
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # KHALA_GATEWAY_MAX_SUBSCRIPTIONS: topics one connection may hold at once.
    max_subscriptions: int = 200
    # KHALA_GATEWAY_SEND_QUEUE_FRAMES: send buffer bound per connection, in frames.
    send_queue_frames: int = 10_000
    # KHALA_GATEWAY_SEND_QUEUE_BYTES: send buffer bound per connection, in bytes.
    send_queue_bytes: int = 8 * 1024 * 1024
    # KHALA_GATEWAY_SLOW_CONSUMER_GRACE_S: time over the bound before slow_consumer + 4008.
    slow_consumer_grace_s: float = 10.0
    # KHALA_GATEWAY_REPLAY_CHUNK: frames per Postgres read during replay and gap fill.
    replay_chunk: int = 500
    # KHALA_GATEWAY_HEAD_POLL_INTERVAL_S: period of the topic-head poll (catches lost messages).
    head_poll_interval_s: float = 2.0
    # KHALA_GATEWAY_TOKEN_EXPIRY_GRACE_S: after token exp (no RefreshAuth), close 4001 this late.
    token_expiry_grace_s: float = 30.0
    # KHALA_GATEWAY_DRAIN_RETRY_MS: base `retry_after_ms` of Reconnect on drain.
    drain_retry_ms: int = 1_000
    # KHALA_GATEWAY_DRAIN_JITTER_MS: random extra delay added per socket on drain.
    drain_jitter_ms: int = 4_000
    # KHALA_GATEWAY_DB_POOL_SIZE: read-only Postgres connections (caps concurrent replays).
    db_pool_size: int = 10
    # KHALA_GATEWAY_FANOUT_QUEUE_MAX: bound (messages) of this instance's fanout queue.
    fanout_queue_max: int = 100_000
    # KHALA_GATEWAY_MAX_MESSAGES_PER_S: inbound messages per second per connection (refill rate).
    max_messages_per_s: float = 50.0
    # KHALA_GATEWAY_MESSAGE_BURST: inbound messages a connection may send at once.
    message_burst: int = 100
    # KHALA_GATEWAY_ALLOWED_ORIGINS: comma-separated browser Origins (empty: any Origin).
    allowed_origins: tuple[str, ...] = ()
    # KHALA_GATEWAY_MAX_CONNECTIONS_PER_USER: sockets one user may hold on this instance.
    max_connections_per_user: int = 50
    # KHALA_GATEWAY_MIN_CLIENT_VERSIONS: `surface=version,...` minimum Hello.client_version.
    min_client_versions: tuple[tuple[str, str], ...] = ()
    # KHALA_GATEWAY_REPLAY_BUDGET: most frames one subscription may replay (0: unlimited).
    replay_budget: int = 100_000
    # KHALA_GATEWAY_MAX_CONCURRENT_REPLAYS: replays in progress per process before replay_budget.
    max_concurrent_replays: int = 1_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every variable; raises SettingsError naming the first bad one."""
        env = Env(environ)
        control_url = env.url("KHALA_CONTROL_URL", DEFAULT_CONTROL_URL, schemes=("http", "https"))
        common = CommonSettings.read(environ, "gateway")
        refuse_dev_defaults(
            environ,
            {
                "KHALA_GATEWAY_ADMIN_TOKEN": "is the published dev token"
                if env.string("KHALA_GATEWAY_ADMIN_TOKEN", DEV_ADMIN_TOKEN) == DEV_ADMIN_TOKEN
                else None,
            },
        )
        settings = cls(
            **common.common_fields(),
            log_level=env.log_level(),
            http_port=env.port("KHALA_GATEWAY_HTTP_PORT", 8084),
            grpc_port=env.port("KHALA_GATEWAY_GRPC_PORT", 9084),
            control_url=control_url.rstrip("/"),
            token_issuer=env.string("KHALA_TOKEN_ISSUER", control_url),
            control_grpc_target=env.string("KHALA_CONTROL_GRPC_TARGET", "127.0.0.1:9081"),
            revoked_retention_s=env.number(
                "KHALA_GATEWAY_REVOKED_RETENTION_S", 3600.0, minimum=60.0
            ),
            admin_token=env.string("KHALA_GATEWAY_ADMIN_TOKEN", "khala-dev-admin-token"),
            heartbeat_interval_ms=env.integer(
                "KHALA_GATEWAY_HEARTBEAT_INTERVAL_MS", 15_000, minimum=50
            ),
            hello_timeout_s=env.number("KHALA_GATEWAY_HELLO_TIMEOUT_S", 5.0, minimum=0.05),
            idle_timeout_s=env.number("KHALA_GATEWAY_IDLE_TIMEOUT_S", 0.0, minimum=0.0),
            max_frame_bytes=env.integer(
                "KHALA_GATEWAY_MAX_FRAME_BYTES",
                DEFAULT_MAX_FRAME_BYTES,
                minimum=DEFAULT_MAX_FRAME_BYTES,
            ),
            max_subscriptions=env.integer("KHALA_GATEWAY_MAX_SUBSCRIPTIONS", 200, minimum=1),
            send_queue_frames=env.integer("KHALA_GATEWAY_SEND_QUEUE_FRAMES", 10_000, minimum=1),
            send_queue_bytes=env.integer(
                "KHALA_GATEWAY_SEND_QUEUE_BYTES", 8 * 1024 * 1024, minimum=1024
            ),
            slow_consumer_grace_s=env.number(
                "KHALA_GATEWAY_SLOW_CONSUMER_GRACE_S", 10.0, minimum=0.0
            ),
            replay_chunk=env.integer("KHALA_GATEWAY_REPLAY_CHUNK", 500, minimum=1),
            head_poll_interval_s=env.number(
                "KHALA_GATEWAY_HEAD_POLL_INTERVAL_S", 2.0, minimum=0.01
            ),
            token_expiry_grace_s=env.number(
                "KHALA_GATEWAY_TOKEN_EXPIRY_GRACE_S", 30.0, minimum=0.0
            ),
            drain_retry_ms=env.integer("KHALA_GATEWAY_DRAIN_RETRY_MS", 1_000, minimum=0),
            drain_jitter_ms=env.integer("KHALA_GATEWAY_DRAIN_JITTER_MS", 4_000, minimum=0),
            db_pool_size=env.integer("KHALA_GATEWAY_DB_POOL_SIZE", 10, minimum=1),
            fanout_queue_max=env.integer("KHALA_GATEWAY_FANOUT_QUEUE_MAX", 100_000, minimum=1),
            max_messages_per_s=env.number("KHALA_GATEWAY_MAX_MESSAGES_PER_S", 50.0, minimum=0.1),
            message_burst=env.integer("KHALA_GATEWAY_MESSAGE_BURST", 100, minimum=1),
            allowed_origins=env.csv("KHALA_GATEWAY_ALLOWED_ORIGINS"),
            max_connections_per_user=env.integer(
                "KHALA_GATEWAY_MAX_CONNECTIONS_PER_USER", 50, minimum=1
            ),
            min_client_versions=_surface_versions(env.csv("KHALA_GATEWAY_MIN_CLIENT_VERSIONS")),
            replay_budget=env.integer("KHALA_GATEWAY_REPLAY_BUDGET", 100_000, minimum=0),
            max_concurrent_replays=env.integer(
                "KHALA_GATEWAY_MAX_CONCURRENT_REPLAYS", 1_000, minimum=1
            ),
        )
        return settings

    @property
    def min_versions(self) -> dict[str, str]:
        """Minimum client version by surface."""
        return dict(self.min_client_versions)

    @property
    def jwks_url(self) -> str:
        """Where control publishes its signing keys."""
        return f"{self.control_url}/.well-known/jwks.json"


def _surface_versions(entries: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for entry in entries:
        surface, sep, version = entry.partition("=")
        if not sep or not surface.strip() or parse_version(version.strip()) is None:
            raise SettingsError(
                "KHALA_GATEWAY_MIN_CLIENT_VERSIONS",
                f"entries must look like surface=1.2.3, got {entry!r}",
            )
        pairs.append((surface.strip(), version.strip()))
    return tuple(pairs)
