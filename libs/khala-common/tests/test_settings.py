import dataclasses
from dataclasses import dataclass

import pytest

from khala_common.settings import CommonSettings, Env, SettingsError


def test_defaults_and_values() -> None:
    env = Env({"A": "7", "B": "true", "C": "x, y,,z", "D": "1.5"})
    assert env.integer("A", 1) == 7
    assert env.integer("MISSING", 3) == 3
    assert env.boolean("B", False) is True
    assert env.csv("C") == ("x", "y", "z")
    assert env.number("D", 0.0) == 1.5


@pytest.mark.parametrize(
    ("environ", "call"),
    [
        ({"PORT": "abc"}, lambda e: e.integer("PORT", 1)),
        ({"PORT": "-1"}, lambda e: e.integer("PORT", 1, minimum=0)),
        ({"FLAG": "maybe"}, lambda e: e.boolean("FLAG", False)),
        ({}, lambda e: e.string("REQUIRED")),
        ({"URL": "http://x"}, lambda e: e.url("URL", schemes=("amqp",))),
    ],
)
def test_errors_name_the_variable(environ: dict[str, str], call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError) as info:
        call(Env(environ))
    assert info.value.name == next(iter(environ), "REQUIRED")
    assert info.value.name in str(info.value)


def test_common_settings_defaults() -> None:
    common = CommonSettings.from_env({})
    assert common == CommonSettings()
    assert common.database_url == "postgresql://postgres@127.0.0.1:5432/khala"
    assert common.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert (common.amqp_prefix, common.service_token, common.bind_host) == (
        "",
        "khala-dev-service-token",
        "127.0.0.1",
    )


def test_common_settings_reads_every_variable() -> None:
    common = CommonSettings.from_env(
        {
            "KHALA_DATABASE_URL": "postgres://u@db:5433/k",
            "KHALA_AMQP_URL": "amqps://u:p@mq:5671/vh",
            "KHALA_AMQP_PREFIX": "t1.",
            "KHALA_SERVICE_TOKEN": "s3cret",
            "KHALA_BIND_HOST": "0.0.0.0",
            "KHALA_UNRELATED": "ignored",
        }
    )
    assert common == CommonSettings(
        database_url="postgres://u@db:5433/k",
        amqp_url="amqps://u:p@mq:5671/vh",
        amqp_prefix="t1.",
        service_token="s3cret",
        bind_host="0.0.0.0",
    )


def test_common_settings_empty_values_fall_back_to_defaults() -> None:
    empty = {
        name: ""
        for name in (
            "KHALA_DATABASE_URL",
            "KHALA_AMQP_URL",
            "KHALA_AMQP_PREFIX",
            "KHALA_SERVICE_TOKEN",
            "KHALA_BIND_HOST",
        )
    }
    assert CommonSettings.from_env(empty) == CommonSettings()


@pytest.mark.parametrize(
    ("environ", "name", "message"),
    [
        (
            {"KHALA_DATABASE_URL": "mysql://x"},
            "KHALA_DATABASE_URL",
            "KHALA_DATABASE_URL: must be a URL with scheme postgresql/postgres, got 'mysql://x'",
        ),
        (
            {"KHALA_AMQP_URL": "localhost:5672"},
            "KHALA_AMQP_URL",
            "KHALA_AMQP_URL: must be a URL with scheme amqp/amqps, got 'localhost:5672'",
        ),
        # Both bad: the database URL is read, and reported, first.
        (
            {"KHALA_AMQP_URL": "http://x", "KHALA_DATABASE_URL": "http://y"},
            "KHALA_DATABASE_URL",
            "KHALA_DATABASE_URL: must be a URL with scheme postgresql/postgres, got 'http://y'",
        ),
    ],
)
def test_common_settings_errors_name_the_variable(
    environ: dict[str, str], name: str, message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        CommonSettings.from_env(environ)
    assert info.value.name == name
    assert str(info.value) == message


@dataclass(frozen=True, kw_only=True)
class _ServiceSettings(CommonSettings):
    port: int


def test_service_settings_extend_common_settings() -> None:
    common = CommonSettings.from_env({"KHALA_AMQP_PREFIX": "p.", "KHALA_SERVICE_TOKEN": "t"})
    settings = _ServiceSettings(**common.common_fields(), port=1)
    assert (settings.amqp_prefix, settings.service_token, settings.port) == ("p.", "t", 1)
    # Only the common fields, even when asked of a service's settings.
    assert settings.common_fields() == common.common_fields()
    assert set(common.common_fields()) == {
        "database_url",
        "amqp_url",
        "amqp_prefix",
        "service_token",
        "service_credentials",
        "grpc_tls_cert",
        "grpc_tls_key",
        "grpc_tls_ca",
        "bind_host",
        "admin_port",
        "projector_partitions",
    }
    assert dataclasses.replace(settings, database_url="postgres://h/x").port == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bind_host = "0.0.0.0"  # type: ignore[misc]


def test_admin_port_is_read_per_service() -> None:
    environ = {"KHALA_RUNTIME_ADMIN_PORT": "8182", "KHALA_GATEWAY_ADMIN_PORT": "8184"}
    assert CommonSettings.read(environ, "runtime").admin_port == 8182
    assert CommonSettings.read(environ, "control").admin_port == 0  # default: the public port
    assert CommonSettings.from_env(environ).admin_port == 0
    with pytest.raises(SettingsError, match="KHALA_RUNTIME_ADMIN_PORT"):
        CommonSettings.read({"KHALA_RUNTIME_ADMIN_PORT": "-1"}, "runtime")
