"""Static checks of the deployment files, run by scripts/deploy-check.sh.

Each subcommand prints one line per check and exits non-zero if any failed:

  checks.py dockerfiles                    the four Dockerfiles (official BuildKit parser)
  checks.py compose CONFIG.json            `docker compose config --format json` output
  checks.py k8s RENDERED.yaml OVERLAY      one rendered overlay (policy, not schema)
  checks.py crds RENDERED.yaml CORE_OUT    CRD kinds (ServiceMonitor, PrometheusRule)
                                           against deploy/schemas/; writes the core
                                           kinds to CORE_OUT for kubernetes-validate
  checks.py alerts DASHBOARD_RULES.yaml    runbook links of the alerts, absent() per
                                           scrape target; writes the dashboard's
                                           queries as rules for promtool
  checks.py rabbitmq                       definitions.json against the names the code uses
  checks.py metrics                        every khala_* metric the alerts, recording
                                           rules and dashboard name is registered by a
                                           service (imports the services; the live
                                           scrape is tests/e2e/test_metrics_coverage.py)
  checks.py generated [--write]            generated manifests are up to date:
                                           base/bootstrap-files.yaml (roles.sql,
                                           definitions.json) and the monitoring
                                           overlay's PrometheusRule (the alert files)

Needs PyYAML, jsonschema (for `crds`), the services (for `metrics`) and, for
`dockerfiles`, the `dockerfile` package. Each check is broken once on purpose
by tests/deploy/test_deploy_checks.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVICES = {
    "control": (8081, 9081),
    "runtime": (8082, 9082),
    "projector": (8083, 9083),
    "gateway": (8084, 9084),
}
ADMIN_PORTS = {"control": 8181, "runtime": 8182, "projector": 8183, "gateway": 8184}
PUBLIC = ("control", "runtime", "gateway")  # behind the Ingress (the projector is not)
BOOTSTRAP_JOBS = ("khala-postgres-roles", "khala-rabbitmq-definitions")
ALERT_FILES = ("khala-alerts.yaml", "khala-slo.yaml")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
MIGRATING = ("control", "runtime", "projector")
SOURCE_DIRS = {
    "control": "services/control",
    "runtime": "services/runtime",
    "projector": "services/projector",
    "gateway": "services/khala-gateway",
}
GATEWAY_DRAIN_S = 10  # hub.drain timeout
GATEWAY_SHUTDOWN_S = 10  # runner shutdown_timeout

failed: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    """Record and print one check."""
    print(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail and not ok else ''}")
    if not ok:
        failed.append(name)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ------------------------------------------------------------------ Dockerfiles


def dockerfiles() -> None:
    import dockerfile

    for svc, (http, grpc) in SERVICES.items():
        path = DEPLOY / "docker" / f"{svc}.Dockerfile"
        try:
            cmds = dockerfile.parse_file(str(path))
        except Exception as exc:  # the parser's syntax errors
            check(f"docker/{svc}: parses", False, str(exc))
            continue
        check(f"docker/{svc}: parses", True)
        froms = [i for i, c in enumerate(cmds) if c.cmd.upper() == "FROM"]
        check(f"docker/{svc}: multi-stage", len(froms) >= 2, f"{len(froms)} FROM")
        build, final = cmds[froms[0] : froms[-1]], cmds[froms[-1] :]
        runs = " ".join(" ".join(c.value) for c in build if c.cmd.upper() == "RUN")
        check(
            f"docker/{svc}: uv sync --frozen --no-dev --package khala-{svc}",
            re.search(rf"uv sync --frozen --no-dev .*--package khala-{svc}\b", runs) is not None,
        )
        copies = [c.value for c in build if c.cmd.upper() == "COPY"]
        check(f"docker/{svc}: copies uv.lock", any("uv.lock" in v for v in copies))
        check(
            f"docker/{svc}: copies its sources",
            any(v[0].rstrip("/") == SOURCE_DIRS[svc] for v in copies),
        )
        users = [c.value[0] for c in final if c.cmd.upper() == "USER"]
        check(
            f"docker/{svc}: final stage runs as a non-root user",
            bool(users) and users[-1].split(":")[0] not in ("0", "root"),
            str(users),
        )
        health = [c for c in final if c.cmd.upper() == "HEALTHCHECK"]
        text = " ".join(health[-1].value) if health else ""
        check(
            f"docker/{svc}: HEALTHCHECK probes /healthz with urllib",
            "/healthz" in text and "urllib" in text and "curl" not in text and "wget" not in text,
            text,
        )
        entry = [c.value for c in final if c.cmd.upper() == "ENTRYPOINT"]
        check(
            f"docker/{svc}: ENTRYPOINT khala-{svc}",
            bool(entry) and entry[-1][0] == f"khala-{svc}",
            str(entry),
        )
        exposed = {
            int(p.split("/")[0]) for c in final if c.cmd.upper() == "EXPOSE" for p in c.value
        }
        check(f"docker/{svc}: EXPOSE {http} {grpc}", exposed == {http, grpc}, str(exposed))
        ignore = path.with_name(path.name + ".dockerignore")
        check(f"docker/{svc}: has {ignore.name}", ignore.is_file())


# ------------------------------------------------------------------ compose


def compose(config_json: Path) -> None:
    cfg = json.loads(config_json.read_text())
    services = cfg.get("services", {})
    want = {
        "postgres",
        "rabbitmq",
        "postgres-roles",
        "rabbitmq-definitions",
        *(f"{s}-migrate" for s in MIGRATING),
        *SERVICES,
    }
    check(
        "compose: every service is defined",
        want <= set(services),
        str(sorted(want - set(services))),
    )
    for infra in ("postgres", "rabbitmq"):
        check(
            f"compose: {infra} has a healthcheck (make run waits for it)",
            bool(services.get(infra, {}).get("healthcheck")),
        )
    for svc in MIGRATING:
        mig = services.get(f"{svc}-migrate", {})
        check(
            f"compose: {svc}-migrate runs `migrate`",
            mig.get("command") == ["migrate"],
            str(mig.get("command")),
        )
        dep = services.get(svc, {}).get("depends_on", {})
        check(
            f"compose: {svc} starts after its migrations succeeded",
            dep.get(f"{svc}-migrate", {}).get("condition") == "service_completed_successfully",
        )
    for svc in SERVICES:
        s = services.get(svc, {})
        env = s.get("environment", {})
        db = env.get("KHALA_DATABASE_URL", "")
        check(
            f"compose: {svc} connects to Postgres as khala_{svc}",
            db.startswith(f"postgresql://khala_{svc}:"),
            db,
        )
        amqp = env.get("KHALA_AMQP_URL", "")
        check(
            f"compose: {svc} connects to RabbitMQ as khala-{svc}",
            amqp.startswith(f"amqp://khala-{svc}:"),
            amqp,
        )
        check(
            f"compose: {svc} is read-only, drops all capabilities",
            s.get("read_only") is True and s.get("cap_drop") == ["ALL"],
        )
        check(f"compose: {svc} binds 0.0.0.0", env.get("KHALA_BIND_HOST") == "0.0.0.0")
    grace = services.get("gateway", {}).get("stop_grace_period", "")
    seconds = _duration_s(grace)
    check(
        "compose: gateway stop_grace_period covers drain + shutdown",
        seconds > GATEWAY_DRAIN_S + GATEWAY_SHUTDOWN_S,
        str(grace),
    )


def _duration_s(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value) / (1e9 if value > 1e6 else 1)  # compose JSON may give nanoseconds
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(h|ms|m|s)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


# ------------------------------------------------------------------ Kubernetes


def k8s(rendered: Path, overlay: str) -> None:
    k8s_docs(load_yaml_docs(rendered), overlay)


def _hooks(obj: dict[str, Any]) -> tuple[str, int | None]:
    ann = obj["metadata"].get("annotations", {})
    wave = ann.get("argocd.argoproj.io/sync-wave")
    return ann.get("argocd.argoproj.io/hook", ""), int(wave) if wave is not None else None


def _seconds(value: Any) -> float:
    try:
        return float(str(value).rstrip("s"))
    except ValueError:
        return 0.0


Kinds = dict[str, dict[str, dict[str, Any]]]


def k8s_docs(docs: list[dict[str, Any]], overlay: str) -> None:
    """Policy checks of one rendered overlay (its objects as dicts)."""
    by_kind: Kinds = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    jobs = by_kind.get("Job", {})
    p = f"k8s/{overlay}"
    _overlay_split_checks(p, overlay, by_kind)
    for name, obj in [*deployments.items(), *jobs.items()]:
        _pod_security_checks(p, overlay, by_kind, name, obj["spec"]["template"]["spec"])
    # Jobs: bootstrap, then migrations, then the services (Argo CD PreSync waves;
    # Flux recreates them; rollout.sh follows the same labels).
    if not overlay.endswith("-apps"):
        _bootstrap_files_check(p, by_kind)
    for name, job in jobs.items():
        _job_checks(p, name, job)
    common = next(
        (d for n, d in by_kind.get("ConfigMap", {}).items() if n.startswith("khala-common-config")),
        {},
    )
    for name, obj in deployments.items():
        _deployment_checks(p, overlay, by_kind, name, obj, common)
    if overlay.endswith("-jobs"):
        return
    _gateway_hpa_checks(p, by_kind.get("HorizontalPodAutoscaler", {}))
    _ingress_checks(p, by_kind)
    _network_checks(p, by_kind)
    _delivery_limit_check(p, by_kind)


def _overlay_split_checks(p: str, overlay: str, by_kind: Kinds) -> None:
    """The Flux pair: <name>-jobs holds only the namespace and the release Jobs,
    <name>-apps everything else; every other overlay holds both."""
    deployments = by_kind.get("Deployment", {})
    jobs = by_kind.get("Job", {})
    jobs_only, apps_only = overlay.endswith("-jobs"), overlay.endswith("-apps")
    want_deployments = set() if jobs_only else {f"khala-{s}" for s in SERVICES}
    check(
        f"{p}: a Deployment per service",
        set(deployments) == want_deployments,
        str(sorted(deployments)),
    )
    migrations = {f"khala-{s}-migrate" for s in MIGRATING}
    check(
        f"{p}: a migration Job per migrating service, and the bootstrap Jobs",
        set(jobs) == (set() if apps_only else migrations | set(BOOTSTRAP_JOBS)),
        str(sorted(jobs)),
    )
    if jobs_only:
        check(
            f"{p}: only the namespace and the release Jobs",
            set(by_kind) <= {"Namespace", "Job", "ConfigMap"}
            and set(by_kind.get("ConfigMap", {})) == {"khala-bootstrap-files"},
            str(sorted(by_kind)),
        )
    if apps_only:
        check(
            f"{p}: no Namespace and no release Job (the -jobs overlay owns them)",
            not by_kind.get("Namespace")
            and "khala-bootstrap-files" not in by_kind.get("ConfigMap", {}),
        )


def _pod_security_checks(
    p: str, overlay: str, by_kind: Kinds, name: str, spec: dict[str, Any]
) -> None:
    """A Deployment's or Job's pod: non-root, no token, hardened containers with resources."""
    pod_sc = spec.get("securityContext", {})
    check(
        f"{p}: {name} pod runs as non-root with RuntimeDefault seccomp",
        pod_sc.get("runAsNonRoot") is True
        and pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
    )
    check(
        f"{p}: {name} does not mount a service account token",
        spec.get("automountServiceAccountToken") is False,
    )
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        check(
            f"{p}: {name}/{c['name']} read-only root, no escalation, drops ALL",
            sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"],
        )
        res = c.get("resources", {})
        check(
            f"{p}: {name}/{c['name']} has requests and limits",
            {"cpu", "memory"} <= set(res.get("requests", {}))
            and {"memory"} <= set(res.get("limits", {})),
        )
        _env_from_checks(p, overlay, by_kind, name, c.get("envFrom", []))


def _env_from_checks(
    p: str, overlay: str, by_kind: Kinds, name: str, env_from: list[dict[str, Any]]
) -> None:
    """Every ConfigMap a container reads is rendered; dev generates its Secrets."""
    refs = [e.get("configMapRef", e.get("secretRef", {})).get("name") for e in env_from]
    secrets = [e["secretRef"]["name"] for e in env_from if "secretRef" in e]
    for ref in refs:
        if ref and ref not in by_kind.get("ConfigMap", {}) and ref not in secrets:
            check(f"{p}: {name} references ConfigMap {ref}", False, "not rendered")
    if overlay.startswith("dev"):
        for secret in secrets:
            check(f"{p}: {name} Secret {secret} is generated", secret in by_kind.get("Secret", {}))


def _bootstrap_files_check(p: str, by_kind: Kinds) -> None:
    files_cm = by_kind.get("ConfigMap", {}).get("khala-bootstrap-files")
    files_hook, files_wave = _hooks(files_cm) if files_cm else ("", None)
    check(
        f"{p}: khala-bootstrap-files is a PreSync hook before the bootstrap Jobs",
        files_hook == "PreSync" and files_wave is not None and files_wave < -2,
        f"{files_hook} {files_wave}",
    )


def _job_checks(p: str, name: str, job: dict[str, Any]) -> None:
    """A release Job runs in its PreSync wave, is recreated each sync, and needs
    nothing the same sync creates later."""
    hook, wave = _hooks(job)
    want = -2 if name in BOOTSTRAP_JOBS else -1
    ann = job["metadata"].get("annotations", {})
    check(
        f"{p}: {name} is an Argo CD PreSync hook in wave {want}, recreated each sync",
        hook == "PreSync"
        and wave == want
        and ann.get("argocd.argoproj.io/hook-delete-policy") == "BeforeHookCreation",
        f"{hook} {wave}",
    )
    check(
        f"{p}: {name} is recreated by Flux (kustomize.toolkit.fluxcd.io/force)",
        ann.get("kustomize.toolkit.fluxcd.io/force") == "enabled",
    )
    spec = job["spec"]["template"]["spec"]
    config_refs = [
        e["configMapRef"]["name"]
        for c in spec["containers"]
        for e in c.get("envFrom", [])
        if "configMapRef" in e
    ]
    check(
        f"{p}: {name} reads no ConfigMap created later in the same sync",
        not config_refs,
        str(config_refs),
    )
    check(
        f"{p}: {name} needs no ServiceAccount created later in the same sync",
        spec.get("serviceAccountName", "default") == "default",
    )


def _deployment_checks(
    p: str, overlay: str, by_kind: Kinds, name: str, obj: dict[str, Any], common: dict[str, Any]
) -> None:
    """A service's Deployment: probes, graceful shutdown, ports, scraping, then its
    replicas, disruption budget and Services."""
    svc = name.removeprefix("khala-")
    spec = obj["spec"]["template"]["spec"]
    c = spec["containers"][0]
    check(
        f"{p}: {name} readiness /readyz, liveness /healthz",
        c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
        and c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
    )
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = float(pre[-1]) if pre and pre[0] == "sleep" else 0.0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    budget = pre_s + (GATEWAY_DRAIN_S + GATEWAY_SHUTDOWN_S if svc == "gateway" else 15)
    check(
        f"{p}: {name} grace {grace}s > preStop {pre_s:g}s + shutdown",
        grace > budget,
        f"needs > {budget:g}",
    )
    check(
        f"{p}: {name} rolls with maxUnavailable 0",
        obj["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0,
    )
    ports = {port["containerPort"] for port in c.get("ports", [])}
    want_ports = {*SERVICES[svc], ADMIN_PORTS[svc]}
    check(
        f"{p}: {name} container ports http, grpc, admin",
        ports == want_ports,
        f"{ports} != {want_ports}",
    )
    admin_env = f"KHALA_{svc.upper()}_ADMIN_PORT"
    check(
        f"{p}: {name} serves /metrics and admin routes on the internal port ({admin_env})",
        common.get("data", {}).get(admin_env) == str(ADMIN_PORTS[svc]),
        str(common.get("data", {}).get(admin_env)),
    )
    ann = obj["spec"]["template"]["metadata"].get("annotations", {})
    check(
        f"{p}: {name} is scraped on the admin port",
        ann.get("prometheus.io/port") == str(ADMIN_PORTS[svc]),
        str(ann.get("prometheus.io/port")),
    )
    _availability_checks(p, overlay, by_kind, name, obj)


def _availability_checks(
    p: str, overlay: str, by_kind: Kinds, name: str, obj: dict[str, Any]
) -> None:
    """Who owns a Deployment's replica count, its PodDisruptionBudget and its Services."""
    svc = name.removeprefix("khala-")
    services = by_kind.get("Service", {})
    selector = obj["spec"]["selector"]["matchLabels"]
    managed = [
        h
        for h in by_kind.get("HorizontalPodAutoscaler", {}).values()
        if h["spec"]["scaleTargetRef"]["name"] == name
    ]
    if managed:
        check(
            f"{p}: {name} sets no replicas (its HPA owns the count)",
            "replicas" not in obj["spec"],
            f"replicas: {obj['spec'].get('replicas')}",
        )
    replicas = (
        managed[0]["spec"].get("minReplicas", 1) if managed else obj["spec"].get("replicas", 1)
    )
    pdbs = [
        d
        for d in by_kind.get("PodDisruptionBudget", {}).values()
        if d["spec"]["selector"]["matchLabels"] == selector
    ]
    check(f"{p}: {name} has a PodDisruptionBudget", len(pdbs) == 1)
    for pdb in pdbs:
        check(
            f"{p}: PodDisruptionBudget {pdb['metadata']['name']} lets a node drain evict a pod",
            _pdb_allows_eviction(pdb["spec"], replicas),
            f"{pdb['spec']} with {replicas} replicas",
        )
    check(f"{p}: {name} has a Service", name in services)
    service_ports = {
        pt.get("name"): pt.get("port")
        for pt in services.get(name, {}).get("spec", {}).get("ports", [])
    }
    check(
        f"{p}: Service {name} exposes the admin port to Prometheus",
        service_ports.get("admin") == ADMIN_PORTS[svc],
        str(service_ports),
    )
    if svc in MIGRATING:
        grpc_svc = services.get(f"{name}-grpc", {}).get("spec", {})
        check(
            f"{p}: {name}-grpc is a headless Service (client-side round_robin)",
            grpc_svc.get("clusterIP") == "None" and grpc_svc.get("selector") == selector,
        )
    if overlay.startswith("dev") and not managed:
        check(f"{p}: {name} has one replica", obj["spec"].get("replicas") == 1)


