#!/usr/bin/env bash
# Run e2e/scenario.sh on the local cluster of cluster/up.sh, with the chart
# pointed at the locally built images (explicit localhost/... names; nothing
# is re-tagged as an official image):
#   image               localhost/billing (tags v1.1 / v2.0 from values/task1|2.yaml)
#   postgresql.image    localhost/postgres:15-debian12
#   tests.image         localhost/curl:debian12
#   temporary pods      localhost/curl:debian12
#   Prometheus          localhost/prometheus:<version> (cmd/prometheus built by build.sh)
# and with the Prometheus Operator's ServiceMonitor CRD applied to the cluster
# (from the Go module github.com/prometheus-operator/prometheus-operator at
# PROMETHEUS_OPERATOR_VERSION), so the scenario checks the chart's
# ServiceMonitor against it (--require-servicemonitor).
#
#   cluster/e2e-local.sh [--up] [--down] [--ha] [scenario options...]
#     --up     start the cluster first (cluster/up.sh; builds on the first run)
#     --down   tear the cluster down afterwards, whatever the result
#     --ha     instead of the course scenario, the high-availability one (e2e/ha.sh): the CloudNativePG
#              operator built from its Go module (build.sh cnpg, images.sh cnpg) and installed
#              (cnpg/operator.sh), a task-1 release migrated into a CloudNativePG Cluster, two failovers
#              under load; then backups through CloudNativePG's Barman Cloud plugin (build.sh/images.sh
#              backup, cnpg/barman-cloud.sh) to versitygw (cnpg/object-store.sh), an operator's mistake and a
#              point-in-time recovery into a new release
# The billing images come from target/release/billing (BILLING_BINARY to
# override); cluster/images.sh billing re-imports them when the binary changed.
set -euo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
repo=$(cd "$here/.." && pwd)

do_up=0 do_down=0 do_ha=0 args=() steps_range=0
while (($#)); do
  case $1 in
    --up) do_up=1; shift ;;
    --down) do_down=1; shift ;;
    --ha) do_ha=1; shift ;;
    --) args+=("$@"); break ;;
    --from | --to | --only) steps_range=1; args+=("$1"); shift ;;   # some steps of the scenario only
    *) args+=("$1"); shift ;;
  esac
done
((steps_range && do_up)) && die "--from/--to/--only run steps on a cluster where the earlier ones already ran, not on one started for the run (--up)"

# With both --up and --down the run owns the cluster's whole life, and also checks that up.sh and down.sh
# touch only what they make (cluster/host-safety.sh): up.sh refuses to start beside another cluster's
# kubelet and chains; things of another program planted before up.sh survive down.sh; and after down.sh the
# host's iptables, nft tables, addresses, routes, links, mounts, cgroups, sysctls and processes are as before up.sh.
# HOST_SAFETY_CHECK=0 leaves the check out.
check_host=0
if ((do_up && do_down)) && [[ ${HOST_SAFETY_CHECK:-1} == 1 ]] && ! pid_alive kube-apiserver; then check_host=1; fi
host_before=$(mktemp) host_snapped=0
# shellcheck disable=SC2329 # run by the EXIT trap
teardown() {
  local rc=$?
  trap - EXIT
  if ((do_down)); then bash "$here/down.sh" || rc=1; fi
  if ((host_snapped)); then bash "$here/host-safety.sh" compare "$host_before" || rc=1; fi
  if ((check_host)); then bash "$here/host-safety.sh" unplant; fi
  rm -f "$host_before"
  exit "$rc"
}
trap teardown EXIT
# The host-safety checks use iptables and conntrack, which a fresh machine has only once up.sh's packages are in:
# install them first (what up.sh would do anyway), so the snapshot is taken of the host up.sh really starts on.
if ((do_up)) && [[ ${SKIP_DEPS:-} != 1 ]]; then bash "$here/install-deps.sh"; fi
if ((check_host)); then
  # An earlier run killed before its teardown (a CI job cancelled, a session ended) leaves our state and pid
  # directories; up.sh would tear them down itself, but only after the host was checked and photographed, so
  # the refusal check and the snapshot would see the leftovers (CI failed so once). Tear them down first.
  if [[ -e $STATE || -e $RUN || -n $(cluster_processes) ]]; then
    log "leftovers of an earlier run ($STATE, $RUN, or processes of the cluster): tearing them down (cluster/down.sh) before the host-safety checks"
    bash "$here/down.sh"
  fi
  # The same on purpose: a cluster killed with no teardown, then the leftover teardown above, which must leave the
  # host exactly as before the killed run. HOST_SAFETY_KILLED_RUN=0 leaves this part out (about a minute).
  if [[ ${HOST_SAFETY_KILLED_RUN:-1} == 1 ]]; then
    bash "$here/host-safety.sh" snapshot "$host_before"
    bash "$here/host-safety.sh" killed-run
    log "tearing down the killed run's leftovers (cluster/down.sh)"
    bash "$here/down.sh"
    bash "$here/host-safety.sh" compare "$host_before" --without-planted
  fi
  bash "$here/host-safety.sh" refusal
  bash "$here/host-safety.sh" plant
  bash "$here/host-safety.sh" snapshot "$host_before"
  host_snapped=1
