#!/usr/bin/env bash
# The course scenario, end to end, against the current kube context (kind,
# minikube, k3s, or the local cluster of cluster/up.sh), in a namespace of its
# own. Each step prints what it observed and the run stops at the first miss.
#
#   e2e/scenario.sh [options] [-- extra helm args for every install/upgrade]
#
# Options (environment variable in brackets):
#   --namespace NS        namespace to use; created, and deleted at the end [E2E_NAMESPACE]
#                         (default billing-e2e-<random>). An existing namespace (e.g. `default`,
#                         which cluster/e2e-local.sh uses on the local cluster) is used as it is and
#                         kept; the scenario then refuses to start if a release "billing" or the
#                         claim billing-postgresql is already there, and removes what it made
#                         (release, claims, their PVs, StorageClass, Prometheus, test pod) at the end.
#                         In `default` steps 11 and 13 run the course's commands literally, without -n
#                         (kubectl delete pod billing-stateful-2, kubectl exec billing-stateful-2 -- cat ...)
#   --keep-namespace      keep the namespace, release and volumes for debugging [E2E_KEEP=1]
#   --client-image IMG    image of the temporary client pods (needs sh and curl)
#                         [E2E_CLIENT_IMAGE, default nicolaka/netshoot as in the course]
#   --client-pull-policy P  [E2E_CLIENT_PULL_POLICY, default IfNotPresent]
#   --set KEY=VALUE       extra `helm --set` for every install/upgrade (repeatable),
#                         e.g. local image names: --set image.repository=localhost/billing
#   --helm PATH           helm binary [HELM; default .tools/bin/helm3, else helm on PATH]
#   --kubectl PATH        kubectl binary [KUBECTL; default kubectl]
#   --timeout SECONDS     bound of every wait [E2E_TIMEOUT, default 300]
#   --artifacts DIR       where diagnostics go on failure [E2E_ARTIFACTS, default $TMPDIR/billing-e2e-<ns>]
#   --prometheus-image IMG  image of the Prometheus server the scenario runs in its namespace
#                         [E2E_PROMETHEUS_IMAGE, default prom/prometheus:v3.16.0]
#   --no-prometheus       leave out the Prometheus steps [E2E_PROMETHEUS=0]
#   --no-servicemonitor   leave out steps 2 and 10, which check the chart's ServiceMonitor against the
#                         Prometheus Operator's CRD and fail on a cluster without it [E2E_SERVICEMONITOR=0]
#                         (--require-servicemonitor, the default, is still accepted)
#   [E2E_OLD_CHART_REV]   the commit whose chart step 17 installs (release billing-old) and upgrades to this
#                         one: the last before the application role. Needs the git history (not a shallow clone).
#   --from N, --to M, --only N   run steps N..M only (default 1..18; --only N is --from N --to N), against a
#                         cluster where the earlier steps already ran: e.g. `--to 8` and, later, `--from 9`
#                         (e2e/run.sh passes them on; docs/local-cluster.md). A run that stops before the last
#                         step keeps the namespace, release and Prometheus for the next range. A step whose
#                         earlier step did not run says which one it needs and fails.
#   --list                print the steps, numbered, and exit
#
# Steps (functions step<N>_<name>, run in this order; --list prints them):
#    1 install_task1        2 servicemonitor_task1   3 prometheus_scrapes    4 add_and_get
#    5 delete_postgres_pod  6 one_postmaster         7 helm_test_task1       8 prometheus_task1
#    9 upgrade_task2       10 servicemonitor_task2  11 pod_logs             12 prometheus_per_pod
#   13 delete_stateful_pod 14 helm_test_task2       15 prometheus_task2     16 reinstall
#   17 least_privilege    18 alerts (e2e/alerts.sh)
# State: the settings below (readonly once the options and the preflight have set them) and what a step reads
# from the cluster. What one step hands to a later one that the cluster does not show by itself (the id of step
# 4's payment, how many payments each step made, when step 1 ran) is kept in the ConfigMap
# billing-e2e-scenario of the namespace (scenario_record / scenario_value), which the cleanup removes; a step
# that finds its key missing names the step that writes it.
# Python snippets (encoding queries, reading JSON) are e2e/scenario_lib.py's subcommands.
#
# Prometheus: the scenario deploys e2e/prometheus.yaml (kubernetes_sd, role pod, finding the
# billing pods by their prometheus.io/* annotations), checks that it scrapes them, and asserts
# that PromQL counts the payments the scenario saw acknowledged (its own POST /add and step 6's
# load; `helm test` makes none), and at most those whose answer it never got, per phase and in total. The
# chart's ServiceMonitor is sent to the API server with `kubectl apply --dry-run=server` in both modes: a
# cluster without the Prometheus Operator's CRD fails those steps (cluster/e2e-local.sh installs it on the
# local cluster; --no-servicemonitor leaves them out). Python 3 is used to encode the queries and read JSON.
#
# Exit 0 when every step passed. On failure the namespace's get/describe/logs and
# events are saved under the artifacts directory, which is printed.
set -euo pipefail
shopt -s inherit_errexit

# ------------------------------------------------------------------ settings (readonly once set)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$repo/e2e/scenario_lib.py
NS=${E2E_NAMESPACE:-billing-e2e-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
KEEP=${E2E_KEEP:-0}
CLIENT_IMAGE=${E2E_CLIENT_IMAGE:-nicolaka/netshoot}
CLIENT_PULL_POLICY=${E2E_CLIENT_PULL_POLICY:-IfNotPresent}
TIMEOUT=${E2E_TIMEOUT:-300}
HELM=${HELM:-}
KUBECTL=${KUBECTL:-kubectl}
ARTIFACTS=${E2E_ARTIFACTS:-}
RELEASE=billing
CHART=$repo/charts/billing
VALUES1=$repo/values/task1.yaml
VALUES2=$repo/values/task2.yaml
SETS=()
PROMETHEUS=${E2E_PROMETHEUS:-1}
PROMETHEUS_IMAGE=${E2E_PROMETHEUS_IMAGE:-prom/prometheus:v3.16.0}
SERVICEMONITOR=${E2E_SERVICEMONITOR:-1}
PROMETHEUS_MANIFEST=$repo/e2e/prometheus.yaml
SM_CRD=servicemonitors.monitoring.coreos.com
SCENARIO_CM=billing-e2e-scenario   # what one step hands to a later one (see the header)
# the steps, in the order they run; step N is STEPS[N-1], the function step<N>_<name>
STEPS=(install_task1 servicemonitor_task1 prometheus_scrapes add_and_get delete_postgres_pod one_postmaster
  helm_test_task1 prometheus_task1 upgrade_task2 servicemonitor_task2 pod_logs prometheus_per_pod
  delete_stateful_pod helm_test_task2 prometheus_task2 reinstall least_privilege alerts)
FROM=1 TO=${#STEPS[@]} LIST=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
step_number() { # the value of --from/--to/--only: a step number
  if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > ${#STEPS[@]})); then
    echo "e2e: a step number is 1..${#STEPS[@]}, not '$1' (see --list)" >&2
    exit 2
  fi
  echo "$1"
}
while (($#)); do
  case $1 in
    --namespace) NS=$2; shift 2 ;;
    --keep-namespace) KEEP=1; shift ;;
    --client-image) CLIENT_IMAGE=$2; shift 2 ;;
    --client-pull-policy) CLIENT_PULL_POLICY=$2; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    --helm) HELM=$2; shift 2 ;;
    --kubectl) KUBECTL=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --artifacts) ARTIFACTS=$2; shift 2 ;;
    --prometheus-image) PROMETHEUS_IMAGE=$2; shift 2 ;;
    --no-prometheus) PROMETHEUS=0; shift ;;
    --no-servicemonitor) SERVICEMONITOR=0; shift ;;
    --require-servicemonitor) SERVICEMONITOR=1; shift ;;   # the default; kept for older command lines
    --from) FROM=$(step_number "$2"); shift 2 ;;
    --to) TO=$(step_number "$2"); shift 2 ;;
    --only) FROM=$(step_number "$2"); TO=$FROM; shift 2 ;;
    --list) LIST=1; shift ;;
    --) shift; SETS+=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
((FROM <= TO)) || { echo "e2e: --from $FROM comes after --to $TO" >&2; exit 2; }
if [[ -z $HELM ]]; then
  if [[ -x $repo/.tools/bin/helm3 ]]; then HELM=$repo/.tools/bin/helm3; else HELM=helm; fi