def _gateway_hpa_checks(p: str, hpas: dict[str, dict[str, Any]]) -> None:
    hpa = hpas.get("khala-gateway")
    check(
        f"{p}: the gateway has an HPA",
        hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "khala-gateway",
    )
    metrics = (hpa or {}).get("spec", {}).get("metrics", [])
    check(
        f"{p}: the gateway HPA scales on connections per pod (custom metric) and CPU",
        any(
            m.get("type") == "Pods"
            and m["pods"]["metric"]["name"] == "khala_gateway_connections"
            and m["pods"]["target"].get("type") == "AverageValue"
            for m in metrics
        )
        and any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in metrics),
        str(metrics),
    )


def _delivery_limit_check(p: str, by_kind: Kinds) -> None:
    projector_cm = [
        d for n, d in by_kind.get("ConfigMap", {}).items() if n.startswith("khala-projector-config")
    ]
    definitions = json.loads((DEPLOY / "rabbitmq/definitions.json").read_text())
    limit = next(
        q["arguments"]["x-delivery-limit"]
        for q in definitions["queues"]
        if q["name"] == "khala.projector"
    )
    check(
        f"{p}: KHALA_PROJECTOR_DELIVERY_LIMIT equals definitions.json x-delivery-limit",
        bool(projector_cm)
        and projector_cm[0]["data"].get("KHALA_PROJECTOR_DELIVERY_LIMIT") == str(limit),
    )


