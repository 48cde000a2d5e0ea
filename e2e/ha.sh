#!/usr/bin/env bash
# The chart's CloudNativePG mode (issue 11 §3, §4) on a real cluster whose CloudNativePG operator is installed
# (cluster/cnpg/operator.sh install on the local one):
#   1. a task-1 release on the bundled PostgreSQL takes payments;
#   2. it is migrated into a 3-instance CloudNativePG Cluster with synchronous replication, the way
#      docs/operations.md says (writes stopped, the Cluster imports the bundled database at bootstrap, billing
#      switches to <cluster>-rw over verify-full TLS), and every payment made before is there;
#   3. the bundled PostgreSQL is removed (postgresql.enabled=false), and `helm test` passes against the Cluster;
#   4. failover, twice, under load: CLIENTS clients send POST /add for SECONDS, each payment with its own
#      Idempotency-Key and retried with it until a 201 (e2e/ha_load.py); mid-load the primary's pod is deleted
#      (run "pod"), then its postmaster is killed with SIGKILL (run "process"). Each run reports the payments
#      acknowledged, duplicated, lost and unresolved (all but the first must be 0), the answers in doubt (503 "may
#      or may not be recorded") on the way, the seconds from the kill to the first 201 of a payment sent after it,
#      and that no billing pod restarted.
#   5. with --backup (issue 23 §4): continuous backups and point-in-time recovery, on a real S3 server in the
#      cluster (cluster/cnpg/object-store.sh on the local one) through the Barman Cloud plugin
#      (cluster/cnpg/barman-cloud.sh): the release is upgraded with values/ha-backup.yaml under payment load,
#      until WAL archiving works and the first base backup has completed; then, under load again, an "operator
#      mistake" deletes every payment at time T (replicated at once to every standby); a new release
#      recovers a new Cluster from the object store to the second before T. Every payment acknowledged before
#      that second must be there once, under the id it was acknowledged with, and nothing newer; it reports
#      the RPO at T (the age of the newest archived WAL segment when the mistake was made: what a lost cluster
#      would have lost) and the seconds from `helm install` of the recovery to its first 201.
# Everything is made in a namespace of its own and removed afterwards (with the volumes it made).
#
#   e2e/ha.sh --kubectl K --helm H --client-image IMG --cnpg-postgres-image IMG [--clients N] [--seconds S]
#             [--results DIR] [--backup --s3-secret NAMESPACE/NAME --s3-url URL] [--set k=v ...]
#
# --s3-secret names the Secret holding the object store's key pair (keys ACCESS_KEY_ID and SECRET_ACCESS_KEY, as
# cluster/cnpg/object-store.sh makes s3/versitygw-root); it is copied into the scenario's namespace. --s3-url is
# the same object store as this host reaches it (the bucket is listed to see the archive really there).
#
# The --set values go to every helm install/upgrade (the local cluster's image names). The load runs on this
# host against the billing Service's cluster IP, so the host must reach Service IPs (it does on the local
# cluster, whose kube-proxy runs on the host).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBECTL=kubectl HELM=helm CLIENT_IMAGE="" CNPG_PG_IMAGE="" CLIENTS=32 SECONDS_LOAD=45 RESULTS="" sets=()
BACKUP=0 S3_SECRET="" S3_URL="" S3_ID="" S3_KEY=""
while (($#)); do
  case $1 in
    --kubectl) KUBECTL=$2; shift 2 ;;
    --helm) HELM=$2; shift 2 ;;
    --client-image) CLIENT_IMAGE=$2; shift 2 ;;
    --cnpg-postgres-image) CNPG_PG_IMAGE=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECONDS_LOAD=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --backup) BACKUP=1; shift ;;
    --s3-secret) S3_SECRET=$2; shift 2 ;;
    --s3-url) S3_URL=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "ha: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $CLIENT_IMAGE && -n $CNPG_PG_IMAGE ]] || { echo "ha: --client-image and --cnpg-postgres-image are required" >&2; exit 2; }
