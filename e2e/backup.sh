#!/usr/bin/env bash
# Issue 23 §4, bundled PostgreSQL: a backup, a total loss of the database, and the restore. billing (task 1
# values) with backup.enabled takes payments; a backup Job made from the chart's CronJob dumps them; a few more
# payments come after the dump; then the disaster: helm uninstall, the kept database claim, its Released
# volume, the data directory on the node and the kept Secrets are all deleted, only the kept backup claim
# remains. A new install with backup.restore.enabled must bring back every payment committed before the dump
# with the same id, client, amount and time (those after it are lost: that is the recovery point), serve
# /getall, and give new payments ids above the restored ones. Everything is made in a namespace of its own and
# removed afterwards, the volumes and their directories on the node included.
#
#   e2e/backup.sh --kubectl K --helm H --client-image IMG [--namespace NS] [--release R] [--set k=v ...]
#
# The --set values go to both helm installs (the local cluster's image names). The data directory is deleted
# on the node directly (the volume's hostPath), so this runs on the node of a one-node cluster with a hostPath
# provisioner: cluster/e2e-local.sh runs it after the course scenario.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBECTL=kubectl HELM=helm CLIENT_IMAGE="" NS="" RELEASE=billing-bk TIMEOUT=240 sets=()
while (($#)); do
  case $1 in
    --kubectl) KUBECTL=$2; shift 2 ;;
    --helm) HELM=$2; shift 2 ;;
    --client-image) CLIENT_IMAGE=$2; shift 2 ;;
    --namespace) NS=$2; shift 2 ;;
    --release) RELEASE=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "backup: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $CLIENT_IMAGE ]] || { echo "backup: --client-image is required" >&2; exit 2; }
command -v jq >/dev/null || { echo "backup: jq is required (Debian package jq)" >&2; exit 1; }
NS=${NS:-billing-backup-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}

t0=$(date +%s)
STEP=preflight
say() { printf '[backup %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
step() { STEP=$1; say "===== $1"; }
fail() { say "FAILED at step \"$STEP\": $*"; exit 1; }
k() { "$KUBECTL" -n "$NS" "$@"; }
h() { "$HELM" --namespace "$NS" "$@"; }
work=$(mktemp -d)

# The release's names, as the chart makes them (its fullname is the release name when that contains "billing").
case $RELEASE in *billing*) FULL=$RELEASE ;; *) FULL=$RELEASE-billing ;; esac
DB_CLAIM=$FULL-postgresql BACKUP_CLAIM=$FULL-backup CRONJOB=$FULL-backup

# PVs whose claim is (or was) in our namespace: Retained ones outlive the namespace
our_pvs() {
  "$KUBECTL" get pv -o go-template='{{range .items}}{{if .spec.claimRef}}{{if eq .spec.claimRef.namespace "'"$NS"'"}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}{{end}}'
}
# hostPath of a PV (the hostpath provisioner's directory of its claim)
pv_dir() { "$KUBECTL" get pv "$1" -o jsonpath='{.spec.hostPath.path}'; }

cleanup() {
  local rc=$? pvs pv dir
  set +e
  trap - EXIT
  if ((rc != 0)); then
    say "diagnostics:"
    k get all,pvc,jobs,cronjobs -o wide 2>&1 | sed 's/^/  /'
    k get events --sort-by=.lastTimestamp 2>&1 | tail -n 20 | sed 's/^/  event: /'
    k logs "deploy/$FULL-postgresql" --all-containers --tail=40 2>&1 | sed 's/^/  postgresql: /'
    k logs -l app.kubernetes.io/component=backup --tail=30 2>&1 | sed 's/^/  backup job: /'
    k logs "deploy/$FULL" --tail=20 2>&1 | sed 's/^/  billing: /'
  fi
  pvs=$(our_pvs)
  timeout 120 "$HELM" --namespace "$NS" uninstall "$RELEASE" --wait --timeout 90s >/dev/null 2>&1
  timeout 150 "$KUBECTL" delete namespace "$NS" --wait=true --timeout=140s >/dev/null 2>&1 || say "namespace $NS not gone in time"
  for pv in $pvs $(our_pvs); do
    dir=$(pv_dir "$pv" 2>/dev/null)
    timeout 60 "$KUBECTL" delete pv "$pv" --wait=true --timeout=50s >/dev/null 2>&1
    [[ -n $dir && -d $dir ]] && rm -rf --one-file-system "$dir"
  done
  timeout 60 "$KUBECTL" delete storageclass "$FULL-retain" --ignore-not-found >/dev/null 2>&1
  rm -rf "$work"
  say "cleaned up namespace $NS, its volumes and StorageClass $FULL-retain; total $(($(date +%s) - t0))s"
  exit "$rc"
}
trap cleanup EXIT