fi
ARTIFACTS_GIVEN=${ARTIFACTS:+1}
ARTIFACTS=${ARTIFACTS:-${TMPDIR:-/tmp}/billing-e2e-$NS}
T=${TIMEOUT}s
# A range that stops before the last step leaves what it made for the next range.
PARTIAL_KEEP=0
((TO < ${#STEPS[@]})) && PARTIAL_KEEP=1
readonly repo LIB NS KEEP CLIENT_IMAGE CLIENT_PULL_POLICY TIMEOUT HELM KUBECTL ARTIFACTS RELEASE CHART VALUES1 VALUES2 \
  SETS PROMETHEUS PROMETHEUS_IMAGE SERVICEMONITOR PROMETHEUS_MANIFEST SM_CRD SCENARIO_CM STEPS FROM TO ARTIFACTS_GIVEN T \
  PARTIAL_KEEP
# Set by preflight, readonly after it: CREATED_NS / USED_NS (whether the scenario made the namespace), COURSE
# (namespace default: the course's commands literally), HAVE_SM_CRD (the ServiceMonitor CRD is there).

# ------------------------------------------------------------------ output
t0=$(date +%s)
STEP="preflight"   # the step running, for the failure message
exec 3>&1   # progress goes to fd 3, so helpers whose stdout is captured can still report
say() { printf '[e2e %4ss] %s\n' "$(($(date +%s) - t0))" "$*" >&3; }
step() { STEP=$1; printf '\n[e2e %4ss] ===== %s\n' "$(($(date +%s) - t0))" "$1" >&3; }
ok() { say "  ok: $*"; }
fail() { say "  FAILED: $*"; exit 1; }

k() { "$KUBECTL" -n "$NS" "$@"; }
h() { "$HELM" --namespace "$NS" "$@"; }

# ------------------------------------------------------------------ state handed from step to step (in the cluster)
# scenario_record KEY VALUE: kept in the ConfigMap $SCENARIO_CM of the namespace
scenario_record() {
  k get configmap "$SCENARIO_CM" >/dev/null 2>&1 || k create configmap "$SCENARIO_CM" >/dev/null
  k patch configmap "$SCENARIO_CM" --type merge -p "{\"data\":{\"$1\":\"$2\"}}" >/dev/null
}
# scenario_value KEY STEP: its value; fails saying that STEP (the step that writes it) has not run
scenario_value() {
  local v
  v=$(k get configmap "$SCENARIO_CM" -o "go-template={{index .data \"$1\"}}" 2>/dev/null) || v=
  [[ -n $v && $v != "<no value>" ]] || fail "this step needs step $2 to have run first ('$1' is not in ConfigMap $SCENARIO_CM of $NS): run e2e/run.sh --from $2"
  printf '%s' "$v"
}
# payments_of TASK STEP...: "ACKED UNKNOWN", the payments those steps saw acknowledged (201) and those whose fate
# they could not know (no answer, "may or may not be recorded"), summed over the steps' records (key paid.<step>,
# "TASK ACKED UNKNOWN"); fails naming a step that has not recorded its own
payments_of() {
  local task=$1 n acked=0 unknown=0 v t a u; shift
  for n in "$@"; do
    v=$(scenario_value "paid.$n" "$n")
    read -r t a u <<<"$v"
    [[ $t == "$task" ]] || fail "step $n recorded payments of $t, not $task"
    acked=$((acked + a)) unknown=$((unknown + u))
  done
  echo "$acked $unknown"
}
# need_release MODE STEP: the release is installed in task MODE (1: Deployment, 2: StatefulSet), as step STEP left it
need_release() {
  local what=deployment/$RELEASE
  [[ $1 == 2 ]] && what=statefulset/$RELEASE-stateful
  if ! h status "$RELEASE" >/dev/null 2>&1 || ! k get "$what" >/dev/null 2>&1; then
    fail "this step needs release $RELEASE in task $1 mode ($what) in namespace $NS, as step $2 leaves it: run e2e/run.sh --from $2"
  fi
}

# ------------------------------------------------------------------ cleanup and diagnostics
diagnostics() {
  mkdir -p "$ARTIFACTS"
  say "saving diagnostics to $ARTIFACTS"
  {
    k get all,pvc,cm,secret,endpoints,endpointslices -o wide
    "$KUBECTL" get pv,storageclass,nodes -o wide
  } >"$ARTIFACTS/get.txt" 2>&1 || true
  k describe pods >"$ARTIFACTS/describe-pods.txt" 2>&1 || true
  k describe deploy,sts,svc,pvc >"$ARTIFACTS/describe-workloads.txt" 2>&1 || true
  "$KUBECTL" describe pv >"$ARTIFACTS/describe-pv.txt" 2>&1 || true
  k get events --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
  "$KUBECTL" -n kube-system get pods -o wide >"$ARTIFACTS/kube-system.txt" 2>&1 || true
  local p c
  for p in $(k get pods -o name 2>/dev/null); do
    for c in $(k get "$p" -o jsonpath='{.spec.containers[*].name}' 2>/dev/null); do
      k logs "$p" -c "$c" >"$ARTIFACTS/logs-${p#pod/}-$c.txt" 2>&1 || true
      k logs "$p" -c "$c" --previous >"$ARTIFACTS/logs-${p#pod/}-$c-previous.txt" 2>/dev/null || rm -f "$ARTIFACTS/logs-${p#pod/}-$c-previous.txt"
    done
  done
  h status "$RELEASE" >"$ARTIFACTS/helm-status.txt" 2>&1 || true
  say "events (last 25):"
  tail -n 25 "$ARTIFACTS/events.txt" | sed 's/^/    /' || true
}

# PVs whose claim lives in our namespace (Retained ones outlive the namespace)
our_pvs() {
  "$KUBECTL" get pv -o go-template='{{range .items}}{{if .spec.claimRef}}{{if eq .spec.claimRef.namespace "'"$NS"'"}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}{{end}}' 2>/dev/null || true
}
# StorageClasses that helm made for a release in our namespace
our_storageclasses() {
  "$KUBECTL" get storageclass -o go-template='{{range .items}}{{if .metadata.annotations}}{{if eq (index .metadata.annotations "meta.helm.sh/release-namespace") "'"$NS"'"}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}{{end}}' 2>/dev/null || true
}

# The release's PVs and StorageClasses, those seen before the uninstall ($1, $2) and any still there: the PVs
# are Retain, so they outlive their claims. Prints what it removed, for the cleanup's last line.
remove_volumes_and_classes() {
  local pvs scs
  pvs=$(printf '%s\n%s\n' "$1" "$(our_pvs)" | sort -u | sed '/^$/d')
  scs=$(printf '%s\n%s\n' "$2" "$(our_storageclasses)" | sort -u | sed '/^$/d')
  # shellcheck disable=SC2086
  [[ -z $pvs ]] || timeout 90 "$KUBECTL" delete pv $pvs --wait=true --timeout=80s >/dev/null 2>&1 \
    || say "  could not delete PVs: $pvs"
  # shellcheck disable=SC2086
  [[ -z $scs ]] || timeout 60 "$KUBECTL" delete storageclass $scs >/dev/null 2>&1
  printf '%s' "${pvs:+, PVs $(tr "\n" " " <<<"$pvs")}${scs:+, StorageClass $(tr "\n" " " <<<"$scs")}"
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0)); then
    say "scenario FAILED at step: $STEP (exit $rc)"
    diagnostics
  fi
  local keep=$KEEP
  if ((PARTIAL_KEEP && KEEP != 1)); then
    keep=1
    if ((rc == 0)); then
      say "steps $((TO + 1))..${#STEPS[@]} not run: namespace $NS and what steps $FROM..$TO made are kept for them (e2e/run.sh --from $((TO + 1)))"
    else
      say "namespace $NS and what the steps made are kept: go on from the step that failed with e2e/run.sh --from $((STEP_NO > 0 ? STEP_NO : FROM))"
    fi
  fi
  if [[ $keep != 1 ]] && h status billing-old >/dev/null 2>&1; then
    timeout 120 "$HELM" --namespace "$NS" uninstall billing-old --wait --timeout 90s >/dev/null 2>&1
    k delete pod billing-old-test-api --ignore-not-found >/dev/null 2>&1
    timeout 100 "$KUBECTL" -n "$NS" delete pvc,secret -l app.kubernetes.io/instance=billing-old --wait=true --timeout=90s >/dev/null 2>&1
  fi
  if [[ $keep == 1 ]]; then
    ((PARTIAL_KEEP)) || say "keeping namespace $NS (--keep-namespace); remove later with:"
    ((!PARTIAL_KEEP)) || say "remove later with:"
    say "  $HELM -n $NS uninstall $RELEASE; $KUBECTL delete namespace $NS; $KUBECTL delete pv <pvs of $NS>"
  elif [[ ${CREATED_NS:-0} == 0 && ${USED_NS:-0} == 1 ]]; then
    say "cleaning up what the scenario made in the existing namespace $NS"
    local pvs scs removed
    pvs=$(our_pvs); scs=$(our_storageclasses)
    timeout 120 "$HELM" --namespace "$NS" uninstall "$RELEASE" --wait --timeout 90s >/dev/null 2>&1
    k delete pod "$RELEASE-test-api" --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
    k delete configmap "$SCENARIO_CM" --ignore-not-found >/dev/null 2>&1
    k delete pods -l app.kubernetes.io/name=billing-e2e-client --ignore-not-found --wait=false >/dev/null 2>&1
    if ((PROMETHEUS)); then
      sed -e "s#@NAMESPACE@#$NS#g; s#@IMAGE@#$PROMETHEUS_IMAGE#g" "$PROMETHEUS_MANIFEST" |
        timeout 90 "$KUBECTL" -n "$NS" delete --ignore-not-found --wait=true -f - >/dev/null 2>&1
    fi
    timeout 120 "$KUBECTL" -n "$NS" delete pvc,secret -l "app.kubernetes.io/instance=$RELEASE" --wait=true --timeout=100s >/dev/null 2>&1 \
      || say "  could not delete the claims and kept Secrets of $RELEASE"
    removed=$(remove_volumes_and_classes "$pvs" "$scs")
    say "  removed release $RELEASE and its claims from $NS$removed"
  elif [[ ${CREATED_NS:-0} == 1 ]]; then
    say "cleaning up namespace $NS"
    local pvs scs removed
    pvs=$(our_pvs); scs=$(our_storageclasses)
    timeout 120 "$HELM" --namespace "$NS" uninstall "$RELEASE" --wait --timeout 90s >/dev/null 2>&1
    timeout 150 "$KUBECTL" delete namespace "$NS" --wait=true --timeout=140s >/dev/null 2>&1 \
      || say "  namespace $NS not gone in time"
    removed=$(remove_volumes_and_classes "$pvs" "$scs")
    say "  removed namespace $NS$removed"
  fi
  # a passing run leaves nothing behind in a directory it chose itself
  if ((rc == 0)) && [[ -z $ARTIFACTS_GIVEN && $keep != 1 ]]; then rm -rf "$ARTIFACTS"; fi
  say "total $(($(date +%s) - t0))s"
  exit "$rc"
}

# ------------------------------------------------------------------ helpers
# in_cluster SCRIPT: run SCRIPT (sh) in a temporary pod, as the course does with
# `kubectl run tmp-pod --rm -i --image nicolaka/netshoot`; prints its stdout.
in_cluster() {
  # called in $(...): a counter would not survive, so the name is made unique here
  local name out rc=0
  name=tmp-pod-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  # The script first waits for one line on stdin, which reaches it only once
  # kubectl has attached: without that, a command that finishes before the
  # attach loses its output (kubectl run -i's race), and the run looks empty.
  out=$(printf 'go\n' | timeout $((TIMEOUT + 60)) "$KUBECTL" -n "$NS" run "$name" --rm -i --quiet --restart=Never \
    --image="$CLIENT_IMAGE" --image-pull-policy="$CLIENT_PULL_POLICY" --pod-running-timeout="$T" \
    --labels=app.kubernetes.io/name=billing-e2e-client --command -- sh -c "read -r go; $1" 2>"$ARTIFACTS/$name.stderr") || rc=$?
  if ((rc != 0)); then
    say "  temporary pod $name exited $rc; stdout: $out"
    say "  stderr: $(tr '\n' ' ' <"$ARTIFACTS/$name.stderr")"
    k delete pod "$name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    return "$rc"
  fi
  printf '%s' "$out"
}
# curl_in_cluster METHOD URL: the body, failing on a non-2xx answer (shown)
curl_in_cluster() {
  in_cluster "curl -sS --max-time 10 -X $1 -w '\n%{http_code}' '$2'" | {
    local body code
    body=$(cat)
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    say "  $1 $2 -> HTTP $code: $(printf '%s' "$body" | head -c 400)"
    [[ $code == 2?? ]] || return 1
    printf '%s' "$body"
  }
}
selector_of() { # kind/name -> label selector of its pods
  # shellcheck disable=SC2016 # a Go template, not shell
  k get "$1" -o go-template='{{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}' | sed 's/,$//'
}
pod_fingerprint() { # selector -> "name uid restarts" lines
  k get pods -l "$1" -o go-template='{{range .items}}{{.metadata.name}} {{.metadata.uid}} {{range .status.containerStatuses}}{{.name}}={{.restartCount}} {{end}}{{"\n"}}{{end}}' | sort
}
# wait_new_pod SELECTOR OLD_UID: a pod other than OLD_UID exists and is Ready; prints its name
wait_new_pod() {
  local sel=$1 old=$2 i name=
  for ((i = 0; i < TIMEOUT; i++)); do
    name=$(k get pods -l "$sel" -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{if ne .metadata.uid "'"$old"'"}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}{{end}}' | head -1)
    [[ -n $name ]] && break
    sleep 1
  done
  [[ -n $name ]] || return 1
  k wait --for=condition=Ready "pod/$name" --timeout="$T" >/dev/null || return 1
  printf '%s' "$name"
}
# wait_answers URL WHAT: from one temporary pod, retry GET URL (bounded, 30 x 3 s)
# until it answers `pong`. Used where a name has just got a new address (a
# re-created pod, a re-created Service): cluster DNS may serve the old one
# until its cache expires (CoreDNS' usual `cache 30`).
wait_answers() {
  local n
  n=$(in_cluster "i=0; while [ \$i -lt 30 ]; do i=\$((i+1)); if [ \"\$(curl -sS --max-time 3 $1 2>/dev/null)\" = pong ]; then echo \$i; exit 0; fi; sleep 2; done; exit 1") \
    || fail "$1 did not answer pong within about 2 minutes ($2)"
  say "  GET $1 -> pong (attempt $n)"
}
# has_tx JSON ID AMOUNT CLIENT: one record of JSON (/get's object or /getall's array) has this id, amount and client
has_tx() { python3 "$LIB" has-tx "$2" "$3" "$4" <<<"$1"; }
getall_has() { # id amount client; retries while the service reconnects (bounded)
  local i body
  for ((i = 1; i <= 12; i++)); do
    if body=$(curl_in_cluster GET "http://$RELEASE:8080/getall") && has_tx "$body" "$1" "$2" "$3"; then
      return 0
    fi
    say "  /getall does not (yet) hold id=$1 (attempt $i/12)"
    sleep 5
  done
  return 1
}
log_of() { # pod: its /var/log/app.log
  local out claim err
  # the course's command (in `default` literally: kubectl exec billing-stateful-N -- cat /var/log/app.log)
  local exec_cmd=(k exec "$1" -c billing --)
  ((COURSE)) && exec_cmd=("$KUBECTL" exec "$1" --)
  if out=$("${exec_cmd[@]}" cat /var/log/app.log 2>"$ARTIFACTS/exec-$1.stderr"); then
    printf '%s' "$out"
    return 0
  fi
  err=$(cat "$ARTIFACTS/exec-$1.stderr")
  case $err in
    *"executable file not found"* | *"no such file or directory"*) ;;
    *) say "  kubectl exec $1 -c billing -- cat /var/log/app.log failed: $err"; return 1 ;;
  esac
  # An image without cat (plain distroless; the repository's Dockerfile uses the busybox variant): read
  # the pod's own log claim from a temporary pod instead (ReadWriteOnce allows a
  # second pod on the same node; mounted read-only).
  claim=$(k get pod "$1" -o jsonpath='{.spec.volumes[?(@.persistentVolumeClaim)].persistentVolumeClaim.claimName}')
  [[ -n $claim ]] || { say "  $1 has no cat and no log claim"; return 1; }
  say "  $1: the image has no cat; reading its claim $claim from a temporary pod"
  in_cluster_with_claim "$claim" "cat /log/app.log"
}
# in_cluster_with_claim CLAIM SCRIPT: like in_cluster, with CLAIM mounted read-only at /log
in_cluster_with_claim() {
  local name overrides
  name=tmp-read-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  overrides=$(printf '{"apiVersion":"v1","spec":{"containers":[{"name":"%s","image":"%s","imagePullPolicy":"%s","stdin":true,"stdinOnce":true,"command":["sh","-c",%s],"volumeMounts":[{"name":"log","mountPath":"/log","readOnly":true}]}],"volumes":[{"name":"log","persistentVolumeClaim":{"claimName":"%s","readOnly":true}}]}}' \
    "$name" "$CLIENT_IMAGE" "$CLIENT_PULL_POLICY" "\"read -r go; $2\"" "$1")
  printf 'go\n' | timeout $((TIMEOUT + 60)) "$KUBECTL" -n "$NS" run "$name" --rm -i --quiet --restart=Never \
    --image="$CLIENT_IMAGE" --pod-running-timeout="$T" --overrides="$overrides" 2>"$ARTIFACTS/$name.stderr"
}
line_re() { # host client amount: the course's log line
  printf '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}: host %s, client %s, amount %s$' "$1" "$2" "$3"
}