((!BACKUP)) || [[ $S3_SECRET == */* && -n $S3_URL ]] || { echo "ha: --backup needs --s3-secret NAMESPACE/NAME and --s3-url URL" >&2; exit 2; }
command -v python3 >/dev/null || { echo "ha: python3 is required" >&2; exit 1; }

t0=$(date +%s)
say() { printf '[ha %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }
NS=billing-e2e-ha-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
RELEASE=billing
CLUSTER=$RELEASE-db
PITR_RELEASE=billing-pitr
work=$(mktemp -d)
RESULTS=${RESULTS:-$work/results}
mkdir -p "$RESULTS"
k() { "$KUBECTL" -n "$NS" "$@"; }
cleanup() {
  local rc=$?
  # a load generator still running (this script failed while it ran): stopped by its PID
  local job
  for job in $(jobs -p); do kill "$job" 2>/dev/null || true; done
  if ((rc != 0)); then
    say "diagnostics:"
    k get cluster,pods,pvc -o wide 2>&1 | sed 's/^/  /' || true
    k get events --sort-by=.lastTimestamp 2>&1 | tail -25 | sed 's/^/  event: /' || true
    k logs -l "app.kubernetes.io/name=billing,app.kubernetes.io/instance=$RELEASE" --all-containers --tail=20 2>&1 \
      | sed 's/^/  billing: /' || true
    k logs -l "cnpg.io/cluster=$CLUSTER" -c postgres --tail=15 2>&1 | sed 's/^/  cnpg: /' || true
    "$KUBECTL" -n cnpg-system logs deploy/cnpg-controller-manager --tail=25 2>&1 | sed 's/^/  operator: /' || true
    if ((BACKUP)); then
      k get backups.postgresql.cnpg.io,scheduledbackups.postgresql.cnpg.io,objectstores.barmancloud.cnpg.io 2>&1 | sed 's/^/  /' || true
      k logs -l "cnpg.io/cluster" -c plugin-barman-cloud --tail=15 2>&1 | sed 's/^/  sidecar: /' || true
      "$KUBECTL" -n cnpg-system logs deploy/barman-cloud --tail=15 2>&1 | sed 's/^/  plugin: /' || true
    fi
  fi
  timeout 120 "$HELM" --namespace "$NS" uninstall "$RELEASE" --wait --timeout 90s >/dev/null 2>&1 || true
  timeout 120 "$HELM" --namespace "$NS" uninstall "$PITR_RELEASE" --wait --timeout 90s >/dev/null 2>&1 || true
  timeout 60 "$KUBECTL" -n "$NS" delete cluster --all --wait=true --timeout=50s >/dev/null 2>&1 || true
  # The bundled PostgreSQL's claim is kept by Helm (resource-policy keep): deleted here, not left to the
  # namespace (once seen to stay there, Bound, holding the namespace in Terminating).
  timeout 60 "$KUBECTL" -n "$NS" delete pvc --all --wait=true --timeout=50s >/dev/null 2>&1 || true
  timeout 150 "$KUBECTL" delete namespace "$NS" --wait=true --timeout=140s >/dev/null 2>&1 || say "namespace $NS not gone in time"
  # Retained volumes of this namespace's claims (the chart's StorageClass keeps them): ours, so removed.
  local pv
  for pv in $("$KUBECTL" get pv -o jsonpath="{range .items[?(@.spec.claimRef.namespace==\"$NS\")]}{.metadata.name}{\"\\n\"}{end}" 2>/dev/null); do
    timeout 60 "$KUBECTL" delete pv "$pv" --wait=true --timeout=50s >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

"$KUBECTL" get crd clusters.postgresql.cnpg.io >/dev/null 2>&1 \
  || fail "the CloudNativePG operator is not installed (on the local cluster: cluster/cnpg/operator.sh install)"
"$KUBECTL" create namespace "$NS" >/dev/null
chart=("$repo/charts/billing" -f "$repo/values/task1.yaml" "${sets[@]}")
cnpg=(--set database.cnpg.enabled=true --set "database.cnpg.imageName=$CNPG_PG_IMAGE")

# ------------------------------------------------------------------------------------------ payments to migrate
svc_url() { echo "http://$(k get svc "$RELEASE" -o jsonpath='{.spec.clusterIP}'):8080"; }
say "helm install $RELEASE (task 1: bundled PostgreSQL) in namespace $NS"
"$HELM" --namespace "$NS" install "$RELEASE" "${chart[@]}" --wait --timeout 240s >/dev/null \
  || fail "the task-1 release did not become ready"
url=$(svc_url)
# kube-proxy programs a new Service within a second or two; a refused connection sent nothing, so it is retried.
curl -sS -f --max-time 5 --retry 20 --retry-delay 1 --retry-connrefused "$url/ping" >/dev/null \
  || fail "this host cannot reach the billing Service at $url"
# the 20 payments, "<id> <client_id> <amount>" of each as billing acknowledged it
: >"$work/sent.txt"
for i in $(seq 1 20); do
  answer=$(curl -sS -f --max-time 10 -X POST "$url/add?client_id=before-migration-$i&amount=$i" 2>&1) \
    || fail "payment $i on the bundled PostgreSQL failed: $answer"
  [[ $answer =~ ^Transaction\ added\.\ transaction\ id=([0-9]+)$ ]] || fail "payment $i: unexpected answer: $answer"
  echo "${BASH_REMATCH[1]} before-migration-$i $i" >>"$work/sent.txt"
done
curl -sS -f --max-time 10 "$url/getall?limit=1000" >"$work/before.json" || fail "GET /getall failed"
# The ledger before the migration is exactly the 20 payments acknowledged (a fresh namespace): the migration is then
# checked against what was sent, not against the service's own answer alone.
python3 - "$work/sent.txt" "$work/before.json" <<'EOF' || fail "the bundled PostgreSQL's ledger is not the 20 payments sent"
import json, sys
sent = sorted((int(i), c, int(a)) for i, c, a in (line.split() for line in open(sys.argv[1]) if line.strip()))
have = sorted((r["id"], r["client_id"], r["amount"]) for r in json.load(open(sys.argv[2])))
if sent != have:
    print(f"  sent {len(sent)}, the ledger has {len(have)}; not in the ledger: {sorted(set(sent) - set(have))[:5]}, "
          f"not sent: {sorted(set(have) - set(sent))[:5]}")
    sys.exit(1)
EOF
before=$(wc -l <"$work/sent.txt")
say "  ok: the $before payments sent are the bundled PostgreSQL's ledger, same id, client and amount"

# ------------------------------------------------------------------------------------------ migration
say "migration: writes stopped (billing scaled to 0), then the CloudNativePG Cluster imports the bundled database"
k scale deployment "$RELEASE" --replicas=0 >/dev/null
k wait --for=delete pod -l "app.kubernetes.io/name=billing,app.kubernetes.io/instance=$RELEASE" --timeout=90s >/dev/null 2>&1 \
  || fail "billing's pods did not stop"
m0=$(date +%s)
"$HELM" --namespace "$NS" upgrade "$RELEASE" "${chart[@]}" "${cnpg[@]}" --set database.cnpg.import.enabled=true \
  --timeout 60s >/dev/null || fail "helm upgrade to the CloudNativePG mode (import from the bundled PostgreSQL) failed"
k wait "cluster/$CLUSTER" --for=condition=Ready --timeout=600s >/dev/null \
  || fail "the CloudNativePG Cluster $CLUSTER did not become ready within 600 s"
k rollout status deployment "$RELEASE" --timeout=180s >/dev/null || fail "billing did not become ready on the Cluster"
say "  ok: Cluster $CLUSTER ready with $(k get "cluster/$CLUSTER" -o jsonpath='{.status.readyInstances}') instances, billing on it, $(($(date +%s) - m0)) s after the upgrade"
url=$(svc_url)
curl -sS -f --max-time 10 --retry 10 --retry-delay 1 --retry-connrefused "$url/getall?limit=1000" >"$work/after.json" \
  || fail "GET /getall on the Cluster failed"
python3 - "$work/before.json" "$work/after.json" <<'EOF' || fail "the migrated ledger differs from the 20 payments sent"
import json, sys
key = lambda r: (r["id"], r["client_id"], r["amount"])
before = sorted(map(key, json.load(open(sys.argv[1]))))
after = sorted(map(key, json.load(open(sys.argv[2]))))
missing = sorted(set(before) - set(after))
if missing or len(before) != len(after):
    print(f"  {len(missing)} of {len(before)} payments missing, {len(after)} rows after: {missing[:5]}")
    sys.exit(1)
print(f"  every one of the {len(before)} payments is in the Cluster, same id, client and amount")
EOF
primary=$(k get "cluster/$CLUSTER" -o jsonpath='{.status.currentPrimary}')
psql_on() { # pod SQL
  k exec "$1" -c postgres -- psql -X -q -d billing -At -c "$2"
}
tls=$(psql_on "$primary" "SELECT string_agg(DISTINCT s.ssl::text, ',') || ' ' || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'billing'")
[[ ${tls% *} == true ]] || fail "billing has connections to the Cluster without TLS, or none: $tls"
say "  ok: billing's ${tls#* } connections to $primary are TLS (verify-full, the Cluster's CA)"
sync=$(psql_on "$primary" "SELECT current_setting('synchronous_standby_names') || ' / ' || count(*) FILTER (WHERE sync_state IN ('sync','quorum')) FROM pg_stat_replication")
say "  synchronous_standby_names / standbys confirming commits: $sync"
[[ ${sync##* / } -ge 1 ]] || fail "no synchronous standby confirms commits: $sync"

say "the bundled PostgreSQL removed (postgresql.enabled=false)"
"$HELM" --namespace "$NS" upgrade "$RELEASE" "${chart[@]}" "${cnpg[@]}" \
  --set postgresql.enabled=false --wait --timeout 180s >/dev/null || fail "helm upgrade without the bundled PostgreSQL failed"
left=$(k get deployment -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=database" -o name)
[[ -z $left ]] || fail "the bundled PostgreSQL is still there: $left"
url=$(svc_url)
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' --retry 10 --retry-delay 1 --retry-connrefused -X POST "$url/add?client_id=after-migration&amount=1") || code=000
[[ $code == 201 ]] || fail "a payment after the bundled PostgreSQL was removed answered $code"
say "  ok: gone; billing keeps taking payments on the Cluster"
# Without --logs: Helm 3's cannot read a pod of two containers ("a container name must be specified").
"$HELM" --namespace "$NS" test "$RELEASE" --timeout 180s >"$work/helm-test.log" 2>&1 \
  || { sed 's/^/  helm test: /' "$work/helm-test.log"; k logs "$RELEASE-test-api" --all-containers 2>&1 | sed 's/^/  test pod: /'
       fail "helm test failed on the Cluster"; }
k logs "$RELEASE-test-api" -c ledger >>"$work/helm-test.log" 2>&1 || true
grep -q "can write the ledger on $CLUSTER-rw" "$work/helm-test.log" \
  || { sed 's/^/  helm test: /' "$work/helm-test.log"; fail "helm test did not check the Cluster's ledger"; }
say "  ok: helm test: billing's API, and a rolled-back payment as billing's role on $CLUSTER-rw over verify-full"

# ------------------------------------------------------------------------------------------ failover under load
billing_pods() { k get pods -l "app.kubernetes.io/name=billing,app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=api" \
  -o go-template='{{range .items}}{{.metadata.name}} {{.metadata.uid}} {{range .status.containerStatuses}}{{.restartCount}}{{end}}{{"\n"}}{{end}}' | sort; }
healthy() { [[ $(k get "cluster/$CLUSTER" -o jsonpath='{.status.readyInstances}/{.spec.instances} {.status.phase}') == "3/3 Cluster in healthy state" ]]; }
primary_of() { k get "cluster/$1" -o jsonpath='{.status.currentPrimary}'; }
wait_until() { # what seconds command...: poll once a second
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs; i++)); do "$@" && return 0; sleep 1; done
  fail "$what: not within $secs s"
}
# start_load NAME [ha_load.py load options...]: CLIENTS keyed clients against $url in the background, their requests
# in $RESULTS/NAME.jsonl, payments named ha-NAME-*; sets the caller's load_pid.
start_load() {
  local name=$1; shift
  python3 "$repo/e2e/ha_load.py" load --url "$url" --clients "$CLIENTS" --prefix "ha-$name" --out "$RESULTS/$name.jsonl" "$@" &
  load_pid=$!
}

failover() { # run: pod | process
  local run=$1 pods_before primary kill_at load_pid i
  for ((i = 0; i < 300; i++)); do healthy && break; sleep 1; done
  healthy || fail "$run: the Cluster is not healthy before the run: $(k get "cluster/$CLUSTER" -o jsonpath='{.status.phase}')"
  pods_before=$(billing_pods)
  primary=$(primary_of "$CLUSTER")
  say "failover run '$run': $CLIENTS clients for ${SECONDS_LOAD}s against $url; the primary $primary is hit at 10 s"
  start_load "$run" --seconds "$SECONDS_LOAD"
  sleep 10
  kill_at=$(date +%s.%N)
  case $run in
    pod) k delete pod "$primary" --wait=false >/dev/null ;;
    process)
      # SIGKILL to the postmaster, as the OOM killer or a crash would: no shutdown, no last WAL sent.
      # shellcheck disable=SC2016 # expanded in the pod
      k exec "$primary" -c postgres -- sh -c 'kill -KILL "$(head -1 "$PGDATA/postmaster.pid")"' \
        || fail "could not kill the postmaster of $primary"
      ;;
  esac
  say "  $run: hit $primary at $(date -u -d "@${kill_at%.*}" +%H:%M:%S)"
  wait "$load_pid" || fail "$run: the load generator failed"
  for ((i = 0; i < 300; i++)); do healthy && break; sleep 1; done
  healthy || fail "$run: the Cluster did not become healthy again within 300 s after the load"
  local now_primary restarts; now_primary=$(primary_of "$CLUSTER")
  restarts=$(k get pod "$primary" -o jsonpath='{range .status.containerStatuses[?(@.name=="postgres")]}{.restartCount}{end}' 2>/dev/null || echo "?")
  say "  $run: primary $primary -> $now_primary ($([[ $now_primary == "$primary" ]] && echo "no failover: the same instance recovered" || echo "failed over")); postgres container restarts of $primary now: ${restarts:-?}"
  psql_on "$now_primary" "SELECT client_id || ' ' || id FROM transactions WHERE client_id LIKE 'ha-$run-%'" >"$RESULTS/$run.committed"
  say "  $run: what became of the payments:"
  python3 "$repo/e2e/ha_load.py" report --results "$RESULTS/$run.jsonl" --committed "$RESULTS/$run.committed" \
    --kill-at "$kill_at" --json "$RESULTS/$run.json" || fail "$run: payments were lost, written twice, left unresolved or misreported (above)"
  local pods_after; pods_after=$(billing_pods)
  [[ $pods_after == "$pods_before" ]] || fail "$run: billing pods restarted or were replaced: before: $pods_before; after: $pods_after"
  say "  ok: $run: every payment acknowledged once, none lost or written twice; billing pods unchanged, no restarts ($(echo "$pods_after" | awk '{print $1 "=" $3}' | tr '\n' ' '))"
}
# ------------------------------------------------------------------------------------------ backups and recovery
# Issue 23 §4, CloudNativePG half: the release archives to a real S3 server; an operator's mistake; a new release
# recovers to the second before it. State between the steps: $RESULTS/*.jsonl, $work/mistake.env.
backup_sets() { # the object store, as values/ha-backup.yaml names it, in a folder of this run's own
  echo -f "$repo/values/ha-backup.yaml" --set "database.cnpg.backup.destinationPath=s3://billing-backups/$NS"
}

since() { awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.0f", t1 - t0 }'; }
archiving() { [[ $(k get "cluster/$1" -o jsonpath='{.status.conditions[?(@.type=="ContinuousArchiving")].status}') == True ]]; }
sidecars_everywhere() { # every instance pod runs the plugin's sidecar (a native sidecar: an init container that stays)
  local line n=0
  while read -r line; do
    [[ -n $line ]] || continue
    n=$((n + 1))
    [[ $line == *plugin-barman-cloud* ]] || return 1
  done < <(k get pods -l "cnpg.io/cluster=$CLUSTER,cnpg.io/podRole=instance" \
    -o go-template='{{range .items}}{{.metadata.name}}:{{range .spec.initContainers}}{{.name}},{{end}}{{"\n"}}{{end}}')
  ((n >= 1)) && healthy
}
# The bucket's keys under a prefix, listed through the S3 API (Signature V4 by curl) from this host. The prefix's
# slashes are sent as %2F: S3 signs the query with them encoded, and curl signs the query as written.
s3_keys() {
  local answer
  answer=$(curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ID:$S3_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$S3_URL/billing-backups?list-type=2&prefix=${1//\//%2F}") || return 1
  [[ $answer == *"<ListBucketResult"* ]] || { echo "S3 listing of $1: ${answer:0:300}" >&2; return 1; }
  grep -o '<Key>[^<]*</Key>' <<<"$answer" || true
}
s3_has() { [[ -n $(s3_keys "$1") ]]; }
backups_of() { # cluster jsonpath-of-each: the Backups of a Cluster (scheduled ones and those made on demand)
  k get backups.postgresql.cnpg.io -o jsonpath="{range .items[?(@.spec.cluster.name==\"$1\")]}$2{end}"
}
# Every Backup of the Cluster completed or failed (one without a phase yet is neither). One in progress on a standby
# ends only once the primary's current WAL segment is archived (archive_timeout, 5 min, on a quiet Cluster): the
# primary is asked to switch segments every 10 s meanwhile, as an operator in a hurry would.
SWITCHED_AT=0
backups_settled() {
  local each phases=() b
  read -ra phases <<<"$(backups_of "$1" '{.metadata.name}={.status.phase}{" "}')"
  ((${#phases[@]})) || return 1
  for each in "${phases[@]}"; do
    b=${each#*=}
    [[ $b == completed || $b == failed ]] && continue
    if ((SECONDS - SWITCHED_AT >= 10)); then
      psql_on "$(primary_of "$1")" "SELECT pg_switch_wal()" >/dev/null 2>&1 || true
      SWITCHED_AT=$SECONDS
    fi
    return 1
  done
}
archived_past() { # primary segment: the archiver has archived that segment or a later one
  [[ $(psql_on "$1" "SELECT coalesce(last_archived_wal, '') >= '$2' FROM pg_stat_archiver") == t ]]
}
backup_done() { backups_of "$1" '{.status.phase}{" "}' | grep -qw completed; }

backups_under_load() {
  local pair load_pid b0
  pair=$("$KUBECTL" -n "${S3_SECRET%%/*}" get secret "${S3_SECRET#*/}" \
    -o go-template='{{.data.ACCESS_KEY_ID | base64decode}} {{.data.SECRET_ACCESS_KEY | base64decode}}') \
    || fail "cannot read the object store's Secret $S3_SECRET"
  read -r S3_ID S3_KEY <<<"$pair"
  # the Secret values/ha-backup.yaml names, as an operator makes it
  k create secret generic billing-s3 --from-literal=ACCESS_KEY_ID="$S3_ID" --from-literal=ACCESS_SECRET_KEY="$S3_KEY" >/dev/null
  wait_until "$CLUSTER healthy before the backups" 300 healthy
  say "backups: $CLIENTS clients send payments from before the release is upgraded with values/ha-backup.yaml (s3://billing-backups/$NS on versitygw) until its first base backup has completed"
  # Bounded: at most 600 s, and ended (the stop file) once the base backup has completed.
  start_load backup --seconds 600 --stop-file "$work/backup.stop"
  sleep 5
  b0=$(date +%s.%N)
  # shellcheck disable=SC2046 # backup_sets prints separate words on purpose
  "$HELM" --namespace "$NS" upgrade "$RELEASE" "${chart[@]}" "${cnpg[@]}" --set postgresql.enabled=false \
    $(backup_sets) --timeout 120s >/dev/null || fail "helm upgrade with values/ha-backup.yaml failed"
  wait_until "WAL archiving of $CLUSTER (condition ContinuousArchiving)" 420 archiving "$CLUSTER"
  # ... and the segments are really in the bucket, read back through the S3 API from this host
  wait_until "archived WAL of $CLUSTER in s3://billing-backups/$NS/$CLUSTER/wals/" 120 s3_has "$NS/$CLUSTER/wals/"
  say "  WAL archiving works: $(s3_keys "$NS/$CLUSTER/wals/" | wc -l) segments in the bucket $(since "$b0") s after the upgrade"
  # The ScheduledBackup's immediate backup starts at once, usually on an instance the operator has not yet
  # restarted with the plugin's sidecar, and then fails ("requested plugin is not available"): what enabling
  # backups on a running Cluster does (docs/operations.md says to take one on demand then, as here). From the
  # primary: a base backup taken on a standby ends only when the primary's current WAL segment is archived,
  # up to archive_timeout (5 min) later on a quiet Cluster; the primary's pg_backup_stop switches it at once.
  wait_until "every instance of $CLUSTER restarted with the plugin's sidecar" 420 sidecars_everywhere
  wait_until "the immediate backup of $CLUSTER finished (completed or failed)" 420 backups_settled "$CLUSTER"
  if ! backup_done "$CLUSTER"; then
    say "  the immediate backup: $(backups_of "$CLUSTER" '{.status.phase} ({.status.error}) '); one on demand now"
    k apply -f - >/dev/null <<EOF2
apiVersion: postgresql.cnpg.io/v1
kind: Backup
metadata:
  name: $CLUSTER-first
spec:
  cluster: {name: $CLUSTER}
  target: primary
  method: plugin
  pluginConfiguration: {name: barman-cloud.cloudnative-pg.io}
EOF2
  fi
  wait_until "a completed base backup of $CLUSTER" 420 backup_done "$CLUSTER"
  say "  base backup completed $(since "$b0") s after the upgrade: $(backups_of "$CLUSTER" '{.metadata.name} {.status.phase} {.status.beginWal}..{.status.endWal}{"\n"}' | grep -w completed | head -1); $(s3_keys "$NS/$CLUSTER/base/" | wc -l) objects under base/"
  touch "$work/backup.stop"
  wait "$load_pid" || fail "backups: the load generator failed"
  psql_on "$(primary_of "$CLUSTER")" "SELECT client_id || ' ' || id FROM transactions WHERE client_id LIKE 'ha-backup-%'" >"$RESULTS/backup.committed"
  say "  what became of the payments sent while backups were switched on (the instances restarted with the plugin's sidecar):"
  python3 "$repo/e2e/ha_load.py" report --results "$RESULTS/backup.jsonl" --committed "$RESULTS/backup.committed" \
    --kill-at "$b0" --json "$RESULTS/backup.json" || fail "backups: payments were lost, written twice or left unresolved (above)"
}

