#!/usr/bin/env bash
# Every static check of the Helm chart and of the files around it, with the
# pinned tools of scripts/install-tools.sh (installed first; a warm run of it
# takes seconds). Prints each command it runs and stops at the first failure.
#
#   scripts/check-chart.sh
#
#  - helm lint --strict: default, task1 and task2 values, both tasks with the
#    ServiceMonitor, the dashboard and the PrometheusRule on, and task1 with
#    backups, Helm 3 and Helm 4
#  - helm template of default/task1/task2/kind, of both tasks with every
#    metrics object on, of values/ha.yaml (also with the metrics objects on),
#    of task 1's migration to it and of values/ha.yaml with values/ha-backup.yaml
#    (Helm 3 and Helm 4; CloudNativePG mode is told the Cluster CRD (and the
#    plugin's ObjectStore) is there, which helm lint cannot be, so lint skips
#    those) and of every
#    combination of the chart's six switches (Helm 3), validated by
#    kubernetes-validate --strict
#    against the oldest and newest supported Kubernetes (it knows no CRDs and
#    warns about the ServiceMonitor, the Cluster, the ScheduledBackup and the
#    ObjectStore: tests/chart/test_servicemonitor_crd.py, test_cnpg.py and
#    test_cnpg_backup.py check those against their operators' CRD schemas)
#  - promtool check rules on the rule groups of every rendered PrometheusRule
#    (tests/chart/test_prometheusrule.py unit-tests them with promtool test rules)
#  - checkov over the rendered manifests (skips: tests/chart/checkov.yaml)
#  - hadolint on the Dockerfile
#  - yamllint on the values files, the checkov settings, e2e/prometheus.yaml and
#    the workflows
#  - shellcheck on every shell script in the repository
#  - actionlint and zizmor on .github/workflows
#  - the debug build of billing and billing-tempdb (cargo) and Debian's
#    PostgreSQL, which tests/chart/test_dashboard.py runs to scrape the real
#    /metrics; Go builds its PromQL parser and fetches the ServiceMonitor CRD
#  - the chart unit suite, tests/chart (pytest), last, so that its summary
#    line closes the output
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Oldest and newest Kubernetes the chart supports; the oldest must match
# kubeVersion in charts/billing/Chart.yaml (a unit test checks the floor).
KUBE_OLDEST=1.27.0
KUBE_NEWEST=1.37.0

CHART=charts/billing
TOOLS=$ROOT/.tools
BIN=$TOOLS/bin
VENV_BIN=$TOOLS/venv/bin

step=0
section() { step=$((step + 1)); printf '\n[check-chart] %d. %s (at %ds)\n' "$step" "$*" "$SECONDS"; }
run() {
    printf '[check-chart] $ %s\n' "$*"
    "$@" || die "exit status $? from: $*"
}
die() { printf '[check-chart] FAILED: %s\n' "$*" >&2; exit 1; }

section "tools (scripts/install-tools.sh)"
run bash scripts/install-tools.sh
# Only the pinned tools: no helm, yamllint or shellcheck that happens to be on
# the machine. actionlint looks for shellcheck on PATH for `run:` blocks.
export PATH="$BIN:$VENV_BIN:$PATH"
export PYTHONDONTWRITEBYTECODE=1
for tool in helm3 helm4 actionlint promtool; do
    [ -x "$BIN/$tool" ] || die "$BIN/$tool is missing after install-tools.sh"
done
for tool in kubernetes-validate checkov hadolint yamllint shellcheck zizmor pytest; do
    [ -x "$VENV_BIN/$tool" ] || die "$VENV_BIN/$tool is missing after install-tools.sh"