fi
if ((do_up)); then bash "$here/up.sh" >/dev/null; fi
pid_alive kube-apiserver || die "the local cluster is not running: start it with cluster/up.sh (or pass --up)"

# billing images: rebuilt and re-imported when target/release/billing changed
bash "$here/images.sh" billing || die "no billing image: build target/release/billing first"
for t in $BILLING_TAGS; do
  if [[ $(cat "$IMAGES_DIR/billing.sum") != "$(cat "$STATE/billing-imported.sum" 2>/dev/null)" ]] \
     || ! ctr_ images ls -q | grep -qx "$IMG_BILLING_REPO:$t"; then
    ctr_ images import "$IMAGES_DIR/billing-$t.tar" >/dev/null
    log "imported $IMG_BILLING_REPO:$t"
    imported=1
  fi
done
if [[ ${imported:-0} == 1 ]]; then cp "$IMAGES_DIR/billing.sum" "$STATE/billing-imported.sum"; fi

# Prometheus: built and imported here too when the cluster was started before it was part of it
if ! ctr_ images ls -q | grep -qx "$IMG_PROMETHEUS"; then
  bash "$here/build.sh" prometheus
  bash "$here/images.sh" prometheus
  ctr_ images import "$IMAGES_DIR/prometheus.tar" >/dev/null
  log "imported $IMG_PROMETHEUS"
fi