# ------------------------------------------------------------------ Prometheus and ServiceMonitor helpers
# promql EXPR: the instant query's result through the API server's service
# proxy (no port-forward, no temporary pod), one "<labels> <value>" line per
# series, labels as k=v,k=v sorted (without __name__; "" for none), values as integers when whole.
promql() {
  local enc out
  enc=$(python3 "$LIB" quote "$1")
  out=$("$KUBECTL" get --raw "/api/v1/namespaces/$NS/services/prometheus:9090/proxy/api/v1/query?query=$enc" 2>"$ARTIFACTS/promql.stderr") \
    || { say "  query failed: $(tr '\n' ' ' <"$ARTIFACTS/promql.stderr")"; return 1; }
  python3 "$LIB" promql-lines <<<"$out"
}
# promql_value EXPR: the value of a query that yields at most one series ("" for none)
promql_value() {
  local out
  out=$(promql "$1") || return 1
  (($(printf '%s' "$out" | grep -c .) <= 1)) || { say "  $1 gave several series: $out"; return 1; }
  printf '%s' "${out##* }"
}
# wait_promql_between EXPR LOW HIGH: polls (2 s, bounded) until EXPR's value is between LOW and HIGH (both
# included; LOW = HIGH asks for exactly that number); above HIGH fails at once (more was counted than the scenario
# made)
wait_promql_between() {
  local got="" i want=$2..$3
  ((${3} >= ${2})) || { say "  wait_promql_between: $3 < $2"; return 1; }
  ((${3} > ${2})) || want=$2
  for ((i = 1; i <= 45; i++)); do
    got=$(promql_value "$1") || return 1
    if [[ -n $got ]] && ! python3 "$LIB" gt "$2" "$got" && ! python3 "$LIB" gt "$got" "$3"; then
      say "  PromQL $1 = $got, within $want (after $i queries)"
      return 0
    fi
    if [[ -n $got ]] && python3 "$LIB" gt "$got" "$3"; then
      say "  PromQL $1 = $got, more than the $3 at most expected"
      return 1
    fi
    sleep 2
  done
  say "  PromQL $1 = ${got:-(no series)} after 90 s, expected $want"
  return 1
}
# wait_promql_lines EXPR WANT: polls (2 s, bounded) until the whole "<labels> <value>" output is exactly WANT
wait_promql_lines() {
  local got="" i
  for ((i = 1; i <= 45; i++)); do
    got=$(promql "$1" | sort) || return 1
    if [[ $got == "$2" ]]; then
      say "  PromQL $1 = $(tr '\n' ';' <<<"$got") (after $i queries)"
      return 0
    fi
    sleep 2
  done
  say "  PromQL $1 = $(tr '\n' ';' <<<"$got") after 90 s, expected $(tr '\n' ';' <<<"$2")"
  return 1
}
# helm_test_payments: the payments the last `helm test` made (its pod's "POST /add -> 201" lines; the chart's
# test makes none since issue 10, and the scenario checks that the ledger did not grow)
helm_test_payments() {
  k logs "$RELEASE-test-api" -c api 2>/dev/null | grep -c '^POST /add -> 201 ' || true
}
# ledger_rows: how many transactions /getall returns
ledger_rows() {
  local body
  body=$(in_cluster "curl -fsS --max-time 20 http://$RELEASE:8080/getall") || return 1
  python3 "$LIB" count <<<"$body"
}
# pg_log_time LINE: the timestamp PostgreSQL put at the start of a log line (log_line_prefix %m), as epoch seconds
pg_log_time() { python3 "$LIB" pg-log-time "$1"; }
# servicemonitor_dry_run VALUES MODE: the chart's ServiceMonitor for these values, through the
# API server's validation of the real CRD (--dry-run=server, strict field validation), and a
# broken copy of it refused by the same
servicemonitor_dry_run() {
  local values=$1 mode=$2 sm out
  if ((!SERVICEMONITOR)); then say "  left out (--no-servicemonitor)"; return 0; fi
  ((HAVE_SM_CRD)) || fail "this cluster has no $SM_CRD CRD, so the chart's ServiceMonitor cannot be checked: install the Prometheus Operator's CRDs (cluster/e2e-local.sh does), or leave these steps out with --no-servicemonitor"
  sm=$(h template "$RELEASE" "$CHART" -f "$values" "${SETS[@]}" --set metrics.serviceMonitor.enabled=true \
    --show-only templates/servicemonitor.yaml) || fail "helm template of the ServiceMonitor ($mode)"
  say "  ServiceMonitor selector: $(printf '%s\n' "$sm" | sed -n '/matchLabels:/,/endpoints:/p' | grep -v ':$' | tr -s ' ' | tr '\n' ' ')"
  out=$(printf '%s\n' "$sm" | k apply --dry-run=server --validate=strict -f - 2>&1) \
    || { say "  $out"; fail "the API server refused the chart's ServiceMonitor ($mode)"; }
  say "  kubectl apply --dry-run=server: $out"
  if out=$(printf '%s\n' "$sm" | sed 's/interval: "30s"/interval: "30 seconds"/' | k apply --dry-run=server --validate=strict -f - 2>&1); then
    fail "the API server accepted a ServiceMonitor with interval \"30 seconds\": the CRD's schema is not enforced"
  fi
  say "  a copy with interval \"30 seconds\" is refused: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-220)"
  ok "the chart's ServiceMonitor ($mode) passes the API server's validation against the CRD"
}

