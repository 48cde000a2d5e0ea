#!/usr/bin/env bash
# The main job: the course, end to end, on real Kubernetes (e2e/run.sh):
#   - on the current kube context if a cluster answers there (minikube, kind, k3s, ...; load the images
#     billing:v1.1 and billing:v2.0 into it first, see docs/walkthrough.en.md);
#   - otherwise on a local single-node cluster started for the run and torn down after it, where this machine can
#     start one (root on Debian/Ubuntu; the first start builds Kubernetes from Go modules, ~22 min on 2 cores, then
#     cached under /var/cache/billing-cluster);
#   - otherwise it says how to start minikube or kind, and exits 2.
# Without Kubernetes at all: scripts/demo-local.sh runs billing against a throwaway local PostgreSQL.
# Arguments go to e2e/scenario.sh (e.g. --keep-namespace).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The local cluster's billing image is made from this binary (the same one the Dockerfile builds).
echo "==> building billing (release)"
cargo build --release --locked -p billing
exec bash e2e/run.sh "$@"
