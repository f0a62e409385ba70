"""Environment parsing for the services' frozen settings objects.

Each service's `settings.py` declares a frozen dataclass that extends
`CommonSettings` (the variables every service reads the same way) and builds it
once in `__main__` with the `Env` readers; a missing or invalid variable raises
`SettingsError` naming it, so the process fails at start, not at first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/khala"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_SERVICE_TOKEN = "khala-dev-service-token"
# Every published dev credential starts so (`make run` gives each service
# `khala-dev-<service>-token`, scripts/stack.py); production refuses them.
DEV_TOKEN_PREFIX = "khala-dev-"
DEFAULT_BIND_HOST = "127.0.0.1"
DEFAULT_PARTITIONS = 4
MAX_PARTITIONS = 64
# Accepted values of KHALA_LOG_LEVEL (each service words its own error message).
LOG_LEVELS = ("debug", "info", "warning", "error")


def is_production(environ: Mapping[str, str]) -> bool:
    """Whether KHALA_ENV is `production` (SettingsError if it is neither that nor
    `development`, the default)."""
    value = environ.get("KHALA_ENV", "").strip().lower() or "development"
    if value not in ("development", "production"):
        raise SettingsError("KHALA_ENV", f"must be development or production, got {value!r}")
    return value == "production"


def refuse_dev_defaults(environ: Mapping[str, str], problems: Mapping[str, str | None]) -> None:
    """With KHALA_ENV=production, raise SettingsError for the first setting whose
    problem is not None (`problems` maps a variable to what is wrong with it).

    Fail closed: a production process never starts on a convenience default of
    `make run` (a published token or key, the dev identity provider, ...).
    """
    if not is_production(environ):
        return
    for name, problem in problems.items():
        if problem is not None:
            raise SettingsError(name, f"{problem} (not allowed with KHALA_ENV=production)")


def _unset(environ: Mapping[str, str], name: str) -> str | None:
    return "is not set" if not environ.get(name, "").strip() else None


def _credentials(text: str) -> tuple[tuple[str, str], ...]:
    """`name:token,name:token` -> pairs (SettingsError names a malformed one)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, token = item.partition(":")
        if not sep or not name.strip() or not token.strip():
            raise SettingsError("KHALA_SERVICE_CREDENTIALS", "each entry must be name:token")
        pairs.append((name.strip(), token.strip()))
    return tuple(pairs)