# ------------------------------------------------------------------ preflight (every run)
preflight() {
  step "preflight"
  mkdir -p "$ARTIFACTS"
  command -v "$KUBECTL" >/dev/null || fail "kubectl not found ($KUBECTL)"
  command -v "$HELM" >/dev/null || fail "helm not found ($HELM); run scripts/install-tools.sh"
  command -v python3 >/dev/null || fail "python3 not found: the scenario reads JSON with it (e2e/scenario_lib.py)"
  local ctx server_version ctx_ns
  ctx=$("$KUBECTL" config current-context 2>/dev/null || echo "(none)")
  server_version=$("$KUBECTL" version -o json --request-timeout=15s 2>/dev/null | tr -d ' \n' | grep -o '"serverVersion":{[^}]*"gitVersion":"[^"]*"' | grep -o 'v[0-9][^"]*' || true)
  [[ -n $server_version ]] || fail "no cluster answers on the current kube context ($ctx)"
  say "context $ctx, server $server_version, helm $("$HELM" version --short 2>/dev/null)"
  say "namespace $NS, client image $CLIENT_IMAGE, extra helm args: ${SETS[*]:-(none)}, steps $FROM..$TO of ${#STEPS[@]}"
  [[ -d $CHART && -f $VALUES1 && -f $VALUES2 ]] || fail "chart or values files missing under $repo"
  CREATED_NS=0 USED_NS=0
  if ((FROM > 1)); then
    # the earlier steps ran in an earlier run that kept the namespace (--to, or --keep-namespace)
    "$KUBECTL" get namespace "$NS" >/dev/null 2>&1 \
      || fail "namespace $NS does not exist: steps 1..$((FROM - 1)) make what step $FROM needs (run e2e/run.sh --to $((FROM - 1)) first)"
    if [[ $(k get configmap "$SCENARIO_CM" -o 'go-template={{index .data "created-namespace"}}' 2>/dev/null) == yes ]]; then
      CREATED_NS=1
    else
      USED_NS=1
    fi
    ok "namespace $NS exists: continuing from step $FROM"
  elif "$KUBECTL" get namespace "$NS" >/dev/null 2>&1; then
    h status "$RELEASE" >/dev/null 2>&1 && fail "a release $RELEASE is already installed in namespace $NS (helm -n $NS uninstall $RELEASE first)"
    k get pvc "$RELEASE-postgresql" >/dev/null 2>&1 && fail "claim $RELEASE-postgresql already exists in namespace $NS (its data would be reused): delete it first"
    USED_NS=1
    k delete configmap "$SCENARIO_CM" --ignore-not-found >/dev/null   # an earlier run's, kept
    ok "namespace $NS exists: using it as it is (it is kept; what the scenario makes is removed at the end)"
  else
    "$KUBECTL" create namespace "$NS" >/dev/null
    CREATED_NS=1
    scenario_record created-namespace yes
    ok "namespace $NS created"
  fi
  readonly CREATED_NS USED_NS
  # In `default` the course's commands are run as written, without -n: the context's namespace must be default.
  COURSE=0
  if [[ $NS == default ]]; then
    ctx_ns=$("$KUBECTL" config view --minify -o jsonpath='{..namespace}' 2>/dev/null || true)
    [[ -z $ctx_ns || $ctx_ns == default ]] || fail "namespace default asked for, but the kube context's namespace is $ctx_ns: the course's commands (without -n) would go there"
    COURSE=1
    say "  namespace default: steps 11 and 13 run the course's commands literally (no -n)"
  fi
  readonly COURSE
  HAVE_SM_CRD=0
  if "$KUBECTL" get crd "$SM_CRD" >/dev/null 2>&1; then
    HAVE_SM_CRD=1
    say "ServiceMonitor CRD: $("$KUBECTL" get crd "$SM_CRD" -o jsonpath='{.metadata.annotations.operator\.prometheus\.io/version}' 2>/dev/null || true) present"
  elif ((SERVICEMONITOR)); then
    say "no $SM_CRD CRD in the cluster: steps 2 and 10 will fail (--no-servicemonitor leaves them out)"
  fi
  readonly HAVE_SM_CRD
  if ((PROMETHEUS)); then
    sed -e "s#@NAMESPACE@#$NS#g; s#@IMAGE@#$PROMETHEUS_IMAGE#g" "$PROMETHEUS_MANIFEST" | k apply -f - >"$ARTIFACTS/prometheus-apply.txt" \
      || { cat "$ARTIFACTS/prometheus-apply.txt"; fail "deploy Prometheus"; }
    ok "Prometheus ($PROMETHEUS_IMAGE) deployed in $NS (e2e/prometheus.yaml: kubernetes_sd by pod annotations)"
  fi
}

