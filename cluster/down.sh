#!/usr/bin/env bash
# Tear down the local cluster started by cluster/up.sh and leave the machine as
# up.sh found it, touching only what up.sh recorded in
# /var/lib/billing-cluster/host-changes that it (or the cluster it started)
# created: every process stopped by its recorded PID (containers through
# containerd), mounts under the cluster's own directories unmounted, the CNI
# bridge, the node address and the route removed, the KUBE-*/CNI-*/BILLING-CLUSTER
# iptables chains that were not there before up.sh (and the rules jumping to
# them) removed, conntrack entries of our pod range only, sysctls put back, the
# kubepods cgroups up.sh recorded removed, state directories deleted. Build
# caches are kept. Chains, cgroups, conntrack entries or mounts of another
# cluster or program are never touched (up.sh refuses to start beside another
# Kubernetes, see foreign_cluster_findings in common.sh).
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
# and those no bundle records (a killed cluster's), by the socket they were started with
for pid in $(our_shims); do kill -KILL "$pid" 2>/dev/null || true; done
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

# 4. Network: CNI bridge and its veths, node address, route (each only if up.sh recorded it).
changes=$STATE/host-changes
recorded() { [[ -f $changes ]] && grep -qxF -- "$*" "$changes"; }
if recorded link "$BRIDGE"; then
  for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
fi
if [[ -f $changes ]]; then
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
  done <"$changes"
else
  log "no $changes: nothing recorded, so no network, iptables or cgroup change is undone"
fi

# kubelet's legacy log symlinks in a /var/log/containers that was already there
for l in /var/log/containers/*.log; do
  [[ -L $l ]] || continue
  case $(readlink "$l") in "$STATE"/*) rm -f "$l" ;; esac
done

# 5. iptables: the chains of our prefixes that are not in up.sh's snapshot, and
#    the rules (anywhere) that jump to them. Nothing else: no `kube-proxy
#    --cleanup`, which removes every KUBE-* chain of the machine.
snapshot=$STATE/iptables.orig
if recorded iptables-snapshot "$snapshot" && [[ -f $snapshot ]]; then
  removed=0
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
else
  log "no iptables snapshot of up.sh: no iptables chain is touched"
fi
# netfilter tables that did not exist before up.sh (now empty of our chains)
if [[ -f $STATE/nft-tables.orig ]] && command -v nft >/dev/null; then
  while read -r kw family name; do
    [[ $kw == table ]] || continue
    grep -qx "table $family $name" "$STATE/nft-tables.orig" && continue
    # only if no rule, set or map is left in it (another program may have made it meanwhile)
    nft list table "$family" "$name" 2>/dev/null | grep -qvE '^\s*((table|chain) .*\{|type .*;|\}|)$' && continue
    nft delete table "$family" "$name" 2>/dev/null || true
  done < <(nft list tables 2>/dev/null)
fi
# conntrack: the entries of our pods' addresses only (recorded by up.sh as the pod range of this node)
if [[ -f $changes ]]; then
  while read -r kind a _; do
    [[ $kind == conntrack ]] || continue
    conntrack -D -s "$a" >/dev/null 2>&1 || true
    conntrack -D -d "$a" >/dev/null 2>&1 || true
  done <"$changes"
fi

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

# 7. cgroups kubelet made (cgroupfs driver): the kubepods directories up.sh recorded, deepest first.
if [[ -f $changes ]]; then
  while read -r kind a _; do
    [[ $kind == cgroup && $a == /sys/fs/cgroup/*kubepods && -d $a ]] || continue
    find "$a" -depth -type d -exec rmdir {} \; 2>/dev/null || log "cgroup $a not fully removed"
  done <"$changes"
fi

# 8. State.
if [[ ${KEEP_STATE:-} == 1 ]]; then
  log "kept $STATE (KEEP_STATE=1)"
else
  rm -rf --one-file-system "$STATE"
fi
rm -rf --one-file-system "$RUN"
log "down: done"
