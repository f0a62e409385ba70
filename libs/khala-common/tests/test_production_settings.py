"""Fail closed: with KHALA_ENV=production no service starts on a dev default, and the
error names the setting; development keeps every convenience default."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from khala_common.settings import CommonSettings, SettingsError

GOOD = {
    "KHALA_ENV": "production",
    "KHALA_DATABASE_URL": "postgresql://khala:secret@db:5432/khala",
    "KHALA_AMQP_URL": "amqps://khala:secret@mq:5671/",
    "KHALA_SERVICE_TOKEN": "a-real-service-token",
    "KHALA_SERVICE_CREDENTIALS": "runtime:a-real-runtime-token,projector:a-real-projector-token",
}
CONTROL = {
    **GOOD,
    "KHALA_CONTROL_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "KHALA_OIDC_ISSUER": "https://idp.example.com",
}
GATEWAY = {**GOOD, "KHALA_GATEWAY_ADMIN_TOKEN": "a-real-admin-token"}


def test_development_keeps_the_defaults() -> None:
    assert CommonSettings.read({}).service_token == "khala-dev-service-token"


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"KHALA_DATABASE_URL": ""}, "KHALA_DATABASE_URL"),
        ({"KHALA_AMQP_URL": ""}, "KHALA_AMQP_URL"),
        ({"KHALA_AMQP_URL": "amqp://guest:guest@mq:5672/"}, "KHALA_AMQP_URL"),
        ({"KHALA_SERVICE_TOKEN": ""}, "KHALA_SERVICE_TOKEN"),
        ({"KHALA_SERVICE_TOKEN": "khala-dev-service-token"}, "KHALA_SERVICE_TOKEN"),
        ({"KHALA_SERVICE_TOKEN": "khala-dev-runtime-token"}, "KHALA_SERVICE_TOKEN"),
        ({"KHALA_SERVICE_CREDENTIALS": ""}, "KHALA_SERVICE_CREDENTIALS"),
        (
            {"KHALA_SERVICE_CREDENTIALS": "runtime:khala-dev-runtime-token"},
            "KHALA_SERVICE_CREDENTIALS",
        ),
        ({"KHALA_ENV": "staging"}, "KHALA_ENV"),
    ],
)
def test_common_dev_defaults_are_refused_in_production(change: dict[str, str], name: str) -> None:
    assert CommonSettings.read(GOOD).service_token == "a-real-service-token"
    with pytest.raises(SettingsError) as refused:
        CommonSettings.read({**GOOD, **change})
    assert refused.value.name == name


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"KHALA_CONTROL_KEY_ENCRYPTION_KEY": ""}, "KHALA_CONTROL_KEY_ENCRYPTION_KEY"),
        ({"KHALA_DEV_IDP_ENABLED": "true"}, "KHALA_DEV_IDP_ENABLED"),
        ({"KHALA_OIDC_ISSUER": ""}, "KHALA_OIDC_ISSUER"),
        ({"KHALA_OIDC_ISSUER": "http://idp.example.com"}, "KHALA_OIDC_ISSUER"),
    ],
)
def test_control_refuses_its_dev_defaults(change: dict[str, str], name: str) -> None:
    from khala_control.settings import Settings

    assert Settings.from_env(CONTROL).oidc_issuers == ("https://idp.example.com",)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({**CONTROL, **change})
    assert refused.value.name == name


def test_gateway_refuses_the_dev_admin_token() -> None:
    from khala_gateway.settings import Settings

    assert Settings.from_env(GATEWAY).admin_token == "a-real-admin-token"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({**GATEWAY, "KHALA_GATEWAY_ADMIN_TOKEN": ""})
    assert refused.value.name == "KHALA_GATEWAY_ADMIN_TOKEN"


@pytest.mark.parametrize("service", ["control", "runtime", "projector", "gateway"])
def test_each_service_process_refuses_to_start_and_names_the_setting(service: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "KHALA_ENV": "production"}
    done = subprocess.run(
        [sys.executable, "-m", f"khala_{service}", "serve"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"KHALA_DATABASE_URL" in done.stderr, done.stderr[-500:]