def _pdb_allows_eviction(spec: dict[str, Any], replicas: int) -> bool:
    """Whether a drain may evict at least one pod when all `replicas` are healthy."""
    if "maxUnavailable" in spec:
        value = spec["maxUnavailable"]
        if isinstance(value, str) and value.endswith("%"):
            return int(value[:-1]) * replicas >= 100  # rounds down: must reach one pod
        return int(value) >= 1
    value = spec.get("minAvailable", 0)
    if isinstance(value, str) and value.endswith("%"):
        return int(value[:-1]) < 100 and -(-int(value[:-1]) * replicas // 100) < replicas
    return int(value) < replicas


def _ingress_checks(p: str, by_kind: Kinds) -> None:
    ingresses = by_kind.get("Ingress", {})
    routed: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for ing in ingresses.values():
        name = ing["metadata"]["name"]
        ann = ing["metadata"].get("annotations", {})
        hosts = {r.get("host") for r in ing["spec"].get("rules", [])}
        tls_hosts = {
            h for t in ing["spec"].get("tls", []) for h in t.get("hosts", []) if t.get("secretName")
        }
        check(
            f"{p}: Ingress {name} terminates TLS for every host (cert-manager)",
            bool(hosts)
            and hosts <= tls_hosts
            and bool(
                ann.get("cert-manager.io/cluster-issuer") or ann.get("cert-manager.io/issuer")
            ),
            f"hosts {sorted(map(str, hosts))}, tls {sorted(tls_hosts)}",
        )
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                routed.setdefault(backend["name"], []).append((ing, backend["port"]))
                check(
                    f"{p}: Ingress {name} routes {backend['name']}{path.get('path', '')} to its public http port only",
                    backend["port"].get("name") == "http",
                    str(backend["port"]),
                )
                check(
                    f"{p}: Ingress {name} does not route /metrics or /internal",
                    not str(path.get("path", "")).startswith(("/metrics", "/internal")),
                )
    for svc in PUBLIC:
        check(f"{p}: an Ingress routes khala-{svc}", f"khala-{svc}" in routed, str(sorted(routed)))
    for ing, _ in routed.get("khala-gateway", []):
        ann = ing["metadata"].get("annotations", {})
        check(
            f"{p}: Ingress {ing['metadata']['name']} keeps WebSockets open (read/send timeouts >= 3600 s)",
            _seconds(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout", 0)) >= 3600
            and _seconds(ann.get("nginx.ingress.kubernetes.io/proxy-send-timeout", 0)) >= 3600,
        )
    check(f"{p}: the projector has no Ingress", "khala-projector" not in routed)


def _network_checks(p: str, by_kind: Kinds) -> None:
    policies = by_kind.get("NetworkPolicy", {})
    deny = [
        n
        for n, d in policies.items()
        if d["spec"]["podSelector"] == {}
        and set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not d["spec"].get("ingress")
        and not d["spec"].get("egress")
    ]
    check(f"{p}: a default-deny NetworkPolicy", len(deny) == 1)
    for svc in SERVICES:
        check(f"{p}: NetworkPolicy for khala-{svc}", f"khala-{svc}" in policies)
    admin_ports = set(ADMIN_PORTS.values())
    for name, pol in policies.items():
        for rule in pol["spec"].get("ingress", []) or []:
            ports = {pt.get("port") for pt in rule.get("ports", [])}
            peers = rule.get("from", [])
            opens_admin = not rule.get("ports") or bool(ports & admin_ports)
            if not opens_admin:
                continue
            only_monitoring = bool(peers) and all(
                peer.get("namespaceSelector", {})
                .get("matchLabels", {})
                .get("kubernetes.io/metadata.name")
                == "monitoring"
                for peer in peers
            )
            check(
                f"{p}: NetworkPolicy {name} opens the admin ports to Prometheus only",
                only_monitoring,
                f"ports {sorted(map(str, ports)) or 'all'} from {peers or 'anywhere'}",
            )
    for svc, port in ADMIN_PORTS.items():
        pol = policies.get(f"khala-{svc}", {})
        allowed = any(
            port in {pt.get("port") for pt in r.get("ports", [])}
            for r in pol.get("spec", {}).get("ingress", []) or []
        )
        check(f"{p}: NetworkPolicy khala-{svc} lets Prometheus reach admin port {port}", allowed)


# ------------------------------------------------------------------ alerts and dashboard


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def alerts(dashboard_rules_out: Path) -> None:
    import yaml

    names = set()
    exprs_by_alert: dict[str, str] = {}
    for group in _alert_groups():
        for rule in group["rules"]:
            if "alert" not in rule:
                continue  # a recording rule
            name = rule["alert"]
            names.add(name)
            exprs_by_alert[name] = str(rule["expr"])
            check(
                f"alerts: {name} has a severity",
                rule.get("labels", {}).get("severity") in ("warning", "critical"),
            )
            url = rule.get("annotations", {}).get("runbook_url", "")
            path, _, anchor = url.partition("#")
            target = ROOT / path
            ok = path.startswith("docs/runbooks/") and target.is_file()
            if ok and anchor:
                anchors = {
                    _slug(line.lstrip("#"))
                    for line in target.read_text().splitlines()
                    if line.startswith("#")
                }
                ok = anchor in anchors
            check(f"alerts: {name} links an existing runbook section ({url})", ok)
    for svc in SERVICES:
        job = f"khala-{svc}"
        check(
            f"alerts: an absent() alert fires when Prometheus has no {job} target",
            any(
                re.search(rf'absent\(\s*up\{{job="{job}"\}}\s*\)', e)
                for e in exprs_by_alert.values()
            ),
        )
    drift = exprs_by_alert.get("KhalaProjectionDrift", "")
    check(
        "alerts: KhalaProjectionDrift reads the counter the drift detector increments",
        "khala_projector_drift_incidents_total" in drift,
        drift,
    )
    wanted = [
        "ws-auth-failures",
        "stale-cursor-storm",
        "reconnect-storm",
        "slow-consumers",
        "projector-lag-and-drift",
        "projection-rebuild",
        "backup-restore",
        "rollback",
    ]
    for page in wanted:
        check(
            f"runbooks: docs/runbooks/{page}.md exists",
            (ROOT / f"docs/runbooks/{page}.md").is_file(),
        )
    dashboard = json.loads((DEPLOY / "monitoring/grafana/khala-overview.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    check("dashboard: parses and has queries", len(exprs) > 10, str(len(exprs)))
    dashboard_rules_out.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"khala:dashboard:query{i}", "expr": e}
                            for i, e in enumerate(exprs)
                        ],
                    }
                ]
            }
        )
    )


