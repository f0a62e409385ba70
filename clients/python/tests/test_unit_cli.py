"""The CLI's parsing, config file, topic shorthands and rendering, without a network."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from khala_client import FrameApplied, Session
from khala_client.cli.commands import UsageError, parse_payload
from khala_client.cli.config import Config, config_dir
from khala_client.cli.main import build_parser, main
from khala_client.cli.render import frame_json, frame_line, table
from khala_client.cli.tail import expand_topic
from openagents.codex.v1 import summaries_pb2
from openagents.runtime.v1 import events_pb2
from openagents.sync.v1 import frames_pb2


def test_config_dir_precedence(tmp_path: Path) -> None:
    assert config_dir({"KHALA_CONFIG_DIR": str(tmp_path)}) == tmp_path
    assert config_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/khala")


def test_config_round_trip_is_private(tmp_path: Path) -> None:
    config = Config.load(tmp_path)
    config.org = "acme"
    config.set_session(Session("a", "rt_1", "s", "u", 123, "dev", "desktop"))
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600
    again = Config.load(tmp_path)
    assert again.org == "acme" and again.device_id == config.device_id
    assert again.get_session() == Session("a", "rt_1", "s", "u", 123, "dev", "desktop")
    again.set_session(None)
    assert Config.load(tmp_path).get_session() is None


def test_a_broken_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text("[1]")
    assert main(["--config-dir", str(tmp_path), "runs", "list"]) == 2
    assert "not a JSON object" in capsys.readouterr().err


def test_not_signed_in_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config-dir", str(tmp_path), "workers", "list", "--org", "a"]) == 2
    assert "not signed in" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["runs"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["login"])  # --email or --id-token is required


def test_topic_shorthands() -> None:
    args = argparse.Namespace(org=None)
    config = Config(org="acme")
    assert expand_topic("runs", args, config) == "org.acme.runs"
    assert expand_topic("run:r1", args, config) == "org.acme.run.r1"
    assert expand_topic("worker:w", args, config) == "org.acme.worker.w"
    assert expand_topic("org.x.workers", args, config) == "org.x.workers"
    with pytest.raises(UsageError, match="not a topic"):
        expand_topic("bogus", args, config)
    with pytest.raises(UsageError, match="no org"):
        expand_topic("runs", args, Config())


def test_payload_must_be_an_object() -> None:
    assert parse_payload('{"a": 1}') == {"a": 1}
    with pytest.raises(UsageError, match="JSON object"):
        parse_payload("[1]")
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_payload("{")


def test_rendering() -> None:
    assert table(
        [{"a": 1, "b": {"state": "lagging", "lag_events": 3}}], ["a", "b"]
    ).splitlines() == [
        "A  B",
        "1  lagging (3)",
    ]
    event = events_pb2.RuntimeEvent(type="run.output", payload_json=b'{"text":"hi"}')
    frame = frames_pb2.KhalaFrame(
        topic="org.a.run.r", seq=4, kind=frames_pb2.FRAME_KIND_EVENT, epoch="1"
    )
    update = FrameApplied("org.a.run.r", frame, event, False)
    assert frame_line(update).endswith("org.a.run.r #4 run.output hi")
    assert json.loads(frame_json(update))["payload"]["payload"] == {"text": "hi"}
    run = summaries_pb2.RunSummary(run_id="r", status=summaries_pb2.RUN_STATUS_FAILED, title="t")
    doc = FrameApplied("org.a.runs", frames_pb2.KhalaFrame(topic="org.a.runs", seq=2), run, True)
    assert "(snapshot) run r failed" in frame_line(doc)
