#!/usr/bin/env bash
# The main job: the course, end to end, on real Kubernetes (e2e/run.sh), from a fresh clone: it installs
# what it needs itself (Helm into .tools/bin; the local cluster's packages and builds):
#   - on a local single-node cluster started for the run and torn down after it, where this machine can
#     start one (root on Debian/Ubuntu; the first start builds Kubernetes from Go modules, ~22 min on 2 cores,
#     then cached under /var/cache/billing-cluster); the scenario runs in namespace `default` there, with the
#     course's names and commands;
#   - on the current kube context (minikube, kind, k3s, ...) only when asked: E2E_ALLOW_CONTEXT=1 (load the
#     images billing:v1.1 and billing:v2.0 into it first, see docs/walkthrough.en.md);
#   - otherwise it says how to go on, and exits 2.
# Without Kubernetes at all: scripts/demo-local.sh runs billing against a throwaway local PostgreSQL.
# Arguments go to e2e/scenario.sh (e.g. --keep-namespace).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The local cluster's billing image is made from this binary (the same one the Dockerfile builds).
echo "==> building billing (release)"
cargo build --release --locked -p billing
# CARGO_TARGET_DIR moves the binary; the local cluster's image builder is told where it is.
export BILLING_BINARY=${BILLING_BINARY:-${CARGO_TARGET_DIR:-$PWD/target}/release/billing}
exec bash e2e/run.sh "$@"
