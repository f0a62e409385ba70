"""Control's configuration, parsed once from the environment in `__main__`.

Every field maps to one environment variable; a missing or invalid value raises
`SettingsError` naming the variable, so the process fails at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.fernet import Fernet

from khala_common.settings import DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, Env, SettingsError
from khala_control.domain.surfaces import DEFAULT_MATRIX_SPEC, SurfacePolicy

SCHEMA = "control"
# Publicly known, so it protects nothing: for local runs and tests only. Serving
# with it logs a warning; production sets KHALA_CONTROL_KEY_ENCRYPTION_KEY.
DEV_KEY_ENCRYPTION_KEY = "a2hhbGEtZGV2LWluc2VjdXJlLWtleS1lbmNyeXB0aW4="


@dataclass(frozen=True)
class Settings:
    """Control's settings; one field per environment variable."""

    # KHALA_DATABASE_URL: Postgres DSN; control uses schema `control` only.
    database_url: str = DEFAULT_DATABASE_URL
    # KHALA_AMQP_URL: RabbitMQ URL (revocations go to the `khala.control` exchange).
    amqp_url: str = DEFAULT_AMQP_URL
    # KHALA_AMQP_PREFIX: prefix of every exchange/queue name (tests use a unique one).
    amqp_prefix: str = ""
    # KHALA_SERVICE_TOKEN: credential gRPC callers must present (`authorization: Bearer …`).
    service_token: str = "khala-dev-service-token"
    # KHALA_LOG_LEVEL: debug | info | warning | error.
    log_level: str = "info"
    # KHALA_BIND_HOST: listen address of HTTP and gRPC.
    bind_host: str = "127.0.0.1"
    # KHALA_CONTROL_HTTP_PORT: HTTP port (0 = ephemeral, for tests).
    http_port: int = 8081
    # KHALA_CONTROL_GRPC_PORT: gRPC port (0 = ephemeral, for tests).
    grpc_port: int = 9081
    # KHALA_TOKEN_ISSUER, else KHALA_CONTROL_URL: `iss` of control's tokens; the dev
    # identity provider's issuer is `<this>/dev-idp`. It must reach control's HTTP root.
    # None (neither set) = the bound HTTP URL: http://127.0.0.1:8081 with default
    # settings, and the real ephemeral port when KHALA_CONTROL_HTTP_PORT=0.
    token_issuer: str | None = None
    # KHALA_ACCESS_TOKEN_TTL_S: access token lifetime (default 15 min).
    access_token_ttl_s: int = 900
    # KHALA_REFRESH_TOKEN_TTL_S: refresh token lifetime from issue (sliding; 30 days).
    refresh_token_ttl_s: int = 30 * 24 * 3600
    # KHALA_SYNC_TOKEN_TTL_S: sync token lifetime (default 5 min).
    sync_token_ttl_s: int = 300
    # KHALA_CONTROL_KEY_ENCRYPTION_KEY: Fernet key(s), comma-separated; the first
    # encrypts signing keys at rest, all decrypt (rotate by prepending a new one).
    key_encryption_keys: tuple[str, ...] = (DEV_KEY_ENCRYPTION_KEY,)
    # KHALA_SIGNING_KEY_REFRESH_S: how often a running process re-reads the active key.
    signing_key_refresh_s: float = 30.0
    # KHALA_DEV_IDP_ENABLED: serve the dev identity provider (never in production).
    dev_idp_enabled: bool = False
    # KHALA_OIDC_ISSUER: an external OIDC issuer whose ID tokens sign users in (optional).
    oidc_issuer: str | None = None
    # KHALA_OIDC_AUDIENCE: required `aud` of ID tokens (the OIDC client id).
    oidc_audience: str = "khala-control"
    # KHALA_SURFACE_MATRIX: readable topic classes per surface (see domain/surfaces.py).
    # KHALA_SURFACE_MIN_VERSIONS: minimum client version per surface (default: none).
    surfaces: SurfacePolicy = field(
        default_factory=lambda: SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC)
    )
    # KHALA_REVOCATION_RELAY_POLL_S: how often unpublished revocations are retried.
    revocation_poll_s: float = 2.0
    # KHALA_OTEL_EXPORTER: none | console.
    otel_exporter: str = "none"

    @property
    def uses_dev_key_encryption_key(self) -> bool:
        """Whether signing keys are encrypted with the publicly known dev key."""
        return self.key_encryption_keys[0] == DEV_KEY_ENCRYPTION_KEY

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read every variable once; SettingsError names the first bad one."""
        env = Env(environ)
        issuer: str | None = None
        for name in ("KHALA_TOKEN_ISSUER", "KHALA_CONTROL_URL"):
            if environ.get(name, "").strip():
                issuer = env.url(name, schemes=("http", "https")).rstrip("/")
                break
        oidc_issuer = environ.get("KHALA_OIDC_ISSUER", "").strip()
        if oidc_issuer:
            oidc_issuer = env.url("KHALA_OIDC_ISSUER", schemes=("http", "https"))
        return cls(
            database_url=env.url(
                "KHALA_DATABASE_URL", DEFAULT_DATABASE_URL, schemes=("postgresql", "postgres")
            ),
            amqp_url=env.url("KHALA_AMQP_URL", DEFAULT_AMQP_URL, schemes=("amqp", "amqps")),
            amqp_prefix=environ.get("KHALA_AMQP_PREFIX", ""),
            service_token=env.string("KHALA_SERVICE_TOKEN", "khala-dev-service-token"),
            log_level=_choice(
                env, "KHALA_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            bind_host=env.string("KHALA_BIND_HOST", "127.0.0.1"),
            http_port=_port(env, "KHALA_CONTROL_HTTP_PORT", 8081),
            grpc_port=_port(env, "KHALA_CONTROL_GRPC_PORT", 9081),
            token_issuer=issuer,
            access_token_ttl_s=env.integer("KHALA_ACCESS_TOKEN_TTL_S", 900, minimum=30),
            refresh_token_ttl_s=env.integer(
                "KHALA_REFRESH_TOKEN_TTL_S", 30 * 24 * 3600, minimum=60
            ),
            sync_token_ttl_s=env.integer("KHALA_SYNC_TOKEN_TTL_S", 300, minimum=10),
            key_encryption_keys=_fernet_keys(env),
            signing_key_refresh_s=env.number("KHALA_SIGNING_KEY_REFRESH_S", 30.0, minimum=0.0),
            dev_idp_enabled=env.boolean("KHALA_DEV_IDP_ENABLED", False),
            oidc_issuer=oidc_issuer.rstrip("/") or None,
            oidc_audience=env.string("KHALA_OIDC_AUDIENCE", "khala-control"),
            surfaces=_surfaces(env),
            revocation_poll_s=env.number("KHALA_REVOCATION_RELAY_POLL_S", 2.0, minimum=0.05),
            otel_exporter=_choice(env, "KHALA_OTEL_EXPORTER", "none", ("none", "console")),
        )


def _port(env: Env, name: str, default: int) -> int:
    port = env.integer(name, default, minimum=0)
    if port > 65535:
        raise SettingsError(name, f"must be a port number <= 65535, got {port}")
    return port


def _choice(env: Env, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.string(name, default).lower()
    if value not in choices:
        raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _fernet_keys(env: Env) -> tuple[str, ...]:
    name = "KHALA_CONTROL_KEY_ENCRYPTION_KEY"
    keys = env.csv(name, (DEV_KEY_ENCRYPTION_KEY,))
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise SettingsError(
                name, "must be Fernet keys (32 url-safe base64 bytes), comma-separated"
            ) from None
    return keys


def _surfaces(env: Env) -> SurfacePolicy:
    matrix_spec = env.string("KHALA_SURFACE_MATRIX", DEFAULT_MATRIX_SPEC)
    try:
        SurfacePolicy.from_specs(matrix_spec)
    except ValueError as exc:
        raise SettingsError("KHALA_SURFACE_MATRIX", str(exc)) from None
    try:
        return SurfacePolicy.from_specs(matrix_spec, env.string("KHALA_SURFACE_MIN_VERSIONS", ""))
    except ValueError as exc:
        raise SettingsError("KHALA_SURFACE_MIN_VERSIONS", str(exc)) from None