# ------------------------------------------------------------------ the steps
# the selector of billing's pods in task 1 mode
app_selector() { selector_of deployment/"$RELEASE"; }
# the id of step 4's payment (client 1, amount 1000)
first_tx() { scenario_value tx 4; }

step1_install_task1() {
  local sel
  title "helm install $RELEASE charts/billing -f values/task1.yaml; wait until ready"
  scenario_record started "$(date +%s)"
  h install "$RELEASE" "$CHART" -f "$VALUES1" "${SETS[@]}" --wait --timeout "$T" >"$ARTIFACTS/helm-install-1.txt" \
    || { cat "$ARTIFACTS/helm-install-1.txt"; fail "helm install"; }
  k rollout status deployment/"$RELEASE" --timeout="$T" >/dev/null || fail "deployment/$RELEASE not rolled out"
  k wait --for=condition=Ready pod -l app=postgres --timeout="$T" >/dev/null || fail "postgres pod not Ready"
  sel=$(app_selector)
  say "  pods: $(k get pods --no-headers -o custom-columns=N:.metadata.name,S:.status.phase | tr -s ' ' ':' | tr '\n' ' ')"
  ok "release installed, deployment/$RELEASE and the postgres pod Ready (app selector $sel)"
}

step2_servicemonitor_task1() {
  title "the chart's ServiceMonitor (task 1 mode) against the ServiceMonitor CRD on the API server"
  servicemonitor_dry_run "$VALUES1" "task 1, Deployment"
}

step3_prometheus_scrapes() {
  local pod
  title "Prometheus discovers the billing pod by its annotations and scrapes it"
  prometheus_on || return 0
  need_release 1 1
  k rollout status deployment/prometheus --timeout="$T" >/dev/null || fail "deployment/prometheus not rolled out"
  pod=$(k get pods -l "$(app_selector)" -o jsonpath='{.items[0].metadata.name}')
  # shellcheck disable=SC2016 # a Go template, not shell
  say "  billing pod annotations: $(k get pod "$pod" -o go-template='{{range $k, $v := .metadata.annotations}}{{$k}}={{$v}} {{end}}')"
  # only the billing pod is a target (PostgreSQL's pod has no scrape annotation), and it is up
  wait_promql_lines "up{namespace=\"$NS\"}" "instance=$(k get pod "$pod" -o jsonpath='{.status.podIP}'):8080,job=kubernetes-pods,namespace=$NS,pod=$pod,pod_uid=$(k get pod "$pod" -o jsonpath='{.metadata.uid}') 1" \
    || fail "Prometheus does not scrape exactly the billing pod $pod"
  ok "Prometheus scrapes $pod (and nothing else in $NS)"
}

step4_add_and_get() {
  local body tx
  title "from a temporary pod: POST /add?client_id=1&amount=1000, then GET /get/<id>"
  need_release 1 1
  body=$(curl_in_cluster POST "http://$RELEASE:8080/add?client_id=1&amount=1000") || fail "POST /add"
  [[ $body =~ ^Transaction\ added\.\ transaction\ id=([0-9]+)$ ]] || fail "unexpected /add answer: $body"
  tx=${BASH_REMATCH[1]}
  scenario_record tx "$tx"
  scenario_record paid.4 "task1 1 0"
  body=$(curl_in_cluster GET "http://$RELEASE:8080/get/$tx") || fail "GET /get/$tx"
  has_tx "$body" "$tx" 1000 1 || fail "/get/$tx does not hold client 1, amount 1000"
  ok "transaction id=$tx stored and read back"
}

step5_delete_postgres_pod() {
  local sel before after pg_uid pg_old pg_new tx
  title "kubectl delete pod -l app=postgres; the transaction survives, billing not restarted"
  need_release 1 1
  tx=$(first_tx)
  sel=$(app_selector)
  before=$(pod_fingerprint "$sel")
  pg_uid=$(k get pods -l app=postgres -o jsonpath='{.items[0].metadata.uid}')
  pg_old=$(k get pods -l app=postgres -o jsonpath='{.items[0].metadata.name}')
  k delete pod -l app=postgres --wait=true --timeout="$T" >/dev/null || fail "delete postgres pod"
  pg_new=$(wait_new_pod app=postgres "$pg_uid") || fail "no new postgres pod Ready within $T"
  say "  postgres pod $pg_old replaced by $pg_new (Ready)"
  getall_has "$tx" 1000 1 || fail "/getall lost transaction id=$tx after the postgres pod was deleted"
  after=$(pod_fingerprint "$sel")
  say "  billing pods before: $(echo "$before" | tr '\n' ';')"
  say "  billing pods after:  $(echo "$after" | tr '\n' ';')"
  [[ $before == "$after" ]] || fail "billing pods were replaced or restarted"
  ok "transaction id=$tx still in /getall; billing pods unchanged (same pods, same restart counts)"
}

step6_one_postmaster() {
  local tx pg_uid pg_old pg_new follow_pid load_pid t_delete t_ready waited old_down new_start t_old_down t_new_start
  local acked refused body missing rows unknown answers
  title "one postmaster per data directory: delete the PostgreSQL pod under write load, with a slow shutdown"
  need_release 1 1
  tx=$(first_tx)
  # A slow shutdown: the old server keeps running 10 s after its pod's deletion starts (a preStop pause added
  # here, as a long shutdown checkpoint would), while the Deployment's replacement pod starts at once on the same
  # volume. The chart's volume lock must keep the new server from starting until the old one has exited.
  k patch deployment "$RELEASE-postgresql" --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/lifecycle","value":{"preStop":{"exec":{"command":["sleep","10"]}}}}]' >/dev/null \
    || fail "patch the PostgreSQL Deployment with a slow shutdown"
  k rollout status deployment/"$RELEASE-postgresql" --timeout="$T" >/dev/null || fail "PostgreSQL not rolled out with the slow shutdown"
  pg_uid=$(k get pods -l app=postgres -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.uid}}{{end}}{{end}}')
  pg_old=$(k get pods -l app=postgres -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{end}}{{end}}')
  k wait --for=condition=Ready "pod/$pg_old" --timeout="$T" >/dev/null || fail "postgres pod $pg_old not Ready"
  getall_has "$tx" 1000 1 || fail "billing does not reach the slow-shutdown PostgreSQL"
  k logs -f "$pg_old" >"$ARTIFACTS/pg-old.log" 2>&1 &
  follow_pid=$!
  # The load: sequential POST /add for 45 s from a temporary pod, one "<status> <answer>" line each.
  in_cluster "end=\$((\$(date +%s) + 45)); while [ \$(date +%s) -lt \$end ]; do echo \"\$(curl -sS --max-time 5 -o /dev/stdout -w ' %{http_code}' -X POST 'http://$RELEASE:8080/add?client_id=load&amount=5' 2>&1 | tr -d '\n')\"; sleep 0.05; done" >"$ARTIFACTS/load.txt" &
  load_pid=$!
  sleep 8
  t_delete=$(date +%s)
  say "  \$ kubectl delete pod -l app=postgres   (under load, old server $pg_old)"
  k delete pod -l app=postgres --wait=false >/dev/null || fail "delete the postgres pod"
  pg_new=$(wait_new_pod app=postgres "$pg_uid") || fail "no new postgres pod Ready within $T"
  t_ready=$(date +%s)
  wait "$load_pid" || fail "the load pod failed"
  wait "$follow_pid" || true
  k logs "$pg_new" >"$ARTIFACTS/pg-new.log" 2>&1 || fail "logs of $pg_new"
  say "  old server's last lines: $(tail -n 3 "$ARTIFACTS/pg-old.log" | tr '\n' '|')"
  say "  new pod's first lines:   $(head -n 4 "$ARTIFACTS/pg-new.log" | tr '\n' '|')"
  grep -q 'volume-lock: waiting for .*another PostgreSQL server still runs on this volume' "$ARTIFACTS/pg-new.log" \
    || fail "the new pod $pg_new did not wait for the volume lock (the old server was still running)"
  waited=$(sed -n 's/.*volume-lock: acquired .* after waiting \([0-9]*\)s$/\1/p' "$ARTIFACTS/pg-new.log")
  [[ -n $waited ]] || fail "the new pod $pg_new never says it acquired the volume lock"
  old_down=$(grep 'database system is shut down' "$ARTIFACTS/pg-old.log" | tail -n 1)
  [[ -n $old_down ]] || fail "the old server's log has no 'database system is shut down' (it did not exit cleanly)"
  new_start=$(grep -m1 -E 'starting PostgreSQL|database system was shut down at' "$ARTIFACTS/pg-new.log")
  [[ -n $new_start ]] || fail "the new server's log has no start line"
  t_old_down=$(pg_log_time "$old_down") t_new_start=$(pg_log_time "$new_start")
  python3 "$LIB" gt "$t_new_start" "$t_old_down" \
    || fail "the new server started (${new_start%% [*}) before the old one had shut down (${old_down%% [*})"
  say "  old server shut down at ${old_down%% [*}; new server started at ${new_start%% [*} after waiting ${waited}s for the lock"
  acked=$(grep -c 'Transaction added. transaction id=[0-9]* 201$' "$ARTIFACTS/load.txt" || true)
  refused=$(grep -vc ' 201$' "$ARTIFACTS/load.txt" || true)
  ((acked > 0)) || fail "no payment was acknowledged under load"
  body=$(curl_in_cluster GET "http://$RELEASE:8080/getall" 2>/dev/null) || fail "GET /getall after the deletion"
  printf '%s' "$body" >"$ARTIFACTS/getall-after-load.json"
  missing=$(python3 "$LIB" missing-acked "$ARTIFACTS/getall-after-load.json" "$ARTIFACTS/load.txt")
  [[ -z $missing ]] || fail "acknowledged payments missing after the deletion: $missing"
  rows=$(python3 "$LIB" count-client load <<<"$body")
  say "  load: $acked payments acknowledged (201), $refused requests not (while no server could take them); $rows load rows in the ledger afterwards"
  say "  deletion at +0 s, new pod Ready at +$((t_ready - t_delete)) s"
  ((rows >= acked)) || fail "fewer load rows ($rows) than acknowledged payments ($acked)"
  # What the scenario saw, for step 8's Prometheus count: the payments acknowledged, and those whose fate it could
  # not know (a payment committed after its client gave up is counted by billing but not acknowledged).
  answers=$(python3 "$LIB" load-answers "$ARTIFACTS/load.txt") || fail "read the load's answers ($ARTIFACTS/load.txt)"
  read -r acked unknown <<<"$answers"
  say "  of the load's answers: $acked acknowledged, $unknown of unknown outcome (no answer, or 'may or may not be recorded')"
  ((rows <= acked + unknown)) || fail "more load rows ($rows) than payments acknowledged ($acked) or of unknown outcome ($unknown)"
  scenario_record paid.6 "task1 $acked $unknown"
  ok "the new server started only after the old one exited (waited ${waited}s for the lock); all $acked acknowledged payments are there"
  printf 'pg-lock: acked=%s refused=%s rows=%s waited=%ss ready_after=%ss\n' "$acked" "$refused" "$rows" "$waited" "$((t_ready - t_delete))" >"$ARTIFACTS/pg-lock-figures.txt"
}