# ------------------------------------------------------------------ RabbitMQ definitions


def rabbitmq() -> None:
    d = json.loads((DEPLOY / "rabbitmq/definitions.json").read_text())
    exchanges = {e["name"]: e for e in d["exchanges"]}
    for name in ("khala.runtime.events", "khala.fanout", "khala.control"):
        e = exchanges.get(name, {})
        check(
            f"rabbitmq: {name} is a durable topic exchange",
            e.get("type") == "topic" and e.get("durable") is True,
        )
    queues = {q["name"]: q for q in d["queues"]}
    args = queues.get("khala.projector", {}).get("arguments", {})
    check(
        "rabbitmq: khala.projector is quorum, single active consumer, delivery limit 5, DLX",
        args
        == {
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
            "x-delivery-limit": 5,
            "x-dead-letter-exchange": "khala.projector.dlx",
        },
        str(args),
    )
    check("rabbitmq: khala.projector.dlq exists", "khala.projector.dlq" in queues)
    check(
        "rabbitmq: user passwords are not in the file",
        all(u.get("password_hash", "") == "" and "password" not in u for u in d["users"]),
    )
    gw_queues = ["khala.fanout.gw.0a1b2c3d", "khala.control.gw.0a1b2c3d", "khala.gateway.0a1b2c3d"]
    policy = next((p for p in d["policies"] if p["name"] == "khala-gateway-queues"), None)
    check(
        "rabbitmq: the gateway-queue policy bounds gateway queues",
        policy is not None
        and "max-length" in policy["definition"]
        and all(re.search(policy["pattern"], q) for q in gw_queues)
        and not re.search(policy["pattern"], "khala.projector"),
    )
    perms = {p["user"]: p for p in d["permissions"]}
    # (user, kind, resource, allowed?) — what the code does and a few things it must not
    expect = [
        ("control", "configure", "khala.control", True),
        ("control", "write", "khala.control", True),
        ("control", "write", "khala.runtime.events", False),
        ("control", "read", "khala.projector", False),
        ("runtime", "configure", "khala.runtime.events", True),
        ("runtime", "write", "khala.runtime.events", True),
        ("runtime", "write", "khala.fanout", False),
        ("runtime", "read", "khala.projector", False),
        ("projector", "read", "khala.projector", True),
        ("projector", "write", "khala.fanout", True),
        ("projector", "write", "khala.runtime.events", True),  # dlq replay
        ("projector", "configure", "khala.projector.dlq", True),
        ("projector", "write", "khala.control", False),
        ("gateway", "configure", "khala.fanout.gw.0a1b2c3d", True),
        ("gateway", "write", "khala.fanout.gw.0a1b2c3d", True),
        ("gateway", "read", "khala.fanout", True),
        ("gateway", "read", "khala.control.gw.0a1b2c3d", True),
        ("gateway", "write", "khala.fanout", False),
        ("gateway", "read", "khala.projector", False),
    ]
    for user, kind, resource, allowed in expect:
        pattern = perms.get(f"khala-{user}", {}).get(kind, "^$")
        got = re.search(pattern, resource) is not None
        check(
            f"rabbitmq: khala-{user} {'may' if allowed else 'may not'} {kind} {resource}",
            got == allowed,
            pattern,
        )


