#!/usr/bin/env bash
# Tear down the local cluster started by cluster/up.sh and leave the machine as
# up.sh found it, touching only what up.sh recorded (the state contract in
# common.sh) or what is the cluster's by construction: every process stopped by
# its recorded PID (containers through containerd), then any process still
# running from the cluster's binaries or state directories (cluster_processes),
# mounts under the cluster's own directories unmounted, the CNI bridge, the node
# address and the route removed, the KUBE-*/CNI-*/BILLING-CLUSTER iptables
# chains that were not there before up.sh (and the rules jumping to them)
# removed, conntrack entries of our pod range only, sysctls put back, the
# kubepods cgroups up.sh recorded removed, state directories deleted. Build
# caches are kept. Chains, cgroups, conntrack entries or mounts of another
# cluster or program are never touched (up.sh refuses to start beside another
# Kubernetes, see foreign_cluster_findings in common.sh).
#
# One down_<phase> per phase of up.sh (CLUSTER_PHASES in common.sh), run by main
# at the bottom in the reverse order. Each one does nothing when its phase never
# ran, so this also tears down an up.sh that failed or was killed half-way.
#
#   cluster/down.sh              # full teardown
#   KEEP_STATE=1 cluster/down.sh # stop and clean the host but keep /var/lib/billing-cluster (logs)
set -uo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
[[ $(id -u) == 0 ]] || die "run as root"

changes=$STATE/host-changes
# recorded KIND VALUE...: up.sh recorded this host change
recorded() { [[ -f $changes ]] && grep -qxF -- "$*" "$changes"; }
# recorded_of KIND: the values of every change of that kind up.sh recorded, one line each
recorded_of() { [[ -f $changes ]] && awk -v k="$1" '$1 == k {sub(/^[^ ]+ /, ""); print}' "$changes"; return 0; }