step7_helm_test_task1() {
  local rows_before rows_after n
  title "helm test $RELEASE (task 1 mode): passes and leaves no row"
  need_release 1 1
  rows_before=$(ledger_rows) || fail "count the ledger's rows"
  h test "$RELEASE" --timeout "$T" >"$ARTIFACTS/helm-test-1.txt" 2>&1 || { cat "$ARTIFACTS/helm-test-1.txt"; fail "helm test (task 1)"; }
  say "  $(grep -E '^(TEST SUITE|Phase)' "$ARTIFACTS/helm-test-1.txt" | tr -s ' ' | tr '\n' ' ')"
  say "  ledger container: $(k logs "$RELEASE-test-api" -c ledger 2>&1 | tail -n 1)"
  rows_after=$(ledger_rows) || fail "count the ledger's rows"
  ((rows_after == rows_before)) || fail "helm test changed the ledger: $rows_before rows before, $rows_after after"
  ok "helm test passed in task 1 mode; the ledger still has $rows_after rows"
  n=$(helm_test_payments)
  scenario_record paid.7 "task1 $n 0"
  say "  helm test made $n payment(s)"
}

step8_prometheus_task1() {
  local paid acked unknown
  title "Prometheus counts the payments of task 1 that the scenario saw acknowledged"
  prometheus_on || return 0
  paid=$(payments_of task1 4 6 7)
  read -r acked unknown <<<"$paid"
  say "  steps 4, 6 and 7: $acked payments acknowledged, $unknown of unknown outcome"
  # one Deployment pod since step 1 (step 5 checked it was not restarted): its counter holds them all. It counts
  # every committed payment: each acknowledged one, and those of unknown outcome that committed.
  wait_promql_between "sum(billing_payments_created_total{namespace=\"$NS\"})" "$acked" "$((acked + unknown))" \
    || fail "PromQL does not count the $acked payments acknowledged in task 1 (plus at most the $unknown of unknown outcome)"
  wait_promql_between "sum(http_requests_total{namespace=\"$NS\",method=\"POST\",route=\"/add\",status=\"201\"})" "$acked" "$((acked + unknown))" \
    || fail "http_requests_total does not count the $acked POST /add 201s the scenario received (plus at most $unknown unanswered)"
  ok "PromQL: the $acked payments acknowledged in task 1$( ((unknown)) && echo ", and no more than the $unknown of unknown outcome")"
}

step9_upgrade_task2() {
  local n tx
  title "helm upgrade $RELEASE charts/billing -f values/task2.yaml; billing-stateful-0..2 Ready"
  need_release 1 1
  tx=$(first_tx)
  h upgrade "$RELEASE" "$CHART" -f "$VALUES2" "${SETS[@]}" --wait --timeout "$T" >"$ARTIFACTS/helm-upgrade-2.txt" \
    || { cat "$ARTIFACTS/helm-upgrade-2.txt"; fail "helm upgrade"; }
  k rollout status statefulset/"$RELEASE"-stateful --timeout="$T" >/dev/null || fail "statefulset not rolled out"
  for n in 0 1 2; do
    k wait --for=condition=Ready pod/"$RELEASE-stateful-$n" --timeout="$T" >/dev/null || fail "pod $RELEASE-stateful-$n not Ready"
  done
  say "  pods: $(k get pods --no-headers -o custom-columns=N:.metadata.name,S:.status.phase | tr -s ' ' ':' | tr '\n' ' ')"
  getall_has "$tx" 1000 1 || fail "/getall through service $RELEASE lost transaction id=$tx after the upgrade"
  ok "billing-stateful-0..2 Ready; transaction id=$tx still in /getall through service $RELEASE"
}

step10_servicemonitor_task2() {
  title "the chart's ServiceMonitor (task 2 mode, headless Service) against the CRD on the API server"
  servicemonitor_dry_run "$VALUES2" "task 2, StatefulSet"
}

step11_pod_logs() {
  local n pod host amount body log lines
  title "POST /add to each pod's own DNS name; each /var/log/app.log holds exactly its own line"
  need_release 2 9
  for n in 0 1 2; do
    pod=$RELEASE-stateful-$n
    host=$pod.$RELEASE-stateful.$NS.svc.cluster.local
    amount=$((100 * (n + 1) + 7))
    body=$(curl_in_cluster POST "http://$host:8080/add?client_id=e2e-$n&amount=$amount") || fail "POST /add to $host"
    [[ $body =~ ^Transaction\ added\.\ transaction\ id=[0-9]+$ ]] || fail "unexpected /add answer from $host: $body"
  done
  scenario_record paid.11 "task2 3 0"
  for n in 0 1 2; do
    pod=$RELEASE-stateful-$n
    amount=$((100 * (n + 1) + 7))
    log=$(log_of "$pod") || fail "kubectl exec $pod -c billing -- cat /var/log/app.log"
    say "  $pod /var/log/app.log: $(printf '%s' "$log" | tr '\n' '|')"
    lines=$(printf '%s\n' "$log" | sed '/^$/d' | wc -l)
    ((lines == 1)) || fail "$pod log has $lines lines, expected exactly 1"
    [[ $log =~ $(line_re "$pod" "e2e-$n" "$amount") ]] || fail "$pod log line is not its own in the course's format"
  done
  ok "each pod's log holds exactly its own line, with its own host name, in the course's format"
}

step12_prometheus_per_pod() {
  title "Prometheus: each billing-stateful pod reports its one payment (before step 13 replaces pod 2)"
  prometheus_on || return 0
  need_release 2 9
  scenario_value paid.11 11 >/dev/null
  wait_promql_lines "sum by (pod) (billing_payments_created_total{namespace=\"$NS\",pod=~\"$RELEASE-stateful-[0-9]+\"})" \
    "$(printf 'pod=%s-stateful-%d 1\n' "$RELEASE" 0 "$RELEASE" 1 "$RELEASE" 2)" \
    || fail "Prometheus does not show one payment on each of $RELEASE-stateful-0..2"
  ok "one payment on each of $RELEASE-stateful-0..2, as in their logs"
}

