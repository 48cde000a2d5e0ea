#!/usr/bin/env bash
# Tear down the local cluster started by cluster/up.sh and leave the machine as
# up.sh found it: every process stopped by its recorded PID (containers through
# containerd), mounts under the cluster's directories unmounted, the CNI bridge,
# the node address and the blackhole route removed, the iptables chains of
# kube-proxy, kubelet, CNI and our own removed, sysctls put back, the kubepods
# cgroups removed, state directories deleted. Build caches are kept.
#
#   cluster/down.sh              # full teardown
#   KEEP_STATE=1 cluster/down.sh # stop and clean the host but keep /var/lib/billing-cluster (logs)
set -uo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"
[[ $(id -u) == 0 ]] || die "run as root"

# 1. Stop the controllers first so nothing recreates pods, then let kubelet
#    remove every pod properly (volumes unmounted, CNI DEL run).
if pid_alive kube-apiserver && pid_alive kubelet; then
  stop_pid kube-controller-manager 10
  stop_pid kube-scheduler 10
  log "deleting all pods (bounded: 60s)"
  timeout 70 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" delete pods --all -A \
    --grace-period=5 --wait=true --timeout=60s >/dev/null 2>&1 || log "some pods did not go in time (continuing)"
fi
stop_pid kubelet 20
stop_pid kube-proxy 10
stop_pid kube-controller-manager 10
stop_pid kube-scheduler 10

# 2. Whatever containers are left: kill their tasks through containerd.
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
# containerd-shim processes: each bundle records its shim's PID
for f in "$RUN"/containerd/io.containerd.runtime.v2.task/*/*/shim.pid; do
  [[ -s $f ]] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null && grep -q containerd-shim "/proc/$pid/cmdline" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
stop_pid containerd 20
stop_pid kube-apiserver 20
stop_pid etcd 20
for f in "$PIDS"/*.pid; do [[ -e $f ]] && stop_pid "$(basename "$f" .pid)" 5; done

# 3. Mounts under our directories (pod volumes, overlay rootfs, netns, shm), deepest first.
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

# 4. Network: CNI bridge and leftover veths, node address, blackhole route.
for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link del "$v" 2>/dev/null || true
done
ip link del "$BRIDGE" 2>/dev/null || true
if [[ -f $STATE/host-changes ]]; then
  while read -r kind a rest; do
    case $kind in
      lo-addr) ip addr del "$a" dev lo 2>/dev/null || true ;;
      route) read -ra args <<<"$rest"; ip route del "$a" "${args[@]}" 2>/dev/null || true ;;
      dir) [[ $a == "$HOSTPATH_DIR" ]] && rm -rf --one-file-system "$a" ;;
      created-path)
        for p in "${HARDCODED_PATHS[@]}"; do
          [[ $a == "$p" ]] && rm -rf --one-file-system "$a"
        done ;;
    esac
  done <"$STATE/host-changes"
fi

# kubelet's legacy log symlinks in a /var/log/containers that was already there
for l in /var/log/containers/*.log; do
  [[ -L $l ]] || continue
  case $(readlink "$l") in "$STATE"/*) rm -f "$l" ;; esac
done

# 5. iptables: kube-proxy's own cleanup, then any KUBE-*/CNI-* chain and ours.
if [[ -x $K8S_BIN/kube-proxy ]]; then "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
clean_chains() { # iptables|ip6tables
  local ipt=$1 t chain rule
  for t in filter nat mangle raw; do
    "$ipt" -t "$t" -S >/dev/null 2>&1 || continue
    # rules in any chain that jump to one of ours
    while read -r rule; do
      # shellcheck disable=SC2086
      "$ipt" -t "$t" ${rule/-A /-D } 2>/dev/null || true
    done < <("$ipt" -t "$t" -S 2>/dev/null | grep -E -- "^-A .* -j (KUBE-|CNI-|$FW_CHAIN)" || true)
    for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "^(KUBE-|CNI-|$FW_CHAIN$)"); do
      "$ipt" -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "^(KUBE-|CNI-|$FW_CHAIN$)"); do
      "$ipt" -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}
clean_chains iptables
clean_chains ip6tables
# netfilter tables that did not exist before up.sh (now empty of our chains)
if [[ -f $STATE/nft-tables.orig ]] && command -v nft >/dev/null; then
  while read -r kw family name; do
    [[ $kw == table ]] || continue
    grep -qx "table $family $name" "$STATE/nft-tables.orig" || nft delete table "$family" "$name" 2>/dev/null || true
  done < <(nft list tables 2>/dev/null)
fi
conntrack -D -s "$CLUSTER_CIDR" >/dev/null 2>&1 || true
conntrack -D -d "$CLUSTER_CIDR" >/dev/null 2>&1 || true

# 6. sysctls back to what they were before up.sh.
if [[ -f $STATE/sysctl.orig ]]; then
  while IFS='=' read -r k v; do
    [[ -n $k ]] || continue
    cur=$(sysctl -n "$k" 2>/dev/null) || continue
    if [[ $cur != "$v" ]]; then
      sysctl -q -w "$k=$v" 2>/dev/null && log "sysctl $k: $cur -> $v (restored)"
    fi
  done <"$STATE/sysctl.orig"
fi

# 7. cgroups kubelet made (cgroupfs driver, cgroup v1): /kubepods in every hierarchy.
for h in /sys/fs/cgroup/*/; do
  [[ -d $h/kubepods ]] || continue
  find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || log "cgroup $h/kubepods not fully removed"
done

# 8. State.
if [[ ${KEEP_STATE:-} == 1 ]]; then
  log "kept $STATE (KEEP_STATE=1)"
else
  rm -rf --one-file-system "$STATE"
fi
rm -rf --one-file-system "$RUN"
log "down: done"
