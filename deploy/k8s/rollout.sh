#!/usr/bin/env bash
# Roll Khala out without Argo CD / Flux, in the same order their hooks give:
# configuration, the bootstrap Jobs (Postgres roles, RabbitMQ definitions), the
# migration Jobs (each waited for), then the services (deploy/k8s/README.md "Ordering"). The migrations run before any new pod starts, so a release's code
# never meets an older schema; the old pods keep serving meanwhile (migrations
# must therefore be backward compatible: expand now, contract in a later release).
#
#   deploy/k8s/rollout.sh <dev|prod> [extra kubectl flags, e.g. --context prod-eu]
#
# Prerequisites: in prod the khala-<svc>-secrets and khala-bootstrap-secrets
# Secrets created (deploy/k8s/README.md).
set -euo pipefail

overlay=${1:?usage: rollout.sh <dev|prod> [kubectl flags]}
shift
here=$(cd "$(dirname "$0")" && pwd)
kc=(kubectl "$@")
timeout_s=${KHALA_MIGRATION_TIMEOUT_S:-900}

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
"${kc[@]}" kustomize "$here/overlays/$overlay" >"$rendered"
ns=$(awk '/^kind: Namespace$/ {ns = 1} ns && /^  name: / {print $2; exit}' "$rendered")
[[ -n "$ns" ]] || { echo "rollout: no Namespace in overlay $overlay" >&2; exit 1; }
echo "rollout: overlay $overlay -> namespace $ns"

# 1. Namespace, ConfigMaps, Secrets, ServiceAccounts, NetworkPolicies. Generated
#    ConfigMaps/Secrets have new hashed names, so running pods are unaffected.
"${kc[@]}" apply -f "$rendered" -l 'app.kubernetes.io/component notin (server,migration,bootstrap)'

# 2-3. The Jobs, in the order Argo CD runs them as PreSync hooks (sync-wave -2
#    bootstrap: Postgres roles, RabbitMQ definitions; -1: migrations). A Job's pod
#    template is immutable, so the previous release's Jobs are deleted first (their
#    logs are gone with them: read them before).
run_jobs() {  # run_jobs COMPONENT: apply the Jobs labelled so and wait for each
  local component=$1 job done_ failed deadline
  "${kc[@]}" -n "$ns" delete job -l "app.kubernetes.io/component=$component" --ignore-not-found --wait=true
  "${kc[@]}" apply -f "$rendered" -l "app.kubernetes.io/component=$component"
  deadline=$((SECONDS + timeout_s))
  for job in $("${kc[@]}" -n "$ns" get job -l "app.kubernetes.io/component=$component" -o name); do
    while :; do
      done_=$("${kc[@]}" -n "$ns" get "$job" -o 'jsonpath={.status.conditions[?(@.type=="Complete")].status}')
      failed=$("${kc[@]}" -n "$ns" get "$job" -o 'jsonpath={.status.conditions[?(@.type=="Failed")].status}')
      if [[ "$done_" == "True" ]]; then
        echo "rollout: $job complete"
        break
      fi
      if [[ "$failed" == "True" || $SECONDS -ge $deadline ]]; then
        echo "rollout: $job failed or timed out; nothing was rolled out. Its log:" >&2
        "${kc[@]}" -n "$ns" logs "$job" --tail=200 >&2 || echo "rollout: (no log)" >&2
        exit 1
      fi
      sleep 3
    done
  done
}
run_jobs bootstrap
run_jobs migration

# 3. Services, Deployments (rolling, maxUnavailable 0), PDBs, the gateway HPA.
"${kc[@]}" apply -f "$rendered"
for deploy in khala-control khala-runtime khala-projector khala-gateway; do
  "${kc[@]}" -n "$ns" rollout status "deployment/$deploy" --timeout=15m
done
echo "rollout: done. Undo a bad release with docs/runbooks/rollback.md"
