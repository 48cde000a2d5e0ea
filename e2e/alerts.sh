#!/usr/bin/env bash
# The chart's alerting rules (metrics.prometheusRule, issue 23 §3) in a real Prometheus: loads the rule groups
# rendered for the installed release into the e2e's Prometheus (e2e/prometheus.yaml, which the course scenario
# deploys in the release's namespace and which reads every rule file of the optional ConfigMap billing-rules),
# checks that every group loads and that BillingDown is quiet while billing runs, scales billing to 0 and waits
# for BillingDown to fire, then scales billing back and waits for the alert to resolve. At the end, also on
# failure, the ConfigMap is deleted and Prometheus restarted without rules, as the scenario left it.
#
#   e2e/alerts.sh --kubectl K --helm H --namespace NS [--release billing] [--python P]
#
# The release and the e2e Prometheus must be running in NS (the course scenario runs it as its last step). The
# rules are rendered with the release's own values plus metrics.prometheusRule.enabled=true, job=kubernetes-pods
# (the e2e Prometheus' annotation-based job) and downFor=20s (the test's patience, not a recommendation).
# --python: a Python 3 to read Prometheus' JSON answers (standard library only; default python3).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBECTL=kubectl HELM=helm NS="" RELEASE=billing PYTHON=python3
while (($#)); do
  case $1 in
    --kubectl) KUBECTL=$2; shift 2 ;;
    --helm) HELM=$2; shift 2 ;;
    --namespace) NS=$2; shift 2 ;;
    --release) RELEASE=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    *) echo "alerts: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $NS ]] || { echo "alerts: --namespace is required" >&2; exit 2; }
command -v "$PYTHON" >/dev/null || { echo "alerts: $PYTHON not found (pass --python)" >&2; exit 1; }

