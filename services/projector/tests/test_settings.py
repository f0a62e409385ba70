"""Unit: settings parsing and its failures naming the variable."""

from __future__ import annotations

import pytest

from khala_common.settings import SettingsError
from khala_projector.settings import Settings


def test_defaults():
    settings = Settings.from_env({})
    assert (settings.http_port, settings.grpc_port) == (8083, 9083)
    assert settings.runtime_grpc_target == "127.0.0.1:9082"
    assert settings.delivery_limit == 5
    assert settings.amqp_prefix == ""


def test_overrides():
    settings = Settings.from_env(
        {
            "KHALA_DATABASE_URL": "postgresql://u@h:1/db",
            "KHALA_AMQP_URL": "amqp://x:y@h:2/",
            "KHALA_AMQP_PREFIX": "t.",
            "KHALA_SERVICE_TOKEN": "tok",
            "KHALA_LOG_LEVEL": "DEBUG",
            "KHALA_BIND_HOST": "0.0.0.0",
            "KHALA_PROJECTOR_HTTP_PORT": "0",
            "KHALA_PROJECTOR_GRPC_PORT": "19083",
            "KHALA_RUNTIME_GRPC_TARGET": "runtime:9082",
            "KHALA_PROJECTOR_PREFETCH": "7",
            "KHALA_PROJECTOR_DELIVERY_LIMIT": "2",
        }
    )
    assert settings.database_url == "postgresql://u@h:1/db"
    assert (settings.amqp_prefix, settings.service_token, settings.log_level) == (
        "t.",
        "tok",
        "debug",
    )
    assert (settings.http_port, settings.grpc_port, settings.prefetch) == (0, 19083, 7)
    assert (settings.runtime_grpc_target, settings.delivery_limit) == ("runtime:9082", 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KHALA_DATABASE_URL", "mysql://x"),
        ("KHALA_AMQP_URL", "http://x"),
        ("KHALA_PROJECTOR_HTTP_PORT", "http"),
        ("KHALA_PROJECTOR_GRPC_PORT", "70000"),
        ("KHALA_PROJECTOR_PREFETCH", "0"),
        ("KHALA_PROJECTOR_DELIVERY_LIMIT", "0"),
        ("KHALA_LOG_LEVEL", "loud"),
        ("KHALA_RUNTIME_GRPC_TIMEOUT_S", "soon"),
    ],
)
def test_invalid_variable_is_named(name, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert info.value.name == name
