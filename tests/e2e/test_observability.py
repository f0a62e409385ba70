"""Observability, proven on the real services (issue 20):

* every khala_* metric the alert rules, the SLO recording rules and the Grafana
  dashboard name is exported by a running service's /metrics, which lives on the
  internal admin port (KHALA_<SVC>_ADMIN_PORT) and not on the public one;
* the projector detects REAL drift (a projection document tampered with in
  Postgres, found by its drift detector) and the KhalaProjectionDrift alert, fed
  with the scraped counter, fires (promtool test rules on the real rule file).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml
from stack import Stack, free_port

from khala_client import KhalaApi
from khala_common.broker import delete_prefixed
from khala_common.topology import Topology
from openagents.codex.v1.summaries_pb2 import RunSummary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("control", "runtime", "projector", "gateway")
_spec = importlib.util.spec_from_file_location("khala_deploy_checks_e2e", ROOT / "deploy/checks.py")
assert _spec is not None and _spec.loader is not None
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)


@pytest.fixture(scope="module")
async def stack(e2e_database: str, amqp_url: str) -> AsyncIterator[Stack]:
    """The four services with their admin listeners on ports of their own and a
    drift detector that samples every second."""
    prefix = f"e2e.{uuid.uuid4().hex[:8]}."
    admin = {f"KHALA_{svc.upper()}_ADMIN_PORT": str(free_port()) for svc in SERVICES}
    running = Stack.with_free_ports(
        database_url=e2e_database,
        amqp_url=amqp_url,
        amqp_prefix=prefix,
        log_dir=ROOT / "test-artifacts" / "e2e" / "test_observability",
        extra_env={
            **admin,
            "KHALA_PROJECTOR_DRIFT_INTERVAL_S": "1",
            "KHALA_PROJECTOR_DRIFT_SAMPLE": "100",
        },
    )
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
        await delete_prefixed(amqp_url, Topology(prefix))


def admin_url(stack: Stack, service: str) -> str:
    return f"http://127.0.0.1:{stack.extra_env[f'KHALA_{service.upper()}_ADMIN_PORT']}"


async def scrape(http: aiohttp.ClientSession, stack: Stack, service: str) -> str:
    async with http.get(f"{admin_url(stack, service)}/metrics") as response:
        assert response.status == 200, service
        return await response.text()


def exported_names(text: str) -> set[str]:
    """Series names a scrape exports: every sample, and every declared family with
    the suffixes its type produces (a labelled family with no child yet)."""
    names = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        base = family.removesuffix("_total")
        names |= {family, base}
        if kind == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        if kind in ("histogram", "summary"):
            names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum", f"{base}_created"}
    return names


def sample_value(text: str, name: str, labels: dict[str, str]) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        body = line[len(name) + 1 : line.index("}")]
        got = dict(re.findall(r'(\w+)="([^"]*)"', body))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_live_on_the_admin_port_only(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    for service in SERVICES:
        async with http.get(f"{stack.url(service)}/metrics") as public:
            assert public.status == 404, f"{service} serves /metrics on its public port"
        async with http.get(f"{admin_url(stack, service)}/readyz") as ready:
            assert ready.status == 200, service


async def test_every_metric_named_by_rules_and_dashboard_is_exported(
    stack: Stack, api: KhalaApi, org_id: str, http: aiohttp.ClientSession
) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id, title="metrics")
    await api.append_events(
        run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]
    )
    exported: set[str] = set()
    for service in SERVICES:
        exported |= exported_names(await scrape(http, stack, service))
    referenced = checks.referenced_metrics()
    assert len(referenced) > 30
    missing = sorted(referenced - exported)
    assert not missing, (
        f"named by alerts/recording rules/dashboard but exported by no service: {missing}"
    )
    # RED metrics of HTTP routes and gRPC methods are among them
    assert {
        "khala_http_requests_total",
        "khala_http_request_duration_seconds_bucket",
        "khala_grpc_requests_total",
    } <= exported


async def test_real_drift_is_detected_and_the_drift_alert_fires(
    stack: Stack,
    api: KhalaApi,
    org_id: str,
    http: aiohttp.ClientSession,
    e2e_database: str,
    tmp_path: Path,
) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (make install: Debian prometheus)"
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id, title="drift")
    await api.append_events(
        run_id, [{"type": "run.started", "payload": {}, "idempotency_key": "s"}]
    )
    conn = await asyncpg.connect(e2e_database)
    try:
        for _ in range(600):  # both events projected: no later commit rewrites the document
            if (
                await conn.fetchval(
                    "SELECT last_seq FROM khala.checkpoints WHERE stream_id = $1", f"run:{run_id}"
                )
                == 2
            ):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"run {run_id} was never projected")
        before = sample_value(
            await scrape(http, stack, "projector"),
            "khala_projector_drift_incidents_total",
            {"projection": "runs"},
        )
        # a silent bug: a self-consistent but wrong document
        wrong = RunSummary(run_id=run_id, title="tampered").SerializeToString(deterministic=True)
        status = await conn.execute(
            "UPDATE khala.documents SET doc = $2, doc_hash = $3 WHERE projection = 'runs' AND key = $1",
            run_id,
            wrong,
            hashlib.sha256(wrong).hexdigest(),
        )
        assert status == "UPDATE 1", status
    finally:
        await conn.close()
    for _ in range(240):  # the detector samples every second
        after = sample_value(
            await scrape(http, stack, "projector"),
            "khala_projector_drift_incidents_total",
            {"projection": "runs"},
        )
        if after > before:
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail("the drift detector never counted the tampered document")
    log = (stack.log_dir / "projector.log").read_text()
    assert "projection drift" in log and run_id in log

    # The alert rule, evaluated by promtool on the scraped values: quiet while the
    # counter stood at its value before the tampering, firing once it moved.
    rules = ROOT / "deploy/monitoring/prometheus/khala-alerts.yaml"
    alert = next(
        r
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
        if r.get("alert") == "KhalaProjectionDrift"
    )
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'khala_projector_drift_incidents_total{job="khala-projector",projection="runs"}',
                        "values": f"{before:g}x5 {after:g}x10",
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "KhalaProjectionDrift", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "KhalaProjectionDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "projection": "runs"},
                                "exp_annotations": {
                                    "summary": "Drift in projection runs",
                                    "description": " ".join(
                                        alert["annotations"]["description"].split()
                                    ),
                                    "runbook_url": alert["annotations"]["runbook_url"],
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "drift.test.yaml"
    path.write_text(yaml.safe_dump(test))
    proc = await asyncio.create_subprocess_exec(
        promtool, "test", "rules", str(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    assert proc.returncode == 0, output.decode()


async def test_gateway_stays_ready_and_serves_while_control_is_down(
    stack: Stack, api: KhalaApi, org_id: str, http: aiohttp.ClientSession
) -> None:
    """Last in the module: it stops control. The gateway verifies sync tokens with
    its cached JWKS, so it stays in its load balancer and keeps serving."""
    from khala_client import JSON, connect
    from khala_common.topics import run_topic

    from .support import Received, assert_exact_sequence, read_until

    run_id = f"run-{uuid.uuid4().hex[:8]}"
    await api.create_run(org_id, run_id, title="control down")
    topic = run_topic(org_id, run_id)
    token = (await api.sync_token([topic]))["token"]
    stack.kill("control")
    for _ in range(3):
        async with http.get(f"{stack.url('gateway')}/readyz") as ready:
            assert ready.status == 200, await ready.text()
        await asyncio.sleep(0.2)
    client = await connect(http, stack.ws_url, token, protocol=JSON)
    try:
        await client.subscribe([topic])
        got = await read_until(client, topic, 1, Received())
        assert_exact_sequence(got.seqs, 1, 1)  # run.created, replayed without control
    finally:
        await client.close()
