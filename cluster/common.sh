# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by up.sh and down.sh
# Shared settings of cluster/up.sh and cluster/down.sh.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"

STATE=${CLUSTER_STATE:-/var/lib/billing-cluster}   # etcd, containerd root, kubelet root, PKI, configs, logs
RUN=/run/billing-cluster                            # sockets, containerd state, pid files
PIDS=$RUN/pids
LOGS=$STATE/logs
PKI=$STATE/pki
KUBECONFIG_ADMIN=$STATE/kubeconfig
NODE_NAME=billing-local
NODE_IP=10.250.0.1          # added as a /32 on lo (no dummy interface on every kernel)
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
BRIDGE=bcni0                # made by the CNI bridge plugin
ETCD_PORT=2479              # loopback only; not etcd's default port, to stay out of the way of another etcd
ETCD_PEER_PORT=2480
HOSTPATH_DIR=/tmp/hostpath-provisioner   # minikube's provisioner path; same path inside and outside
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
FW_CHAIN=BILLING-CLUSTER    # our own filter chain (keeps pod traffic on this machine)

# ---------------------------------------------------------------- phases and the state contract
# up.sh runs these phases in this order (function up_<phase>); down.sh runs down_<phase> in the reverse order.
# Each down_<phase> undoes what its up_<phase> did, reading only what that phase recorded, and does nothing when
# the phase never ran (down.sh also tears down an up.sh that failed or was killed half-way).
CLUSTER_PHASES=(state sysctls cgroups network firewall paths pki etcd control_plane containerd kubelet kube_proxy addons)
#
# Every file up.sh and down.sh pass between them (the contract; nothing else is read across the two):
#
#   $STATE/host-changes        written by up.sh phases, one "<kind> <value>..." line per host change to undo;
#                              read by down.sh (a kind with no line is never undone). up_state creates it empty.
#       iptables-snapshot F      up_firewall: F ($STATE/iptables.orig) holds iptables as before up.sh
#       cgroup DIR               up_cgroups: DIR (/sys/fs/cgroup[/<controller>]/kubepods) is kubelet's, to remove
#       link bcni0               up_network: the CNI bridge (absent at start), its veths with it
#       conntrack 10.244.0.0/24  up_network: conntrack entries of this node's pods, to delete
#       lo-addr 10.250.0.1/32    up_network: the node address it added to lo
#       route 10.96.0.0/16 dev lo  up_network: the route it added (arguments as given to `ip route del`)
#       created-path P           up_paths: P (one of HARDCODED_PATHS) did not exist, so it is removed
#       dir /tmp/hostpath-provisioner  up_paths: the provisioner's directory did not exist, so it is removed
#   $STATE/sysctl.orig         up_sysctls: "name=value" of every WATCHED_SYSCTLS as before up.sh; down_sysctls
#                              writes back each one that differs
#   $STATE/iptables.orig       up_firewall (iptables_snapshot): every rule and chain before up.sh; down_firewall
#                              removes only KUBE-*/CNI-*/BILLING-CLUSTER chains absent from it (and jumps to them)
#   $STATE/nft-tables.orig     up_firewall: `nft list tables` before up.sh; down_firewall deletes empty new ones
#   $RUN/pids/<name>.pid       up.sh's start() (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                              containerd, kubelet, kube-proxy); read by pid_alive/stop_pid (down.sh, up.sh's
#                              "already running", e2e-local.sh, host-safety.sh killed-run) and, by path, by
#                              e2e/run.sh and scripts/ha.sh (is the cluster up?); foreign_cluster_findings skips them
#   $RUN/containerd/io.containerd.runtime.v2.task/*/*/shim.pid
#                              containerd's shims; down_containerd and host-safety.sh killed-run read them.
#                              Not every shim has one: cluster_processes finds the rest
#   $STATE/logs/<name>.log, $STATE/logs/timings
#                              the processes' output and up.sh's timings; wait_for prints their tails, e2e-local.sh
#                              copies them to the artifacts on failure (KEEP_STATE=1 down.sh keeps them)
#   $STATE/pki/*, $STATE/kubeconfig, $STATE/<component>.kubeconfig
#                              up_pki; the admin kubeconfig is what `kc`, e2e-local.sh and users (KUBECONFIG) use
#   $STATE/containerd.toml, cni/net.d/*, kubelet.yaml, kube-proxy.yaml, addons.yaml
#                              configuration written by the phase that starts the process reading it
#   $STATE/billing-imported.sum  e2e-local.sh: the billing images' sum last imported; it re-imports when
#                              $IMAGES_DIR/billing.sum differs
#   $STATE/{etcd,containerd,containerd-opt,kubelet,pod-logs,cni/ipam}, $RUN/{containerd,runc}
#                              the processes' own data; removed with $STATE and $RUN by down_state
# $CLUSTER_CACHE (builds, images) is not state: build.sh and images.sh write it, nothing removes it.

