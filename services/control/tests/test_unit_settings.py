"""Settings parsing (no I/O)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from khala_common.settings import SettingsError
from khala_control.settings import DEV_KEY_ENCRYPTION_KEY, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.http_port == 8081 and settings.grpc_port == 9081
    assert settings.token_issuer is None  # the bound URL: http://127.0.0.1:8081 by default
    assert settings.sync_token_ttl_s == 300 and settings.access_token_ttl_s == 900
    assert settings.dev_idp_enabled is False
    assert settings.oidc_issuers == () and settings.oidc_audience == "khala-control"
    assert settings.signing_key_file is None
    assert settings.audit_flush_ms == 50 and settings.cache_ttl_s == 30.0
    assert settings.trusted_proxy_hops == 0
    limits = settings.rate_limits
    assert (str(limits.sign_in), str(limits.refresh), str(limits.mint)) == (
        "60/60s",
        "120/60s",
        "600/60s",
    )
    assert settings.uses_dev_key_encryption_key
    assert settings.surfaces.minimum_versions == {}


def test_issuer_falls_back_to_control_url() -> None:
    """KHALA_TOKEN_ISSUER wins over KHALA_CONTROL_URL; a trailing slash is dropped."""
    assert (
        Settings.from_env({"KHALA_CONTROL_URL": "https://c.example/"}).token_issuer
        == "https://c.example"
    )
    both = {"KHALA_CONTROL_URL": "https://c.example", "KHALA_TOKEN_ISSUER": "https://iss.example"}
    assert Settings.from_env(both).token_issuer == "https://iss.example"


def test_overrides() -> None:
    key = Fernet.generate_key().decode()
    settings = Settings.from_env(
        {
            "KHALA_CONTROL_KEY_ENCRYPTION_KEY": f"{key},{DEV_KEY_ENCRYPTION_KEY}",
            "KHALA_DEV_IDP_ENABLED": "true",
            "KHALA_OIDC_ISSUER": "https://idp.example/, https://other.example",
            "KHALA_CONTROL_SIGNING_KEY_FILE": "/etc/khala/signing/keys.pem",
            "KHALA_RATE_LIMIT_SIGN_IN": "5/10s",
            "KHALA_RATE_LIMIT_REFRESH": "off",
            "KHALA_RATE_LIMIT_MINT": "1000/h",
            "KHALA_TRUSTED_PROXY_HOPS": "2",
            "KHALA_AUDIT_FLUSH_MS": "0",
            "KHALA_CONTROL_CACHE_TTL_S": "0",
            "KHALA_SYNC_TOKEN_TTL_S": "60",
            "KHALA_SURFACE_MATRIX": "web=runs;cli=runs,run",
            "KHALA_SURFACE_MIN_VERSIONS": "cli=3.1",
        }
    )
    assert settings.key_encryption_keys == (key, DEV_KEY_ENCRYPTION_KEY)
    assert not settings.uses_dev_key_encryption_key
    assert settings.dev_idp_enabled
    assert settings.oidc_issuers == ("https://idp.example", "https://other.example")
    assert settings.signing_key_file == "/etc/khala/signing/keys.pem"
    assert settings.rate_limits.sign_in is not None
    assert (settings.rate_limits.sign_in.capacity, settings.rate_limits.sign_in.period_s) == (5, 10)
    assert settings.rate_limits.refresh is None
    assert settings.rate_limits.mint is not None and settings.rate_limits.mint.period_s == 3600
    assert settings.trusted_proxy_hops == 2
    assert settings.audit_flush_ms == 0 and settings.cache_ttl_s == 0
    assert settings.sync_token_ttl_s == 60
    assert set(settings.surfaces.matrix) == {"web", "cli"}
    assert str(settings.surfaces.minimum_versions["cli"]) == "3.1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KHALA_CONTROL_KEY_ENCRYPTION_KEY", "not-a-key"),
        ("KHALA_SYNC_TOKEN_TTL_S", "soon"),
        ("KHALA_SYNC_TOKEN_TTL_S", "1"),
        ("KHALA_CONTROL_HTTP_PORT", "70000"),
        ("KHALA_DEV_IDP_ENABLED", "maybe"),
        ("KHALA_TOKEN_ISSUER", "ftp://x"),
        ("KHALA_OIDC_ISSUER", "idp.example"),
        ("KHALA_OIDC_ISSUER", "https://ok.example,ftp://bad.example"),
        ("KHALA_RATE_LIMIT_SIGN_IN", "lots"),
        ("KHALA_RATE_LIMIT_MINT", "0/m"),
        ("KHALA_RATE_LIMIT_REFRESH", "10/0s"),
        ("KHALA_TRUSTED_PROXY_HOPS", "-1"),
        ("KHALA_AUDIT_FLUSH_MS", "soon"),
        ("KHALA_CONTROL_CACHE_TTL_S", "-5"),
        ("KHALA_SURFACE_MATRIX", "web=everything"),
        ("KHALA_SURFACE_MIN_VERSIONS", "web=new"),
        ("KHALA_LOG_LEVEL", "chatty"),
        ("KHALA_DATABASE_URL", "mysql://x"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert caught.value.name == name