# ------------------------------------------------------------------ CRD kinds


def crds(rendered: Path, core_out: Path) -> None:
    """Validate CRD objects against the schemas in deploy/schemas/ (strict: no unknown
    field); write every other object to `core_out` for kubernetes-validate."""
    import jsonschema
    import yaml

    docs = load_yaml_docs(rendered)
    core = []
    for d in docs:
        key = (d.get("apiVersion", ""), d.get("kind", ""))
        group = key[0].split("/")[0] if "/" in key[0] else ""
        if key in CRD_SCHEMAS:
            schema = json.loads((DEPLOY / "schemas" / CRD_SCHEMAS[key]).read_text())
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path)
            )
            detail = "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
            check(
                f"crd: {key[1]} {d['metadata']['name']} matches deploy/schemas/{CRD_SCHEMAS[key]}",
                not errors,
                detail,
            )
        elif "." in group and not group.endswith(".k8s.io"):
            check(
                f"crd: {key[0]} {key[1]} has a schema in deploy/schemas/",
                False,
                "unknown custom kind",
            )
        else:
            core.append(d)
    core_out.write_text(yaml.safe_dump_all(core, sort_keys=False))


def monitoring_overlay(rendered: Path) -> None:
    """The monitoring overlay: a ServiceMonitor per service on the admin port, and the
    PrometheusRule carrying exactly the alert files' groups."""
    docs = load_yaml_docs(rendered)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for svc in SERVICES:
        found = [
            m
            for m in monitors
            if m["spec"]["selector"].get("matchLabels", {}).get("app.kubernetes.io/name")
            == f"khala-{svc}"
        ]
        check(
            f"monitoring: a ServiceMonitor scrapes khala-{svc} on its admin port",
            len(found) == 1
            and all(e.get("port") == "admin" for e in found[0]["spec"]["endpoints"]),
        )
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    check(
        "monitoring: the PrometheusRule carries the alert files' groups",
        len(rules) == 1 and rules[0]["spec"]["groups"] == _alert_groups(),
    )