# Fixed paths that kubelet, containerd's shims and libcni use whatever their
# configuration says (device plugins, shim sockets, CNI result cache, legacy
# log symlinks). up.sh records which of them did not exist; down.sh removes those.
HARDCODED_PATHS=(/var/lib/kubelet /run/containerd /var/lib/cni /var/log/containers /var/log/pods /run/netns /etc/kubernetes)

# sysctls that up.sh sets or that kubelet / kube-proxy write; their values before
# start are saved in $STATE/sysctl.orig and put back by down.sh.
WATCHED_SYSCTLS=(
  net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
  net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.ipv4.conf.all.route_localnet
  net.ipv4.conf.bcni0.route_localnet
  net.ipv6.conf.all.forwarding
)

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
# module_file MODULE@VERSION PATH: the path of PATH inside that Go module, downloaded into Go's module cache by exact
# version (outside any module of ours); dies naming both when it is not there. Call it as `f=$(module_file ...) || exit 1`.
module_file() {
  local dir
  dir=$(cd / && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "$1" | jq -r '.Dir // empty') || true
  [[ -n $dir && -s $dir/$2 ]] || die "no $2 in Go module $1"
  echo "$dir/$2"
}
# wait_for WHAT SECONDS COMMAND...: bounded wait until COMMAND succeeds
wait_for() {
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs; i++)); do
    if "$@" >/dev/null 2>&1; then log "$what: ok after ${i}s"; return 0; fi
    sleep 1
  done
  log "$what: not ready after ${secs}s; last lines of the logs:"
  tail -n 15 "$LOGS"/*.log >&2 || true
  return 1
}
ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

pid_alive() { # name
  local f=$PIDS/$1.pid
  [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# stop_pid NAME [timeout-seconds]: SIGTERM the process recorded in $PIDS/NAME.pid, SIGKILL after the timeout
stop_pid() {
  local name=$1 t=${2:-20} f=$PIDS/$1.pid pid i
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) did not stop in ${t}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$f"
}

# ---------------------------------------------------------------- host safety
# Prefixes of the iptables chains this cluster's kube-proxy, kubelet and CNI
# plugins create, and our own chain. down.sh removes only chains with these
# names that did NOT exist before up.sh (its snapshot), and only the rules that
# jump to them: a chain of the same family that was there before is someone
# else's and stays.
OUR_CHAIN_RE="^(KUBE-|CNI-|$FW_CHAIN\$)"
IPT_TABLES=(filter nat mangle raw)

# iptables_snapshot: every rule and chain of every table (IPv4 and IPv6), without counters, one
# "<family> <table> <rule>" line each, on standard output. (It once took a file name and was given
# /dev/stdout inside a redirected block: reopening that truncated the block's file and wrote from its start,
# so host-safety.sh's snapshots kept 12 bytes of the iptables section and never compared it.)
iptables_snapshot() {
  local ipt t
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in "${IPT_TABLES[@]}"; do
      "$ipt" -t "$t" -S 2>/dev/null | sed "s/^/$ipt $t /"
    done
  done
}

# cluster_processes: one "<pid> <why>" line per running process that belongs to this cluster, whatever
# recorded it or not:
#   exe      its executable is under $CLUSTER_CACHE (our kube-*, etcd, kubectl, coredns, prometheus builds)
#   cmdline  its command line names $STATE or $RUN (containerd --config $STATE/..., every containerd shim, which
#            is started with -address $CONTAINERD_SOCK, a kubectl --kubeconfig $STATE/...)
#   cwd      its working directory is under $STATE or $RUN (a shim's bundle directory, even deleted)
#   cgroup   it runs in a kubepods cgroup (a container's process; up.sh refuses to start beside another
#            kubelet's kubepods, so these are ours)
# A killed cluster leaves some with no pid file (a shim whose task was still starting has no shim.pid yet,
# and outlives containerd in the root cgroups): down.sh ends them, host-safety.sh compares them. This shell
# and its ancestors are never listed.
cluster_processes() {
  local p pid link target cmd cg skip=" " a=$BASHPID argv=()
  local -A exe=() cwd=()
  while [[ -n $a && $a != 0 ]]; do
    skip+="$a "
    a=$(awk '{print $4}' "/proc/$a/stat" 2>/dev/null) || break
  done
  # one find for every link (kernel threads have none); a process may end meanwhile
  while IFS=$'\t' read -r link target; do
    pid=${link#/proc/}; pid=${pid%%/*}
    case $link in */exe) exe[$pid]=$target ;; */cwd) cwd[$pid]=$target ;; esac
  done < <(find /proc/[0-9]*/exe /proc/[0-9]*/cwd -maxdepth 0 -printf '%p\t%l\n' 2>/dev/null)
  for pid in "${!exe[@]}"; do
    [[ $skip == *" $pid "* ]] && continue
    p=/proc/$pid
    if [[ ${exe[$pid]} == "$CLUSTER_CACHE"/* ]]; then echo "$pid exe"; continue; fi
    mapfile -d '' argv 2>/dev/null <"$p/cmdline" || continue
    cmd=" ${argv[*]} "
    if [[ $cmd == *" $STATE/"* || $cmd == *"=$STATE/"* || $cmd == *" $RUN/"* || $cmd == *"=$RUN/"* ]]; then
      echo "$pid cmdline"; continue
    fi
    target=${cwd[$pid]:-}
    if [[ $target == "$STATE" || $target == "$STATE"/* || $target == "$RUN" || $target == "$RUN"/* ]]; then
      echo "$pid cwd"; continue
    fi
    cg=$(<"$p/cgroup") 2>/dev/null || continue
    [[ $cg == *kubepods* ]] && echo "$pid cgroup"
  done
  return 0
}

# foreign_cluster_findings: one line per sign of another Kubernetes (or of
# anything using our addresses) on this machine; nothing when it is clear.
# Run while our cluster is NOT running: our own processes and chains would
# count otherwise.
foreign_cluster_findings() {
  local p comm ours=" " f ipt t chain port
  for f in "$PIDS"/*.pid; do [[ -s $f ]] && ours+="$(cat "$f") "; done
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case $comm in
      kubelet | kube-apiserver | kube-proxy | kube-controller | kube-scheduler | k3s | k3s-server | k3s-agent | k0s | kubelite)
        [[ $ours == *" ${p#/proc/} "* ]] || echo "process $comm (pid ${p#/proc/}) is running" ;;
    esac
  done
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat; do
      for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E '^KUBE-' | head -5); do
        echo "$ipt chain $chain in table $t (kube-proxy's or kubelet's)"
      done
    done
  done
  for f in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods.slice /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d $f ]] && echo "cgroup $f exists (a kubelet's pods)"
  done
  for f in /etc/kubernetes/manifests /etc/kubernetes/kubelet.conf /var/lib/kubelet/config.yaml /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/k0s; do
    [[ -e $f ]] && echo "path $f exists (kubeadm, k3s or k0s)"
  done
  for f in "$BRIDGE" cni0 flannel.1 cilium_host kube-ipvs0 vxlan.calico weave kube-bridge; do
    ip link show "$f" >/dev/null 2>&1 && echo "network interface $f exists"
  done
  ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^cali/ {print "network interface " $2 " exists (Calico)"}' | head -3
  ip -4 -o addr show 2>/dev/null | awk -v a="$NODE_IP/" 'index($4, a) == 1 {print "address " $4 " is already on " $2}'
  ip -4 route show 2>/dev/null | awk '$1 ~ /^10\.(244|96)\./ {print "route " $0 " overlaps the pod or Service range (10.244.0.0/16, 10.96.0.0/16)"}'
  for port in 6443 10250 10256 10257 10259 "$ETCD_PORT" "$ETCD_PEER_PORT"; do
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && echo "TCP port $port is already listened on"
  done
  return 0
}