# The ServiceMonitor CRD, from the operator's Go module (cached in Go's module cache)
crd=$(module_file "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml) || exit 1
kc apply --server-side --force-conflicts -f "$crd" >/dev/null
# Retried: a `kubectl wait` that runs before the API server has written the CRD's first status fails at once
# (".status.conditions accessor error") instead of waiting.
wait_for "ServiceMonitor CRD established" 60 \
  kc wait --for condition=established --timeout=2s crd/servicemonitors.monitoring.coreos.com \
  || die "the ServiceMonitor CRD is not established"
log "ServiceMonitor CRD of prometheus-operator $PROMETHEUS_OPERATOR_VERSION applied"

export KUBECONFIG=$KUBECONFIG_ADMIN
# diagnostics outside the cluster's state (down.sh deletes that), with the cluster's own logs on failure
user_artifacts=${E2E_ARTIFACTS:+1}
export E2E_ARTIFACTS=${E2E_ARTIFACTS:-${TMPDIR:-/tmp}/billing-e2e-local-$(date -u +%Y%m%dT%H%M%SZ)}
export KUBECTL=$K8S_BIN/kubectl
# The cluster is ours: the scenario runs in namespace `default`, as the course does (its literal names,
# billing-stateful-0.billing-stateful.default.svc.cluster.local, and commands without -n), unless told otherwise.
ns_args=(--namespace default)
for a in "${args[@]}"; do [[ $a == --namespace ]] && ns_args=(); done
# import_images ARCHIVE:REF...: each $IMAGES_DIR/ARCHIVE.tar into the node's containerd, unless REF is there
import_images() {
  local img
  for img in "$@"; do
    if ! ctr_ images ls -q | grep -qx "${img#*:}"; then
      ctr_ images import "$IMAGES_DIR/${img%%:*}.tar" >/dev/null
      log "imported ${img#*:}"
    fi
  done
}
rc=0
if ((do_ha)); then
  # Built and imported here, not by up.sh: only this scenario needs them.
  bash "$here/build.sh" cnpg
  bash "$here/images.sh" cnpg
  import_images cnpg-operator:"$IMG_CNPG" cnpg-postgresql:"$IMG_CNPG_POSTGRES"
  bash "$here/cnpg/operator.sh" install
  # Issue 23 §4: the Barman Cloud plugin and a real S3 server (versitygw) for backups and point-in-time recovery.
  bash "$here/build.sh" backup
  bash "$here/images.sh" backup
  import_images versitygw:"$IMG_VERSITYGW" barman-cloud:"$IMG_BARMAN_CLOUD"
  bash "$here/cnpg/barman-cloud.sh" install
  bash "$here/cnpg/object-store.sh" install
  "$repo/e2e/ha.sh" --kubectl "$KUBECTL" --helm "${HELM:-$repo/.tools/bin/helm3}" \
    --client-image "$IMG_CURL" --cnpg-postgres-image "$IMG_CNPG_POSTGRES" --backup --s3-secret s3/versitygw-root --s3-url "$(bash "$here/cnpg/object-store.sh" endpoint)" \
    --set "image.repository=$IMG_BILLING_REPO" \
    --set "postgresql.image.repository=${IMG_POSTGRES%:*}" --set "postgresql.image.tag=${IMG_POSTGRES##*:}" \
    --set "tests.image.repository=${IMG_CURL%:*}" --set "tests.image.tag=${IMG_CURL##*:}" \
    "${args[@]}" || rc=$?
else
  "$repo/e2e/scenario.sh" "${ns_args[@]}" \
    --client-image "$IMG_CURL" \
    --set "image.repository=$IMG_BILLING_REPO" \
    --set "postgresql.image.repository=${IMG_POSTGRES%:*}" --set "postgresql.image.tag=${IMG_POSTGRES##*:}" \
    --set "tests.image.repository=${IMG_CURL%:*}" --set "tests.image.tag=${IMG_CURL##*:}" \
    --prometheus-image "$IMG_PROMETHEUS" --require-servicemonitor \
    "${args[@]}" || rc=$?
  # Issue 11 §2: the chart against a PostgreSQL it does not make, over TLS verified with a CA from a ConfigMap.
  # (Not after a range of the scenario's steps: those run the course scenario only.)
  if ((rc == 0 && !steps_range)); then
    "$repo/e2e/external-db.sh" --kubectl "$KUBECTL" --helm "${HELM:-$repo/.tools/bin/helm3}" \
      --client-image "$IMG_CURL" --postgres-image "$IMG_POSTGRES" \
      --set "image.repository=$IMG_BILLING_REPO" || rc=$?
  fi
  # Issue 23 §4: a backup, the total loss of the bundled database, and the restore from the backup claim.
  if ((rc == 0 && !steps_range)); then
    "$repo/e2e/backup.sh" --kubectl "$KUBECTL" --helm "${HELM:-$repo/.tools/bin/helm3}" --client-image "$IMG_CURL" \
      --set "image.repository=$IMG_BILLING_REPO" \
      --set "postgresql.image.repository=${IMG_POSTGRES%:*}" --set "postgresql.image.tag=${IMG_POSTGRES##*:}" || rc=$?
  fi
fi
if ((rc != 0)); then
  mkdir -p "$E2E_ARTIFACTS/cluster"
  cp -r "$LOGS"/. "$E2E_ARTIFACTS/cluster/" 2>/dev/null || true
  kc get nodes,pods -A -o wide >"$E2E_ARTIFACTS/cluster/pods.txt" 2>&1 || true
  log "cluster logs saved under $E2E_ARTIFACTS/cluster"
fi
if ((rc == 0)) && [[ -z $user_artifacts ]]; then rm -rf "$E2E_ARTIFACTS"; fi
# the provisioner's directories of the release's claims in `default` once the claims are gone (the scenario
# deleted their Retained PVs; the data would otherwise be found again by the next run's claims of the same name)
for d in "$HOSTPATH_DIR"/default/billing-postgresql "$HOSTPATH_DIR"/default/billing-old-postgresql "$HOSTPATH_DIR"/default/log-billing-stateful-*; do
  [[ -d $d ]] || continue
  "$KUBECTL" -n default get pvc "$(basename "$d")" >/dev/null 2>&1 || rm -rf --one-file-system "$d"
done
# the provisioner's directories of namespaces that are gone (Retained volumes' data)
for d in "$HOSTPATH_DIR"/billing-e2e-*; do
  [[ -d $d ]] || continue
  "$KUBECTL" get namespace "$(basename "$d")" >/dev/null 2>&1 || rm -rf --one-file-system "$d"
done
exit "$rc"