# in_cluster SCRIPT: runs SCRIPT (sh) in a temporary client pod; prints its stdout. The pod waits for a line
# on stdin first, so that nothing it prints is lost before kubectl has attached.
in_cluster() {
  local name
  name=backup-client-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  printf 'go\n' | timeout $((TIMEOUT + 60)) "$KUBECTL" -n "$NS" run "$name" --rm -i --quiet --restart=Never \
    --image="$CLIENT_IMAGE" --image-pull-policy=IfNotPresent --pod-running-timeout="${TIMEOUT}s" \
    --command -- sh -c "read -r go; $1"
}

# The dumps are taken on demand (a Job from the CronJob), so that the test knows which one is the newest: the
# schedule is set to one that cannot fire during a run (@yearly, at midnight of January 1).
install() { # install LABEL EXTRA_HELM_ARGS...
  local label=$1
  shift
  h install "$RELEASE" "$repo/charts/billing" -f "$repo/values/task1.yaml" "${sets[@]}" \
    --set backup.enabled=true --set backup.cronjob.schedule=@yearly "$@" --wait --timeout "${TIMEOUT}s" >"$work/install-$label.txt" 2>&1 \
    || { cat "$work/install-$label.txt"; fail "helm install ($label) did not become ready"; }
}

step_install() {
  step "1. helm install $RELEASE (task 1) with backup.enabled in namespace $NS"
  "$KUBECTL" create namespace "$NS" >/dev/null
  install first
  k get cronjob "$CRONJOB" >/dev/null || fail "no CronJob $CRONJOB"
  say "  ok: CronJob $CRONJOB (schedule $(k get cronjob "$CRONJOB" -o jsonpath='{.spec.schedule}')), claim $BACKUP_CLAIM $(k get pvc "$BACKUP_CLAIM" -o jsonpath='{.status.phase}')"
}

# pay PREFIX COUNT: COUNT payments from one client pod. The Service is first waited for with GET /ping (a new
# Service may not be routed for a few seconds); the payments themselves are never retried, so none can be made
# twice. Checks that each was answered 201.
pay() {
  local out
  out=$(in_cluster "curl -sS --max-time 5 --retry 30 --retry-delay 1 --retry-all-errors -o /dev/null http://$FULL:8080/ping || exit 1; i=1; while [ \$i -le $2 ]; do curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' -X POST \"http://$FULL:8080/add?client_id=$1-\$i&amount=\$((i * 100 + 7))\"; i=\$((i + 1)); done") \
    || fail "the client pod failed: $out"
  [[ $(grep -c '^201$' <<<"$out") == "$2" ]] || fail "not every POST /add answered 201: $(tr '\n' ' ' <<<"$out")"
}

# ledger FILE: every payment /getall returns, one "id client amount created_at" line each, sorted by id
ledger() {
  local body
  body=$(in_cluster "curl -fsS --max-time 30 --retry 20 --retry-delay 2 --retry-all-errors http://$FULL:8080/getall") \
    || fail "GET /getall failed: $body"
  jq -r '.[] | "\(.id) \(.client_id) \(.amount) \(.created_at)"' <<<"$body" | sort -n >"$1" || fail "/getall is not a JSON list: $(head -c 300 <<<"$body")"
}

step_payments_before() {
  step "2. payments before the backup"
  pay before 25
  ledger "$work/before.txt"
  [[ $(wc -l <"$work/before.txt") == 25 ]] || fail "/getall holds $(wc -l <"$work/before.txt") payments, 25 were made"
  say "  ok: 25 payments, ids $(head -1 "$work/before.txt" | cut -d' ' -f1)..$(tail -1 "$work/before.txt" | cut -d' ' -f1), e.g. $(head -1 "$work/before.txt")"
}

step_backup() {
  step "3. a backup: kubectl create job --from=cronjob/$CRONJOB"
  k create job "$FULL-backup-e2e" --from="cronjob/$CRONJOB" >/dev/null
  if ! k wait --for=condition=complete "job/$FULL-backup-e2e" --timeout="${TIMEOUT}s" >/dev/null; then
    k logs "job/$FULL-backup-e2e" 2>&1 | sed 's/^/  /'
    fail "the backup Job did not complete"
  fi
  k logs "job/$FULL-backup-e2e" | sed 's/^/  job: /'
  DUMP=$(k logs "job/$FULL-backup-e2e" | sed -n 's/.* backup: wrote \([^:]*\):.*/\1/p')
  [[ -n $DUMP ]] || fail "the backup Job's log names no dump it wrote"
  say "  ok: $DUMP on claim $BACKUP_CLAIM"
}

step_payments_after() {
  step "4. payments after the dump (committed, but after the recovery point: a restore of $DUMP cannot have them)"
  pay after 3
  ledger "$work/all.txt"
  grep ' after-' "$work/all.txt" >"$work/after.txt" || true
  [[ $(wc -l <"$work/after.txt") == 3 ]] || fail "the 3 payments after the dump are not in /getall"
  say "  ok: 3 more, ids $(cut -d' ' -f1 "$work/after.txt" | tr '\n' ' ')"
}

