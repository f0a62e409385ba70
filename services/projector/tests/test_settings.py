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
        ("KHALA_PROJECTOR_RETENTION_INTERVAL_S", "0.01"),
        ("KHALA_PROJECTOR_RETENTION_INTERVAL_S", "-1"),
        ("KHALA_PROJECTOR_EVENT_RETAIN_FRAMES", "-1"),
        ("KHALA_PROJECTOR_EVENT_RETAIN_AGE_S", "a week"),
        ("KHALA_PROJECTOR_DOC_TAIL_FRAMES", "-5"),
        ("KHALA_PROJECTOR_DRIFT_INTERVAL_S", "0.001"),
        ("KHALA_PROJECTOR_DRIFT_SAMPLE", "0"),
        ("KHALA_PROJECTOR_DRIFT_REPAIR", "maybe"),
        ("KHALA_PROJECTOR_REBUILD_CHUNK", "0"),
        ("KHALA_PROJECTOR_METRICS_INTERVAL_S", "0"),
        ("KHALA_PROJECTOR_TEST_CRASH_AFTER_COMMIT", "-1"),
    ],
)
def test_invalid_variable_is_named(name, value):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert info.value.name == name


def test_retention_drift_and_fault_injection_settings():
    defaults = Settings.from_env({})
    assert (defaults.retention_interval_s, defaults.event_retain_frames) == (60.0, 10_000)
    assert (defaults.event_retain_age_s, defaults.doc_tail_frames) == (604_800.0, 1_000)
    assert (defaults.drift_interval_s, defaults.drift_sample, defaults.drift_repair) == (
        300.0,
        20,
        False,
    )
    assert (defaults.rebuild_chunk, defaults.test_crash_after_commit) == (500, 0)
    settings = Settings.from_env(
        {
            "KHALA_PROJECTOR_RETENTION_INTERVAL_S": "0",
            "KHALA_PROJECTOR_EVENT_RETAIN_FRAMES": "0",
            "KHALA_PROJECTOR_EVENT_RETAIN_AGE_S": "3600",
            "KHALA_PROJECTOR_DOC_TAIL_FRAMES": "50",
            "KHALA_PROJECTOR_DRIFT_INTERVAL_S": "30",
            "KHALA_PROJECTOR_DRIFT_SAMPLE": "5",
            "KHALA_PROJECTOR_DRIFT_REPAIR": "true",
            "KHALA_PROJECTOR_REBUILD_CHUNK": "100",
            "KHALA_PROJECTOR_METRICS_INTERVAL_S": "1",
            "KHALA_PROJECTOR_TEST_CRASH_AFTER_COMMIT": "3",
        }
    )
    assert (settings.retention_interval_s, settings.event_retain_frames) == (0, 0)
    assert (settings.event_retain_age_s, settings.doc_tail_frames) == (3600.0, 50)
    assert (settings.drift_interval_s, settings.drift_sample, settings.drift_repair) == (
        30.0,
        5,
        True,
    )
    assert (settings.rebuild_chunk, settings.metrics_interval_s) == (100, 1.0)
    assert settings.test_crash_after_commit == 3
