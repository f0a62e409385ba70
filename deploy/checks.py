"""Static checks of the deployment files, run by scripts/deploy-check.sh.

Each subcommand prints one line per check and exits non-zero if any failed:

  checks.py dockerfiles                    the four Dockerfiles (official BuildKit parser)
  checks.py compose CONFIG.json            `docker compose config --format json` output
  checks.py k8s RENDERED.yaml OVERLAY      one rendered overlay (policy, not schema)
  checks.py alerts DASHBOARD_RULES.yaml    runbook links of the alerts; writes the
                                           dashboard's queries as rules for promtool
  checks.py rabbitmq                       definitions.json against the names the code uses
  checks.py metrics                        metric names used but not defined in services/ (report)

Needs PyYAML and, for `dockerfiles`, the `dockerfile` package.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVICES = {"control": (8081, 9081), "runtime": (8082, 9082), "projector": (8083, 9083), "gateway": (8084, 9084)}
MIGRATING = ("control", "runtime", "projector")
SOURCE_DIRS = {"control": "services/control", "runtime": "services/runtime",
               "projector": "services/projector", "gateway": "services/khala-gateway"}
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
        build, final = cmds[froms[0]:froms[-1]], cmds[froms[-1]:]
        runs = " ".join(" ".join(c.value) for c in build if c.cmd.upper() == "RUN")
        check(f"docker/{svc}: uv sync --frozen --no-dev --package khala-{svc}",
              re.search(rf"uv sync --frozen --no-dev .*--package khala-{svc}\b", runs) is not None)
        copies = [c.value for c in build if c.cmd.upper() == "COPY"]
        check(f"docker/{svc}: copies uv.lock", any("uv.lock" in v for v in copies))
        check(f"docker/{svc}: copies its sources", any(v[0].rstrip("/") == SOURCE_DIRS[svc] for v in copies))
        users = [c.value[0] for c in final if c.cmd.upper() == "USER"]
        check(f"docker/{svc}: final stage runs as a non-root user",
              bool(users) and users[-1].split(":")[0] not in ("0", "root"), str(users))
        health = [c for c in final if c.cmd.upper() == "HEALTHCHECK"]
        text = " ".join(health[-1].value) if health else ""
        check(f"docker/{svc}: HEALTHCHECK probes /healthz with urllib",
              "/healthz" in text and "urllib" in text and "curl" not in text and "wget" not in text, text)
        entry = [c.value for c in final if c.cmd.upper() == "ENTRYPOINT"]
        check(f"docker/{svc}: ENTRYPOINT khala-{svc}", bool(entry) and entry[-1][0] == f"khala-{svc}", str(entry))
        exposed = {int(p.split("/")[0]) for c in final if c.cmd.upper() == "EXPOSE" for p in c.value}
        check(f"docker/{svc}: EXPOSE {http} {grpc}", exposed == {http, grpc}, str(exposed))
        ignore = path.with_name(path.name + ".dockerignore")
        check(f"docker/{svc}: has {ignore.name}", ignore.is_file())


# ------------------------------------------------------------------ compose


def compose(config_json: Path) -> None:
    cfg = json.loads(config_json.read_text())
    services = cfg.get("services", {})
    want = {"postgres", "rabbitmq", "postgres-roles", "rabbitmq-definitions",
            *(f"{s}-migrate" for s in MIGRATING), *SERVICES}
    check("compose: every service is defined", want <= set(services), str(sorted(want - set(services))))
    for infra in ("postgres", "rabbitmq"):
        check(f"compose: {infra} has a healthcheck (make run waits for it)",
              bool(services.get(infra, {}).get("healthcheck")))
    for svc in MIGRATING:
        mig = services.get(f"{svc}-migrate", {})
        check(f"compose: {svc}-migrate runs `migrate`", mig.get("command") == ["migrate"], str(mig.get("command")))
        dep = services.get(svc, {}).get("depends_on", {})
        check(f"compose: {svc} starts after its migrations succeeded",
              dep.get(f"{svc}-migrate", {}).get("condition") == "service_completed_successfully")
    for svc in SERVICES:
        s = services.get(svc, {})
        env = s.get("environment", {})
        db = env.get("KHALA_DATABASE_URL", "")
        check(f"compose: {svc} connects to Postgres as khala_{svc}", db.startswith(f"postgresql://khala_{svc}:"), db)
        amqp = env.get("KHALA_AMQP_URL", "")
        check(f"compose: {svc} connects to RabbitMQ as khala-{svc}", amqp.startswith(f"amqp://khala-{svc}:"), amqp)
        check(f"compose: {svc} is read-only, drops all capabilities",
              s.get("read_only") is True and s.get("cap_drop") == ["ALL"])
        check(f"compose: {svc} binds 0.0.0.0", env.get("KHALA_BIND_HOST") == "0.0.0.0")
    grace = services.get("gateway", {}).get("stop_grace_period", "")
    seconds = _duration_s(grace)
    check("compose: gateway stop_grace_period covers drain + shutdown",
          seconds > GATEWAY_DRAIN_S + GATEWAY_SHUTDOWN_S, str(grace))


def _duration_s(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value) / (1e9 if value > 1e6 else 1)  # compose JSON may give nanoseconds
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(h|ms|m|s)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


# ------------------------------------------------------------------ Kubernetes


def k8s(rendered: Path, overlay: str) -> None:
    docs = load_yaml_docs(rendered)
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    jobs = by_kind.get("Job", {})
    p = f"k8s/{overlay}"
    check(f"{p}: a Deployment per service", set(deployments) == {f"khala-{s}" for s in SERVICES}, str(sorted(deployments)))
    check(f"{p}: a migration Job per migrating service",
          set(jobs) == {f"khala-{s}-migrate" for s in MIGRATING}, str(sorted(jobs)))
    for name, obj in [*deployments.items(), *jobs.items()]:
        spec = obj["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        check(f"{p}: {name} pod runs as non-root with RuntimeDefault seccomp",
              pod_sc.get("runAsNonRoot") is True and pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault")
        check(f"{p}: {name} does not mount a service account token", spec.get("automountServiceAccountToken") is False)
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            check(f"{p}: {name}/{c['name']} read-only root, no escalation, drops ALL",
                  sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("capabilities", {}).get("drop") == ["ALL"])
            res = c.get("resources", {})
            check(f"{p}: {name}/{c['name']} has requests and limits",
                  {"cpu", "memory"} <= set(res.get("requests", {})) and {"memory"} <= set(res.get("limits", {})))
            refs = [e.get("configMapRef", e.get("secretRef", {})).get("name") for e in c.get("envFrom", [])]
            secrets = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            for ref in refs:
                if ref and ref not in by_kind.get("ConfigMap", {}) and ref not in secrets:
                    check(f"{p}: {name} references ConfigMap {ref}", False, "not rendered")
            for secret in secrets:
                if overlay == "dev":
                    check(f"{p}: {name} Secret {secret} is generated", secret in by_kind.get("Secret", {}))
    for name, obj in deployments.items():
        svc = name.removeprefix("khala-")
        spec = obj["spec"]["template"]["spec"]
        c = spec["containers"][0]
        check(f"{p}: {name} readiness /readyz, liveness /healthz",
              c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
              and c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz")
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_s = float(pre[-1]) if pre and pre[0] == "sleep" else 0.0
        grace = spec.get("terminationGracePeriodSeconds", 30)
        budget = pre_s + (GATEWAY_DRAIN_S + GATEWAY_SHUTDOWN_S if svc == "gateway" else 15)
        check(f"{p}: {name} grace {grace}s > preStop {pre_s:g}s + shutdown", grace > budget, f"needs > {budget:g}")
        check(f"{p}: {name} rolls with maxUnavailable 0",
              obj["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0)
        ports = {port["containerPort"] for port in c.get("ports", [])}
        check(f"{p}: {name} container ports", ports == set(SERVICES[svc]), str(ports))
        pdbs = [d for d in by_kind.get("PodDisruptionBudget", {}).values()
                if d["spec"]["selector"]["matchLabels"] == obj["spec"]["selector"]["matchLabels"]]
        check(f"{p}: {name} has a PodDisruptionBudget", len(pdbs) == 1)
        check(f"{p}: {name} has a Service", name in by_kind.get("Service", {}))
        if overlay == "dev":
            check(f"{p}: {name} has one replica", obj["spec"].get("replicas") == 1)
    hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("khala-gateway")
    check(f"{p}: the gateway has an HPA", hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "khala-gateway")
    policies = by_kind.get("NetworkPolicy", {})
    deny = [n for n, d in policies.items() if d["spec"]["podSelector"] == {}
            and set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not d["spec"].get("ingress") and not d["spec"].get("egress")]
    check(f"{p}: a default-deny NetworkPolicy", len(deny) == 1)
    for svc in SERVICES:
        check(f"{p}: NetworkPolicy for khala-{svc}", f"khala-{svc}" in policies)
    projector_cm = [d for n, d in by_kind.get("ConfigMap", {}).items() if n.startswith("khala-projector-config")]
    definitions = json.loads((DEPLOY / "rabbitmq/definitions.json").read_text())
    limit = next(q["arguments"]["x-delivery-limit"] for q in definitions["queues"] if q["name"] == "khala.projector")
    check(f"{p}: KHALA_PROJECTOR_DELIVERY_LIMIT equals definitions.json x-delivery-limit",
          bool(projector_cm) and projector_cm[0]["data"].get("KHALA_PROJECTOR_DELIVERY_LIMIT") == str(limit))


# ------------------------------------------------------------------ alerts and dashboard


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def alerts(dashboard_rules_out: Path) -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "monitoring/prometheus/khala-alerts.yaml").read_text())
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            names.add(name)
            check(f"alerts: {name} has a severity", rule.get("labels", {}).get("severity") in ("warning", "critical"))
            url = rule.get("annotations", {}).get("runbook_url", "")
            path, _, anchor = url.partition("#")
            target = ROOT / path
            ok = path.startswith("docs/runbooks/") and target.is_file()
            if ok and anchor:
                anchors = {_slug(line.lstrip("#")) for line in target.read_text().splitlines() if line.startswith("#")}
                ok = anchor in anchors
            check(f"alerts: {name} links an existing runbook section ({url})", ok)
    wanted = ["ws-auth-failures", "stale-cursor-storm", "reconnect-storm", "slow-consumers",
              "projector-lag-and-drift", "projection-rebuild", "backup-restore", "rollback"]
    for page in wanted:
        check(f"runbooks: docs/runbooks/{page}.md exists", (ROOT / f"docs/runbooks/{page}.md").is_file())
    dashboard = json.loads((DEPLOY / "monitoring/grafana/khala-overview.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    check("dashboard: parses and has queries", len(exprs) > 10, str(len(exprs)))
    dashboard_rules_out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"khala:dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]}]}))


# ------------------------------------------------------------------ RabbitMQ definitions


def rabbitmq() -> None:
    d = json.loads((DEPLOY / "rabbitmq/definitions.json").read_text())
    exchanges = {e["name"]: e for e in d["exchanges"]}
    for name in ("khala.runtime.events", "khala.fanout", "khala.control"):
        e = exchanges.get(name, {})
        check(f"rabbitmq: {name} is a durable topic exchange", e.get("type") == "topic" and e.get("durable") is True)
    queues = {q["name"]: q for q in d["queues"]}
    args = queues.get("khala.projector", {}).get("arguments", {})
    check("rabbitmq: khala.projector is quorum, single active consumer, delivery limit 5, DLX",
          args == {"x-queue-type": "quorum", "x-single-active-consumer": True, "x-delivery-limit": 5,
                   "x-dead-letter-exchange": "khala.projector.dlx"}, str(args))
    check("rabbitmq: khala.projector.dlq exists", "khala.projector.dlq" in queues)
    check("rabbitmq: user passwords are not in the file",
          all(u.get("password_hash", "") == "" and "password" not in u for u in d["users"]))
    gw_queues = ["khala.fanout.gw.0a1b2c3d", "khala.control.gw.0a1b2c3d", "khala.gateway.0a1b2c3d"]
    policy = next((p for p in d["policies"] if p["name"] == "khala-gateway-queues"), None)
    check("rabbitmq: the gateway-queue policy bounds gateway queues",
          policy is not None and "max-length" in policy["definition"]
          and all(re.search(policy["pattern"], q) for q in gw_queues)
          and not re.search(policy["pattern"], "khala.projector"))
    perms = {p["user"]: p for p in d["permissions"]}
    # (user, kind, resource, allowed?) — what the code does and a few things it must not
    expect = [
        ("control", "configure", "khala.control", True), ("control", "write", "khala.control", True),
        ("control", "write", "khala.runtime.events", False), ("control", "read", "khala.projector", False),
        ("runtime", "configure", "khala.runtime.events", True), ("runtime", "write", "khala.runtime.events", True),
        ("runtime", "write", "khala.fanout", False), ("runtime", "read", "khala.projector", False),
        ("projector", "read", "khala.projector", True), ("projector", "write", "khala.fanout", True),
        ("projector", "write", "khala.runtime.events", True),  # dlq replay
        ("projector", "configure", "khala.projector.dlq", True), ("projector", "write", "khala.control", False),
        ("gateway", "configure", "khala.fanout.gw.0a1b2c3d", True), ("gateway", "write", "khala.fanout.gw.0a1b2c3d", True),
        ("gateway", "read", "khala.fanout", True), ("gateway", "read", "khala.control.gw.0a1b2c3d", True),
        ("gateway", "write", "khala.fanout", False), ("gateway", "read", "khala.projector", False),
    ]
    for user, kind, resource, allowed in expect:
        pattern = perms.get(f"khala-{user}", {}).get(kind, "^$")
        got = re.search(pattern, resource) is not None
        check(f"rabbitmq: khala-{user} {'may' if allowed else 'may not'} {kind} {resource}", got == allowed, pattern)


# ------------------------------------------------------------------ metric names


def metrics() -> None:
    """Report (never fail) metric names the alerts/dashboard use that no service defines."""
    defined = set()
    for path in (ROOT / "services").rglob("*.py"):
        if "/tests/" in str(path):
            continue
        defined |= set(re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(khala_[a-z0-9_]+)\"", path.read_text()))
    used = set()
    for path in (DEPLOY / "monitoring/prometheus/khala-alerts.yaml", DEPLOY / "monitoring/grafana/khala-overview.json"):
        used |= set(re.findall(r"\bkhala_[a-z0-9_]+", path.read_text()))
    suffixes = ("_bucket", "_count", "_sum", "_created")

    def base(name: str) -> str:
        for s in suffixes:
            if name.endswith(s) and name.removesuffix(s) in defined:
                return name.removesuffix(s)
        if name.endswith("_total") and name.removesuffix("_total") in defined:
            return name.removesuffix("_total")
        return name

    used = {base(u) for u in used} - {"khala_dashboard"}
    defined |= {d + "_total" for d in defined}
    missing = sorted(u for u in used if u not in defined and not u.startswith("khala:"))
    print(f"info metrics: {len(used)} khala_* names used by alerts/dashboard; not defined in services/ yet: "
          + (", ".join(missing) if missing else "none"))


def main(argv: list[str]) -> int:
    """Dispatch a subcommand."""
    if not argv:
        print(__doc__)
        return 2
    command, *args = argv
    {"dockerfiles": lambda: dockerfiles(),
     "compose": lambda: compose(Path(args[0])),
     "k8s": lambda: k8s(Path(args[0]), args[1]),
     "alerts": lambda: alerts(Path(args[0])),
     "rabbitmq": lambda: rabbitmq(),
     "metrics": lambda: metrics()}[command]()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