step_disaster() {
  local pv dir
  step "5. the disaster: helm uninstall, then the kept database claim, its volume, its data directory and the kept Secrets deleted"
  pv=$(k get pvc "$DB_CLAIM" -o jsonpath='{.spec.volumeName}')
  [[ -n $pv ]] || fail "claim $DB_CLAIM has no volume"
  dir=$(pv_dir "$pv")
  [[ -n $dir && -d $dir ]] || fail "volume $pv has no hostPath directory on this node ($dir): run this on the local cluster's node"
  h uninstall "$RELEASE" --wait --timeout "${TIMEOUT}s" >/dev/null || fail "helm uninstall"
  k delete pvc "$DB_CLAIM" --wait=true --timeout=120s >/dev/null || fail "deleting claim $DB_CLAIM"
  for _ in $(seq 60); do [[ $("$KUBECTL" get pv "$pv" -o jsonpath='{.status.phase}') == Released ]] && break; sleep 1; done
  say "  volume $pv: $("$KUBECTL" get pv "$pv" -o jsonpath='{.status.phase}') (Retain), data in $dir"
  "$KUBECTL" delete pv "$pv" --wait=true --timeout=60s >/dev/null || fail "deleting volume $pv"
  rm -rf --one-file-system "$dir"
  k delete secret "$FULL-postgresql" "$FULL-postgresql-superuser" --ignore-not-found >/dev/null
  [[ ! -e $dir ]] || fail "$dir is still there"
  k get pvc "$BACKUP_CLAIM" >/dev/null 2>&1 || fail "the backup claim $BACKUP_CLAIM did not survive helm uninstall"
  say "  ok: claim $DB_CLAIM, volume $pv, $dir and the database Secrets are gone; only claim $BACKUP_CLAIM is left ($(k get pvc -o name | tr '\n' ' '))"
}

step_restore() {
  local s
  step "6. helm install again with backup.restore.enabled (the newest dump)"
  s=$(date +%s)
  install restore --set backup.restore.enabled=true
  say "  installed and ready in $(($(date +%s) - s))s"
  k logs "deploy/$FULL-postgresql" -c restore-check | sed 's/^/  restore-check: /'
  k logs "deploy/$FULL-postgresql" -c postgresql | grep -E 'restore|application role' | sed 's/^/  postgresql: /'
  k logs "deploy/$FULL-postgresql" -c postgresql | grep -q "restore: restored $DUMP" || fail "PostgreSQL's log does not say it restored $DUMP"
}

step_verify() {
  local missing max next lost_max
  step "7. every payment committed before the dump is back, as it was"
  ledger "$work/restored.txt"
  missing=$(comm -23 <(sort "$work/before.txt") <(sort "$work/restored.txt"))
  [[ -z $missing ]] || fail "payments committed before the dump are missing or changed after the restore:"$'\n'"$missing"$'\n'"restored:"$'\n'"$(cat "$work/restored.txt")"
  cmp -s "$work/before.txt" "$work/restored.txt" || fail "the restored ledger holds payments it should not: $(comm -13 <(sort "$work/before.txt") <(sort "$work/restored.txt") | tr '\n' ';')"
  say "  ok: all $(wc -l <"$work/restored.txt") payments back with the same id, client, amount and created_at (first: $(head -1 "$work/restored.txt"), last: $(tail -1 "$work/restored.txt"))"
  say "  lost, as the recovery point says: the $(wc -l <"$work/after.txt") payments after the dump (ids $(cut -d' ' -f1 "$work/after.txt" | tr '\n' ' '))"
  step "8. billing serves and takes new payments above the restored ids"
  max=$(tail -1 "$work/restored.txt" | cut -d' ' -f1)
  pay new 1
  ledger "$work/new.txt"
  next=$(grep ' new-1 ' "$work/new.txt" | cut -d' ' -f1)
  [[ -n $next ]] || fail "the new payment is not in /getall"
  ((next > max)) || fail "the new payment got id $next, not above the restored $max: the sequence was not restored"
  # The lost payments' clients may hold their ids: none of them may go to a new payment (backup.restore.idGap).
  lost_max=$(tail -1 "$work/after.txt" | cut -d' ' -f1)
  ((next > lost_max)) || fail "the new payment got id $next, an id a lost payment had (up to $lost_max): backup.restore.idGap did not apply"
  say "  ok: new payment id $next > $max (the sequence was restored) and > $lost_max (no lost payment's id is given again); /getall serves $(wc -l <"$work/new.txt") payments"
}

step_install
step_payments_before
step_backup
step_payments_after
step_disaster
step_restore
step_verify
say "ALL BACKUP STEPS PASSED: dump $DUMP restored after a total loss of the database"