t0=$(date +%s)
say() { printf '[alerts %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }
k() { "$KUBECTL" -n "$NS" "$@"; }
work=$(mktemp -d)

# query_api PATH: GET Prometheus' HTTP API through the API server's service proxy; prints the JSON.
query_api() {
  "$KUBECTL" get --raw "/api/v1/namespaces/$NS/services/prometheus:9090/proxy$1"
}

# alert_state NAME: "firing", "pending" or "inactive", from /api/v1/alerts.
alert_state() {
  query_api /api/v1/alerts | "$PYTHON" -c '
import json, sys
alerts = [a for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"].get("alertname") == sys.argv[1]]
print(next((s for s in ("firing", "pending") if any(a["state"] == s for a in alerts)), "inactive"))' "$1"
}

# wait_for_alert NAME STATE SECONDS
wait_for_alert() {
  local name=$1 want=$2 deadline=$(($(date +%s) + $3)) state=""
  while (($(date +%s) < deadline)); do
    state=$(alert_state "$name") || state="(query failed)"
    [[ $state == "$want" ]] && return 0
    sleep 3
  done
  fail "$name is $state after $3 s, expected $want"
}

# restart_prometheus WHY: a new Prometheus pod, which reads billing-rules (or its absence) afresh.
restart_prometheus() {
  k rollout restart deployment/prometheus >/dev/null || fail "restart deployment/prometheus $1"
  k rollout status deployment/prometheus --timeout=180s >/dev/null || fail "deployment/prometheus not rolled out $1"
}

# restore_prometheus: no rules ConfigMap, and a Prometheus that has read none, as the scenario left it.
restore_prometheus() {
  ((rules_loaded)) || return 0
  rules_loaded=0
  k delete configmap billing-rules --ignore-not-found >/dev/null || say "could not delete ConfigMap billing-rules"
  if k rollout restart deployment/prometheus >/dev/null; then
    k rollout status deployment/prometheus --timeout=180s >/dev/null || say "deployment/prometheus not rolled out after the rules were removed"
  else
    say "could not restart deployment/prometheus after the rules were removed"
  fi
}

# The billing workload (Deployment or StatefulSet) and its replicas, to scale back to; whether the rules are in.
workload=""
replicas=""
rules_loaded=0
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    say "diagnostics:"
    k get pods -o wide 2>&1 | sed 's/^/  /' || true
    k logs deploy/prometheus --tail=30 2>&1 | sed 's/^/  prometheus: /' || true
  fi
  if [[ -n $workload && -n $replicas ]]; then
    k scale "$workload" --replicas="$replicas" >/dev/null 2>&1 || say "could not scale $workload back to $replicas"
  fi
  restore_prometheus
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# render_rules: the release's values plus the alerts, as a Prometheus rule file: the PrometheusRule's `spec`
# (`groups: [...]`, the format of Prometheus' rule_files), cut out of helm's output and moved 2 columns left. helm
# writes `spec:` at column 0 and everything under it indented, so no YAML parser is needed on the machine.
render_rules() {
  "$HELM" -n "$NS" get values "$RELEASE" -o yaml >"$work/values.yaml" || fail "helm get values $RELEASE"
  "$HELM" template "$RELEASE" "$repo/charts/billing" -n "$NS" -f "$work/values.yaml" \
    --set metrics.prometheusRule.enabled=true --set metrics.prometheusRule.job=kubernetes-pods \
    --set metrics.prometheusRule.alerts.downFor=20s --show-only templates/prometheusrule.yaml \
    --api-versions postgresql.cnpg.io/v1/Cluster >"$work/rendered.yaml" || fail "helm template with the alerts on"
  grep -q '^kind: PrometheusRule$' "$work/rendered.yaml" || fail "no PrometheusRule in the rendered chart"
  awk '/^spec:$/ { inside = 1; next } inside && /^[^ ]/ { inside = 0 } inside { print substr($0, 3) }' \
    "$work/rendered.yaml" >"$work/billing.rules.yaml"
  grep -q '^groups:$' "$work/billing.rules.yaml" || fail "the PrometheusRule's spec has no groups"
  say "rendered $(grep -c '^  - name:' "$work/billing.rules.yaml" || true) rule groups, $(grep -c ' alert:' "$work/billing.rules.yaml") alerts"
}

# load_rules: the rule file in ConfigMap billing-rules, which e2e/prometheus.yaml mounts (optional) and names in
# rule_files; a new Prometheus pod reads it.
load_rules() {
  k create configmap billing-rules --from-file=billing.rules.yaml="$work/billing.rules.yaml" >/dev/null \
    || fail "create ConfigMap billing-rules"
  rules_loaded=1
  restart_prometheus "with the rules"
  local deadline=$(($(date +%s) + 90)) groups=""
  while (($(date +%s) < deadline)); do
    groups=$(query_api /api/v1/rules 2>/dev/null | "$PYTHON" -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
bad = [r["name"] for g in groups for r in g["rules"] if r.get("health") not in ("ok", "unknown")]
if bad:
    sys.exit("unhealthy rules: " + ", ".join(bad))
print(" ".join(sorted(g["name"] for g in groups)))') || true
    [[ $groups == *billing.service* ]] && break
    sleep 3
  done
  [[ $groups == *billing.service* ]] || fail "Prometheus did not load the billing rule groups (got: '$groups')"
  say "Prometheus loaded the rule groups: $groups"
}

# check_down_alert: quiet while billing serves; firing once it is scaled to 0; resolved after scaling back.
check_down_alert() {
  workload=$(k get deployment,statefulset -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=api" -o name | head -n 1)
  [[ -n $workload ]] || fail "no billing Deployment or StatefulSet of release $RELEASE in $NS"
  replicas=$(k get "$workload" -o jsonpath='{.spec.replicas}')
  ((replicas > 0)) || fail "$workload has $replicas replicas; start it first"
  sleep 30 # a few evaluations with billing up
  [[ $(alert_state BillingDown) == inactive ]] || fail "BillingDown is $(alert_state BillingDown) while $workload runs $replicas pod(s)"
  say "BillingDown inactive while $workload runs $replicas pod(s)"
  k scale "$workload" --replicas=0 >/dev/null
  local scaled
  scaled=$(date +%s)
  wait_for_alert BillingDown firing 180
  say "BillingDown firing $(($(date +%s) - scaled)) s after scaling $workload to 0 (downFor 20s)"
  k scale "$workload" --replicas="$replicas" >/dev/null
  k rollout status "$workload" --timeout=180s >/dev/null || fail "$workload not back after scaling to $replicas"
  wait_for_alert BillingDown inactive 120
  say "BillingDown resolved with $workload back at $replicas pod(s)"
  workload="" replicas=""
}

render_rules
load_rules
check_down_alert
say "PASSED"
