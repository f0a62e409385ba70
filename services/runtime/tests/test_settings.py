"""Unit: settings parse once and fail naming the variable."""

from __future__ import annotations

import pytest

from khala_common.settings import SettingsError
from khala_runtime.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.http_port, s.grpc_port) == (8082, 9082)
    assert s.max_body_bytes == 1024 * 1024 and s.outbox_poll_interval_s == 1.0
    assert s.token_issuer == s.control_url == "http://127.0.0.1:8081"
    assert s.jwks_url == "http://127.0.0.1:8081/.well-known/jwks.json"
    assert s.control_grpc_target == "127.0.0.1:9081"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KHALA_RUNTIME_HTTP_PORT", "http"),
        ("KHALA_RUNTIME_GRPC_PORT", "70000"),
        ("KHALA_DATABASE_URL", "mysql://x"),
        ("KHALA_AMQP_URL", "http://x"),
        ("KHALA_OUTBOX_POLL_INTERVAL_S", "0"),
        ("KHALA_MAX_BODY_BYTES", "10"),
        ("KHALA_LOG_LEVEL", "loud"),
        ("KHALA_CONTROL_URL", "ftp://x"),
    ],
)
def test_invalid_names_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert info.value.name == name
