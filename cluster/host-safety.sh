#!/usr/bin/env bash
# Checks that cluster/up.sh and cluster/down.sh touch only what they make
# (issue 10 §4). Used by cluster/e2e-local.sh --up --down around the run:
#
#   host-safety.sh refusal     up.sh must refuse to start while another cluster's kubelet process and a
#                              KUBE-* iptables chain are present (both planted here, then removed), and
#                              name both in its message
#   host-safety.sh plant       plant things of "another program" that the old down.sh destroyed: a CNI-*
#                              chain jumped to from nat POSTROUTING (as rootful podman makes), a conntrack
#                              entry in 10.244.0.0/16 outside our node's 10.244.0.0/24
#   host-safety.sh snapshot F  the host state down.sh must leave as it was: iptables (IPv4/6, all tables),
#                              nft tables, addresses, routes, links, mounts, cgroup directories, sysctls, and
#                              the processes of the cluster (cluster_processes in common.sh: run from our
#                              binaries, state or run directories, our containerd's shims, containers; none)
#   host-safety.sh compare F   fails, showing the difference, unless the host matches snapshot F and the
#                              planted conntrack entry is still there (--without-planted: no such entry expected)
#   host-safety.sh unplant     remove what plant made
#   host-safety.sh killed-run  start the cluster (up.sh) and SIGKILL every process of it, as a cancelled CI job or
#                              an ended session does: no teardown runs, and our state, mounts, links, chains and
#                              cgroups are left for the next run's down.sh (e2e-local.sh then checks it leaves the
#                              host as it was before this)
set -euo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
[[ $(id -u) == 0 ]] || die "run as root"

DECOY_CHAIN=CNI-E2E-FOREIGN
DECOY_KUBE_CHAIN=KUBE-E2E-FOREIGN
DECOY_CT=(-p tcp -s 10.244.200.5 -d 10.244.200.6 --sport 40000 --dport 5432)

host_state() {
  local f=$1 s p why
  {
    echo "## iptables"; iptables_snapshot
    echo "## nft tables"; nft list tables 2>/dev/null | sort
    echo "## addresses"; ip -o addr show | awk '{$1=""; print}' | sed 's/valid_lft.*//' | sort
    echo "## routes"; ip route show table all | grep -v '^local\|^broadcast\|^multicast\|^ff00::/8\|^fe80::/64' | sort
    echo "## links"; ip -o link show | awk -F': ' '{print $2}' | sort
    echo "## mounts"; awk '{print $2, $3}' /proc/self/mounts | sort
    echo "## cgroups"; find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sort
    # without PIDs (they differ from run to run): "<why> <command line>" of each, sorted
    echo "## processes of the cluster (exe under $CLUSTER_CACHE, command line or cwd under $STATE or $RUN, kubepods cgroup)"
    cluster_processes | while read -r p why; do
      printf '%s %s\n' "$why" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"
    done | sort
    echo "## sysctls"
    for s in "${WATCHED_SYSCTLS[@]}"; do v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"; done
  } >"$f"
}

# What an interrupted earlier run (killed before its teardown) may have left planted: ours by name, so removed.
unplant() {
  iptables -t nat -D POSTROUTING -s 10.88.0.0/16 -j "$DECOY_CHAIN" 2>/dev/null || true
  iptables -t nat -F "$DECOY_CHAIN" 2>/dev/null || true
  iptables -t nat -X "$DECOY_CHAIN" 2>/dev/null || true
  iptables -t nat -X "$DECOY_KUBE_CHAIN" 2>/dev/null || true
  conntrack -D "${DECOY_CT[@]}" >/dev/null 2>&1 || true
}