def _alert_groups() -> list[dict[str, Any]]:
    import yaml

    groups: list[dict[str, Any]] = []
    for name in ALERT_FILES:
        groups += yaml.safe_load((DEPLOY / "monitoring/prometheus" / name).read_text())["groups"]
    return groups


# ------------------------------------------------------------------ generated manifests

GENERATED_HEADER = (
    "# GENERATED by `python deploy/checks.py generated --write` from {sources}; do not edit.\n"
)


def _generated_files() -> dict[Path, str]:
    import yaml

    files = {
        "roles.sql": DEPLOY / "postgres/roles.sql",
        "definitions.json": DEPLOY / "rabbitmq/definitions.json",
        "apply_definitions.py": DEPLOY / "rabbitmq/apply_definitions.py",
    }
    bootstrap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "khala-bootstrap-files",
            "labels": {
                "app.kubernetes.io/name": "khala-bootstrap-files",
                "app.kubernetes.io/component": "bootstrap",
            },
            "annotations": {
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
                "argocd.argoproj.io/sync-wave": "-3",
            },
        },
        "data": {key: path.read_text() for key, path in files.items()},
    }
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "khala",
            "labels": {
                "app.kubernetes.io/name": "khala",
                "role": "alert-rules",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": _alert_groups()},
    }
    return {
        DEPLOY / "k8s/base/jobs/bootstrap-files.yaml": GENERATED_HEADER.format(
            sources=", ".join(f"deploy/{p.relative_to(DEPLOY)}" for p in files.values())
        )
        + yaml.safe_dump(bootstrap, sort_keys=False, width=1000),
        DEPLOY / "k8s/overlays/monitoring/prometheusrule.yaml": GENERATED_HEADER.format(
            sources=", ".join(f"deploy/monitoring/prometheus/{n}" for n in ALERT_FILES)
        )
        + yaml.safe_dump(rule, sort_keys=False, width=1000),
    }


