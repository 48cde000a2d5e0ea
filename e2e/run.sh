#!/usr/bin/env bash
# Run the end-to-end scenario wherever it can run, in this order:
#   1. the local cluster of cluster/ if it is already running;
#   2. the current kube context, if a cluster answers there (kind, minikube, k3s, ...):
#      e2e/scenario.sh with the chart's default images (load billing:v1.1 and
#      billing:v2.0 into the cluster first; see docs/local-cluster.md);
#   3. a local cluster started for the run and torn down after it
#      (cluster/e2e-local.sh --up --down), where this machine can start one:
#      root on Debian/Ubuntu with apt, Linux with cgroups and overlayfs;
#   4. otherwise a message saying how to start minikube or kind, and exit 2.
# E2E_TARGET=context|local forces a choice. Other arguments go to e2e/scenario.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${E2E_TARGET:-auto}

context_answers() {
  command -v kubectl >/dev/null || return 1
  kubectl config current-context >/dev/null 2>&1 || return 1
  timeout 20 kubectl version --request-timeout=10s -o json 2>/dev/null | grep -q '"serverVersion"'
}
local_running() {
  [[ -s /run/billing-cluster/pids/kube-apiserver.pid ]] && kill -0 "$(cat /run/billing-cluster/pids/kube-apiserver.pid)" 2>/dev/null
}
local_possible() {
  [[ $(uname -s) == Linux && $(id -u) == 0 ]] || return 1
  command -v apt-get >/dev/null || return 1
  grep -qw overlay /proc/filesystems || return 1
  [[ -d /sys/fs/cgroup ]] || return 1
  command -v go >/dev/null || return 1
}

if [[ $target != context ]] && local_running; then
  echo "e2e: running on the local cluster that is already up (cluster/up.sh)"
  exec "$repo/cluster/e2e-local.sh" "$@"
fi
if [[ $target == context ]] || { [[ $target == auto ]] && context_answers; }; then
  echo "e2e: running on the current kube context ($(kubectl config current-context))"
  exec "$repo/e2e/scenario.sh" "$@"
fi
if local_possible; then
  echo "e2e: no cluster answers on the current kube context; starting the local cluster (cluster/up.sh),"
  echo "e2e: running the scenario on it, tearing it down (cluster/down.sh)"
  exec "$repo/cluster/e2e-local.sh" --up --down "$@"
fi
cat >&2 <<'EOF'
e2e: no Kubernetes cluster answers on the current kube context, and this machine cannot start the
local one (it needs root, Linux with overlayfs and cgroups, apt and Go). Start one, then run this again:

  minikube start
  docker build -t billing:v1.1 . && docker build -t billing:v2.0 .
  minikube image load billing:v1.1 && minikube image load billing:v2.0
  e2e/run.sh

or with kind:

  kind create cluster
  docker build -t billing:v1.1 . && docker build -t billing:v2.0 .
  kind load docker-image billing:v1.1 billing:v2.0
  e2e/run.sh -- -f values/kind.yaml
EOF
exit 2