done
# The metrics checks need Go (the PromQL parser, the CRD module) and cargo (billing itself).
command -v go >/dev/null || die "go is not on PATH: tests/chart builds its PromQL parser and fetches the ServiceMonitor CRD with Go"
command -v cargo >/dev/null || die "cargo is not on PATH: tests/chart/test_dashboard.py scrapes the real billing binary"
METRICS_ON=(--set metrics.serviceMonitor.enabled=true --set metrics.dashboard.enabled=true --set metrics.prometheusRule.enabled=true)
# CloudNativePG mode renders only where the operator's CRD is served.
CNPG_API=(--api-versions postgresql.cnpg.io/v1/Cluster)
CNPG_MIGRATION=(--set database.cnpg.enabled=true --set database.cnpg.import.enabled=true)
# values/ha-backup.yaml archives through the Barman Cloud plugin, whose ObjectStore CRD helm must be told of too.
BARMAN_API=(--api-versions postgresql.cnpg.io/v1/ScheduledBackup --api-versions barmancloud.cnpg.io/v1/ObjectStore)
# Backups of the bundled PostgreSQL, with the restore on a fresh install.
BACKUP_ON=(--set backup.enabled=true --set backup.restore.enabled=true)
# Helm must not see a cluster or the user's Helm settings while checking.
HELM_HOME=$(mktemp -d)
RENDERED=$(mktemp -d)
trap 'rm -rf "$HELM_HOME" "$RENDERED"' EXIT
export KUBECONFIG=/dev/null
export HELM_CACHE_HOME=$HELM_HOME/cache HELM_CONFIG_HOME=$HELM_HOME/config HELM_DATA_HOME=$HELM_HOME/data

section "helm lint --strict"
for helm in helm3 helm4; do
    run "$helm" lint --strict "$CHART"
    run "$helm" lint --strict "$CHART" -f values/task1.yaml
    run "$helm" lint --strict "$CHART" -f values/task2.yaml
    run "$helm" lint --strict "$CHART" -f values/task1.yaml "${METRICS_ON[@]}"
    run "$helm" lint --strict "$CHART" -f values/task2.yaml "${METRICS_ON[@]}"
    run "$helm" lint --strict "$CHART" -f values/task1.yaml "${BACKUP_ON[@]}"
done

section "helm template of every values combination"
# Rendered in a namespace of their own: the chart puts objects in the
# release's namespace, and checkov flags "default".
NS=billing-check
render() { # render HELM NAME ARGS...
    local helm=$1 name=$2
    shift 2
    "$helm" template billing "$CHART" --namespace "$NS" "$@" >"$RENDERED/$helm-$name.yaml" \
        || die "$helm template $* failed"
}
count=0
for helm in helm3 helm4; do
    printf '[check-chart] $ %s template billing %s -f values/... (default, task1, task2, task2+kind, task1/task2/ha + metrics objects, ha, task1 + migration to CloudNativePG, ha + backups, task1/task2 + backup and restore)\n' "$helm" "$CHART"
    render "$helm" default
    render "$helm" task1 -f values/task1.yaml
    render "$helm" task2 -f values/task2.yaml
    render "$helm" task2-kind -f values/task2.yaml -f values/kind.yaml
    render "$helm" task1-metrics -f values/task1.yaml "${METRICS_ON[@]}"
    render "$helm" task2-metrics -f values/task2.yaml "${METRICS_ON[@]}"
    render "$helm" ha -f values/ha.yaml "${CNPG_API[@]}"
    render "$helm" ha-metrics -f values/ha.yaml "${CNPG_API[@]}" "${METRICS_ON[@]}"
    render "$helm" task1-migration -f values/task1.yaml "${CNPG_API[@]}" "${CNPG_MIGRATION[@]}"
    render "$helm" ha-backup -f values/ha.yaml -f values/ha-backup.yaml "${CNPG_API[@]}" "${BARMAN_API[@]}"
    render "$helm" task1-backup -f values/task1.yaml "${BACKUP_ON[@]}"
    render "$helm" task2-backup -f values/task2.yaml "${BACKUP_ON[@]}"
    count=$((count + 12))