# unmount_ours: mounts under our directories (pod volumes, overlay rootfs, netns, shm), deepest first
unmount_ours() {
  local round m mnts
  for ((round = 0; round < 3; round++)); do
    mapfile -t mnts < <(awk -v s="$STATE" -v r="$RUN" -v h="$HOSTPATH_DIR" \
      'index($2, s"/") == 1 || index($2, r"/") == 1 || index($2, h"/") == 1 || $2 == s || $2 == r {print $2}' /proc/self/mounts |
      awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    ((${#mnts[@]})) || break
    for m in "${mnts[@]}"; do
      m=$(printf '%b' "$m")   # /proc/mounts escapes spaces as \040
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done
  done
}

# end_cluster_processes [containers]: SIGKILL every process cluster_processes finds (see common.sh), or with
# `containers` only the containers' processes and the shims, and wait until they are gone. A process whose only
# tie is its working directory and that has a terminal (someone's shell in /var/lib/billing-cluster/logs) is
# not the cluster's: it is named, not killed.
end_cluster_processes() {
  local only=${1:-} pid why i left=() killed=() tty cmd container
  while read -r pid why; do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    container=0   # a shim of our containerd, or a process in a kubepods cgroup
    if [[ $cmd == *containerd-shim*" -address $CONTAINERD_SOCK"* ]] || grep -q kubepods "/proc/$pid/cgroup" 2>/dev/null; then
      container=1
    fi
    [[ $only == containers ]] && ((!container)) && continue
    if [[ $why == cwd ]] && ((!container)); then
      tty=$(awk '{print $7}' "/proc/$pid/stat" 2>/dev/null)
      if [[ -n $tty && $tty != 0 ]]; then
        log "not ending pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)): a terminal's process working in our directories"
        continue
      fi
    fi
    log "ending pid $pid ($why: $(cut -c1-150 <<<"$cmd"))"
    kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
  done < <(cluster_processes)
  ((${#killed[@]})) || return 0
  for ((i = 0; i < 50; i++)); do
    left=()
    for pid in "${killed[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "still running after SIGKILL: ${left[*]}"
}

# ---------------------------------------------------------------- phases, in up.sh's order (run reversed)
# up_state made the directories: end whatever process of ours is left, unmount, delete them.
down_state() {
  local f
  for f in "$PIDS"/*.pid; do [[ -e $f ]] && stop_pid "$(basename "$f" .pid)" 5; done
  end_cluster_processes
  unmount_ours
  if [[ ${KEEP_STATE:-} == 1 ]]; then
    log "kept $STATE (KEEP_STATE=1)"
  else
    rm -rf --one-file-system "$STATE"
  fi
  rm -rf --one-file-system "$RUN"
}

# up_sysctls saved the values before it in sysctl.orig: put back each one that changed.
down_sysctls() {
  local k v cur
  [[ -f $STATE/sysctl.orig ]] || return 0
  while IFS='=' read -r k v; do
    [[ -n $k ]] || continue
    cur=$(sysctl -n "$k" 2>/dev/null) || continue
    if [[ $cur != "$v" ]]; then
      sysctl -q -w "$k=$v" 2>/dev/null && log "sysctl $k: $cur -> $v (restored)"
    fi
  done <"$STATE/sysctl.orig"
}

# up_cgroups recorded the kubepods directories kubelet would make: remove them, deepest first.
down_cgroups() {
  local a
  while read -r a; do
    [[ $a == /sys/fs/cgroup/*kubepods && -d $a ]] || continue
    find "$a" -depth -type d -exec rmdir {} \; 2>/dev/null || log "cgroup $a not fully removed"
  done < <(recorded_of cgroup)
}

# up_network: the bridge and its veths, the conntrack entries of our pod range, the node address, the route.
down_network() {
  local v a args
  if recorded link "$BRIDGE"; then
    for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$v" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
  fi
  while read -r a; do
    conntrack -D -s "$a" >/dev/null 2>&1 || true
    conntrack -D -d "$a" >/dev/null 2>&1 || true
  done < <(recorded_of conntrack)
  while read -r a; do ip addr del "$a" dev lo 2>/dev/null || true; done < <(recorded_of lo-addr)
  while read -r a; do
    read -ra args <<<"$a"
    ip route del "${args[@]}" 2>/dev/null || true
  done < <(recorded_of route)
}

# up_firewall: the chains of our prefixes that are not in its snapshot, and the rules (anywhere) that jump to
# them; nothing else (no `kube-proxy --cleanup`, which removes every KUBE-* chain of the machine). Then the
# netfilter tables that did not exist before it (now empty of our chains).
down_firewall() {
  local snapshot=$STATE/iptables.orig removed=0 ipt t ours re rule chain c kw family name
  if recorded iptables-snapshot "$snapshot" && [[ -f $snapshot ]]; then
    for ipt in iptables ip6tables; do
      command -v "$ipt" >/dev/null || continue
      for t in "${IPT_TABLES[@]}"; do
        "$ipt" -t "$t" -S >/dev/null 2>&1 || continue
        mapfile -t ours < <("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "$OUR_CHAIN_RE" |
          while read -r c; do grep -qxF -- "$ipt $t -N $c" "$snapshot" || echo "$c"; done)
        ((${#ours[@]})) || continue
        re="^-A [^ ]+ .*-j ($(printf '%s|' "${ours[@]}" | sed 's/|$//'))( |$)"
        # rules jumping to our chains, in chains that stay (the rules inside ours go with them)
        while read -r rule; do
          chain=$(awk '{print $2}' <<<"$rule")
          printf '%s\n' "${ours[@]}" | grep -qxF -- "$chain" && continue
          # shellcheck disable=SC2086 # a rule as iptables -S prints it, split into words again
          eval "$ipt -t $t ${rule/-A /-D }" 2>/dev/null || log "could not delete $ipt -t $t rule: $rule"
        done < <("$ipt" -t "$t" -S 2>/dev/null | grep -E -- "$re" || true)
        for c in "${ours[@]}"; do "$ipt" -t "$t" -F "$c" 2>/dev/null || true; done
        for c in "${ours[@]}"; do
          if "$ipt" -t "$t" -X "$c" 2>/dev/null; then removed=$((removed + 1)); else log "could not delete $ipt -t $t chain $c"; fi
        done
      done
    done
    log "iptables: removed $removed chain(s) this cluster created"
  elif [[ -d $STATE ]]; then
    log "no iptables snapshot of up.sh: no iptables chain is touched"
  fi
  if [[ -f $STATE/nft-tables.orig ]] && command -v nft >/dev/null; then
    while read -r kw family name; do
      [[ $kw == table ]] || continue
      grep -qx "table $family $name" "$STATE/nft-tables.orig" && continue
      # only if no rule, set or map is left in it (another program may have made it meanwhile)
      nft list table "$family" "$name" 2>/dev/null | grep -qvE '^\s*((table|chain) .*\{|type .*;|\}|)$' && continue
      nft delete table "$family" "$name" 2>/dev/null || true
    done < <(nft list tables 2>/dev/null)
  fi
}

# up_paths: the fixed paths and the provisioner directory it recorded as absent; kubelet's legacy log symlinks
# into our state in a /var/log/containers that was already there.
down_paths() {
  local a p l
  while read -r a; do [[ $a == "$HOSTPATH_DIR" ]] && rm -rf --one-file-system "$a"; done < <(recorded_of dir)
  while read -r a; do
    for p in "${HARDCODED_PATHS[@]}"; do
      [[ $a == "$p" ]] && rm -rf --one-file-system "$a"
    done
  done < <(recorded_of created-path)
  for l in /var/log/containers/*.log; do
    [[ -L $l ]] || continue
    case $(readlink "$l") in "$STATE"/*) rm -f "$l" ;; esac
  done
}

down_pki() { :; }   # certificates and kubeconfigs live in $STATE: down_state removes them

down_etcd() { stop_pid etcd 20; }

down_control_plane() {
  stop_pid kube-controller-manager 10
  stop_pid kube-scheduler 10
  stop_pid kube-apiserver 20
}

# up_containerd: whatever containers are left, their shims (those the bundles record, then any other shim of our
# containerd's socket and any process left in a kubepods cgroup, as a killed cluster leaves them), containerd,
# then the mounts it and kubelet made.
down_containerd() {
  local c i f pid
  if pid_alive containerd; then
    for c in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    for ((i = 0; i < 20; i++)); do
      [[ -z $(ctr_ tasks ls -q 2>/dev/null | head -1) ]] && break
      for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true; done
      sleep 0.5
    done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  for f in "$RUN"/containerd/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [[ -s $f ]] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && grep -q containerd-shim "/proc/$pid/cmdline" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  end_cluster_processes containers
  stop_pid containerd 20
  unmount_ours
}

down_kubelet() { stop_pid kubelet 20; }

down_kube_proxy() { stop_pid kube-proxy 10; }

# up_addons: the controllers stop first so nothing recreates pods, then kubelet removes every pod properly
# (volumes unmounted, CNI DEL run) while it still runs.
down_addons() {
  pid_alive kube-apiserver && pid_alive kubelet || return 0
  stop_pid kube-controller-manager 10
  stop_pid kube-scheduler 10
  log "deleting all pods (bounded: 60s)"
  timeout 70 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" delete pods --all -A \
    --grace-period=5 --wait=true --timeout=60s >/dev/null 2>&1 || log "some pods did not go in time (continuing)"
}

main() {
  local i phase
  [[ ! -d $STATE || -f $changes ]] || log "no $changes: nothing recorded, so no network, iptables or cgroup change is undone"
  for ((i = ${#CLUSTER_PHASES[@]} - 1; i >= 0; i--)); do
    phase=${CLUSTER_PHASES[i]}
    "down_$phase"
  done
  log "down: done"
}
main "$@"