def generated(write: bool) -> None:
    for path, text in _generated_files().items():
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        check(
            f"generated: {path.relative_to(ROOT)} is up to date (checks.py generated --write)",
            path.is_file() and path.read_text() == text,
        )


# ------------------------------------------------------------------ metric names

SERVICE_MODULES = (
    "khala_control.app",
    "khala_runtime.app",
    "khala_projector.app",
    "khala_gateway.app",
)


def referenced_metrics() -> set[str]:
    """khala_* series names the alert/recording rules and the dashboard query."""
    used: set[str] = set()
    paths = [DEPLOY / "monitoring/prometheus" / n for n in ALERT_FILES]
    paths.append(DEPLOY / "monitoring/grafana/khala-overview.json")
    for path in paths:
        # (a name followed by "." is a Python module named in a comment)
        used |= set(re.findall(r"\bkhala_[a-z0-9_]+\b(?![.\w])", path.read_text()))
    return used - {"khala_dashboard"}


def registered_metrics() -> set[str]:
    """Every series name the four services' Prometheus registry can export."""
    import importlib

    from prometheus_client import REGISTRY

    for module in SERVICE_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        base = family.name
        names |= {
            base,
            f"{base}_total",
            f"{base}_created",
            f"{base}_bucket",
            f"{base}_count",
            f"{base}_sum",
        }
    return names


def metrics() -> None:
    """Fail on a khala_* metric the rules or the dashboard use that no service registers."""
    exported = registered_metrics()
    used = referenced_metrics()
    for name in sorted(used):
        check(
            f"metrics: {name} (used by rules/dashboard) is registered by a service",
            name in exported,
        )


def main(argv: list[str]) -> int:
    """Dispatch a subcommand."""
    if not argv:
        print(__doc__)
        return 2
    command, *args = argv
    {
        "dockerfiles": lambda: dockerfiles(),
        "compose": lambda: compose(Path(args[0])),
        "k8s": lambda: k8s(Path(args[0]), args[1]),
        "crds": lambda: crds(Path(args[0]), Path(args[1])),
        "monitoring": lambda: monitoring_overlay(Path(args[0])),
        "generated": lambda: generated("--write" in args),
        "alerts": lambda: alerts(Path(args[0])),
        "rabbitmq": lambda: rabbitmq(),
        "metrics": lambda: metrics(),
    }[command]()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