class SettingsError(ValueError):
    """A configuration variable is missing or invalid."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class Env:
    """Typed reads from an environment mapping; every failure names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def string(self, name: str, default: str | None = None) -> str:
        """A string variable; required when no default is given."""
        value = self._environ.get(name)
        if value is None or value == "":
            if default is None:
                raise SettingsError(name, "is required but not set")
            return default
        return value

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """An integer variable, optionally bounded."""
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(name, f"must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(name, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(name, f"must be <= {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        """A float variable, optionally bounded below."""
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(name, f"must be a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(name, f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """A boolean variable: 1/true/yes/on or 0/false/no/off."""
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(name, f"must be a boolean (true/false), got {raw!r}")

    def csv(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated list variable."""
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def port(self, name: str, default: int) -> int:
        """A TCP port (0-65535; 0 lets the system choose)."""
        value = self.integer(name, default, minimum=0)
        if value > 65535:
            raise SettingsError(name, f"must be a TCP port (0-65535), got {value}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices` (compared lower-cased)."""
        value = self.string(name, default).lower()
        if value not in choices:
            raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def log_level(self) -> str:
        """KHALA_LOG_LEVEL: debug | info | warning | error (default info)."""
        return self.choice("KHALA_LOG_LEVEL", "info", LOG_LEVELS)

    def url(self, name: str, default: str | None = None, *, schemes: tuple[str, ...]) -> str:
        """A URL variable whose scheme must be one of `schemes`."""
        value = self.string(name, default)
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in schemes:
            raise SettingsError(
                name, f"must be a URL with scheme {'/'.join(schemes)}, got {value!r}"
            )
        return value


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """The variables every service reads with the same name, default and check.

    A service's `Settings` extends this class (frozen, keyword-only), so callers
    keep reading `settings.database_url` and building `Settings(database_url=...)`.
    """

    # KHALA_DATABASE_URL: Postgres DSN (postgresql:// or postgres://); each service
    # works in its own schema.
    database_url: str = DEFAULT_DATABASE_URL
    # KHALA_AMQP_URL: RabbitMQ URL (amqp:// or amqps://).
    amqp_url: str = DEFAULT_AMQP_URL
    # KHALA_AMQP_PREFIX: prefix of every exchange and queue name (empty in production;
    # tests use a unique one).
    amqp_prefix: str = ""
    # KHALA_SERVICE_TOKEN: the credential gRPC callers present (`authorization: Bearer …`)
    # and services send to each other.
    service_token: str = DEFAULT_SERVICE_TOKEN
    # KHALA_SERVICE_CREDENTIALS: the callers this service's gRPC server accepts, as
    # `name:token` pairs separated by commas (a name twice while its token rotates);
    # each method allows only the services its handler names. Empty (dev default):
    # the one shared KHALA_SERVICE_TOKEN is accepted for every method. Required in
    # production.
    service_credentials: tuple[tuple[str, str], ...] = ()
    # KHALA_GRPC_TLS_CERT / _KEY / _CA: PEM paths of this service's gRPC certificate,
    # its key and the CA verifying peers; set cert and key to serve and call over
    # TLS (with a CA, servers require client certificates: mutual TLS).
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    grpc_tls_ca: str = ""
    # KHALA_BIND_HOST: listen address of the service's HTTP and gRPC servers.
    bind_host: str = DEFAULT_BIND_HOST
    # KHALA_<SVC>_ADMIN_PORT: internal listener for /metrics and admin routes (never
    # behind the Ingress); 0 (default) serves them on the public HTTP port.
    admin_port: int = 0
    # KHALA_PROJECTOR_PARTITIONS: number of projector partition queues (1..64). The
    # outbox relay routes each stream to one of them; projector replicas share
    # them. Runtime and projector must agree (a mismatch shows as unroutable
    # relay publishes, never as silent loss); see docs/pipeline.md.
    projector_partitions: int = DEFAULT_PARTITIONS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CommonSettings:
        """Read the common variables; SettingsError names the first bad one."""
        return CommonSettings.read(environ)

    @staticmethod
    def read(environ: Mapping[str, str], service: str = "") -> CommonSettings:
        """Read the common variables (`service` names KHALA_<SERVICE>_ADMIN_PORT);
        SettingsError names the first bad one. Services' `from_env` call this."""
        env = Env(environ)
        service_token = env.string("KHALA_SERVICE_TOKEN", DEFAULT_SERVICE_TOKEN)
        credentials = _credentials(environ.get("KHALA_SERVICE_CREDENTIALS", ""))
        tls = [environ.get(f"KHALA_GRPC_TLS_{part}", "").strip() for part in ("CERT", "KEY", "CA")]
        if bool(tls[0]) != bool(tls[1]):
            raise SettingsError("KHALA_GRPC_TLS_KEY", "set both KHALA_GRPC_TLS_CERT and _KEY")
        refuse_dev_defaults(
            environ,
            {
                "KHALA_DATABASE_URL": _unset(environ, "KHALA_DATABASE_URL"),
                "KHALA_AMQP_URL": _unset(environ, "KHALA_AMQP_URL")
                or (
                    "uses the guest account"
                    if "//guest:guest@" in environ["KHALA_AMQP_URL"]
                    else None
                ),
                "KHALA_SERVICE_TOKEN": "is the published dev token"
                if service_token == DEFAULT_SERVICE_TOKEN
                or service_token.startswith(DEV_TOKEN_PREFIX)
                else None,
                "KHALA_SERVICE_CREDENTIALS": "is not set"
                if not credentials
                else (
                    "holds a published dev token"
                    if any(token.startswith(DEV_TOKEN_PREFIX) for _, token in credentials)
                    else None
                ),
            },
        )
        admin_port = (
            env.integer(f"KHALA_{service.upper()}_ADMIN_PORT", 0, minimum=0) if service else 0
        )
        return CommonSettings(
            database_url=env.url(
                "KHALA_DATABASE_URL", DEFAULT_DATABASE_URL, schemes=("postgresql", "postgres")
            ),
            amqp_url=env.url("KHALA_AMQP_URL", DEFAULT_AMQP_URL, schemes=("amqp", "amqps")),
            amqp_prefix=environ.get("KHALA_AMQP_PREFIX", ""),
            service_token=service_token,
            service_credentials=credentials,
            grpc_tls_cert=tls[0],
            grpc_tls_key=tls[1],
            grpc_tls_ca=tls[2],
            bind_host=env.string("KHALA_BIND_HOST", DEFAULT_BIND_HOST),
            admin_port=admin_port,
            projector_partitions=env.integer(
                "KHALA_PROJECTOR_PARTITIONS", DEFAULT_PARTITIONS, minimum=1, maximum=MAX_PARTITIONS
            ),
        )

    def common_fields(self) -> dict[str, Any]:
        """The common fields by name, to build a service's settings from them."""
        return {f.name: getattr(self, f.name) for f in fields(CommonSettings)}
