#!/usr/bin/env bash
# Install the CloudNativePG operator on the local cluster (the HA scenario, issue 11 §3), as its release manifest
# does on any cluster, with two changes only: the operator image is the local build (build.sh cnpg, images.sh
# cnpg) instead of ghcr.io's, pulled IfNotPresent (there is no registry here). The manifest is the one the
# module ships (releases/cnpg-<version>.yaml), from Go's module cache by exact version.
#
#   cluster/cnpg/operator.sh install    apply it, wait for the operator, and check its webhooks answer
#   cluster/cnpg/operator.sh manifest   print the manifest that install applies
#
# The webhooks are why the check is made early: every Cluster passes through them, and they are served by the
# operator's pod behind a Service, which the API server (a process on this host) must reach through kube-proxy's
# rules. If it cannot, creating a Cluster fails much later with "failed calling webhook"; here it fails at once,
# saying so.
set -euo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/common.sh"

manifest() {
  local file
  file=$(module_file "github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION" "releases/cnpg-${CNPG_VERSION#v}.yaml") || exit 1
  sed -e "s|ghcr.io/cloudnative-pg/cloudnative-pg:${CNPG_VERSION#v}|$IMG_CNPG|g" \
      -e 's|imagePullPolicy: Always|imagePullPolicy: IfNotPresent|' "$file"
}

install() {
  local work; work=$(mktemp -d)
  # shellcheck disable=SC2064 # expanded now, on purpose
  trap "rm -rf '$work'" RETURN
  manifest >"$work/cnpg.yaml"
  if grep -nE '^\s*(- )?image: ' "$work/cnpg.yaml" | grep -v "$IMG_CNPG"; then
    die "the CloudNativePG manifest names an image other than $IMG_CNPG (above): there is no registry to pull it from"
  fi
  kc apply --server-side --force-conflicts -f "$work/cnpg.yaml" >/dev/null
  wait_for "CloudNativePG CRDs established" 60 \
    kc wait --for condition=established --timeout=2s crd/clusters.postgresql.cnpg.io || die "the Cluster CRD is not established"
  kc -n cnpg-system rollout status deploy/cnpg-controller-manager --timeout=180s >/dev/null \
    || { kc -n cnpg-system logs deploy/cnpg-controller-manager --tail=30 >&2 || true; die "the CloudNativePG operator did not become ready"; }
  # A server-side dry run of a Cluster goes through the mutating and validating webhooks and stores nothing.
  cat >"$work/probe.yaml" <<EOF
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: webhook-probe, namespace: default}
spec: {instances: 1, imageName: "$IMG_CNPG_POSTGRES", storage: {size: 1Gi}}
EOF
  if ! wait_for "the API server reaches CloudNativePG's webhooks (Service cnpg-system/cnpg-webhook-service)" 60 \
      kc apply --dry-run=server -f "$work/probe.yaml"; then
    kc apply --dry-run=server -f "$work/probe.yaml" >&2 || true
    die "the API server cannot call CloudNativePG's webhooks through Service cnpg-system/cnpg-webhook-service (above)"
  fi
  log "CloudNativePG $CNPG_VERSION operator running ($IMG_CNPG)"
}

case ${1:-} in
  install) install ;;
  manifest) manifest ;;
  *) echo "usage: $0 install|manifest" >&2; exit 2 ;;
esac