done
# The combinations with Helm 3 only: tests/chart/test_helms.py checks that
# Helm 3 and Helm 4 render the same objects.
printf '[check-chart] $ helm3 template billing %s --set <each combination of 6 switches> (64 renders)\n' "$CHART"
for kind in Deployment StatefulSet; do
    for pg in true false; do
        for sc in true false; do
            for np in true false; do
                for logs in true false; do
                    for svc in true false; do
                        args=(--set "workload.kind=$kind" --set "postgresql.enabled=$pg"
                            --set "storageClass.create=$sc" --set "networkPolicy.enabled=$np"
                            --set "logs.enabled=$logs" --set "service.enabled=$svc")
                        if [ "$pg" = false ]; then
                            args+=(--set externalDatabase.url=postgres://billing@db.example.com:5432/billing
                                --set externalDatabase.existingSecret=billing-db)
                        fi
                        render helm3 "combo-$kind-pg$pg-sc$sc-np$np-logs$logs-svc$svc" "${args[@]}"
                        count=$((count + 1))
                    done
                done
            done
        done
    done
done
echo "[check-chart] rendered $count manifests"

section "kubernetes-validate --strict (Kubernetes $KUBE_OLDEST and $KUBE_NEWEST)"
for version in "$KUBE_OLDEST" "$KUBE_NEWEST"; do
    printf '[check-chart] $ kubernetes-validate --strict --quiet -k %s <%d rendered manifests>\n' "$version" "$count"
    kubernetes-validate --strict --quiet -k "$version" "$RENDERED"/*.yaml \
        || die "kubernetes-validate found invalid objects for Kubernetes $version"
done

section "promtool check rules (the PrometheusRule's groups as a rule file)"
mkdir -p "$RENDERED/rules"
rule_files=0
for rendered in "$RENDERED"/helm*-*metrics.yaml; do
    rules=$RENDERED/rules/$(basename "$rendered")
    printf '[check-chart] $ python tests/chart/promtool/rule_file.py %s >%s\n' "$rendered" "$rules"
    python tests/chart/promtool/rule_file.py "$rendered" >"$rules" || die "no rule file from $rendered"
    run promtool check rules "$rules"
    rule_files=$((rule_files + 1))
done
[ "$rule_files" -ge 6 ] || die "only $rule_files renders with a PrometheusRule were checked (expected task1, task2 and ha with each Helm)"

section "checkov (skips and their reasons: tests/chart/checkov.yaml and checkov.io/skip annotations)"
# Once over the Helm 3 renders: Helm 4 renders the same objects (the unit
# suite compares them), and checkov's start-up dominates its run time.
mkdir -p "$RENDERED/checkov"
cp "$RENDERED"/helm3-*.yaml "$RENDERED/checkov/"
run checkov --config-file tests/chart/checkov.yaml -d "$RENDERED/checkov"

section "hadolint"
[ -f Dockerfile ] || die "Dockerfile not found at the repository root"
run hadolint Dockerfile

section "yamllint"
mapfile -t yaml_files < <(git ls-files -co --exclude-standard -- 'values/*.yaml' "$CHART/values.yaml" "$CHART/Chart.yaml" \
    'tests/chart/*.yaml' 'e2e/*.yaml' '.github/workflows/*.yml' '.github/workflows/*.yaml' | sort -u)
run yamllint --strict "${yaml_files[@]}"

section "shellcheck"
mapfile -t shell_files < <(
    git ls-files -co --exclude-standard -- '*.sh' '.ci/run' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done
)
run shellcheck --external-sources "${shell_files[@]}"

section "actionlint and zizmor"
run actionlint -no-color
# --offline: no GitHub API calls (no network here); the audits that need it are skipped.
run zizmor --offline --no-progress .github/workflows

section "billing binaries and PostgreSQL for the dashboard's metric-name check"
run bash scripts/install-postgres.sh
run cargo build --locked -p billing -p billing-testkit --bins

section "chart unit suite (pytest)"
run pytest -p no:cacheprovider -q tests/chart
