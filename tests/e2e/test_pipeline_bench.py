"""The pipeline benchmark's harness, in smoke mode, against the real stack.

`bench/pipeline.py --smoke` starts its own four services (scratch database,
unique broker prefix), appends at a low rate and checks every delivery. This
asserts the harness completes, reports the fields the tables are made of, and
that its correctness accounting holds (every frame to every subscriber exactly
once, in order). No latency or rate is asserted: speed belongs in bench/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.e2e


def test_pipeline_bench_smoke(pg_server_url: str, amqp_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, KHALA_BENCH_DATABASE_URL=pg_server_url, KHALA_BENCH_AMQP_URL=amqp_url)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pipeline.py"), "--smoke", "--out", str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "pipeline_smoke.json").read_text())["latest"]

    assert result["setup"]["subscribers_open"] == result["setup"]["subscribers"] > 0
    cases = [
        *result["ladder"],
        result["burst"],
        result["fairness"]["b_alone"],
        result["fairness"]["a_and_b"],
    ]
    for case in cases:
        streams = case["streams"].values()
        assert sum(s["ok_2xx"] for s in streams) == sum(s["scheduled"] for s in streams), case[
            "streams"
        ]
        assert all(s["error_count"] == 0 for s in streams), case["streams"]
        subscribers_per_run = result["config"]["subs_per_run"]
        assert case["deliveries"] == subscribers_per_run * sum(s["ok_2xx"] for s in streams)
        assert (case["missing"], case["duplicates"], case["reorders"], case["closed"]) == (
            0,
            0,
            0,
            0,
        )
        assert case["frames_without_stamp"] == 0
        assert case["latency_ms"]["all"]["deliveries"] == case["deliveries"]
        assert case["latency_ms"]["all"]["p99"] is not None
        assert case["verdict"] in ("PASS", "FAIL")
    cpu = result["cpu_at_rate"]
    for role in ("runtime", "projector", "gateway", "postgres", "rabbitmq", "load_generator"):
        assert cpu["cpu_seconds"][role] >= 0, role
    assert cpu["system_ms_per_event"] is not None
    assert result["fairness"]["ratio"] is not None
    assert "PASS" in done.stdout or "FAIL" in done.stdout  # the table was printed
