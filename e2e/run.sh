#!/usr/bin/env bash
# Run the end-to-end scenario, by default on the local cluster of cluster/ (ours: the scenario runs there in
# namespace `default` with the course's literal names and commands):
#   1. the local cluster of cluster/ if it is already running;
#   2. a local cluster started for the run and torn down after it (cluster/e2e-local.sh --up --down),
#      where this machine can start one: root on Debian/Ubuntu with apt, Linux with cgroups and overlayfs;
#   3. the current kube context (kind, minikube, k3s, ...) ONLY when asked for: E2E_ALLOW_CONTEXT=1 or
#      E2E_TARGET=context. The scenario then installs the release "billing" in a namespace of its own
#      (billing-e2e-<random>) and a StorageClass, and deletes both afterwards; it never picks a context
#      by itself, so a laptop pointed at a shared cluster is not touched by surprise. Load billing:v1.1 and
#      billing:v2.0 into that cluster first (docs/local-cluster.md);
#   4. otherwise a message saying what it found and how to go on, and exit 2.
# E2E_TARGET=local|context forces a choice (context implies the opt-in). Helm comes from .tools/bin, installed
# here when missing (scripts/install-tools.sh helm). Other arguments go to e2e/scenario.sh, among them a range of
# its steps against a cluster that is already up: e2e/run.sh --from 5 (--to 7, --only 5; docs/local-cluster.md).
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

case $target in auto | local | context) ;; *) echo "e2e: E2E_TARGET must be auto, local or context, not '$target'" >&2; exit 2 ;; esac
# A range of steps (--from/--to/--only) runs against a cluster where the earlier steps already ran: never on a
# cluster started for the run.
steps_range=0
for a in "$@"; do
  [[ $a == -- ]] && break
  case $a in
    --from | --to | --only) steps_range=1 ;;
    --list | -h | --help) exec "$repo/e2e/scenario.sh" "$a" ;;   # nothing to run
  esac
done
allow_context=${E2E_ALLOW_CONTEXT:-0}
[[ $target == context ]] && allow_context=1

# The main job installs what it needs: Helm 3 and 4 into .tools/bin (seconds when present).
if [[ ! -x $repo/.tools/bin/helm3 ]]; then
  echo "e2e: installing helm into .tools/bin (scripts/install-tools.sh helm)"
  bash "$repo/scripts/install-tools.sh" helm
fi

if [[ $target != context ]] && local_running; then
  echo "e2e: running on the local cluster that is already up (cluster/up.sh)"
  exec "$repo/cluster/e2e-local.sh" "$@"
fi
if [[ $target != local ]] && ((allow_context)); then
  if context_answers; then
    echo "e2e: running on the current kube context ($(kubectl config current-context)), as asked (E2E_ALLOW_CONTEXT=1 / E2E_TARGET=context)"
    exec "$repo/e2e/scenario.sh" "$@"
  fi
  if [[ $target == context ]]; then
    echo "e2e: E2E_TARGET=context, but no cluster answers on the current kube context ($(kubectl config current-context 2>/dev/null || echo none))" >&2
    exit 2
  fi
fi
if ((steps_range)); then
  echo "e2e: --from/--to/--only run steps against a cluster where the earlier ones already ran, and no such cluster is up: start it (cluster/up.sh), then e2e/run.sh --to N, then e2e/run.sh --from N+1 (docs/local-cluster.md)" >&2
  exit 2
fi
if local_possible; then
  echo "e2e: starting the local cluster (cluster/up.sh), running the scenario on it, tearing it down (cluster/down.sh)"
  exec "$repo/cluster/e2e-local.sh" --up --down "$@"
fi
if [[ $target == local ]]; then
  echo "e2e: E2E_TARGET=local, but this machine cannot start the local cluster (it needs root, Linux with overlayfs and cgroups, apt and Go)" >&2
  exit 2
fi
if context_answers; then
  cat >&2 <<EOF
e2e: this machine cannot start the local cluster, and a cluster answers on the current kube context
"$(kubectl config current-context)". The scenario installs a release, a namespace and a StorageClass there,
so it runs on a kube context only when you ask for it. If that cluster is one you may use for this
(minikube, kind, your own), load the images (docs/local-cluster.md) and run:

  E2E_ALLOW_CONTEXT=1 e2e/run.sh
EOF
  exit 2
fi
cat >&2 <<'EOF'
e2e: this machine cannot start the local cluster (it needs root, Linux with overlayfs and cgroups, apt
and Go), and no cluster answers on the current kube context. Start one, then run this again:

  minikube start
  docker build -t billing:v1.1 . && docker build -t billing:v2.0 .
  minikube image load billing:v1.1 && minikube image load billing:v2.0
  E2E_ALLOW_CONTEXT=1 e2e/run.sh

or with kind:

  kind create cluster
  docker build -t billing:v1.1 . && docker build -t billing:v2.0 .
  kind load docker-image billing:v1.1 billing:v2.0
  E2E_ALLOW_CONTEXT=1 e2e/run.sh -- -f values/kind.yaml
EOF
exit 2
