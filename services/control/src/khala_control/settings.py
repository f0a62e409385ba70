"""Control's configuration, parsed once from the environment in `__main__`.

Every field maps to one environment variable; a missing or invalid value raises
`SettingsError` naming the variable, so the process fails at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from khala_common.settings import (
    CommonSettings,
    Env,
    SettingsError,
    refuse_dev_defaults,
)
from khala_control.domain.rate_limit import RateLimit, RateLimitSettings, parse_rate_limit
from khala_control.domain.surfaces import DEFAULT_MATRIX_SPEC, SurfacePolicy

SCHEMA = "control"
# Publicly known, so it protects nothing: for local runs and tests only. Serving
# with it logs a warning; production sets KHALA_CONTROL_KEY_ENCRYPTION_KEY.
DEV_KEY_ENCRYPTION_KEY = "a2hhbGEtZGV2LWluc2VjdXJlLWtleS1lbmNyeXB0aW4="
DEFAULT_RATE_LIMITS = RateLimitSettings(
    sign_in=RateLimit(60, 60.0), refresh=RateLimit(120, 60.0), mint=RateLimit(600, 60.0)
)


@dataclass(frozen=True, kw_only=True)
class Settings(CommonSettings):
    """Control's settings; one field per environment variable.

    The common fields (CommonSettings): control uses schema `control` only, publishes
    revocations to the `khala.control` exchange, and requires the service token from
    its gRPC callers.
    """

    # KHALA_LOG_LEVEL: debug | info | warning | error.
    log_level: str = "info"
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
    # KHALA_CONTROL_SIGNING_KEY_FILE: a PEM file of P-256 private keys (e.g. a mounted
    # Kubernetes Secret) used instead of the encrypted keys in Postgres: the first key
    # signs, all are published. None = keys in Postgres (`khala-control keys rotate`).
    signing_key_file: str | None = None
    # KHALA_DEV_IDP_ENABLED: serve the dev identity provider (never in production).
    dev_idp_enabled: bool = False
    # KHALA_OIDC_ISSUER: external OIDC issuers whose ID tokens sign users in
    # (comma-separated issuer URLs; none by default).
    oidc_issuers: tuple[str, ...] = ()
    # KHALA_OIDC_AUDIENCE: required `aud` of ID tokens (the OIDC client id).
    oidc_audience: str = "khala-control"
    # KHALA_OIDC_JWKS_MIN_REFETCH_S: least time between two JWKS fetches of one issuer
    # triggered by unknown kids (protects the issuer from forged-kid floods).
    oidc_jwks_min_refetch_s: float = 5.0
    # KHALA_SURFACE_MATRIX: readable topic classes per surface (see domain/surfaces.py).
    # KHALA_SURFACE_MIN_VERSIONS: minimum client version per surface (default: none).
    surfaces: SurfacePolicy = field(
        default_factory=lambda: SurfacePolicy.from_specs(DEFAULT_MATRIX_SPEC)
    )
    # KHALA_REVOCATION_RELAY_POLL_S: how often unpublished revocations are retried.
    revocation_poll_s: float = 2.0
    # KHALA_RATE_LIMIT_SIGN_IN / _REFRESH (per client address) and _MINT (per user):
    # token buckets `N/s|m|h` (N requests at once, N more per period) or `off`.
    rate_limits: RateLimitSettings = field(default_factory=lambda: DEFAULT_RATE_LIMITS)
    # KHALA_TRUSTED_PROXY_HOPS: how many reverse proxies in front of control append to
    # X-Forwarded-For; the client address is the entry that many hops from the right
    # (0 = the TCP peer; X-Forwarded-For is ignored).
    trusted_proxy_hops: int = 0
    # KHALA_AUDIT_FLUSH_MS: how long mint and denial audit entries may wait in memory
    # before a batch write (0 = write each one before answering).
    audit_flush_ms: int = 50
    # KHALA_CONTROL_CACHE_TTL_S: upper bound on how long cached live sessions and
    # memberships are trusted (they are evicted on change through Postgres NOTIFY);
    # 0 = no caches (every request reads Postgres).
    cache_ttl_s: float = 30.0
    # KHALA_OTEL_EXPORTER: none | console.
    otel_exporter: str = "none"
    # KHALA_RUNTIME_URL: runtime's HTTP root; control proxies /api/v1/* to it so the
    # dashboard reaches both APIs from one origin.
    runtime_url: str = "http://127.0.0.1:8082"
    # KHALA_DASHBOARD_DIR: directory of the operator dashboard's static files
    # (clients/web/dashboard), served under /dashboard/; empty = not served.
    dashboard_dir: str | None = None

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
        common = CommonSettings.read(environ, "control")
        _refuse_dev_defaults(environ, env)
        return cls(
            **common.common_fields(),
            log_level=env.log_level(),
            http_port=env.port("KHALA_CONTROL_HTTP_PORT", 8081),
            grpc_port=env.port("KHALA_CONTROL_GRPC_PORT", 9081),
            token_issuer=issuer,
            access_token_ttl_s=env.integer("KHALA_ACCESS_TOKEN_TTL_S", 900, minimum=30),
            refresh_token_ttl_s=env.integer(
                "KHALA_REFRESH_TOKEN_TTL_S", 30 * 24 * 3600, minimum=60
            ),
            sync_token_ttl_s=env.integer("KHALA_SYNC_TOKEN_TTL_S", 300, minimum=10),
            key_encryption_keys=_fernet_keys(env),
            signing_key_refresh_s=env.number("KHALA_SIGNING_KEY_REFRESH_S", 30.0, minimum=0.0),
            signing_key_file=environ.get("KHALA_CONTROL_SIGNING_KEY_FILE", "").strip() or None,
            dev_idp_enabled=env.boolean("KHALA_DEV_IDP_ENABLED", False),
            oidc_issuers=_issuers(env),
            oidc_audience=env.string("KHALA_OIDC_AUDIENCE", "khala-control"),
            oidc_jwks_min_refetch_s=env.number("KHALA_OIDC_JWKS_MIN_REFETCH_S", 5.0, minimum=0.0),
            surfaces=_surfaces(env),
            revocation_poll_s=env.number("KHALA_REVOCATION_RELAY_POLL_S", 2.0, minimum=0.05),
            rate_limits=RateLimitSettings(
                sign_in=_rate(env, "KHALA_RATE_LIMIT_SIGN_IN", DEFAULT_RATE_LIMITS.sign_in),
                refresh=_rate(env, "KHALA_RATE_LIMIT_REFRESH", DEFAULT_RATE_LIMITS.refresh),
                mint=_rate(env, "KHALA_RATE_LIMIT_MINT", DEFAULT_RATE_LIMITS.mint),
            ),
            trusted_proxy_hops=env.integer("KHALA_TRUSTED_PROXY_HOPS", 0, minimum=0),
            audit_flush_ms=env.integer("KHALA_AUDIT_FLUSH_MS", 50, minimum=0),
            cache_ttl_s=env.number("KHALA_CONTROL_CACHE_TTL_S", 30.0, minimum=0.0),
            otel_exporter=env.choice("KHALA_OTEL_EXPORTER", "none", ("none", "console")),
            runtime_url=env.url(
                "KHALA_RUNTIME_URL", "http://127.0.0.1:8082", schemes=("http", "https")
            ),
            dashboard_dir=_directory(env, "KHALA_DASHBOARD_DIR"),
        )


def _refuse_dev_defaults(environ: Mapping[str, str], env: Env) -> None:
    """With KHALA_ENV=production: no dev key, no dev IdP, only https identity providers."""
    keys = _fernet_keys(env)
    issuers = _issuers(env)
    plain = [issuer for issuer in issuers if issuer.startswith("http://")]
    refuse_dev_defaults(
        environ,
        {
            "KHALA_CONTROL_KEY_ENCRYPTION_KEY": "is not set (signing keys would be encrypted "
            "with the published dev key)"
            if DEV_KEY_ENCRYPTION_KEY in keys
            else None,
            "KHALA_DEV_IDP_ENABLED": "is true (anyone could sign in as anyone)"
            if env.boolean("KHALA_DEV_IDP_ENABLED", False)
            else None,
            "KHALA_OIDC_ISSUER": "is not set (nobody could sign in)"
            if not issuers
            else (f"{plain[0]!r} is not https" if plain else None),
        },
    )


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


def _issuers(env: Env) -> tuple[str, ...]:
    name = "KHALA_OIDC_ISSUER"
    issuers: list[str] = []
    for raw in env.csv(name):
        if raw.split("://", 1)[0] not in ("http", "https") or "://" not in raw:
            raise SettingsError(name, f"must be http(s) issuer URLs, comma-separated, got {raw!r}")
        issuers.append(raw.rstrip("/"))
    return tuple(dict.fromkeys(issuers))


def _rate(env: Env, name: str, default: RateLimit | None) -> RateLimit | None:
    raw = env.string(name, "")
    if not raw:
        return default
    try:
        return parse_rate_limit(raw)
    except ValueError as exc:
        raise SettingsError(name, str(exc)) from None


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


def _directory(env: Env, name: str) -> str | None:
    value = env.string(name, "-")
    if value == "-":
        return None
    if not Path(value).is_dir():
        raise SettingsError(name, f"is not a directory: {value!r}")
    return value