step13_delete_stateful_pod() {
  local uid2 line log new2 i
  title "kubectl delete pod $RELEASE-stateful-2; its log survives"
  need_release 2 9
  # the line step 11 made it write, read before the deletion
  line=$(log_of "$RELEASE-stateful-2") || fail "read the log of $RELEASE-stateful-2"
  [[ $line =~ $(line_re "$RELEASE-stateful-2" e2e-2 307) ]] || fail "$RELEASE-stateful-2's log does not hold step 11's one line (run e2e/run.sh --from 11): $line"
  uid2=$(k get pod "$RELEASE-stateful-2" -o jsonpath='{.metadata.uid}')
  if ((COURSE)); then
    # The course's commands as written, and the walkthrough's wait between them (docs/walkthrough.en.md):
    # `kubectl delete pod` returns once the old pod is gone, before the StatefulSet has made the new one, so
    # wait for the pod to exist, then to be Ready, then exec.
    say "  \$ kubectl delete pod $RELEASE-stateful-2"
    "$KUBECTL" delete pod "$RELEASE-stateful-2" >/dev/null || fail "kubectl delete pod $RELEASE-stateful-2"
    say "  \$ kubectl wait --for=create pod/$RELEASE-stateful-2 --timeout=60s"
    "$KUBECTL" wait --for=create "pod/$RELEASE-stateful-2" --timeout=60s >/dev/null || fail "kubectl wait --for=create pod/$RELEASE-stateful-2"
    say "  \$ kubectl wait --for=condition=Ready pod/$RELEASE-stateful-2 --timeout=120s"
    "$KUBECTL" wait --for=condition=Ready "pod/$RELEASE-stateful-2" --timeout=120s >/dev/null || fail "kubectl wait --for=condition=Ready pod/$RELEASE-stateful-2"
    say "  \$ kubectl exec $RELEASE-stateful-2 -- cat /var/log/app.log"
    log=$("$KUBECTL" exec "$RELEASE-stateful-2" -- cat /var/log/app.log) || fail "kubectl exec $RELEASE-stateful-2 -- cat /var/log/app.log, right after the waits"
    [[ $log == *"$line"* ]] || fail "the line written before the deletion is not in the new pod's log: $log"
    ok "the course's delete, the two waits and the exec: the re-created pod's log holds its line"
  else
    k delete pod "$RELEASE-stateful-2" --wait=true --timeout="$T" >/dev/null || fail "delete $RELEASE-stateful-2"
  fi
  new2=""
  for ((i = 0; i < TIMEOUT; i++)); do
    new2=$(k get pod "$RELEASE-stateful-2" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
    [[ -n $new2 && $new2 != "$uid2" ]] && break
    sleep 1
  done
  [[ -n $new2 && $new2 != "$uid2" ]] || fail "$RELEASE-stateful-2 was not re-created"
  k wait --for=condition=Ready pod/"$RELEASE-stateful-2" --timeout="$T" >/dev/null || fail "new $RELEASE-stateful-2 not Ready"
  log=$(log_of "$RELEASE-stateful-2") || fail "read log of the new $RELEASE-stateful-2"
  say "  new $RELEASE-stateful-2 (uid $new2) /var/log/app.log: $(printf '%s' "$log" | tr '\n' '|')"
  [[ $log == *"$line"* ]] || fail "the line written before the deletion is gone"
  ok "the re-created pod's log still holds: $line"
  # the new pod has a new IP: wait until its own name reaches it, as a client would
  wait_answers "http://$RELEASE-stateful-2.$RELEASE-stateful.$NS.svc.cluster.local:8080/ping" "re-created pod"
}

step14_helm_test_task2() {
  local rows_before rows_after n after
  local -A log_before
  title "helm test $RELEASE (task 2 mode): passes, leaves no row and no line in any pod's log"
  need_release 2 9
  rows_before=$(ledger_rows) || fail "count the ledger's rows"
  for n in 0 1 2; do log_before[$n]=$(log_of "$RELEASE-stateful-$n") || fail "log of $RELEASE-stateful-$n"; done
  h test "$RELEASE" --timeout "$T" >"$ARTIFACTS/helm-test-2.txt" 2>&1 || { cat "$ARTIFACTS/helm-test-2.txt"; fail "helm test (task 2)"; }
  say "  $(grep -E '^(TEST SUITE|Phase)' "$ARTIFACTS/helm-test-2.txt" | tr -s ' ' | tr '\n' ' ')"
  rows_after=$(ledger_rows) || fail "count the ledger's rows"
  ((rows_after == rows_before)) || fail "helm test changed the ledger: $rows_before rows before, $rows_after after"
  for n in 0 1 2; do
    after=$(log_of "$RELEASE-stateful-$n") || fail "log of $RELEASE-stateful-$n"
    [[ $after == "${log_before[$n]}" ]] || fail "helm test added to $RELEASE-stateful-$n's log: $(printf '%s' "$after" | tr '\n' '|')"
  done
  ok "helm test passed in task 2 mode; the ledger still has $rows_after rows and each pod's log only its own line"
  n=$(helm_test_payments)
  scenario_record paid.14 "task2 $n 0"
  say "  helm test made $n payment(s)"
}

step15_prometheus_task2() {
  local paid1 paid2 acked1 unknown1 acked2 unknown2 started range live
  title "Prometheus counts the payments of task 2 and of the whole scenario"
  prometheus_on || return 0
  paid1=$(payments_of task1 4 6 7) paid2=$(payments_of task2 11 14)
  read -r acked1 unknown1 <<<"$paid1"
  read -r acked2 unknown2 <<<"$paid2"
  started=$(scenario_value started 1)
  say "  acknowledged: task 1 (steps 4, 6, 7) $acked1 (+$unknown1 of unknown outcome); task 2 (steps 11, 14) $acked2 (+$unknown2)"
  # Step 13 replaced billing-stateful-2: the new pod's counter started at 0, so the live pods'
  # sum misses the old pod's payment. Each pod (uid) is a series of its own, and the most
  # each series reached over the scenario (since step 1) adds up to every payment made.
  range=$(($(date +%s) - started + 60))s
  wait_promql_between "sum(max_over_time(billing_payments_created_total{namespace=\"$NS\",pod=~\"$RELEASE-stateful-[0-9]+\"}[$range]))" \
    "$acked2" "$((acked2 + unknown2))" || fail "PromQL does not count the $acked2 payments acknowledged in task 2"
  wait_promql_between "sum(max_over_time(billing_payments_created_total{namespace=\"$NS\"}[$range]))" \
    "$((acked1 + acked2))" "$((acked1 + acked2 + unknown1 + unknown2))" \
    || fail "PromQL does not count the $((acked1 + acked2)) payments acknowledged in the scenario"
  live=$(promql_value "sum(billing_payments_created_total{namespace=\"$NS\"})") || fail "PromQL query"
  say "  the live pods' counters alone add up to $live (the replaced billing-stateful-2's payment went with it)"
  ok "PromQL: the $acked2 payments acknowledged in task 2, $((acked1 + acked2)) in the scenario"
}

step16_reinstall() {
  local tx pg_pod pg_claim i phase pv bad name policy status claim pv_again body n
  title "helm uninstall: the PostgreSQL claim is kept, volumes Retained; install task 1 again: data back"
  need_release 2 9
  tx=$(first_tx)
  pg_pod=$(k get pods -l app=postgres -o jsonpath='{.items[0].metadata.name}')
  pg_claim=$(k get pod "$pg_pod" -o jsonpath='{range .spec.volumes[*]}{.persistentVolumeClaim.claimName}{end}')
  [[ -n $pg_claim ]] || fail "postgres pod $pg_pod has no PersistentVolumeClaim"
  h uninstall "$RELEASE" --wait --timeout "$T" >"$ARTIFACTS/helm-uninstall.txt" 2>&1 || { cat "$ARTIFACTS/helm-uninstall.txt"; fail "helm uninstall"; }
  for ((i = 0; i < TIMEOUT; i++)); do
    [[ -z $(k get pods -l app=postgres -o name 2>/dev/null) ]] && break
    sleep 1
  done
  phase=$(k get pvc "$pg_claim" -o jsonpath='{.status.phase}' 2>/dev/null) || fail "claim $pg_claim was deleted by helm uninstall"
  pv=$(k get pvc "$pg_claim" -o jsonpath='{.spec.volumeName}')
  say "  claim $pg_claim kept ($phase), volume $pv"
  bad=0
  while read -r name policy status claim; do
    [[ -n $name ]] || continue
    say "  PV $name: reclaimPolicy=$policy status=$status claim=$claim"
    [[ $policy == Retain ]] || bad=1
  done < <("$KUBECTL" get pv -o go-template='{{range .items}}{{if .spec.claimRef}}{{if eq .spec.claimRef.namespace "'"$NS"'"}}{{.metadata.name}} {{.spec.persistentVolumeReclaimPolicy}} {{.status.phase}} {{.spec.claimRef.name}}{{"\n"}}{{end}}{{end}}{{end}}')
  ((bad == 0)) || fail "a volume of the release is not Retained"
  h install "$RELEASE" "$CHART" -f "$VALUES1" "${SETS[@]}" --wait --timeout "$T" >"$ARTIFACTS/helm-install-2.txt" \
    || { cat "$ARTIFACTS/helm-install-2.txt"; fail "helm install (again)"; }
  k rollout status deployment/"$RELEASE" --timeout="$T" >/dev/null || fail "deployment/$RELEASE not rolled out"
  k wait --for=condition=Ready pod -l app=postgres --timeout="$T" >/dev/null || fail "postgres pod not Ready"
  pv_again=$(k get pvc "$pg_claim" -o jsonpath='{.spec.volumeName}')
  [[ $pv_again == "$pv" ]] || fail "claim $pg_claim now on volume $pv_again, not $pv"
  # the re-created Service has a new ClusterIP: wait until its name reaches it
  wait_answers "http://$RELEASE:8080/ping" "re-created Service"
  getall_has "$tx" 1000 1 || fail "transaction id=$tx not back after reinstall"
  body=$(curl_in_cluster GET "http://$RELEASE:8080/getall")
  for n in 0 1 2; do
    [[ $(printf '%s' "$body" | tr -d ' \n') == *"\"client_id\":\"e2e-$n\""* ]] || fail "transaction of client e2e-$n not back"
  done
  ok "reinstalled on the kept claim $pg_claim (volume $pv): all transactions are back"
}

# roles DEPLOYMENT USER: the two roles' attributes, read inside the PostgreSQL pod over its socket
roles() {
  k exec "deploy/$1" -c postgresql -- psql -X -t -A -U "$2" -d postgres \
    -c "SELECT rolname || ' super=' || rolsuper || ' createdb=' || rolcreatedb || ' createrole=' || rolcreaterole || ' replication=' || rolreplication FROM pg_roles WHERE rolname IN ('billing', 'postgres') ORDER BY 1"
}

step17_least_privilege() {
  local want_roles got owner refs old_rev old old_dir n body
  title "least privilege: billing's role owns the ledger and nothing else; an upgrade from a release made before it"
  need_release 1 16
  want_roles=$'billing super=false createdb=false createrole=false replication=false\npostgres super=true createdb=true createrole=true replication=true'
  got=$(roles "$RELEASE-postgresql" postgres) || fail "read the roles of $RELEASE-postgresql"
  say "  $RELEASE (fresh install): $(tr '\n' ';' <<<"$got")"
  [[ $got == "$want_roles" ]] || fail "roles of the fresh install are not as promised"
  owner=$(k exec "deploy/$RELEASE-postgresql" -c postgresql -- psql -X -t -A -U postgres -d billing -c "SELECT tableowner FROM pg_tables WHERE tablename = 'transactions'")
  [[ $owner == billing ]] || fail "the ledger is owned by $owner, not billing"
  # billing's pods reference only the application Secret
  refs=$(k get pods -l "$(app_selector)" -o jsonpath='{range .items[*]}{range .spec.containers[*].env[*]}{.valueFrom.secretKeyRef.name}{" "}{end}{range .spec.volumes[*]}{.secret.secretName}{" "}{end}{end}')
  [[ $refs != *superuser* ]] || fail "a billing pod references the superuser Secret: $refs"
  ok "billing is a plain role owning the ledger; postgres is the superuser; billing's pods do not see its Secret"

  old_rev=${E2E_OLD_CHART_REV:-7781c66d42ab352a49831ca7ce5a08846f6f3288}
  old=billing-old
  old_dir=$ARTIFACTS/chart-before-roles
  git -C "$repo" cat-file -e "$old_rev^{commit}" 2>/dev/null \
    || fail "commit $old_rev (the chart before the application role) is not in this clone: fetch the full history, or set E2E_OLD_CHART_REV"
  ! h status "$old" >/dev/null 2>&1 || fail "a release $old is already in $NS (an earlier run of this step's): helm -n $NS uninstall $old first"
  mkdir -p "$old_dir"
  git -C "$repo" archive "$old_rev" charts/billing | tar -x -C "$old_dir"
  say "  chart of $old_rev (before the application role) as release $old"
  h install "$old" "$old_dir/charts/billing" -f "$VALUES1" "${SETS[@]}" --wait --timeout "$T" >"$ARTIFACTS/helm-install-old.txt" 2>&1 \
    || { cat "$ARTIFACTS/helm-install-old.txt"; fail "helm install of the chart before the application role"; }
  for n in 1 2 3; do
    curl_in_cluster POST "http://$old:8080/add?client_id=old-$n&amount=$n" >/dev/null || fail "POST /add to $old"
  done
  got=$(roles "$old-postgresql" billing) || fail "roles of $old"
  say "  before the upgrade: $(tr '\n' ';' <<<"$got")"
  h upgrade "$old" "$CHART" -f "$VALUES1" "${SETS[@]}" --wait --timeout "$T" >"$ARTIFACTS/helm-upgrade-old.txt" 2>&1 \
    || { cat "$ARTIFACTS/helm-upgrade-old.txt"; fail "helm upgrade $old to this chart"; }
  got=$(roles "$old-postgresql" postgres) || fail "roles of $old after the upgrade"
  say "  after the upgrade:  $(tr '\n' ';' <<<"$got")"
  [[ $got == "$want_roles" ]] || fail "the upgrade did not convert billing into a plain role"
  body=$(curl_in_cluster POST "http://$old:8080/add?client_id=old-4&amount=4") || fail "POST /add to $old after the upgrade"
  body=$(curl_in_cluster GET "http://$old:8080/getall") || fail "GET /getall of $old"
  for n in 1 2 3 4; do
    [[ $(tr -d ' \n' <<<"$body") == *"\"client_id\":\"old-$n\""* ]] || fail "payment old-$n missing after the upgrade"
  done
  h test "$old" --timeout "$T" >"$ARTIFACTS/helm-test-old.txt" 2>&1 || { cat "$ARTIFACTS/helm-test-old.txt"; fail "helm test $old"; }
  # Done with it: its pods are scrape targets of the same job as billing's, and step 18 needs billing's alone.
  h uninstall "$old" --wait --timeout "$T" >"$ARTIFACTS/helm-uninstall-old.txt" 2>&1 \
    || { cat "$ARTIFACTS/helm-uninstall-old.txt"; fail "helm uninstall $old"; }
  ok "upgraded from the chart of $old_rev: roles converted in place, the 3 payments kept, billing writes as its plain role, helm test passes; $old uninstalled"
}

step18_alerts() {
  title "the chart's alerting rules in the real Prometheus: BillingDown fires when billing is scaled to 0"
  prometheus_on || return 0
  need_release 1 16
  ! h status billing-old >/dev/null 2>&1 || fail "release billing-old (step 17's) is still installed: its pods would answer for billing's"
  "$repo/e2e/alerts.sh" --kubectl "$KUBECTL" --helm "$HELM" --namespace "$NS" --release "$RELEASE" \
    || fail "e2e/alerts.sh: the chart's alerting rules (see its output above)"
  ok "Prometheus loaded the chart's rules; BillingDown stayed quiet while billing served, fired at 0 replicas, resolved after"
}

# ------------------------------------------------------------------ main
STEP_NO=0   # the step running (its number)
# title TEXT: the heading of the running step, "N. TEXT"
title() { step "$STEP_NO. $1"; }
# prometheus_on: false (saying so) when the Prometheus steps are left out
prometheus_on() { ((PROMETHEUS)) && return 0; say "  left out (--no-prometheus)"; return 1; }

main() {
  local n fn paid1 paid2 acked1 acked2 unknown
  if ((LIST)); then
    for ((n = 1; n <= ${#STEPS[@]}; n++)); do printf '%2d %s\n' "$n" "${STEPS[n - 1]}"; done
    return 0
  fi
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  preflight
  for ((n = FROM; n <= TO; n++)); do
    fn=step${n}_${STEPS[n - 1]}
    declare -F "$fn" >/dev/null || fail "no function $fn for step $n"
    STEP_NO=$n
    "$fn"
  done
  step "done"
  say "steps $FROM..$TO of ${#STEPS[@]} passed"
  if ((PROMETHEUS && FROM == 1 && TO == ${#STEPS[@]})); then
    paid1=$(payments_of task1 4 6 7) paid2=$(payments_of task2 11 14)
    read -r acked1 unknown <<<"$paid1"
    read -r acked2 _ <<<"$paid2"
    say "payments acknowledged in the scenario: $((acked1 + acked2)) (task 1: $acked1, task 2: $acked2; $unknown of unknown outcome); PromQL counted them (steps 8, 15)"
  fi
  if ((FROM == 1 && TO == ${#STEPS[@]})); then say "ALL STEPS PASSED in $(($(date +%s) - t0))s"; fi
}
main
