"""Unit tests: settings defaults and fail-fast errors naming the variable."""

import pytest

from khala_common.settings import SettingsError
from khala_gateway.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.http_port == 8084 and s.grpc_port == 9084
    assert s.jwks_url == "http://127.0.0.1:8081/.well-known/jwks.json"
    assert s.token_issuer == "http://127.0.0.1:8081"
    assert s.head_poll_interval_s == 2.0
    assert s.hello_timeout_s == 5.0
    assert s.idle_timeout_s == 0.0  # off unless configured
    assert Settings.from_env({"KHALA_GATEWAY_IDLE_TIMEOUT_S": "90"}).idle_timeout_s == 90.0


def test_issuer_defaults_to_control_url() -> None:
    s = Settings.from_env({"KHALA_CONTROL_URL": "https://control.example/"})
    assert s.token_issuer == "https://control.example/"
    assert s.jwks_url == "https://control.example/.well-known/jwks.json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KHALA_GATEWAY_HTTP_PORT", "http"),
        ("KHALA_GATEWAY_HEAD_POLL_INTERVAL_S", "0"),
        ("KHALA_DATABASE_URL", "mysql://x"),
        ("KHALA_CONTROL_URL", "ftp://x"),
        ("KHALA_LOG_LEVEL", "loud"),
        ("KHALA_GATEWAY_MAX_SUBSCRIPTIONS", "0"),
        ("KHALA_GATEWAY_IDLE_TIMEOUT_S", "-1"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert info.value.name == name