case ${1:-} in
  refusal)
    # With leftovers of an earlier run up.sh first runs down.sh, which removes every KUBE-* chain that run's
    # snapshot lacks, the planted one too: the check would test down.sh, not the refusal.
    [[ ! -e $STATE && ! -e $RUN ]] \
      || die "leftovers of an earlier run ($STATE, $RUN): tear them down first (cluster/down.sh)"
    unplant
    iptables -t nat -N "$DECOY_KUBE_CHAIN"
    fake=$(mktemp -d); cp "$(command -v sleep)" "$fake/kubelet"
    setsid "$fake/kubelet" 120 </dev/null >/dev/null 2>&1 &
    fake_pid=$!
    rc=0
    out=$(SKIP_DEPS=1 bash "$here/up.sh" 2>&1) || rc=$?
    kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; rm -rf "$fake"
    printf '%s\n' "$out" | sed 's/^/    up.sh: /' >&2
    iptables -t nat -X "$DECOY_KUBE_CHAIN" 2>/dev/null \
      || die "up.sh removed iptables chain $DECOY_KUBE_CHAIN (table nat), which it did not make"
    ((rc != 0)) || die "up.sh started beside another cluster's kubelet and KUBE-* chain"
    grep -q "process kubelet (pid $fake_pid)" <<<"$out" || die "up.sh's refusal does not name the kubelet process"
    grep -q "iptables chain $DECOY_KUBE_CHAIN in table nat" <<<"$out" || die "up.sh's refusal does not name the chain"
    [[ ! -e $STATE && ! -e $RUN ]] || die "up.sh left state behind while refusing"
    log "host-safety: up.sh refused to start beside a kubelet process and a KUBE-* chain, naming both"
    ;;
  plant)
    iptables -t nat -N "$DECOY_CHAIN"
    iptables -t nat -A "$DECOY_CHAIN" -d 10.88.0.0/16 -j ACCEPT
    iptables -t nat -A POSTROUTING -s 10.88.0.0/16 -j "$DECOY_CHAIN"
    conntrack -I "${DECOY_CT[@]}" --state ESTABLISHED -t 3600 >/dev/null 2>&1 \
      || die "could not plant a conntrack entry (conntrack -I)"
    log "host-safety: planted iptables nat chain $DECOY_CHAIN (jumped to from POSTROUTING) and a conntrack entry 10.244.200.5 -> 10.244.200.6"
    ;;
  snapshot) host_state "$2" ;;
  killed-run)
    [[ ! -e $STATE && ! -e $RUN ]] || die "leftovers of an earlier run ($STATE, $RUN): tear them down first (cluster/down.sh)"
    SKIP_DEPS=1 bash "$here/up.sh" >/dev/null
    pids=()
    for f in "$PIDS"/*.pid "$RUN"/containerd/io.containerd.runtime.v2.task/*/*/shim.pid; do
      [[ -s $f ]] && pids+=("$(cat "$f")")
    done
    # the containers' own processes, which outlive their shims
    mapfile -t -O "${#pids[@]}" pids < <(find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs -exec cat {} + 2>/dev/null)
    ((${#pids[@]} > 0)) || die "killed-run: found no process of the cluster up.sh started"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do pid_alive kube-apiserver || pid_alive kubelet || pid_alive containerd || break; sleep 0.1; done
    ! pid_alive kube-apiserver || die "killed-run: kube-apiserver survived SIGKILL"
    [[ -e $STATE ]] || die "killed-run: up.sh left no state behind"
    log "host-safety: killed the started cluster with SIGKILL (${#pids[@]} processes: control plane, containerd, shims, containers); no teardown ran"
    ;;
  compare)
    now=$(mktemp); host_state "$now"
    if ! diff -u "$2" "$now" >"$now.diff"; then
      sed 's/^/    /' "$now.diff" >&2
      rm -f "$now" "$now.diff"
      die "host-safety: the host is not as it was before up.sh (diff above: - before, + after down.sh)"
    fi
    rm -f "$now" "$now.diff"
    if [[ ${3:-} == --without-planted ]]; then
      log "host-safety: the host matches its state before the killed run (iptables, nft, addresses, routes, links, mounts, cgroups, processes, sysctls)"
      exit 0
    fi
    conntrack -L "${DECOY_CT[@]}" 2>/dev/null | grep -q 10.244.200.5 \
      || die "host-safety: down.sh deleted a conntrack entry outside our pod range (10.244.200.5)"
    log "host-safety: after down.sh the host matches its state before up.sh (iptables, nft, addresses, routes, links, mounts, cgroups, processes, sysctls); the planted chain and conntrack entry are intact"
    ;;
  unplant) unplant ;;
  *) echo "usage: $0 refusal|plant|killed-run|snapshot FILE|compare FILE [--without-planted]|unplant" >&2; exit 2 ;;
esac
