#!/usr/bin/env bash
# The high-availability scenario (issue 11 §3, §4) on the local cluster, from a fresh machine: builds billing,
# starts the local cluster (cluster/up.sh) unless it is already up, builds and installs the CloudNativePG operator
# from its Go module, migrates a task-1 release into a 3-instance CloudNativePG Cluster and fails its primary over
# twice under load, then archives it to an S3 server in the cluster through the Barman Cloud plugin and recovers a
# new release to the second before an operator's mistake (e2e/ha.sh --backup, which prints the figures), then
# tears down what it started. Run as root; CI runs
# it after the main job and the tests (.ci/run).
#
#   bash scripts/ha.sh [--clients N] [--seconds S] [--results DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> building billing (release)"
cargo build --release --locked -p billing
export BILLING_BINARY=${BILLING_BINARY:-${CARGO_TARGET_DIR:-$PWD/target}/release/billing}
[[ -x .tools/bin/helm3 ]] || bash scripts/install-tools.sh helm
if [[ -s /run/billing-cluster/pids/kube-apiserver.pid ]] && kill -0 "$(cat /run/billing-cluster/pids/kube-apiserver.pid)" 2>/dev/null; then
  echo "==> the HA scenario on the local cluster that is already up"
  exec bash cluster/e2e-local.sh --ha "$@"
fi
echo "==> the HA scenario: starting the local cluster, running it, tearing the cluster down"
exec bash cluster/e2e-local.sh --up --down --ha "$@"