mistake_under_load() {
  local load_pid primary out t_mistake archived_at deleted rpo wal
  wait_until "$CLUSTER healthy before the mistake" 300 healthy
  primary=$(primary_of "$CLUSTER")
  say "the mistake: $CLIENTS clients for ${SECONDS_LOAD}s; at 15 s every payment is deleted on $primary"
  start_load mistake --seconds "$SECONDS_LOAD"
  sleep 15
  # T is the DELETE's own transaction time; the age of the newest archived segment at that moment is what a
  # cluster lost then (its disks, not just its rows) would have lost: the RPO of WAL archiving.
  out=$(psql_on "$primary" "WITH d AS (DELETE FROM transactions RETURNING 1)
    SELECT extract(epoch FROM now()) || ' ' || coalesce(extract(epoch FROM (SELECT last_archived_time FROM pg_stat_archiver)), 0) || ' ' || (SELECT count(*) FROM d)") \
    || fail "the mistake's DELETE failed"
  read -r t_mistake archived_at deleted <<<"$out"
  rpo=$(awk -v t="$t_mistake" -v a="$archived_at" 'BEGIN { printf "%.1f", t - a }')
  say "  $(date -u -d "@${t_mistake%.*}" +%H:%M:%S): DELETE FROM transactions removed $deleted payments (replicated to every standby); the newest archived WAL was $rpo s old (RPO at T; bounded by archive_timeout, 5 min)"
  wait "$load_pid" || fail "the mistake: the load generator failed"
  # The operator notices and makes sure the WAL up to now is in the object store before recovering from it
  # (otherwise the segment holding T is archived at the latest archive_timeout later).
  wal=$(psql_on "$primary" "SELECT pg_walfile_name(pg_current_wal_lsn())")
  psql_on "$primary" "SELECT pg_switch_wal()" >/dev/null
  wait_until "segment $wal archived" 120 archived_past "$primary" "$wal"
  say "  segment $wal (holding T) archived after pg_switch_wal()"
  printf 't_mistake=%s\nrpo=%s\ndeleted=%s\n' "$t_mistake" "$rpo" "$deleted" >"$work/mistake.env"
}

recover_to_before_mistake() {
  # shellcheck disable=SC1091 # written by mistake_under_load
  . "$work/mistake.env"
  local target=${t_mistake%.*} stamp r0 pitr_url="" code="" answer="" first_id i restored max_id newer
  stamp=$(date -u -d "@$target" +%Y-%m-%dT%H:%M:%SZ)
  say "recovery: a new release $PITR_RELEASE, its Cluster bootstrapped from $CLUSTER's backups to $stamp (T to the whole second, just before the DELETE)"
  r0=$(date +%s.%N)
  # shellcheck disable=SC2046 # backup_sets prints separate words on purpose
  "$HELM" --namespace "$NS" install "$PITR_RELEASE" "${chart[@]}" "${cnpg[@]}" --set postgresql.enabled=false \
    $(backup_sets) --set database.cnpg.instances=2 --set database.cnpg.recovery.enabled=true \
    --set "database.cnpg.recovery.serverName=$CLUSTER" --set "database.cnpg.recovery.recoveryTarget.targetTime=$stamp" \
    --timeout 60s >/dev/null || fail "helm install of the recovery release failed"
  # the time to the first payment taken: a keyed payment retried with its key until a 201
  for ((i = 0; i < 900; i++)); do
    pitr_url=${pitr_url:-$(k get svc "$PITR_RELEASE" -o jsonpath='{.spec.clusterIP}' 2>/dev/null)}
    if [[ -n $pitr_url ]]; then
      answer=$(curl -sS --max-time 5 -o - -w ' %{http_code}' -H 'Idempotency-Key: after-recovery-1' \
        -X POST "http://$pitr_url:8080/add?client_id=after-recovery&amount=1" 2>/dev/null) || true
      code=${answer##* }
      [[ $code == 201 ]] && break
    fi
    sleep 1
  done
  [[ $code == 201 ]] || fail "the recovered release took no payment within 900 s (last answer: ${answer:-none})"
  local took; took=$(since "$r0")
  [[ $answer =~ transaction\ id=([0-9]+) ]] || fail "the recovered release's first payment: unexpected answer $answer"
  first_id=${BASH_REMATCH[1]}
  say "  first 201 of the recovered release $took s after helm install (payment id $first_id)"
  local pitr_primary; pitr_primary=$(primary_of "$PITR_RELEASE-db")
  psql_on "$pitr_primary" "SELECT client_id || ' ' || id FROM transactions WHERE client_id LIKE 'ha-%'" >"$RESULTS/recovered.committed"
  restored=$(wc -l <"$RESULTS/recovered.committed")
  max_id=$(psql_on "$pitr_primary" "SELECT max(id) FROM transactions WHERE client_id <> 'after-recovery'")
  newer=$(psql_on "$pitr_primary" "SELECT count(*) FROM transactions WHERE created_at > to_timestamp($target) AND client_id <> 'after-recovery'")
  say "  $restored payments of the load runs recovered, none newer than the target: $newer rows created after it"
  [[ $newer == 0 ]] || fail "the recovery went past its target: $newer rows created after $stamp"
  ((first_id > max_id)) || fail "the recovered release's first payment got id $first_id, not above the recovered ones (max $max_id)"
  local runs=()
  for f in pod process backup mistake; do runs+=(--results "$RESULTS/$f.jsonl"); done
  python3 "$repo/e2e/ha_load.py" pitr "${runs[@]}" --committed "$RESULTS/recovered.committed" --target "$target" \
    --json "$RESULTS/recovery.json" || fail "the recovered ledger lacks payments acknowledged before the target (above)"
  python3 - "$RESULTS/recovery.json" "$rpo" "$took" "$deleted" <<'PY'
import json, sys
p = sys.argv[1]
r = json.load(open(p))
r.update(rpo_seconds_at_mistake=round(float(sys.argv[2]), 1), seconds_helm_install_to_first_201=round(float(sys.argv[3]), 1),
         deleted_by_mistake=int(sys.argv[4]))
json.dump(r, open(p, "w"), indent=2)
PY
  say "  ok: every payment acknowledged before $stamp is back once under its id; new payments continue above them"
}

failover pod
failover process
if ((BACKUP)); then
  backups_under_load
  mistake_under_load
  recover_to_before_mistake
fi
say "ok: migrated into CloudNativePG with every payment, and two failovers under load with keyed retries: every payment acknowledged once, none lost or written twice (figures above; JSON in $RESULTS)"
