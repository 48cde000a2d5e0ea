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
# Everything is made in a namespace of its own and removed afterwards (with the volumes it made).
#
#   e2e/ha.sh --kubectl K --helm H --client-image IMG --cnpg-postgres-image IMG [--clients N] [--seconds S]
#             [--results DIR] [--set k=v ...]
#
# The --set values go to every helm install/upgrade (the local cluster's image names). The load runs on this
# host against the billing Service's cluster IP, so the host must reach Service IPs (it does on the local
# cluster, whose kube-proxy runs on the host).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBECTL=kubectl HELM=helm CLIENT_IMAGE="" CNPG_PG_IMAGE="" CLIENTS=32 SECONDS_LOAD=45 RESULTS="" sets=()
while (($#)); do
  case $1 in
    --kubectl) KUBECTL=$2; shift 2 ;;
    --helm) HELM=$2; shift 2 ;;
    --client-image) CLIENT_IMAGE=$2; shift 2 ;;
    --cnpg-postgres-image) CNPG_PG_IMAGE=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECONDS_LOAD=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "ha: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $CLIENT_IMAGE && -n $CNPG_PG_IMAGE ]] || { echo "ha: --client-image and --cnpg-postgres-image are required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "ha: python3 is required" >&2; exit 1; }

t0=$(date +%s)
say() { printf '[ha %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }
NS=billing-e2e-ha-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
RELEASE=billing
CLUSTER=$RELEASE-db
work=$(mktemp -d)
RESULTS=${RESULTS:-$work/results}
mkdir -p "$RESULTS"
k() { "$KUBECTL" -n "$NS" "$@"; }
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    say "diagnostics:"
    k get cluster,pods,pvc -o wide 2>&1 | sed 's/^/  /' || true
    k get events --sort-by=.lastTimestamp 2>&1 | tail -25 | sed 's/^/  event: /' || true
    k logs -l "app.kubernetes.io/name=billing,app.kubernetes.io/instance=$RELEASE" --all-containers --tail=20 2>&1 \
      | sed 's/^/  billing: /' || true
    k logs -l "cnpg.io/cluster=$CLUSTER" -c postgres --tail=15 2>&1 | sed 's/^/  cnpg: /' || true
    "$KUBECTL" -n cnpg-system logs deploy/cnpg-controller-manager --tail=25 2>&1 | sed 's/^/  operator: /' || true
  fi
  timeout 120 "$HELM" --namespace "$NS" uninstall "$RELEASE" --wait --timeout 90s >/dev/null 2>&1 || true
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

failover() { # run: pod | process
  local run=$1 pods_before primary kill_at load_pid i
  for ((i = 0; i < 300; i++)); do healthy && break; sleep 1; done
  healthy || fail "$run: the Cluster is not healthy before the run: $(k get "cluster/$CLUSTER" -o jsonpath='{.status.phase}')"
  pods_before=$(billing_pods)
  primary=$(k get "cluster/$CLUSTER" -o jsonpath='{.status.currentPrimary}')
  say "failover run '$run': $CLIENTS clients for ${SECONDS_LOAD}s against $url; the primary $primary is hit at 10 s"
  python3 "$repo/e2e/ha_load.py" load --url "$url" --clients "$CLIENTS" --seconds "$SECONDS_LOAD" \
    --prefix "ha-$run" --out "$RESULTS/$run.jsonl" &
  load_pid=$!
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
  local now_primary restarts; now_primary=$(k get "cluster/$CLUSTER" -o jsonpath='{.status.currentPrimary}')
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
failover pod
failover process
say "ok: migrated into CloudNativePG with every payment, and two failovers under load with keyed retries: every payment acknowledged once, none lost or written twice (figures above; JSON in $RESULTS)"
